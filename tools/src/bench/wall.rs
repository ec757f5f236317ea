//! Receiver-bound ingest in wall-clock time, the observer on every CPU: does the observer with
//! N receive workers drain a queue N times as fast?
//!
//! The per-CPU-second drain ([`super::ingest::drain`]) pins every observer thread to one CPU,
//! so it compares costs, not parallelism. Here nothing is pinned: `n` datagrams are queued
//! while the observer is stopped (SIGSTOP; the generator has exited before the drain starts,
//! so every CPU is free), then the time from SIGCONT to *drained* is taken:
//!
//! * every receive queue of the observer's port is empty (`/proc/net/udp{,6}`: one line per
//!   `SO_REUSEPORT` socket, found by port and by the inodes in the observer's `/proc/PID/fd`),
//! * and then every ingest thread sleeps (`S`), the receive threads read first, the event loop
//!   last: with the queues empty, a receive thread asleep has handed over its last batch and
//!   woken the loop, so the loop seen asleep after it has handled that batch.
//!
//! One scrape then confirms `varta_frames_accepted_total` equals the datagrams queued less
//! the kernel's drops (the listing's `drops`, reported; they should be 0); were it short,
//! polling goes on and the recheck is counted.
//!
//! Polls come every [`POLL`] near the end. Before, while the queues still hold much, the
//! poller sleeps half the time they would take to empty at the rate seen so far (at most
//! [`MAX_PAUSE`]): on a machine of few CPUs a poller waking every 200 us would take a fifth of
//! a CPU (the timer wake-up costs more than the reads) from the threads it watches. The end is
//! still seen within [`POLL`] unless the drain more than doubles its pace within one pause.
//!
//! The bare receiver (one thread of this process, on every CPU) drains the same queue size
//! with the observer's `recvmmsg` calls and times itself from its first call to the empty
//! queue.
//!
//! Beside the rates: how many CPUs the receiving threads kept busy (their `schedstat` CPU time
//! over the wall time) and how long they were runnable but waiting for a CPU (`schedstat`'s
//! run delay): on a shared machine other processes take CPUs too, and that is where it shows.
//! Watching costs the poller's own CPU (reported): a few microseconds per poll, most of it
//! the timer wake-up.

use std::net::UdpSocket;
use std::num::NonZeroU64;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use varta_watch::listener::RecvBatch;

use super::ingest::{self, Spread};
use super::observer::{self, free_udp_port, Observer, ObserverExe, ACCEPTED, RECV_THREAD};
use super::procnet::{PortQueues, Reread};
use super::{BenchArgs, Transport};
use crate::sys;

/// Pause between two polls of the observer's queues and threads near the end of a drain: the
/// resolution of the drain time.
pub const POLL: Duration = Duration::from_micros(200);

/// Longest pause between two polls while the queues still hold much.
pub const MAX_PAUSE: Duration = Duration::from_millis(5);

/// Longest drain waited for.
const LIMIT: Duration = Duration::from_secs(30);

/// One receiver's wall-clock drain.
#[derive(Debug, Clone)]
pub struct WallPhase {
    /// Datagrams queued (the generator's count; the bare receiver's: those it read).
    pub queued: u64,
    /// Datagrams drained (the observer: frames accepted).
    pub n: u64,
    /// From SIGCONT (the bare receiver: its first read) to drained.
    pub wall: Duration,
    /// Datagrams the kernel dropped on the receiving sockets.
    pub drops: u64,
    /// The observer's per-worker counts.
    pub spread: Spread,
    /// CPU time of the receiving threads over the drain, ns (the observer: every ingest
    /// thread; `schedstat`).
    pub cpu_ns: u64,
    /// Time the receiving threads were runnable but waiting for a CPU, ns (summed like
    /// `cpu_ns`): other processes of the machine, or each other, held the CPUs.
    pub runq_ns: u64,
    /// The observer's drain: polls made, the poller's CPU time (ns), and the times the queues
    /// and threads looked drained but the accepted count fell short.
    pub poll: Option<PollCost>,
}

/// What watching a drain cost.
#[derive(Debug, Clone, Copy)]
pub struct PollCost {
    /// Polls made.
    pub polls: u64,
    /// CPU time of the polling thread, ns.
    pub cpu_ns: u64,
    /// Drained-looking checks the scrape contradicted.
    pub rechecks: u32,
}

