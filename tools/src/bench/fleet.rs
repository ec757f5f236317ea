//! Many agents through real sockets.
//!
//! * [`unix_agents`]: N real agent processes (`varta agent`, sending through `varta-client`)
//!   beating at 10 Hz over the Unix socket; the observer's CPU share (user + system time of
//!   the whole process, `/proc/PID/stat`) and wake-ups per second (voluntary context switches
//!   of its loop thread, `/proc/PID/status`) over a measurement window, and the beats the kernel
//!   refused the agents (a full socket queue) over their whole run.
//! * [`master_agents`]: N distinct master-key identities (the generator seals for each, with
//!   the key derived for its pid) through a real UDP socket, receiver-bound, the observer at a
//!   given receive-worker count: beats/s accepted, the ingest threads' CPU per beat (main loop
//!   plus receive threads), and the observer's resident memory before and after.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::gen::{GenMode, GenRun, KEY_HEX};
use super::observer::{free_udp_port, workers_args, Observer, ObserverExe, ACCEPTED};
use super::BenchArgs;
use crate::sys;

/// What the Unix-socket fleet measured.
pub struct UnixFleet {
    /// Agents started.
    pub agents: usize,
    /// Measurement window, s.
    pub secs: f64,
    /// Observer CPU time / wall time, percent of one core.
    pub cpu_pct: f64,
    /// Voluntary context switches of the loop thread per second.
    pub wakeups: f64,
    /// Involuntary ones per second.
    pub preempted: f64,
    /// Frames accepted per second.
    pub frames: f64,
    /// Agents that ended normally and reported.
    pub reports: usize,
    /// Beats they sent (the kernel took them).
    pub sent: u64,
    /// Beats the kernel refused them (the observer's socket queue was full).
    pub dropped: u64,
}

struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn loop_status(pid: u32, key: &str) -> Option<u64> {
    sys::status_field(&format!("/proc/{pid}/task/{pid}"), key)
}

/// Runs `n` agent processes at 10 Hz against an observer's Unix socket for `window`.
///
/// # Errors
/// The observer or an agent could not start, or `/proc` could not be read.
pub fn unix_agents(
    exe: &Path,
    obs_exe: &ObserverExe,
    a: &BenchArgs,
    dir: &Path,
    n: usize,
    window: Duration,
) -> Result<UnixFleet, String> {
    let sock = dir.join("fleet.sock");
    let args: Vec<String> = vec![
        "--socket".into(),
        sock.display().to_string(),
        "--threshold-ms".into(),
        a.threshold_ms.to_string(),
        "--tracker-capacity".into(),
        (n + 1024).to_string(),
    ];
    let obs = Observer::start(obs_exe, Some(a.observer_cpu), &args, false)?;
    // Started over one beat interval, so their phases spread as independent processes' do.
    let mut agents = Agents(Vec::with_capacity(n));
    let spacing = Duration::from_micros(100_000 / n.max(1) as u64);
    // Each beats through the start-up of the others, the warm-up and the window, then ends
    // by itself and reports what the kernel refused.
    let report = dir.join("fleet.report");
    let _ = std::fs::remove_file(&report);
    let beats = 10 * (window.as_secs() + 3) + n as u64 / 100;
    for _ in 0..n {
        let child = Command::new(exe)
            .arg("agent")
            .arg("--socket")
            .arg(&sock)
            .args(["--interval-ms", "100", "--count", &beats.to_string()])
            .arg("--report")
            .arg(&report)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("agent: {e}"))?;
        sys::pin(child.id(), a.load_cpu);
        agents.0.push(child);
        std::thread::sleep(spacing);
    }
    // Warm up: every agent known.
    let t0 = Instant::now();
    while obs.scrape("varta_watch_pids_tracked").unwrap_or(0.0) < n as f64
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = obs.pid();
    let read = || -> Option<(u64, u64, u64, f64, Instant)> {
        Some((
            sys::process_cpu_ns(pid)?,
            loop_status(pid, "voluntary_ctxt_switches")?,
            loop_status(pid, "nonvoluntary_ctxt_switches")?,
            obs.scrape(ACCEPTED)?,
            Instant::now(),
        ))
    };
    let (c0, v0, i0, f0, t0) = read().ok_or("cannot read the observer's /proc entries")?;
    std::thread::sleep(window);
    let (c1, v1, i1, f1, t1) = read().ok_or("cannot read the observer's /proc entries")?;
    let end = Instant::now() + Duration::from_secs(beats / 10 + 30);
    for c in &mut agents.0 {
        while matches!(c.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(agents);
    obs.stop();
    let (mut sent, mut dropped, mut reports) = (0u64, 0u64, 0usize);
    for line in std::fs::read_to_string(&report).unwrap_or_default().lines() {
        let field = |k: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.parse().ok())
                .unwrap_or(0)
        };
        sent += field("sent=");
        dropped += field("dropped=");
        reports += 1;
    }
    let secs = t1.duration_since(t0).as_secs_f64();
    Ok(UnixFleet {
        agents: n,
        secs,
        cpu_pct: 100.0 * c1.saturating_sub(c0) as f64 / 1e9 / secs,
        wakeups: v1.saturating_sub(v0) as f64 / secs,
        preempted: i1.saturating_sub(i0) as f64 / secs,
        frames: (f1 - f0) / secs,
        reports,
        sent,
        dropped,
    })
}

