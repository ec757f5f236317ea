//! `varta bench`: the observer's benchmarks. They print figures; nothing here asserts a timing.
//!
//! One run (`varta bench`, i.e. `all`) measures, and prints side by side at the end:
//!
//! * **ingest**, bare `recvmmsg` receiver vs observer, over the Unix socket, plain UDP,
//!   shared-key and master-key secure UDP: generator-bound (the generator races both for a
//!   fixed time: frames/s and CPU ns per datagram) and receiver-bound (a queue filled, then
//!   drained: datagrams per CPU-second), the UDP rounds with the observer at each
//!   `--workers` count (one column each), see [`ingest`]; and the same drain in wall-clock
//!   time with nothing pinned, so N receive workers may use N CPUs ([`wall`]);
//! * the AEAD open cost and the tracker's whole cost per secure datagram, in process
//!   ([`core`]);
//! * **stall lateness** (min / median / p99) with N live agents ([`stall`]);
//! * **1,000 agent processes** at 10 Hz over the Unix socket: the observer's CPU share and
//!   wake-ups per second ([`fleet::unix_agents`]);
//! * **100,000 distinct master-key agents** through a real UDP socket (queued, then drained):
//!   beats/s, CPU per beat, memory, one row per `--workers` count ([`fleet::master_agents`]).
//!
//! Not part of `all` (it needs Debian's `prometheus` and `prometheus-alertmanager`): `varta
//! bench alert`, freeze → notification latency of direct Alertmanager delivery vs the
//! Prometheus path through the real daemon ([`alert`]).
//!
//! `--quick` shrinks every phase so the whole command runs in seconds (for tests; its figures
//! are not the machine's). The load runs on `--load-cpu`, the observer and the bare receiver on
//! `--observer-cpu`; `--rt` puts receivers under SCHED_FIFO 50 and the generator under 40.
//! `--observer-exe PATH` measures another build's `varta-watch` instead of the observer linked
//! into this binary (before/after comparisons in one session).
//!
//! Receive workers: with `--workers N` > 1 the observer reads its UDP port through N
//! `SO_REUSEPORT` sockets, one receive thread each; the kernel picks a socket by a hash of the
//! 4-tuple, so the generator sends from `--sources` sockets (every receiver of one row gets the
//! same generator settings). The observer's CPU figures count every ingest thread (main loop
//! and receive threads), and after each multi-worker round the datagrams each receive thread
//! read are printed, so the spread can be seen. The 1-worker observer is started without the
//! flag (the daemon's default).

pub mod alert;
pub mod core;
pub mod fleet;
pub mod gen;
pub mod ingest;
mod ingest_report;
pub mod observer;
pub mod procnet;
pub mod stall;
pub mod wall;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};

use self::gen::GenMode;
use self::observer::ObserverExe;

/// Which benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Everything below, then a side-by-side summary.
    All,
    /// Ingest (generator-bound and receiver-bound), AEAD and tracker cost.
    Ingest,
    /// Stall precision only.
    Stall,
    /// AEAD open and tracker cost per datagram only (in process).
    Open,
    /// Agent processes over the Unix socket: observer CPU share and wake-ups.
    Agents,
    /// Distinct master-key agents over UDP: beats/s, CPU per beat, memory.
    MasterAgents,
    /// Freeze → Alertmanager notification latency, direct delivery vs Prometheus (not part of
    /// `all`: needs Debian's prometheus and prometheus-alertmanager).
    Alert,
}

/// Ingest transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Plain frames over the Unix socket.
    Unix,
    /// Plain frames over UDP.
    UdpPlain,
    /// Shared-key datagrams over UDP.
    UdpShared,
    /// Master-key datagrams over UDP.
    UdpMaster,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::Unix,
        Transport::UdpPlain,
        Transport::UdpShared,
        Transport::UdpMaster,
    ];

    /// The report's name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::UdpPlain => "udp-plain",
            Transport::UdpShared => "udp-shared",
            Transport::UdpMaster => "udp-master",
        }
    }

    /// The generator's datagrams.
    #[must_use]
    pub const fn mode(self) -> GenMode {
        match self {
            Transport::Unix | Transport::UdpPlain => GenMode::Plain,
            Transport::UdpShared => GenMode::Shared,
            Transport::UdpMaster => GenMode::Master,
        }
    }
}

