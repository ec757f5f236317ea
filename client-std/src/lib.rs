//! `varta-client`: tell a Varta observer, once per loop iteration, that this process is still
//! making progress.
//!
//! ```no_run
//! use varta_client::{BeatOutcome, Status, Varta};
//!
//! let mut varta = Varta::connect("/run/varta/observer.sock")?;
//! loop {
//!     // ... one unit of work ...
//!     match varta.beat(Status::Ok, 0) {
//!         BeatOutcome::Sent | BeatOutcome::Dropped(_) => {}
//!         BeatOutcome::Failed(e) => eprintln!("heartbeat failed: {e}"),
//!     }
//! #   break;
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Architecture
//!
//! Two layers, each with one job:
//!
//! * **The sender** ([`vlp_core::sender::Sender`], shared with the firmware client and the
//!   load tools): owns the key class (plain 32-byte frames; 60-byte shared-key or 64-byte
//!   agent-key datagrams sealed with ChaCha20-Poly1305, VLP v0.2 §3) and the session (pid,
//!   nonce 1, 2, 3…, timestamp, AEAD IV). It *prepares* the next datagram into a stack buffer
//!   without changing state and is told to *commit* only after the kernel took it, so a
//!   dropped beat consumes neither its nonce nor its IV.
//! * **The transport** ([`BeatTransport`]): a connected non-blocking datagram socket (Unix or
//!   UDP), or your own. It reads no clock and keeps no protocol state.
//!
//! [`Varta`] is the thin shell that owns them: it reads the monotonic clock
//! (`CLOCK_MONOTONIC`, the clock behind [`std::time::Instant`]; frames carry nanoseconds
//! since `connect`), checks for a fork, and classifies
//! the send's result into a [`BeatOutcome`].
//!
//! # Guarantees
//!
//! * **No heap allocation and no blocking per beat** after `connect`, on every path: sent,
//!   dropped, failed, sealed, and the automatic reconnect. (Tested with a counting global
//!   allocator over 10,000+ beats per transport.)
//! * **Fork safety.** A forked child notices the fork on its next beat, opens its own
//!   socket, restarts the nonce sequence at 1 and, on secure transports, draws a fresh IV salt
//!   from OS entropy (`getrandom(2)`), so no (key, IV) pair is ever used twice across the
//!   fork ([`Varta::fork_recoveries`] counts these). A master-key client derives the agent key
//!   for the child's pid; an agent-key client keeps its agent id. Detection costs one memory
//!   load per beat: a `MADV_WIPEONFORK` page that the kernel zeroes in every child, however
//!   it was made (`fork()`, a raw `clone(2)`);
//!   a wiped page restarts the session even when `getpid()` matches the old pid (pid reuse by
//!   a grandchild). Where the kernel lacks it (before Linux 4.14) a changed `getpid()` is the
//!   fallback.
//! * [`Status::Stall`] is observer-only: `beat(Status::Stall, _)` is refused with
//!   [`BeatOutcome::Failed`] ([`BeatError::INVALID_INPUT`]) and nothing is sent.
//! * No function panics on anything the network or the OS returns.
//!
//! # Wire conventions for the end of an agent
//!
//! Both are ordinary VLP v0.2 *terminal* frames (status Critical, nonce
//! [`NONCE_TERMINAL`] = `u64::MAX`), valid for every v0.2 observer:
//!
//! * **Crash**: the panic hook ([`install_panic_handler`], feature `panic-handler`) sends a
//!   terminal frame with payload [`PANIC_PAYLOAD`] (0) before the previous hook runs.
//! * **Clean exit**: [`Varta::goodbye`] sends a terminal frame whose payload is
//!   [`GOODBYE_PAYLOAD`], the bytes `"BYE!"` (`0x2145_5942` little-endian). Varta's observer
//!   treats it as an announced departure (no stall, no recovery); an observer that does not
//!   know the convention sees a dying agent, the safe reading. Nothing is sent on `Drop`: a
//!   goodbye must be said on purpose, never by an unwinding stack.
//!
//! # Queue length of Unix sockets
//!
//! Linux queues at most `net.unix.max_dgram_qlen` + 1 datagrams per Unix datagram socket
//! (the default is 10, unless systemd raised it). A burst beyond that, or an observer that is
//! slow to read, yields [`DropReason::KernelQueueFull`] rather than blocking. Raise the limit
//! with `sysctl -w net.unix.max_dgram_qlen=512` (persist it in `/etc/sysctl.d/`).
//!
//! # Features
//!
//! All on by default; each only adds API (the cipher is compiled into `vlp-core` anyway).
//!
//! * `udp`: [`Varta::connect_udp`].
//! * `secure-udp` (implies `udp`): [`Varta::connect_secure_udp`],
//!   [`Varta::connect_secure_udp_with_agent_key`], [`Varta::connect_secure_udp_with_master`].
//! * `panic-handler`: [`install_panic_handler`] and its UDP forms.
#![warn(missing_docs)]

