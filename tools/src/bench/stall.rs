//! Stall precision: an observer (threshold 200 ms by default) pinned to the observer CPU; this
//! process, on the load CPU, keeps N plain-UDP agents beating at 10 Hz, silences one victim at
//! a time, and reads the observer's JSON event lines from a pipe: lateness = time the stall
//! line was read − (time the victim's last beat was sent + threshold). It therefore includes
//! the send→receive and pipe→reader latencies: an upper bound on the daemon's own.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::gen::{send_all, GenMode};
use super::observer::{free_udp_port, Observer, ObserverExe};
use super::BenchArgs;
use crate::seal::{Identity, MAX_DATAGRAM};
use crate::sys;

/// First pid of the stall benchmark's agents.
const BASE_PID: u32 = 200_000;

/// What one stall run measured.
pub struct StallFigures {
    /// Lateness in ms, sorted.
    pub lateness_ms: Vec<f64>,
    /// Stalls reported for agents that were not silenced.
    pub false_stalls: u64,
    /// Datagrams the kernel dropped on the observer's full queue.
    pub dropped: f64,
    /// Datagrams the observer received (all of them, flood included).
    pub received: f64,
}

impl StallFigures {
    /// The `p` quantile (0..=1) of the lateness, ms.
    #[must_use]
    pub fn pct(&self, p: f64) -> f64 {
        let v = &self.lateness_ms;
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    }
}