/// Flags of `varta bench`.
#[derive(Debug, Args)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches"
)]
pub struct BenchArgs {
    /// Which benchmark.
    #[arg(value_enum, default_value_t = Which::All)]
    pub which: Which,
    /// Shrink every phase so the run takes seconds (exercises the command; figures are rough).
    #[arg(long)]
    pub quick: bool,
    /// Seconds of load per generator-bound ingest phase.
    #[arg(long, default_value_t = 2)]
    pub seconds: u64,
    /// Rounds per transport (medians are reported) [default: 3; --quick: 1].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Datagrams queued per receiver-bound (drain) round [default: 300000; --quick: 20000].
    #[arg(long, value_name = "N")]
    pub drain: Option<usize>,
    /// CPU for the observer and the bare receiver.
    #[arg(long, default_value_t = 0)]
    pub observer_cpu: usize,
    /// CPU for the load.
    #[arg(long, default_value_t = 1)]
    pub load_cpu: usize,
    /// Stall samples [default: 60; --quick: 5]; for `alert`, agents frozen [default: 24;
    /// --quick: 5].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Live agents during the stall benchmark [default: 1000; --quick: 100].
    #[arg(long)]
    pub agents: Option<u32>,
    /// Stall threshold of the stall and agent-process benchmarks.
    #[arg(long, default_value_t = 200)]
    pub threshold_ms: u64,
    /// Agent processes over the Unix socket [default: 1000; --quick: 50].
    #[arg(long, value_name = "N")]
    pub processes: Option<usize>,
    /// Seconds the agent-process benchmark measures [default: 5; --quick: 1].
    #[arg(long, value_name = "S")]
    pub processes_seconds: Option<u64>,
    /// Distinct master-key agents [default: 100000; --quick: 2000].
    #[arg(long, value_name = "N")]
    pub master_agents: Option<u32>,
    /// During the stall benchmark, flood the observer's UDP port flat out from a niced process
    /// on the load CPU: `plain` (one agent beating flat out) or `garbage` (bad-CRC frames).
    #[arg(long, value_enum)]
    pub flood: Option<GenMode>,
    /// Also run the stall benchmark with the observer under `--rt-priority 50` (and the
    /// instrument's threads SCHED_FIFO too). For ingest: bare receiver and observer under
    /// SCHED_FIFO 50, the generator under 40.
    #[arg(long)]
    pub rt: bool,
    /// Ingest transports to run (repeatable) [default: all].
    #[arg(long = "transport", value_enum)]
    pub transports: Vec<Transport>,
    /// A `varta-watch` binary to measure instead of the observer linked into this one.
    #[arg(long, value_name = "PATH")]
    pub observer_exe: Option<PathBuf>,
    /// The observer's receive-worker counts in the UDP ingest rounds and the master-key fleet,
    /// side by side (comma-separated).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1,2",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Vec<u32>,
    /// UDP source sockets the generator sends from (spread over the observer's receive
    /// sockets by the kernel's 4-tuple hash); the same for every receiver of a row.
    #[arg(long, value_name = "N", default_value_t = gen::DEFAULT_SOURCES,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub sources: u32,
}

impl BenchArgs {
    fn pick<T>(&self, given: Option<T>, normal: T, quick: T) -> T {
        given.unwrap_or(if self.quick { quick } else { normal })
    }

    /// Milliseconds per generator-bound phase.
    #[must_use]
    pub fn phase_ms(&self) -> u64 {
        if self.quick {
            300
        } else {
            self.seconds.max(1) * 1000
        }
    }

    fn rounds(&self) -> usize {
        self.pick(self.rounds, 3, 1).max(1)
    }

    /// Stall samples.
    #[must_use]
    pub fn samples(&self) -> usize {
        self.pick(self.samples, 60, 5).max(1)
    }