mod clock;
mod entropy;
mod fork;
mod outcome;
#[cfg(feature = "panic-handler")]
mod panic;
mod transport;

use std::io;
#[cfg(feature = "udp")]
use std::net::ToSocketAddrs;
use std::path::Path;

use vlp_core::sender::{Kind, Sender, MAX_DATAGRAM_LEN};
use vlp_core::SessionError;

pub use outcome::{classify_send_error, BeatError, BeatOutcome, DropReason};
#[cfg(all(feature = "panic-handler", feature = "udp"))]
pub use panic::install_panic_handler_udp;
#[cfg(feature = "panic-handler")]
pub use panic::{install_panic_handler, install_panic_handler_with};
#[cfg(all(feature = "panic-handler", feature = "secure-udp"))]
pub use panic::{
    install_panic_handler_secure_udp, install_panic_handler_secure_udp_with_agent_key,
    install_panic_handler_secure_udp_with_master,
};
#[cfg(feature = "secure-udp")]
pub use transport::SecureUdpTransport;
#[cfg(feature = "udp")]
pub use transport::UdpTransport;
pub use transport::{BeatTransport, Transport, UdsTransport};
pub use vlp_core;
pub use vlp_core::{DecodeError, Frame, Key, Status, FRAME_LEN, GOODBYE_PAYLOAD, NONCE_TERMINAL};

/// Payload of the terminal frame sent by the panic hook.
pub const PANIC_PAYLOAD: u32 = 0;

/// A heartbeat client: one [`Sender`] (key class and session, from `vlp-core`) and one
/// transport.
///
/// Built with [`Varta::connect`] (Unix socket, a `Varta<UdsTransport>`),
/// [`Varta::connect_udp`] (`Varta<UdpTransport>`), [`Varta::connect_secure_udp`],
/// [`Varta::connect_secure_udp_with_agent_key`], [`Varta::connect_secure_udp_with_master`]
/// (`Varta<SecureUdpTransport>`), or [`Varta::with_transport`] for your own
/// [`BeatTransport`]. `T` defaults to [`Transport`], the built-in transports as one type:
/// `Varta::from` turns any built-in client into a plain `Varta`.
pub struct Varta<T: BeatTransport = Transport> {
    transport: T,
    sender: Sender,
    /// The master key, for clients built with one: a forked child derives its own agent key.
    master: Option<Key>,
    /// Whether frames carry this process's pid (and follow it into a forked child), or a
    /// fixed agent id bound to an agent key.
    follows_pid: bool,
    /// The clock's origin ([`clock::monotonic_ns`]): timestamps are nanoseconds since it.
    epoch: u64,
    /// The process the client belongs to; a different `getpid()` means we are a forked child.
    pid: u32,
    /// The wipe-on-fork marker: one load per beat tells whether to look at `getpid()`.
    fork_watch: fork::Watch,
    reconnect_after: u32,
    consecutive_drops: u32,
    fork_recoveries: u64,
}