impl WallPhase {
    /// Datagrams per wall second.
    #[must_use]
    pub fn rate(&self) -> f64 {
        self.n as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// CPUs the receiving threads kept busy on average over the drain, percent of one.
    #[must_use]
    pub fn busy_pct(&self) -> f64 {
        100.0 * self.cpu_ns as f64 / self.wall.as_nanos().max(1) as f64
    }

    /// The receiving threads' waits for a CPU over the drain, percent of its wall time.
    #[must_use]
    pub fn runq_pct(&self) -> f64 {
        100.0 * self.runq_ns as f64 / self.wall.as_nanos().max(1) as f64
    }
}

/// One wall-clock round: the bare receiver, then the observer at each worker count.
pub struct WallRound {
    /// The bare receiver.
    pub bare: WallPhase,
    /// The observer, one entry per asked worker count, in order.
    pub observer: Vec<Result<WallPhase, String>>,
}

/// A thread's `/proc/.../stat`, kept open.
struct ThreadState(Reread);

impl ThreadState {
    fn open(pid: u32, tid: u32) -> Result<ThreadState, String> {
        Reread::open(&format!("/proc/{pid}/task/{tid}/stat")).map(ThreadState)
    }

    /// Sleeping (`S`): the state letter follows the command name's closing parenthesis.
    fn asleep(&mut self) -> Result<bool, String> {
        let s = self.0.read()?;
        Ok(s.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            == Some('S'))
    }
}

/// The observer's receive queues and ingest threads, polled.
struct DrainWatch {
    queues: PortQueues,
    /// Receive threads first, the event loop last.
    threads: Vec<ThreadState>,
}

impl DrainWatch {
    /// Finds the `workers` sockets on `port` and the ingest threads of `pid`.
    fn find(pid: u32, port: u16, workers: u32) -> Result<DrainWatch, String> {
        let queues = PortQueues::find(pid, port, workers as usize)?;
        let mut tids = observer::ingest_threads(pid);
        let recv = if workers > 1 { workers as usize } else { 0 };
        if tids.len() != 1 + recv {
            return Err(format!(
                "the observer has {} {RECV_THREAD}-* threads, expected {recv}",
                tids.len() - 1
            ));
        }
        tids.rotate_left(1);
        let threads = tids
            .into_iter()
            .map(|t| ThreadState::open(pid, t))
            .collect::<Result<_, _>>()?;
        Ok(DrainWatch { queues, threads })
    }

    fn all_asleep(&mut self) -> Result<bool, String> {
        for t in &mut self.threads {
            if !t.asleep()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Bytes still queued on the observer's sockets, and the kernel's drops there.
    fn queued(&mut self) -> Result<(u64, u64), String> {
        let q = self.queues.read()?;
        Ok((
            q.iter().map(|q| q.rx_bytes).sum(),
            q.iter().map(|q| q.drops).sum(),
        ))
    }

    /// Continues `obs` (stopped, `queued` datagrams waiting) and waits until it has drained
    /// them: returns the wall time from SIGCONT, the kernel's drops, the frames accepted and
    /// the polling cost.
    fn run(
        &mut self,
        obs: &Observer,
        queued: u64,
    ) -> Result<(Duration, u64, u64, PollCost), String> {
        let mut cost = PollCost {
            polls: 0,
            cpu_ns: 0,
            rechecks: 0,
        };
        // The default 50 us timer slack would stretch every pause by a quarter.
        let slack = rustix::thread::current_timer_slack().ok();
        let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1_000));
        let done = self.poll(obs, queued, &mut cost);
        let _ = rustix::thread::set_current_timer_slack(slack.and_then(NonZeroU64::new));
        done.map(|(wall, drops, accepted)| (wall, drops, accepted, cost))
    }

