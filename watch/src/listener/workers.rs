//! Receive workers (`--workers N`): the UDP listener as N `SO_REUSEPORT` sockets, each read by
//! its own thread (`varta-recv-K`), which takes `recvmmsg` batches (up to [`HANDOVER`]
//! datagrams while the queue holds more), stamps them, opens their secure datagrams
//! ([`Opener`]) and hands them to the event loop.
//!
//! Master-key datagrams reach the worker of their pid ([`super::steer`]); the others are spread
//! by the kernel's hash of source and destination address, not by agent, so one agent's
//! shared-key datagrams (or a captured copy replayed from another port) may reach any worker.
//! A worker therefore decides nothing about an identity: every opened batch goes to the one
//! owner of the agent table (the event loop, [`Tracker::handle_opened`]), where the replay
//! windows, sessions and deadlines are, and events leave in one order.
//!
//! As with one socket read by the loop, a UDP datagram's arrival time is when it was read (no
//! kernel stamp: it would cost every datagram a control message), so a beat that arrives
//! within the read latency (tens of microseconds) of its agent's deadline counts as late.
//! At shutdown the workers are stopped and what they had read is handed to the table
//! ([`Workers::shutdown`]); datagrams still queued on the sockets the observer bound itself
//! go with them (a socket passed by systemd keeps its queue).
//!
//! Bounded by construction: each worker owns [`DEPTH`] batch buffers that circulate between
//! it and the loop (no allocation in steady state); when all are in the loop's queue the
//! worker stops reading and the kernel's receive queue holds the rest (its drops are counted,
//! `varta_receive_queue_drops_total`). The loop sleeps on one eventfd the workers write after
//! each hand-over.
//!
//! [`Tracker::handle_opened`]: crate::tracker::Tracker::handle_opened

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};

use super::{io_err, ListenError, RecvBatch, UdpListener, BATCH, DGRAM_BUF};
use crate::tracker::{Nanos, Opened, Opener, Origin, UdpMode, OPEN_BATCH};

/// Batch buffers per worker: how many batches a worker may have handed over and the loop not
/// yet taken.
pub const DEPTH: usize = 8;

/// Datagrams one hand-over carries at most: while `recvmmsg` keeps returning full batches (a
/// queue that holds more), a worker reads up to this many before handing them over, so a busy
/// loop is woken once per this many rather than per [`BATCH`]; a partial batch is handed over
/// at once.
pub const HANDOVER: usize = 4 * BATCH;

/// A batch's datagrams as [`crate::tracker::Tracker::handle_batch`] takes them:
/// `(arrival, origin, bytes)`.
pub type Items<'a> = [(Nanos, Origin, &'a [u8]); HANDOVER];

/// One batch a worker read and opened.
pub struct OpenedBatch {
    worker: usize,
    /// Key generation the datagrams were opened under.
    pub generation: u64,
    /// Datagrams in the batch.
    pub len: usize,
    /// Of which longer than the receive buffer (cut by the kernel).
    pub truncated: u64,
    /// `recvmmsg` errors other than would-block met before this batch.
    pub recv_errors: u64,
    arrivals: [Nanos; HANDOVER],
    origins: [Origin; HANDOVER],
    lens: [u8; HANDOVER],
    bytes: [[u8; DGRAM_BUF]; HANDOVER],
    /// What the worker opened for each datagram.
    pub opened: [Option<Opened>; HANDOVER],
}

impl OpenedBatch {
    fn new(worker: usize) -> Box<OpenedBatch> {
        Box::new(OpenedBatch {
            worker,
            generation: 0,
            len: 0,
            truncated: 0,
            recv_errors: 0,
            arrivals: [0; HANDOVER],
            origins: [Origin::Udp { listener: 0 }; HANDOVER],
            lens: [0; HANDOVER],
            bytes: [[0; DGRAM_BUF]; HANDOVER],
            opened: std::array::from_fn(|_| None),
        })
    }