impl<T: BeatTransport> std::fmt::Debug for Varta<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Varta")
            .field("pid", &self.sender.pid())
            .field("envelope", &self.sender.key_class().name())
            .field("next_nonce", &self.sender.session().next_nonce())
            .field("reconnect_after", &self.reconnect_after)
            .field("consecutive_drops", &self.consecutive_drops)
            .field("fork_recoveries", &self.fork_recoveries)
            .finish_non_exhaustive()
    }
}

/// The default of [`Varta::set_reconnect_after`]: reconnect on the first drop that a new
/// connection can cure, so an agent follows an observer that restarted.
pub const DEFAULT_RECONNECT_AFTER: u32 = 1;

impl Varta<UdsTransport> {
    /// Connects to the observer's Unix datagram socket at `path`.
    ///
    /// # Errors
    /// Creating or connecting the socket failed, e.g. `NotFound` / `ConnectionRefused` when no
    /// observer is bound at `path`.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Varta<UdsTransport>> {
        Ok(Varta::with_transport(UdsTransport::connect(path)?))
    }
}

#[cfg(feature = "udp")]
impl Varta<UdpTransport> {
    /// Connects to the observer's UDP address (plain 32-byte frames, unauthenticated).
    ///
    /// # Errors
    /// The address did not resolve, or creating or connecting the socket failed.
    pub fn connect_udp(addr: impl ToSocketAddrs) -> io::Result<Varta<UdpTransport>> {
        Ok(Varta::with_transport(UdpTransport::connect(addr)?))
    }
}

#[cfg(feature = "secure-udp")]
impl Varta<SecureUdpTransport> {
    /// Connects to the observer's UDP address, sealing every frame with the shared `key` into
    /// a 60-byte datagram (VLP v0.2 §3).
    ///
    /// # Errors
    /// As [`Varta::connect_udp`], or reading OS entropy for the IV salt failed.
    pub fn connect_secure_udp(
        addr: impl ToSocketAddrs,
        key: Key,
    ) -> io::Result<Varta<SecureUdpTransport>> {
        Varta::with_transport_shared_key(SecureUdpTransport::connect(addr)?, key)
    }

    /// Connects to the observer's UDP address, sealing every frame into a 64-byte datagram
    /// with this agent's own `key`, derived from the observer's master key for `agent_id`
    /// (`varta-watch key derive --agent-id N`, or [`vlp_core::kdf::derive_agent_key`] on the
    /// provisioning host). The process never holds the master key, so it cannot speak for
    /// another agent. Frames carry `agent_id` in the pid field (VLP v0.2 §5), in this process
    /// and in its forked children alike.
    ///
    /// # Errors
    /// As [`Varta::connect_secure_udp`].
    pub fn connect_secure_udp_with_agent_key(
        addr: impl ToSocketAddrs,
        agent_id: u32,
        key: Key,
    ) -> io::Result<Varta<SecureUdpTransport>> {
        Varta::with_transport_agent_key(SecureUdpTransport::connect(addr)?, agent_id, key)
    }

    /// Connects to the observer's UDP address, sealing every frame with the key derived from
    /// `master_key` for this pid into a 64-byte datagram (VLP v0.2 §3, §4). Prefer
    /// [`Varta::connect_secure_udp_with_agent_key`]: a process holding the master key can
    /// speak for every agent.
    ///
    /// # Errors
    /// As [`Varta::connect_secure_udp`].
    pub fn connect_secure_udp_with_master(
        addr: impl ToSocketAddrs,
        master_key: Key,
    ) -> io::Result<Varta<SecureUdpTransport>> {
        Varta::with_transport_master_key(SecureUdpTransport::connect(addr)?, master_key)
    }
}