/// What the master-key fleet measured.
pub struct MasterFleet {
    /// Receive workers of the observer.
    pub workers: u32,
    /// Distinct identities.
    pub agents: u32,
    /// Beats each sent.
    pub beats_each: u32,
    /// Agents the observer tracked at the end.
    pub tracked: f64,
    /// Beats accepted.
    pub accepted: f64,
    /// Beats accepted per second of the drain (wall clock).
    pub beats_per_s: f64,
    /// Ingest CPU ns (main loop plus receive threads) per accepted beat.
    pub cpu_per_beat: f64,
    /// Observer RSS before the load, bytes.
    pub rss_before: u64,
    /// Observer RSS after it, bytes.
    pub rss_after: u64,
    /// Datagrams the kernel dropped on the observer's full queue.
    pub dropped: f64,
    /// Datagrams each receive thread read, by worker number.
    pub spread: Vec<(u32, f64)>,
}

/// `n` distinct master-key identities, `beats_each` beats each, through a real UDP socket,
/// receiver-bound: the datagrams are queued while the observer is stopped (its receive buffer
/// sized to hold them all, so every identity arrives), then it drains them. The first beat of
/// each identity includes its key derivation and its entry in the table. The observer runs
/// `workers` receive threads with its key-derivation budget off (`--max-key-derivations-per-sec
/// 0`): the budget is a flood guard that admits new identities at its rate (a real fleet's
/// later beats get in), so with it on a drain of `n` first beats would measure the budget,
/// not the table.
///
/// # Errors
/// The observer or the generator could not run.
pub fn master_agents(
    exe: &Path,
    obs_exe: &ObserverExe,
    a: &BenchArgs,
    dir: &Path,
    n: u32,
    workers: u32,
) -> Result<MasterFleet, String> {
    let beats_each = 2u32;
    let count = n as usize * beats_each as usize;
    // A small UDP datagram costs about 1 KiB of receive buffer (its skb's truesize).
    let rcvbuf = (count * 2048).clamp(1 << 22, (1 << 31) - 1);
    let port = free_udp_port()?;
    let kf = dir.join("master.key");
    sys::write_key(&kf, KEY_HEX).map_err(|e| format!("{}: {e}", kf.display()))?;
    let mut args: Vec<String> = vec![
        "--no-socket".into(),
        "--udp-port".into(),
        port.to_string(),
        "--udp-rcvbuf-bytes".into(),
        rcvbuf.to_string(),
        "--master-key-file".into(),
        kf.display().to_string(),
        "--threshold-ms".into(),
        "3600000".into(),
        "--tracker-capacity".into(),
        (n as usize + 1024).to_string(),
        "--max-key-derivations-per-sec".into(),
        "0".into(),
    ];
    if a.rt {
        args.extend(["--rt-priority".into(), "50".into()]);
    }
    args.extend(workers_args(workers));
    let obs = Observer::start(obs_exe, Some(a.observer_cpu), &args, false)?;
    let pid = obs.pid();
    let proc_path = format!("/proc/{pid}");
    // Let it reach its first wait before stopping it.
    std::thread::sleep(Duration::from_millis(100));
    let rss_before = sys::status_field(&proc_path, "VmRSS").unwrap_or(0) * 1024;
    sys::signal(pid, sys::STOP);
    let sent = GenRun {
        exe,
        target: vec!["--udp".into(), format!("127.0.0.1:{port}")],
        mode: GenMode::Master,
        ms: 120_000,
        pids: n,
        sources: a.sources,
        count: Some(count),
        cpu: a.load_cpu,
        rt: a.rt,
    }
    .run();
    let cpu0 = obs.ingest_cpu_ns();
    let t0 = Instant::now();
    sys::signal(pid, sys::CONT);
    std::thread::sleep(Duration::from_millis(1));
    let lead = t0.elapsed();
    let done = obs.wait_drained(Duration::from_secs(120));
    let tracked = obs.scrape("varta_watch_pids_tracked").unwrap_or(0.0);
    let dropped = obs.scrape("varta_receive_queue_drops_total").unwrap_or(0.0);
    let spread = obs.worker_datagrams();
    let rss_after = sys::status_field(&proc_path, "VmRSS").unwrap_or(0) * 1024;
    obs.stop();
    sent?;
    let done = done?;
    let cpu0 = cpu0.ok_or("cannot read the observer's CPU time")?;
    let cpu = done.cpu_ns.saturating_sub(cpu0) as f64;
    let accepted = done.accepted;
    Ok(MasterFleet {
        workers,
        agents: n,
        beats_each,
        tracked,
        accepted,
        beats_per_s: accepted / (lead + done.wall).as_secs_f64(),
        cpu_per_beat: cpu / accepted.max(1.0),
        rss_before,
        rss_after,
        dropped,
        spread,
    })
}