    /// The worker that read it.
    #[must_use]
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The datagrams (`(arrival, origin, bytes)`, as [`crate::tracker::Tracker::handle_batch`]
    /// takes them; the first [`OpenedBatch::len`] are filled) and what was opened for each.
    pub fn split(&mut self) -> (Items<'_>, &mut [Option<Opened>; HANDOVER]) {
        let mut items = [(0, Origin::Udp { listener: 0 }, &[][..]); HANDOVER];
        for (i, item) in items.iter_mut().enumerate().take(self.len) {
            *item = (
                self.arrivals[i],
                self.origins[i],
                &self.bytes[i][..usize::from(self.lens[i])],
            );
        }
        (items, &mut self.opened)
    }
}

/// The keys the workers open with, and their generation (bumped by a reload).
struct Keys {
    generation: AtomicU64,
    modes: Mutex<Vec<UdpMode>>,
}

/// The receive workers of one UDP listener (see the module docs).
pub struct Workers {
    index: usize,
    socks: Vec<Arc<UdpListener>>,
    ready: Receiver<Box<OpenedBatch>>,
    free: Vec<SyncSender<Box<OpenedBatch>>>,
    wake: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    stop_fd: Arc<OwnedFd>,
    keys: Arc<Keys>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("index", &self.index)
            .field("workers", &self.socks.len())
            .finish_non_exhaustive()
    }
}

/// What one worker thread needs.
struct Worker {
    index: usize,
    sock: Arc<UdpListener>,
    ready: SyncSender<Box<OpenedBatch>>,
    free: Receiver<Box<OpenedBatch>>,
    wake: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    stop_fd: Arc<OwnedFd>,
    keys: Arc<Keys>,
    opener: Opener,
}

/// Settings of [`Workers::start`].
#[derive(Debug, Clone, Copy)]
pub struct WorkerLimits {
    /// Agent keys each worker keeps at most.
    pub max_keys: usize,
    /// New agent keys each worker derives per second at most (burst as many; 0: unbounded).
    pub derivations_per_sec: u32,
}

/// `count` sockets for `first`'s address: `first` itself and `count - 1` more bound with
/// `SO_REUSEPORT` beside it (it must have `SO_REUSEPORT` on, as [`UdpListener::bind_shared`]
/// sets; a socket passed by systemd needs `ReusePort=yes`), socket `k` of the group being
/// `result[k]`, with master-key datagrams routed by pid ([`super::steer`]).
///
/// # Errors
/// [`ListenError::Io`] naming the address.
pub fn siblings(first: UdpListener, count: usize) -> Result<Vec<UdpListener>, ListenError> {
    let addr = first
        .local_addr()
        .map_err(io_err("read the address of", "the UDP socket"))?;
    let mut socks = vec![first];
    for _ in 1..count {
        socks.push(UdpListener::bind_shared(addr).map_err(|e| match e {
            ListenError::Io { err, .. } if err.kind() == io::ErrorKind::AddrInUse => {
                ListenError::Io {
                    op: "bind a receive worker's socket beside",
                    what: format!(
                        "{addr} (--workers: the first socket needs SO_REUSEPORT; a socket passed by systemd needs ReusePort=yes)"
                    ),
                    err,
                }
            }
            other => other,
        })?);
    }
    if let Ok(n @ 2..) = u32::try_from(count) {
        super::steer::attach(socks[0].as_fd(), n).map_err(io_err(
            "attach the routing program (SO_ATTACH_REUSEPORT_CBPF) to",
            addr,
        ))?;
    }
    Ok(socks)
}