/// Any built-in client as a `Varta` (over [`Transport`]), e.g. to keep clients of several
/// kinds in one collection.
impl From<Varta<UdsTransport>> for Varta {
    fn from(v: Varta<UdsTransport>) -> Varta {
        v.map_transport(Transport::Uds)
    }
}

#[cfg(feature = "udp")]
impl From<Varta<UdpTransport>> for Varta {
    fn from(v: Varta<UdpTransport>) -> Varta {
        v.map_transport(Transport::Udp)
    }
}

#[cfg(feature = "secure-udp")]
impl From<Varta<SecureUdpTransport>> for Varta {
    fn from(v: Varta<SecureUdpTransport>) -> Varta {
        v.map_transport(|t| Transport::Udp(t.into_inner()))
    }
}

fn session_error(e: SessionError) -> BeatError {
    match e {
        // A frame rule (Stall status, pid 0/1): the caller's input is invalid.
        SessionError::Frame(_)
        | SessionError::NotSecure
        | SessionError::StaleBeat
        | SessionError::KeyBoundToPid => BeatError::INVALID_INPUT,
        // 2^64 datagrams under one salt: unreachable in practice, but never reuse an IV.
        SessionError::IvExhausted => BeatError {
            errno: None,
            kind: io::ErrorKind::Other,
        },
    }
}

impl<T: BeatTransport> Varta<T> {
    fn build(transport: T, sender: Sender, master: Option<Key>, follows_pid: bool) -> Varta<T> {
        let fork_watch = fork::Watch::new();
        Varta {
            transport,
            follows_pid,
            sender,
            master,
            epoch: clock::monotonic_ns(),
            pid: std::process::id(),
            fork_watch,
            reconnect_after: DEFAULT_RECONNECT_AFTER,
            consecutive_drops: 0,
            fork_recoveries: 0,
        }
    }

    /// A started secure client: `sender` with a fresh salt from OS entropy.
    fn build_secure(
        transport: T,
        mut sender: Sender,
        master: Option<Key>,
        follows_pid: bool,
    ) -> io::Result<Varta<T>> {
        sender.start(entropy::salt()?);
        Ok(Varta::build(transport, sender, master, follows_pid))
    }

    /// The same client over another transport (same session, same keys).
    fn map_transport<U: BeatTransport>(self, f: impl FnOnce(T) -> U) -> Varta<U> {
        Varta {
            transport: f(self.transport),
            sender: self.sender,
            master: self.master,
            follows_pid: self.follows_pid,
            epoch: self.epoch,
            pid: self.pid,
            fork_watch: self.fork_watch,
            reconnect_after: self.reconnect_after,
            consecutive_drops: self.consecutive_drops,
            fork_recoveries: self.fork_recoveries,
        }
    }

    /// A client sending plain 32-byte frames over your own transport.
    #[must_use]
    pub fn with_transport(transport: T) -> Varta<T> {
        Varta::build(transport, Sender::plain(std::process::id()), None, true)
    }

    /// A client sealing 60-byte shared-key datagrams over your own transport.
    ///
    /// # Errors
    /// Reading OS entropy for the IV salt failed.
    pub fn with_transport_shared_key(transport: T, key: Key) -> io::Result<Varta<T>> {
        Varta::build_secure(
            transport,
            Sender::shared(std::process::id(), key),
            None,
            true,
        )
    }

    /// A client sealing 64-byte datagrams with `agent_id`'s own key over your own transport
    /// (see [`Varta::connect_secure_udp_with_agent_key`]).
    ///
    /// # Errors
    /// Reading OS entropy for the IV salt failed.
    pub fn with_transport_agent_key(transport: T, agent_id: u32, key: Key) -> io::Result<Varta<T>> {
        Varta::build_secure(transport, Sender::agent_key(agent_id, key), None, false)
    }

