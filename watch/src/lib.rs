//! `varta-watch`: the Varta observer.
//!
//! Architecture (VLP v0.2 observer, issue 5): a sans-I/O core, [`tracker`], fed
//! `(now, origin, datagram bytes)` and `handle_timeout(now)`, returning events and the next
//! deadline; and a thin daemon around it that owns every piece of I/O:
//!
//! * [`listener`]: the Unix datagram socket (kernel-attested senders via `SCM_CREDENTIALS`) and
//!   UDP, read in `recvmmsg` batches into buffers allocated once;
//! * [`daemon`]: the single-threaded `ppoll` loop, with its timeout set exactly to the
//!   tracker's next deadline (no periodic wake-ups), bounded work per turn;
//! * [`output`]: event lines on stdout (text or JSON) and the TSV export file;
//! * [`metrics`]: the Prometheus endpoint, served by a second thread from snapshots the loop
//!   publishes on request;
//! * [`recovery`]: the operator's recovery program, run without a shell, debounced per agent,
//!   admitted by policy, with a tamper-evident audit trail (`varta-watch audit verify`);
//! * [`keytool`]: `varta-watch key derive`, per-agent key provisioning;
//! * [`policy`]: who each agent is (from `/proc` or configuration), its class (own threshold,
//!   recovery, severity, labels) and maintenance silences, decided once per agent session;
//! * [`control`]: the owner-only control socket (`varta-watch status`, `varta-watch silence`)
//!   served from snapshots the loop publishes on request;
//! * [`http_assets`]: the status page and the `/api/agents` and `/api/events` JSON;
//! * [`config`]: flags and the TOML configuration file.
//!
//! The demo, the benchmarks and the agent simulator live in the `varta-tools` crate (the
//! `varta` command), which uses this library.
//!
//! # Panic contract
//!
//! Nothing a peer sends can panic the daemon: every datagram goes through the tracker's
//! decode pipeline, whose rejections are counted by reason.

pub mod alerting;
pub mod config;
pub mod control;
pub mod daemon;
pub mod http_assets;
pub mod keytool;
pub mod listener;
pub mod metrics;
pub mod output;
pub mod policy;
pub mod recovery;

pub mod tracker;