impl Workers {
    /// Starts one worker per socket (all bound to one address, see [`siblings`]) for UDP
    /// listener `index`, opening with `modes` (key generation 0); `clock` is the daemon's
    /// monotonic clock.
    ///
    /// # Errors
    /// The eventfd or a thread could not be made.
    pub fn start(
        socks: Vec<UdpListener>,
        index: usize,
        modes: &[UdpMode],
        limits: WorkerLimits,
        clock: impl Fn() -> Nanos + Send + Clone + 'static,
    ) -> io::Result<Workers> {
        let wake = Arc::new(eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?);
        let stop_fd = Arc::new(eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?);
        let stop = Arc::new(AtomicBool::new(false));
        let keys = Arc::new(Keys {
            generation: AtomicU64::new(0),
            modes: Mutex::new(modes.to_vec()),
        });
        let (ready_tx, ready) = sync_channel(socks.len() * DEPTH);
        let socks: Vec<Arc<UdpListener>> = socks.into_iter().map(Arc::new).collect();
        let mut pool = Workers {
            index,
            socks: socks.clone(),
            ready,
            free: Vec::new(),
            wake,
            stop,
            stop_fd,
            keys,
            threads: Vec::new(),
        };
        for (at, sock) in socks.into_iter().enumerate() {
            let (free_tx, free_rx) = sync_channel(DEPTH);
            for _ in 0..DEPTH {
                let _ = free_tx.try_send(OpenedBatch::new(at));
            }
            pool.free.push(free_tx);
            let w = Worker {
                index,
                sock,
                ready: ready_tx.clone(),
                free: free_rx,
                wake: Arc::clone(&pool.wake),
                stop: Arc::clone(&pool.stop),
                stop_fd: Arc::clone(&pool.stop_fd),
                keys: Arc::clone(&pool.keys),
                opener: Opener::new(
                    modes.to_vec(),
                    0,
                    limits.max_keys,
                    limits.derivations_per_sec,
                ),
            };
            let clock = clock.clone();
            let h = std::thread::Builder::new()
                .name(format!("varta-recv-{at}"))
                .spawn(move || {
                    // A worker that died would leave its share of the agents unread (they
                    // would look stalled): the observer stops instead, for its supervisor to
                    // restart it.
                    let run = std::panic::AssertUnwindSafe(|| w.run(&clock));
                    if std::panic::catch_unwind(run).is_err() {
                        eprintln!("varta-watch: receive worker {at} failed; stopping");
                        std::process::abort();
                    }
                })?;
            pool.threads.push(h);
        }
        Ok(pool)
    }

    /// The next batch handed over, if any (never blocks).
    pub fn take(&self) -> Option<Box<OpenedBatch>> {
        match self.ready.try_recv() {
            Ok(b) => Some(b),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => {
                // Reset the wake-up, then look again: a batch handed over meanwhile was
                // either taken now or wrote the eventfd after this read.
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&*self.wake, &mut buf);
                let b = self.ready.try_recv().ok();
                if b.is_some() {
                    // The reset may have swallowed the wake-up of a batch behind this one:
                    // stay readable, so a loop that stops taking now comes back for it.
                    let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
                }
                b
            }
        }
    }

    /// Stops the workers and returns every batch they had read, to be handed to the table
    /// (the loop is ending). Bounded: a worker notices within one read.
    pub fn shutdown(&mut self) -> Vec<Box<OpenedBatch>> {
        self.stop.store(true, Ordering::Release);
        let _ = rustix::io::write(&*self.stop_fd, &1u64.to_ne_bytes());
        let mut out = Vec::new();
        let give = |out: &mut Vec<Box<OpenedBatch>>, pool: &Workers| {
            while let Ok(b) = pool.ready.try_recv() {
                out.push(b);
            }
        };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.threads.iter().any(|h| !h.is_finished()) && std::time::Instant::now() < end {
            // A worker waiting for a buffer gets a fresh one (its own are with the loop).
            for (k, tx) in self.free.iter().enumerate() {
                let _ = tx.try_send(OpenedBatch::new(k));
            }
            give(&mut out, self);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.free.clear();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        give(&mut out, self);
        out
    }

    /// Returns a batch's buffer to its worker.
    pub fn give_back(&self, b: Box<OpenedBatch>) {
        if let Some(tx) = self.free.get(b.worker) {
            // Never full: the worker owns exactly DEPTH buffers.
            let _ = tx.try_send(b);
        }
    }

    /// The workers open with `modes` from now on; returns the new key generation (batches
    /// opened under an older one are opened again by the table's owner).
    pub fn rekey(&self, modes: &[UdpMode]) -> u64 {
        let mut m = self
            .keys
            .modes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m = modes.to_vec();
        self.keys.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The key generation the workers open under now.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.keys.generation.load(Ordering::Acquire)
    }

    /// Workers running.
    #[must_use]
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// Whether there is no worker (never: at least one is started).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    /// The UDP listener's number.
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The shared address.
    ///
    /// # Errors
    /// The `getsockname` error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socks[0].local_addr()
    }

    /// Datagrams the kernel dropped on full receive queues, over every socket.
    #[must_use]
    pub fn kernel_drops(&self) -> Option<u32> {
        let sum = self
            .socks
            .iter()
            .map(|s| s.kernel_drops().ok().map(u64::from))
            .sum::<Option<u64>>()?;
        Some(u32::try_from(sum).unwrap_or(u32::MAX))
    }
}