    /// A client sealing 64-byte master-key datagrams over your own transport.
    ///
    /// # Errors
    /// Reading OS entropy for the IV salt failed.
    pub fn with_transport_master_key(transport: T, master_key: Key) -> io::Result<Varta<T>> {
        let sender = Sender::master(std::process::id(), master_key.clone());
        Varta::build_secure(transport, sender, Some(master_key), true)
    }

    /// Sends one heartbeat with `status` and an opaque `payload`, without blocking or
    /// allocating.
    ///
    /// The frame carries the next nonce (1, 2, 3… per session) and the nanoseconds since
    /// `connect`. If the kernel refuses the datagram the nonce is not consumed. After
    /// [`Varta::set_reconnect_after`] consecutive drops that reconnecting may cure, the client
    /// reconnects and retries the same frame once.
    ///
    /// Returns [`BeatOutcome::Failed`] with [`BeatError::INVALID_INPUT`] for
    /// [`Status::Stall`] (observer-only) and sends nothing; likewise in a process whose pid is
    /// 1 (a container's init), which VLP v0.2 §2 rule 6 reserves.
    pub fn beat(&mut self, status: Status, payload: u32) -> BeatOutcome {
        if status == Status::Stall {
            return BeatOutcome::Failed(BeatError::INVALID_INPUT);
        }
        self.deliver(Kind::Beat(status, payload))
    }

    /// Sends a terminal frame (Critical, nonce [`NONCE_TERMINAL`]): this agent is dying.
    /// The panic hook uses it with [`PANIC_PAYLOAD`].
    pub fn terminal(&mut self, payload: u32) -> BeatOutcome {
        self.deliver(Kind::Terminal(payload))
    }

    /// Announces a clean exit: a terminal frame carrying [`GOODBYE_PAYLOAD`] (see the crate
    /// docs for the wire convention). Call it once, when the process is about to exit on
    /// purpose; if it comes back [`BeatOutcome::Dropped`] it may be retried. Beats sent after
    /// a goodbye make the observer see the agent again.
    pub fn goodbye(&mut self) -> BeatOutcome {
        self.deliver(Kind::Goodbye)
    }

    /// Replaces the transport's connection (e.g. after the observer restarted and bound its
    /// socket path again). The session continues: nonces do not restart.
    ///
    /// # Errors
    /// Creating or connecting the new socket failed; the old one stays in place.
    pub fn reconnect(&mut self) -> io::Result<()> {
        self.transport.reconnect()?;
        self.consecutive_drops = 0;
        Ok(())
    }

    /// After `n` consecutive drops for a reason a new connection may cure
    /// ([`DropReason::NoObserver`], [`DropReason::PeerGone`]), reconnect and retry the same
    /// frame once, within the same `beat` call. `0` disables it; the default is
    /// [`DEFAULT_RECONNECT_AFTER`]. A full queue never triggers a reconnect.
    pub fn set_reconnect_after(&mut self, n: u32) {
        self.reconnect_after = n;
    }

    /// The current [`Varta::set_reconnect_after`] value.
    #[must_use]
    pub const fn reconnect_after(&self) -> u32 {
        self.reconnect_after
    }

    /// Drops in a row since the last sent beat or reconnect.
    #[must_use]
    pub const fn consecutive_drops(&self) -> u32 {
        self.consecutive_drops
    }

    /// How many beats had their timestamp clamped because the clock went backwards (never,
    /// with the monotonic clock used here; kept for API compatibility and custom clocks).
    #[must_use]
    pub const fn clock_regressions(&self) -> u64 {
        self.sender.session().clock_regressions()
    }

    /// How many times this client noticed it was running in a forked child and started a
    /// fresh session.
    #[must_use]
    pub const fn fork_recoveries(&self) -> u64 {
        self.fork_recoveries
    }

    /// The pid frames carry: this process's pid, or the agent id of an agent-key client.
    #[must_use]
    pub const fn pid(&self) -> u32 {
        self.sender.pid()
    }

    /// The nonce the next regular beat will carry.
    #[must_use]
    pub const fn next_nonce(&self) -> u64 {
        self.sender.session().next_nonce()
    }