    /// Live agents in the stall benchmark.
    #[must_use]
    pub fn stall_agents(&self) -> u32 {
        self.pick(self.agents, 1000, 100).max(2)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Lines of the closing side-by-side summary, filled as phases finish.
#[derive(Default)]
struct Summary(Vec<String>);

impl Summary {
    fn add(&mut self, line: String) {
        println!("{line}");
        self.0.push(line);
    }
}

/// Datagrams per batch of the in-process batched figures.
const fn core_batch() -> usize {
    varta_watch::listener::BATCH
}

fn run_costs(a: &BenchArgs, sum: &mut Summary) -> Result<(), String> {
    let o = core::open_cost(a.quick);
    sum.add(format!(
        "  AEAD open per datagram (in process, agent key at hand): one at a time shared-key {:.0} ns, master-key {:.0} ns; batched ({}, {} per batch) shared-key {:.0} ns, master-key {:.0} ns",
        o.single[0], o.single[1], o.path, crate::bench::core_batch(), o.batched[0], o.batched[1]
    ));
    let (one, batched) = core::tracker_cost(a.quick)?;
    sum.add(format!(
        "  tracker per secure datagram (in process, open included, 1,000 agents round-robin): one by one shared-key {:.0} ns, master-key {:.0} ns; handle_batch shared-key {:.0} ns, master-key {:.0} ns",
        one[0], one[1], batched[0], batched[1]
    ));
    Ok(())
}

fn run_stall(
    exe: &Path,
    obs: &ObserverExe,
    a: &BenchArgs,
    rt: bool,
    sum: &mut Summary,
) -> Result<(), String> {
    let f = stall::run(exe, obs, a, rt)?;
    let hi = f.lateness_ms.last().copied().unwrap_or(f64::NAN);
    if let Some(mode) = a.flood {
        println!(
            "    under a flat-out {} flood the observer received {:.0} datagrams",
            mode.name(),
            f.received
        );
    }
    sum.add(format!(
        "  stall lateness{} (threshold {} ms, {} agents at 10 Hz over UDP, {} samples): min {:.3} ms, median {:.3} ms, p99 {:.3} ms, max {hi:.3} ms; {} false stalls, {:.0} kernel drops",
        if rt { " SCHED_FIFO" } else { "" },
        a.threshold_ms,
        a.stall_agents(),
        f.lateness_ms.len(),
        f.lateness_ms[0],
        f.pct(0.5),
        f.pct(0.99),
        f.false_stalls,
        f.dropped,
    ));
    Ok(())
}

fn run_unix_agents(
    exe: &Path,
    obs: &ObserverExe,
    a: &BenchArgs,
    dir: &Path,
    sum: &mut Summary,
) -> Result<(), String> {
    let n = a.pick(a.processes, 1000, 50);
    let secs = a.pick(a.processes_seconds, 5, 1).max(1);
    let f = fleet::unix_agents(exe, obs, a, dir, n, Duration::from_secs(secs))?;
    sum.add(format!(
        "  {} agent processes at 10 Hz over the Unix socket ({:.1} s): observer CPU {:.2}% of a core, {:.0} wake-ups/s ({:.0} preempted/s), {:.0} frames/s accepted; beats the kernel refused the agents (queue full): {} of {} ({:.2}%, {} agents reporting)",
        f.agents,
        f.secs,
        f.cpu_pct,
        f.wakeups,
        f.preempted,
        f.frames,
        f.dropped,
        f.sent + f.dropped,
        100.0 * f.dropped as f64 / (f.sent + f.dropped).max(1) as f64,
        f.reports
    ));
    Ok(())
}

fn run_master_agents(
    exe: &Path,
    obs: &ObserverExe,
    a: &BenchArgs,
    dir: &Path,
    sum: &mut Summary,
) -> Result<(), String> {
    let n = a.pick(a.master_agents, 100_000, 2_000);
    let mut rows = Vec::new();
    for &w in &a.workers {
        match fleet::master_agents(exe, obs, a, dir, n, w) {
            Ok(f) => {
                if w > 1 {
                    println!(
                        "    (master-key agents, {w} workers: datagrams per receive thread: {})",
                        ingest_report::spread_line(&f.spread)
                    );
                }
                println!(
                    "    ({w}-worker observer: {:.0} beats accepted)",
                    f.accepted
                );
                rows.push(f);
            }
            Err(e) => println!("  master-key agents with {w} workers failed: {e}"),
        }
    }
    let first = rows.first().ok_or("no master-key agent round ran")?;
    sum.add(format!(
        "  {} distinct master-key agents over UDP ({} beats each from {} source sockets, queued then drained), by receive workers:",
        first.agents, first.beats_each, a.sources
    ));
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    sum.add(format!(
        "    {:>7} {:>11} {:>11} {:>9} {:>12} {:>14} {:>13} {:>11}",
        "workers",
        "beats/s",
        "cpu ns/beat",
        "tracked",
        "kernel drops",
        "RSS MiB before",
        "RSS MiB after",
        "bytes/agent"
    ));
    for f in &rows {
        sum.add(format!(
            "    {:>7} {:>11.0} {:>11.0} {:>9.0} {:>12.0} {:>14.1} {:>13.1} {:>11.0}",
            f.workers,
            f.beats_per_s,
            f.cpu_per_beat,
            f.tracked,
            f.dropped,
            mib(f.rss_before),
            mib(f.rss_after),
            f.rss_after.saturating_sub(f.rss_before) as f64 / f.tracked.max(1.0),
        ));
    }
    Ok(())
}

fn run_alert(exe: &Path, a: &BenchArgs, sum: &mut Summary) -> Result<(), String> {
    let f = alert::run(exe, a)?;
    sum.add(format!(
        "  freeze -> webhook notification ({} freezes, --threshold-ms {}, group_wait 0s; Prometheus scrape and evaluation every 1 s):",
        f.freezes, f.threshold_ms
    ));
    sum.add(format!("    direct      {}", f.direct.line()));
    sum.add(format!("    prometheus  {}", f.prometheus.line()));
    sum.add(format!(
        "    direct-path goal: threshold + group_wait + 50 ms = {} ms; observer's posts by outcome: {}",
        f.threshold_ms + 50,
        f.outcomes
            .iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// Runs the selected benchmarks and prints figures.
///
/// # Errors
/// A one-line message if a phase cannot run.
pub fn run(a: &BenchArgs) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let obs = ObserverExe::new(&exe, a.observer_exe.as_deref());
    let dir = std::env::temp_dir().join(format!("varta-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    println!(
        "varta bench{}: observer on CPU {}, load on CPU {}; net.unix.max_dgram_qlen = {}; observer: {}",
        if a.quick { " --quick (short phases: rough figures)" } else { "" },
        a.observer_cpu,
        a.load_cpu,
        std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
            .unwrap_or_default()
            .trim(),
        obs.describe()
    );
    let mut sum = Summary::default();
    let all = a.which == Which::All;
    let result = (|| -> Result<(), String> {
        if all || a.which == Which::Ingest {
            ingest_report::run(&exe, &obs, a, &dir, &mut sum);
        }
        if all || matches!(a.which, Which::Ingest | Which::Open) {
            run_costs(a, &mut sum)?;
        }
        if all || a.which == Which::Stall {
            run_stall(&exe, &obs, a, false, &mut sum)?;
            if a.rt {
                run_stall(&exe, &obs, a, true, &mut sum)?;
            }
        }
        if all || a.which == Which::Agents {
            run_unix_agents(&exe, &obs, a, &dir, &mut sum)?;
        }
        if all || a.which == Which::MasterAgents {
            run_master_agents(&exe, &obs, a, &dir, &mut sum)?;
        }
        if a.which == Which::Alert {
            run_alert(&exe, a, &mut sum)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!("summary (this run, side by side):");
    for l in &sum.0 {
        println!("{l}");
    }
    Ok(0)
}