impl AsFd for Workers {
    /// Readable when a batch was handed over.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = rustix::io::write(&*self.stop_fd, &1u64.to_ne_bytes());
        // The buffer senders go first, so a worker waiting for a buffer sees the loop gone
        // (one handing over never waits: the queue has room for every buffer).
        self.free.clear();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl Worker {
    fn run(mut self, clock: &impl Fn() -> Nanos) {
        let mut rb = RecvBatch::new();
        let mut spare: Option<Box<OpenedBatch>> = None;
        let mut errors = 0u64;
        while !self.stop.load(Ordering::Acquire) {
            let mut out = match spare.take() {
                Some(b) => b,
                // Waits while every buffer is with the loop (backpressure).
                None => match self.free.recv() {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            match self.sock.try_recv(&mut rb) {
                Ok(mut n) => {
                    out.len = 0;
                    out.truncated = 0;
                    loop {
                        rb.stamp(clock());
                        self.append(&mut out, &rb, n);
                        // A full batch: the queue may hold more; read on, up to a hand-over.
                        if n < BATCH || out.len + BATCH > HANDOVER {
                            break;
                        }
                        match self.sock.try_recv(&mut rb) {
                            Ok(m) => n = m,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                errors += 1;
                                break;
                            }
                        }
                    }
                    self.open(&mut out, clock());
                    out.recv_errors = std::mem::take(&mut errors);
                    if self.ready.send(out).is_err() {
                        return;
                    }
                    let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    spare = Some(out);
                    self.sleep(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => spare = Some(out),
                Err(_) => {
                    spare = Some(out);
                    errors += 1;
                    // A socket error (an ICMP report, say) is counted and read past; a short
                    // pause keeps a persistent one from spinning.
                    self.sleep(Some(10));
                }
            }
        }
    }

    /// Appends the `n` datagrams of `rb` to `out` (within its room).
    fn append(&self, out: &mut OpenedBatch, rb: &RecvBatch, n: usize) {
        let n = n.min(BATCH).min(HANDOVER - out.len);
        for i in 0..n {
            let at = out.len + i;
            out.truncated += u64::from(rb.truncated(i));
            let data = rb.data(i);
            out.lens[at] = u8::try_from(data.len()).unwrap_or(u8::MAX);
            out.bytes[at][..data.len()].copy_from_slice(data);
            out.arrivals[at] = rb.arrival(i);
            out.origins[at] = match rb.source(i) {
                Some(source) => Origin::UdpFrom {
                    listener: self.index,
                    source,
                },
                None => Origin::Udp {
                    listener: self.index,
                },
            };
        }
        out.len += n;
    }

    /// Opens the secure datagrams of `out`, [`OPEN_BATCH`] at a time, under the newest keys.
    fn open(&mut self, out: &mut OpenedBatch, now: Nanos) {
        let generation = self.keys.generation.load(Ordering::Acquire);
        if generation != self.opener.generation() {
            let modes = self
                .keys
                .modes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            self.opener.rekey(modes, generation);
        }
        out.generation = self.opener.generation();
        let n = out.len;
        let (items, opened) = out.split();
        for (chunk, opened) in items[..n]
            .chunks(OPEN_BATCH)
            .zip(opened[..n].chunks_mut(OPEN_BATCH))
        {
            self.opener.open(now, chunk, opened);
        }
    }

    /// Sleeps until the socket is readable or the pool stops (or `ms` pass).
    fn sleep(&self, ms: Option<u64>) {
        let mut fds = [
            PollFd::new(&*self.sock, PollFlags::IN),
            PollFd::new(&*self.stop_fd, PollFlags::IN),
        ];
        let timeout = ms.map(|ms| rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: i64::try_from(ms * 1_000_000).unwrap_or(0),
        });
        let _ = poll(&mut fds, timeout.as_ref());
    }
}

#[cfg(test)]
mod tests;