    /// The sending state (key class, session), read-only.
    #[must_use]
    pub const fn sender(&self) -> &Sender {
        &self.sender
    }

    /// The transport.
    #[must_use]
    pub const fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    fn now(&self) -> u64 {
        // Monotonic, so never below the epoch; saturating all the same.
        clock::monotonic_ns().saturating_sub(self.epoch)
    }

    /// See [`fork`]: one relaxed load of the wipe-on-fork page. A wiped page always means a
    /// fork, even if `getpid()` returns the pid we cached (a grandchild can be given its dead
    /// grandparent's pid): continuing the session there would replay the old nonces and IVs.
    /// Only without the page is `getpid()` compared with the cached pid.
    #[inline]
    fn check_fork(&mut self) -> Result<(), BeatError> {
        match self.fork_watch.check() {
            fork::Seen::Quiet => Ok(()),
            fork::Seen::Forked => self.recover_from_fork(std::process::id()),
            fork::Seen::Unknown => {
                let pid = std::process::id();
                if pid == self.pid {
                    Ok(())
                } else {
                    self.recover_from_fork(pid)
                }
            }
        }
    }

    /// We are a forked child: new pid, new session, new salt, new socket.
    #[cold]
    fn recover_from_fork(&mut self, pid: u32) -> Result<(), BeatError> {
        let salt = if self.sender.key_class().is_sealed() {
            // Without fresh entropy the child must not send at all: continuing the parent's
            // IV stream would reuse AEAD nonces. Nothing changes; the next beat tries again.
            Some(entropy::salt().map_err(|e| BeatError::from_io(&e))?)
        } else {
            None
        };
        let id = if self.follows_pid {
            pid
        } else {
            self.sender.pid()
        };
        if let Some(master) = &self.master {
            // The child speaks for its own pid: `restart` derives its agent key anew.
            self.sender = Sender::master(id, master.clone());
        }
        self.sender.restart(id, salt).map_err(session_error)?;
        self.pid = pid;
        self.fork_watch.rearm();
        self.epoch = clock::monotonic_ns();
        self.consecutive_drops = 0;
        self.fork_recoveries += 1;
        // The inherited socket is shared with the parent; take our own. If that fails the
        // inherited one still delivers, and the next curable drop reconnects again.
        let _ = self.transport.reconnect();
        Ok(())
    }

    /// Prepares the next datagram of `kind`, sends it, commits on success, reconnects and
    /// retries when configured.
    fn deliver(&mut self, kind: Kind) -> BeatOutcome {
        if let Err(e) = self.check_fork() {
            return BeatOutcome::Failed(e);
        }
        let now = self.now();
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let prepared = match self.sender.prepare(kind, now, &mut buf) {
            Ok(p) => p,
            Err(e) => return BeatOutcome::Failed(session_error(e)),
        };
        let datagram = prepared.datagram(&buf);
        let mut outcome = self.send(datagram);
        if let BeatOutcome::Dropped(reason) = outcome {
            self.consecutive_drops = self.consecutive_drops.saturating_add(1);
            if self.reconnect_after > 0
                && reason.reconnect_may_help()
                && self.consecutive_drops >= self.reconnect_after
            {
                outcome = match self.transport.reconnect() {
                    Ok(()) => self.send(datagram),
                    Err(e) => classify_send_error(&e),
                };
            }
        }
        if outcome == BeatOutcome::Sent {
            self.consecutive_drops = 0;
            // Prepared from the current state a moment ago; commit cannot find it stale.
            // Should it ever, the state is unchanged and the next beat re-prepares.
            let committed = self.sender.commit(&prepared);
            debug_assert!(committed.is_ok(), "fresh beat refused: {committed:?}");
        }
        outcome
    }