fn pid_in(line: &str) -> Option<u32> {
    line.split("\"pid\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
}

fn flood(exe: &Path, a: &BenchArgs, port: u16, mode: GenMode, ms: u64) -> Result<Child, String> {
    Command::new(exe)
        .arg("bench-gen")
        .args(["--udp", &format!("127.0.0.1:{port}"), "--pids", "1"])
        .args(["--ms", &ms.to_string(), "--mode", mode.name()])
        .args(["--cpu", &a.load_cpu.to_string(), "--nice", "19"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("flood: {e}"))
}

/// Runs one stall benchmark; `rt` puts the observer (and this instrument's threads) under
/// SCHED_FIFO.
///
/// # Errors
/// The observer could not start, or no stall was observed.
#[allow(
    clippy::too_many_lines,
    reason = "one sequential experiment: sender, reader, victims, teardown"
)]
pub fn run(
    exe: &Path,
    obs_exe: &ObserverExe,
    a: &BenchArgs,
    rt: bool,
) -> Result<StallFigures, String> {
    let n = a.stall_agents();
    let threshold_ns = a.threshold_ms * 1_000_000;
    let port = free_udp_port()?;
    let mut args: Vec<String> = vec![
        "--no-socket".into(),
        "--udp-port".into(),
        port.to_string(),
        "--allow-plaintext-udp".into(),
        "--threshold-ms".into(),
        a.threshold_ms.to_string(),
    ];
    if rt {
        args.extend(["--rt-priority".into(), "50".into()]);
    }
    let mut obs = Observer::start(obs_exe, Some(a.observer_cpu), &args, true)?;
    let out = obs.stdout.take().ok_or("observer stdout")?;
    let last_sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let silent_until: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let (load_cpu, samples) = (a.load_cpu, a.samples());

    // Sender: all agents every 100 ms, in 10 slices of n/10 every 10 ms.
    let sender = {
        let (last_sent, silent_until, done) = (
            Arc::clone(&last_sent),
            Arc::clone(&silent_until),
            Arc::clone(&done),
        );
        std::thread::spawn(move || -> Result<(), String> {
            sys::pin(0, load_cpu);
            if rt {
                // Part of the instrument: a preempted sender would inflate the lateness.
                sys::set_fifo(30);
            }
            let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            sock.connect(("127.0.0.1", port))
                .map_err(|e| e.to_string())?;
            let mut ids: Vec<Identity> = (0..n).map(|i| Identity::plain(BASE_PID + i)).collect();
            let slices = 10u32;
            let mut slice = 0u32;
            let t0 = Instant::now();
            let mut tick = 0u64;
            let mut bufs: Vec<(usize, [u8; MAX_DATAGRAM])> = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let lo = (slice * n / slices) as usize;
                let hi = ((slice + 1) * n / slices) as usize;
                bufs.clear();
                let now = sys::mono_ns();
                let mut len = 0;
                for (i, id) in ids.iter_mut().enumerate().take(hi).skip(lo) {
                    if silent_until[i].load(Ordering::Relaxed) > now {
                        continue;
                    }
                    let mut b = [0u8; MAX_DATAGRAM];
                    len = id.next_beat(0, now, &mut b).map_err(|e| e.to_string())?;
                    bufs.push((i, b));
                }
                let refs: Vec<&[u8]> = bufs.iter().map(|(_, b)| &b[..len]).collect();
                let t = sys::mono_ns();
                send_all(sock.as_fd(), &refs, false);
                for (i, _) in &bufs {
                    last_sent[*i].store(t, Ordering::Relaxed);
                }
                slice = (slice + 1) % slices;
                tick += 1;
                let next = t0 + Duration::from_millis(10 * tick);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            Ok(())
        })
    };

    // Reader: stall lines.
    let lateness = Arc::new(Mutex::new(Vec::<f64>::new()));
    let false_stalls = Arc::new(AtomicU64::new(0));
    let reader = {
        let (last_sent, silent_until, lateness, false_stalls) = (
            Arc::clone(&last_sent),
            Arc::clone(&silent_until),
            Arc::clone(&lateness),
            Arc::clone(&false_stalls),
        );
        std::thread::spawn(move || {
            if rt {
                // The measuring instrument must not be what is late.
                sys::set_fifo(40);
            }
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let t = sys::mono_ns();
                if !line.contains("\"kind\":\"stall\"") {
                    continue;
                }
                let Some(i) = pid_in(&line)
                    .and_then(|p| p.checked_sub(BASE_PID))
                    .filter(|i| *i < n)
                else {
                    continue;
                };
                let i = i as usize;
                if silent_until[i].load(Ordering::Relaxed) == 0 {
                    false_stalls.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let late = t as f64 - (last_sent[i].load(Ordering::Relaxed) + threshold_ns) as f64;
                if let Ok(mut v) = lateness.lock() {
                    v.push(late / 1e6);
                }
            }
        })
    };

    // Warm up 1 s, then silence victims one by one for 2.5 thresholds each, 1.5 apart.
    std::thread::sleep(Duration::from_secs(1));
    let silence = threshold_ns * 5 / 2;
    let gap = Duration::from_nanos(threshold_ns * 3 / 2);
    let mut flooder = match a.flood {
        None => None,
        Some(mode) => {
            let ms = 2_000
                + (gap.as_secs_f64() * samples as f64 * 1e3) as u64
                + (silence + threshold_ns) / 1_000_000;
            Some(flood(exe, a, port, mode, ms)?)
        }
    };
    for k in 0..samples {
        let victim = (k * 37) % n as usize;
        silent_until[victim].store(sys::mono_ns() + silence, Ordering::Relaxed);
        std::thread::sleep(gap);
    }
    std::thread::sleep(Duration::from_nanos(silence + threshold_ns));
    done.store(true, Ordering::Relaxed);
    let sent = sender.join();
    let received = obs.scrape("varta_datagrams_received_total").unwrap_or(0.0);
    let dropped = obs.scrape("varta_receive_queue_drops_total").unwrap_or(0.0);
    if let Some(f) = flooder.as_mut() {
        let _ = f.kill();
        let _ = f.wait();
    }
    obs.stop();
    let _ = reader.join();
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("stall sender: {e}")),
        Err(_) => return Err("stall sender panicked".into()),
    }
    let mut v: Vec<f64> = lateness.lock().map(|v| v.clone()).unwrap_or_default();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Err("no stall sample was observed".into());
    }
    Ok(StallFigures {
        lateness_ms: v,
        false_stalls: false_stalls.load(Ordering::Relaxed),
        dropped,
        received,
    })
}
