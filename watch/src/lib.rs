//! `varta-watch`: the Varta observer.
//!
//! A sans-I/O core, [`tracker`], fed `(now, origin, datagram bytes)` and `handle_timeout(now)`,
//! returning events and the next deadline (the pattern: no clock, no socket; `tests/sim.rs`
//! drives it with thousands of virtual agents on a virtual clock). Around it a thin shell, one
//! room per concern, each a folder; the arrows below are the only imports between rooms (no
//! cycles):
//!
//! ```text
//! config ──▶ daemon ──▶ listener ──▶ tracker (core)
//!              │  ├───▶ output
//!              │  ├───▶ recovery
//!              │  └───▶ metrics ──(snapshots, eventfd)── HTTP thread
//! ```
//!
//! * [`config`]: every setting defined once (a clap field); the TOML file is read through that
//!   same definition; checked into a [`config::Config`] before anything is opened;
//! * [`daemon`]: setup and the single-threaded `ppoll` loop, its timeout set exactly to the
//!   tracker's next deadline (no periodic wake-ups), bounded work per turn; the loop itself
//!   feeds systemd's watchdog (`WATCHDOG=1`, `STATUS=`) and the self-watchdog, so a wedged
//!   loop is noticed;
//! * [`listener`]: the Unix datagram socket (kernel-attested senders via `SCM_CREDENTIALS`) and
//!   UDP, bound by us or handed over by systemd (socket activation), one
//!   [`listener::Listener`] type read through one drain path, in `recvmmsg` batches into
//!   buffers allocated once;
//! * [`output`]: event lines on stdout (text or JSON) and the TSV export file, each written by
//!   its own thread behind a bounded queue, so a stuck sink never holds up the loop;
//! * [`fsutil`]: the one way the observer opens and rotates the files it writes (`O_NOFOLLOW`,
//!   0600, ours);
//! * [`metrics`]: Prometheus over HTTP (axum on its own thread and current-thread runtime); the
//!   loop publishes snapshots and never waits for a client;
//! * [`recovery`]: the operator's recovery program, run without a shell, debounced per agent,
//!   admitted by policy, with a tamper-evident audit trail (`varta-watch audit verify`);
//! * [`alerting`]: direct delivery of stall and crash alerts to Alertmanager, off the loop;
//! * [`keytool`]: `varta-watch key derive`, per-agent key provisioning;
//! * [`policy`]: who each agent is (from `/proc` or configuration), its class (own threshold,
//!   recovery, severity, labels) and maintenance silences, decided once per agent session;
//! * [`control`]: the owner-only control socket (`varta-watch status`, `varta-watch silence`)
//!   served from snapshots the loop publishes on request;
//! * [`http_assets`]: the status page and the `/api/agents` and `/api/events` JSON.
//!
//! The demo, the benchmarks and the agent simulator live in the `varta-tools` crate (the
//! `varta` command), which uses this library.
//!
//! A beat's way: kernel queue → [`listener::Listener::try_recv`] (a batch) →
//! [`listener::Listener::origin`] → `Tracker::handle_datagram` → tracker events →
//! [`output::Row`] → stdout / TSV / recovery; counters → [`metrics::Snapshot`] on request.
//!
//! OS calls go through `rustix` where it wraps them; the few raw calls (`recvmmsg`,
//! `SO_MEMINFO`, `sched_setscheduler`) each carry their `SAFETY` comment. Every descriptor the
//! observer opens is close-on-exec, so recovery children inherit none.
//!
//! # Panic contract
//!
//! Nothing a peer sends can panic the daemon: every datagram goes through the tracker's
//! decode pipeline, whose rejections are counted by reason; HTTP clients are bounded in number,
//! time and request size, and served apart from the loop.

pub mod alerting;
pub mod compat;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fsutil;
pub mod http_assets;
pub mod keytool;
pub mod listener;
pub mod metrics;
pub mod output;
pub mod policy;
pub mod recovery;

pub mod tracker;