    fn send(&mut self, datagram: &[u8]) -> BeatOutcome {
        match self.transport.send(datagram) {
            Ok(()) => BeatOutcome::Sent,
            Err(e) => classify_send_error(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use vlp_core::envelope::SharedDatagram;

    /// Keeps every datagram and counts reconnects.
    #[derive(Default)]
    struct Recorder {
        sent: Vec<Vec<u8>>,
        reconnects: u32,
    }

    impl BeatTransport for Recorder {
        fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
            self.sent.push(datagram.to_vec());
            Ok(())
        }
        fn reconnect(&mut self) -> io::Result<()> {
            self.reconnects += 1;
            Ok(())
        }
    }

    /// A private stand-in for the wipe-on-fork page, so that wiping it touches no other client.
    fn private_page() -> &'static AtomicU64 {
        Box::leak(Box::new(AtomicU64::new(0)))
    }

    #[test]
    fn wiped_page_restarts_even_when_the_pid_is_unchanged() {
        // P forks C, P exits, C forks G, G is handed P's old pid: the page is wiped but
        // getpid() equals the cached pid. G must not continue P's nonces and IV stream.
        let key = Key::from_bytes([7; 32]);
        let mut v = Varta::with_transport_shared_key(Recorder::default(), key.clone()).unwrap();
        let page = private_page();
        v.fork_watch = fork::Watch::on(Some(page));
        assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
        assert_eq!(v.next_nonce(), 2);
        page.store(0, Ordering::Relaxed); // what the kernel does to the child's copy
        assert_eq!(v.pid(), std::process::id());
        assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
        assert_eq!(v.fork_recoveries(), 1);
        assert_eq!(
            v.transport().reconnects,
            1,
            "the child takes its own socket"
        );
        let sent = &v.transport().sent;
        let (iv0, f0) = SharedDatagram::from_bytes(&sent[0])
            .unwrap()
            .open(&key)
            .unwrap();
        let (iv1, f1) = SharedDatagram::from_bytes(&sent[1])
            .unwrap()
            .open(&key)
            .unwrap();
        assert_eq!((f0.nonce(), f1.nonce()), (1, 1), "nonces start over");
        assert_ne!(iv0.random, iv1.random, "new salt, new IV stream");
        // Handled once: the next beat continues the new session.
        assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
        assert_eq!((v.fork_recoveries(), v.next_nonce()), (1, 3));
    }

    #[test]
    fn without_the_page_the_pid_decides() {
        let mut v = Varta::with_transport(Recorder::default());
        v.fork_watch = fork::Watch::on(None);
        assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
        assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
        assert_eq!((v.fork_recoveries(), v.next_nonce()), (0, 3));
        // A different cached pid is what a child sees without the page.
        v.pid = v.pid.wrapping_add(1);
        assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
        assert_eq!(v.fork_recoveries(), 1);
        assert_eq!(v.pid(), std::process::id());
    }

    #[test]
    fn a_forked_agent_key_client_keeps_its_id_with_a_fresh_salt() {
        let key = Key::from_bytes([9; 32]);
        let mut v =
            Varta::with_transport_agent_key(Recorder::default(), 4242, key.clone()).unwrap();
        let page = private_page();
        v.fork_watch = fork::Watch::on(Some(page));
        assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
        page.store(0, Ordering::Relaxed);
        assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
        assert_eq!((v.fork_recoveries(), v.pid()), (1, 4242));
        let open = |bytes: &[u8]| {
            vlp_core::MasterDatagram::from_bytes(bytes)
                .unwrap()
                .open(&key)
                .unwrap()
        };
        let (iv0, f0) = open(&v.transport().sent[0]);
        let (iv1, f1) = open(&v.transport().sent[1]);
        assert_eq!(
            (f0.pid(), f1.pid()),
            (4242, 4242),
            "the id does not follow the pid"
        );
        assert_eq!((f0.nonce(), f1.nonce()), (1, 1), "a new session");
        assert_ne!(iv0.random, iv1.random, "new salt, new IV stream");
    }
}