    /// [`DrainWatch::run`]'s loop (see the module docs for the pauses); the poller's CPU time
    /// is taken up to the poll that saw the drain done.
    fn poll(
        &mut self,
        obs: &Observer,
        queued: u64,
        cost: &mut PollCost,
    ) -> Result<(Duration, u64, u64), String> {
        let (bytes0, _) = self.queued()?;
        let cpu0 = sys::thread_cpu_ns();
        let t0 = Instant::now();
        if !sys::signal(obs.pid(), sys::CONT) {
            return Err("the observer is gone".into());
        }
        let mut next = t0;
        while t0.elapsed() < LIMIT {
            cost.polls += 1;
            let (left, drops) = self.queued()?;
            let mut pause = POLL;
            if left > 0 {
                let gone = bytes0.saturating_sub(left);
                if gone > 0 {
                    let to_empty = t0.elapsed().mul_f64(left as f64 / gone as f64);
                    pause = (to_empty / 2).clamp(POLL, MAX_PAUSE);
                }
            } else if self.all_asleep()? {
                let wall = t0.elapsed();
                cost.cpu_ns = sys::thread_cpu_ns() - cpu0;
                let accepted = obs
                    .scrape(ACCEPTED)
                    .ok_or("cannot scrape the observer's metrics")?;
                // Exact: an f64 holds integers far past any queue.
                let accepted = accepted as u64;
                if accepted + drops >= queued {
                    return Ok((wall, drops, accepted));
                }
                cost.rechecks += 1;
            }
            // Pauses counted from the previous poll's start; one that overran (a scrape) starts
            // afresh.
            let now = Instant::now();
            next += pause;
            if next < now {
                next = now + pause;
            }
            std::thread::sleep(next - now);
        }
        Err(format!(
            "the observer was still draining after {} s",
            LIMIT.as_secs()
        ))
    }
}

/// One wall-clock round of `n` datagrams over UDP transport `t`: the bare receiver, then the
/// observer at each of `workers` receive-worker counts, nothing pinned.
///
/// # Errors
/// The bare phase could not run (an observer phase's failure is in its entry).
pub fn drain(
    exe: &Path,
    obs_exe: &ObserverExe,
    a: &BenchArgs,
    t: Transport,
    dir: &Path,
    n: usize,
    workers: &[u32],
) -> Result<WallRound, String> {
    let rcvbuf = ingest::drain_rcvbuf(n);
    let bare = bare(exe, a, t, n, rcvbuf)?;
    let observer = workers
        .iter()
        .map(|&w| {
            let port = free_udp_port()?;
            let args = ingest::drain_observer_args(t, dir, port, a.rt, rcvbuf, w)?;
            let obs = Observer::start(obs_exe, None, &args, false)?;
            // Let it reach its first wait before stopping it.
            std::thread::sleep(Duration::from_millis(100));
            let mut watch = DrainWatch::find(obs.pid(), port, w)?;
            sys::signal(obs.pid(), sys::STOP);
            let sent = ingest::drain_gen(exe, a, t, n, format!("127.0.0.1:{port}")).run();
            let sched0 = ingest_sched(obs.pid());
            let done = match sent {
                Ok((queued, _)) => watch.run(&obs, queued).map(|d| (queued, d)),
                Err(e) => Err(e),
            };
            // A stopped process would hold SIGTERM until continued.
            sys::signal(obs.pid(), sys::CONT);
            // Every ingest thread sleeps now: their CPU time stands still.
            let sched1 = ingest_sched(obs.pid());
            let spread = obs.worker_datagrams();
            obs.stop();
            let (queued, (wall, drops, accepted, cost)) = done?;
            let (Some(s0), Some(s1)) = (sched0, sched1) else {
                return Err("cannot read the observer's schedstat".into());
            };
            Ok(WallPhase {
                queued,
                n: accepted,
                wall,
                drops,
                spread,
                cpu_ns: s1.0.saturating_sub(s0.0),
                runq_ns: s1.1.saturating_sub(s0.1),
                poll: Some(cost),
            })
        })
        .collect();
    Ok(WallRound { bare, observer })
}

/// The bare receiver's phase: `n` datagrams queued on a socket of this process, then read by
/// one thread on every CPU until the queue is empty.
fn bare(
    exe: &Path,
    a: &BenchArgs,
    t: Transport,
    n: usize,
    rcvbuf: usize,
) -> Result<WallPhase, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    ingest::set_socket(sock.as_fd(), rcvbuf);
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let mut queue = PortQueues::find(std::process::id(), addr.port(), 1)?;
    let (queued, _) = ingest::drain_gen(exe, a, t, n, addr.to_string()).run()?;
    let drops = queue.read()?.iter().map(|q| q.drops).sum();
    let fd = sock.as_raw_fd();
    let rt = a.rt;
    let (got, wall, sched) = std::thread::spawn(move || {
        observer::place(0, None);
        if rt {
            sys::set_fifo(50);
        }
        let mut batch = RecvBatch::new();
        let pid = std::process::id();
        let tid = rustix::thread::gettid()
            .as_raw_nonzero()
            .get()
            .unsigned_abs();
        let s0 = sched(pid, tid);
        let t0 = Instant::now();
        let mut got = 0u64;
        while let Ok(k) = batch.recv_raw(fd, false) {
            if k == 0 {
                break;
            }
            got += k as u64;
        }
        let wall = t0.elapsed();
        let s1 = sched(pid, tid);
        (got, wall, s0.zip(s1))
    })
    .join()
    .map_err(|_| "bare receiver panicked")?;
    drop(sock);
    let (s0, s1) = sched.ok_or("cannot read the bare receiver's schedstat")?;
    Ok(WallPhase {
        queued,
        n: got,
        wall,
        drops,
        spread: Vec::new(),
        cpu_ns: s1.0.saturating_sub(s0.0),
        runq_ns: s1.1.saturating_sub(s0.1),
        poll: None,
    })
}

/// Thread `tid` of process `pid`: time on a CPU and time runnable waiting for one, ns
/// (`/proc/PID/task/TID/schedstat`'s first two fields).
fn sched(pid: u32, tid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    let mut f = s.split_whitespace().map(str::parse::<u64>);
    Some((f.next()?.ok()?, f.next()?.ok()?))
}

/// [`sched`] summed over the observer's ingest threads.
fn ingest_sched(pid: u32) -> Option<(u64, u64)> {
    observer::ingest_threads(pid)
        .into_iter()
        .map(|t| sched(pid, t))
        .try_fold((0, 0), |(c, w), s| s.map(|(c1, w1)| (c + c1, w + w1)))
}
