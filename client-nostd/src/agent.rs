//! The agent: one `vlp-core` session plus its key, sans-I/O at the core and with thin
//! `try_*` (non-blocking) and async shells over a [`Transport`] / [`AsyncTransport`].
//!
//! Every send is *prepare → hand to the transport → commit* ([`Session::commit`]): a datagram
//! the stack certainly refused ([`StackError::is_certain_refusal`]) consumes neither its frame
//! nonce nor its AEAD counter, and the retry reuses both (safe: nothing left the device). A
//! datagram the stack *accepted* is committed even if it is later lost on the wire, and so is
//! every send whose outcome is uncertain (a timeout, an opaque stack error, an async send
//! cancelled after it was polled): the retry is re-prepared with a new timestamp, so reusing
//! the IV would put two different plaintexts under one (key, nonce) if the first one got out.

use vlp_core::sender::{self, Sender};
use vlp_core::{Beat, Key, Session, Status};

use crate::entropy::{self, SALT_LEN};
use crate::error::{Error, StackError};
use crate::transport::{AsyncTransport, Transport};

pub use vlp_core::sender::{Kind, MAX_DATAGRAM_LEN};

/// How an agent's frames go on the wire (VLP §1, §3): `vlp-core`'s key class.
pub use vlp_core::sender::KeyClass as Security;

/// A beat ready to send: the datagram bytes and what [`Agent::commit`] needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    prepared: sender::Prepared,
    buf: [u8; MAX_DATAGRAM_LEN],
}

impl Prepared {
    /// The bytes to hand to the stack.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.prepared.datagram(&self.buf)
    }

    /// The `vlp-core` beat (frame and IV).
    #[must_use]
    pub const fn beat(&self) -> &Beat {
        self.prepared.beat()
    }
}

impl core::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Prepared")
            .field("beat", self.beat())
            .field("len", &self.prepared.len())
            .finish()
    }
}

/// Commits a beat handed to an async transport if the send future is dropped before the
/// transport answered (the datagram may be out).
struct BurnOnDrop<'a> {
    agent: &'a mut Agent,
    /// `None` once settled.
    prepared: Option<sender::Prepared>,
}

impl BurnOnDrop<'_> {
    fn settle(mut self, sent: Result<(), StackError>) -> Result<(), Error> {
        match self.prepared.take() {
            Some(p) => self.agent.settle(&p, sent),
            None => Ok(()),
        }
    }
}

impl Drop for BurnOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.prepared.take() {
            // Cancelled mid-send: a stale commit (impossible while we hold `&mut Agent`) would
            // only mean the IV is already consumed.
            let _ = self.agent.sender.commit(&p);
        }
    }
}

/// A heartbeat agent: one VLP session and its key. Lives in a `static` (its constructors are
/// `const`), on a task's stack, or in a [`crate::GlobalAgent`].
///
/// Secure agents must be [`Agent::start`]ed with a fresh session salt at every boot before
/// they beat (see [`crate::entropy`]); plain agents may beat at once.
pub struct Agent {
    sender: Sender,
    started: bool,
    /// The salt the running secure session started with (all zeros: none; `check_salt`
    /// refuses an all-zero salt, so it is never a real one).
    salt: [u8; SALT_LEN],
    /// Why the last [`Agent::start`] of a not-yet-started agent was refused; its sends report
    /// it instead of [`Error::NotStarted`].
    start_refusal: Option<Error>,
}

impl core::fmt::Debug for Agent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agent")
            .field("pid", &self.sender.pid())
            .field("security", &self.security())
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Agent {
    const fn with(sender: Sender, started: bool) -> Agent {
        Agent {
            sender,
            started,
            salt: [0; SALT_LEN],
            start_refusal: None,
        }
    }

    /// A plain-frame agent with identity `pid` (≥ 2, VLP §2 rule 6). Ready at once.
    #[must_use]
    pub const fn plain(pid: u32) -> Agent {
        Agent::with(Sender::plain(pid), true)
    }

    /// A shared-key agent (60-byte datagrams). Call [`Agent::start`] before beating.
    #[must_use]
    pub const fn shared(pid: u32, key: Key) -> Agent {
        Agent::with(Sender::shared(pid, key), false)
    }

    /// An agent holding only its own key (64-byte datagrams): `key` was derived from the
    /// observer's master key for `agent_id` by the host that provisioned the device
    /// (`vlp_core::kdf::derive_agent_key`, or `varta-watch key derive`), so the device never
    /// holds the master and cannot speak for another agent. Every frame carries `agent_id`
    /// in its pid field (VLP §5). Call [`Agent::start`] before beating.
    #[must_use]
    pub const fn agent_key(agent_id: u32, key: Key) -> Agent {
        Agent::with(Sender::agent_key(agent_id, key), false)
    }

    /// A master-key agent (64-byte datagrams). [`Agent::start`] derives the agent key once
    /// (HKDF, VLP §4) and overwrites the master key with it, so the master key does not stay
    /// in RAM. Prefer [`Agent::agent_key`], which never puts the master on the device.
    #[must_use]
    pub const fn master(pid: u32, master_key: Key) -> Agent {
        Agent::with(Sender::master(pid, master_key), false)
    }

    /// [`Agent::try_start`] for callers that check [`Agent::is_started`] or the first send
    /// instead of a result. A refused start leaves the agent as it was: a not-yet-started
    /// agent stays unstarted and its sends return the refusal ([`Error::Entropy`],
    /// [`Error::SaltReused`]) instead of [`Error::NotStarted`]; a started agent keeps its
    /// running session (its IVs continue, none repeats).
    pub fn start(&mut self, salt: [u8; SALT_LEN]) {
        if let Err(e) = self.try_start(salt) {
            #[cfg(feature = "defmt")]
            defmt::warn!("varta: start refused: {}", e);
            if !self.started {
                self.start_refusal = Some(e);
            }
        }
    }

    /// Starts (or restarts) the session with a fresh salt: nonces from 1, a new IV sequence.
    /// Call once per boot, before the first beat, with a salt from [`crate::entropy`]. Plain
    /// agents restart their nonce sequence and ignore the salt.
    ///
    /// The salt is the only thing that keeps a new session's AEAD nonces apart from an old
    /// one's, so secure agents refuse a salt that betrays a dead RNG
    /// ([`crate::entropy::check_salt`]) and a restart with the salt the running session
    /// already uses (it would restart the IV counter at 1). The agent remembers only its
    /// current salt: two agents, or a salt reused after another one, are not detected.
    ///
    /// # Errors
    /// [`Error::Entropy`] for an all-`0x00` / all-`0xFF` salt, [`Error::SaltReused`] for the
    /// running session's salt; the agent is then unchanged.
    pub fn try_start(&mut self, salt: [u8; SALT_LEN]) -> Result<(), Error> {
        if self.sender.key_class().is_sealed() {
            entropy::check_salt(salt)?;
            if salt == self.salt {
                return Err(Error::SaltReused);
            }
            self.salt = salt;
        }
        self.sender.start(salt);
        self.started = true;
        self.start_refusal = None;
        #[cfg(feature = "defmt")]
        defmt::debug!("varta: agent {=u32} started", self.sender.pid());
        Ok(())
    }

    /// [`Agent::try_start`] with a salt drawn from `rng`.
    ///
    /// # Errors
    /// [`Error::Entropy`] if the RNG fails, and the errors of [`Agent::try_start`]; the agent
    /// is then unchanged.
    pub fn start_with_rng<R: rand_core::TryCryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<(), Error> {
        let salt = entropy::salt_from_rng(rng)?;
        self.try_start(salt)
    }

    /// [`Agent::try_start`] with a salt drawn from `rng` and mixed with a persisted boot counter
    /// ([`entropy::salt_with_boot_counter`]).
    ///
    /// # Errors
    /// [`Error::Entropy`] if the RNG fails, and the errors of [`Agent::try_start`]; the agent
    /// is then unchanged.
    pub fn start_with_boot_counter<R: rand_core::TryCryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        boot_count: u32,
    ) -> Result<(), Error> {
        let salt = entropy::salt_with_boot_counter(rng, boot_count)?;
        self.try_start(salt)
    }

    /// The agent's identity.
    #[must_use]
    pub const fn pid(&self) -> u32 {
        self.sender.pid()
    }

    /// The frame format.
    #[must_use]
    pub const fn security(&self) -> Security {
        self.sender.key_class()
    }

    /// Whether the agent may beat (plain, or secure and started).
    #[must_use]
    pub const fn is_started(&self) -> bool {
        self.started
    }

    /// The session (nonce, IV sequence), read-only.
    #[must_use]
    pub const fn session(&self) -> &Session {
        self.sender.session()
    }

    /// Prepares `kind` at sender time `now` (any monotonic tick; VLP timestamps are opaque to
    /// the observer) without changing the agent.
    ///
    /// Every beat prepared before the next [`Agent::commit`] carries the same IV: hand at most
    /// one of them to a stack, and [`Agent::commit`] it unless the stack certainly refused it
    /// ([`StackError::is_certain_refusal`]). The `try_send` / `send` paths do this for you.
    ///
    /// # Errors
    /// [`Error::NotStarted`] (or the refusal of [`Agent::start`]); [`Error::Session`] for a
    /// Stall status, a reserved pid or IV exhaustion.
    pub fn prepare(&self, kind: Kind, now: u64) -> Result<Prepared, Error> {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let prepared = self.prepare_into(kind, now, &mut buf)?;
        Ok(Prepared { prepared, buf })
    }

    /// [`Agent::prepare`] for the send paths: seals straight into `buf` (no datagram value to
    /// move around).
    fn prepare_into(
        &self,
        kind: Kind,
        now: u64,
        buf: &mut [u8; MAX_DATAGRAM_LEN],
    ) -> Result<sender::Prepared, Error> {
        if !self.started {
            return Err(self.start_refusal.unwrap_or(Error::NotStarted));
        }
        Ok(self.sender.prepare(kind, now, buf)?)
    }

    /// Records that `prepared` was accepted by the transport.
    ///
    /// # Errors
    /// [`Error::Session`] with [`vlp_core::SessionError::StaleBeat`] if another beat was committed
    /// since `prepared` was made; nothing changes then.
    pub fn commit(&mut self, prepared: &Prepared) -> Result<(), Error> {
        self.sender
            .commit(&prepared.prepared)
            .map_err(Error::Session)
    }

    /// Consumes the current nonce and IV without sending anything. Used before a last-gasp
    /// frame when a prepared beat may be in flight (see [`crate::GlobalAgent`]), so the two
    /// can never share an IV.
    ///
    /// # Errors
    /// As [`Agent::prepare`].
    pub fn burn(&mut self, now: u64) -> Result<(), Error> {
        if !self.started {
            return Err(self.start_refusal.unwrap_or(Error::NotStarted));
        }
        Ok(self.sender.burn(now)?)
    }

    /// Prepares `kind`, hands it to `transport` without blocking, and commits it if taken.
    ///
    /// # Errors
    /// [`Error::Send`] with the stack's refusal ([`StackError::WouldBlock`]: poll the stack
    /// and retry; the retry reuses the same nonce and IV); errors of [`Agent::prepare`]. On
    /// error nothing was consumed, except after an uncertain send error
    /// ([`StackError::Uncertain`], [`StackError::Other`]), which consumes the beat's nonce
    /// and IV (the datagram may have left).
    pub fn try_send<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        kind: Kind,
        now: u64,
    ) -> Result<(), Error> {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let prepared = self.prepare_into(kind, now, &mut buf)?;
        let sent = transport.try_send(prepared.datagram(&buf));
        self.settle(&prepared, sent)
    }

    /// Commits `beat` after the transport's answer `sent`, unless the stack certainly refused
    /// it; returns the send's outcome.
    fn settle(
        &mut self,
        prepared: &sender::Prepared,
        sent: Result<(), StackError>,
    ) -> Result<(), Error> {
        match sent {
            Ok(()) => self.sender.commit(prepared).map_err(Error::Session),
            Err(e) => {
                #[cfg(feature = "defmt")]
                defmt::debug!("varta: send refused: {}", e);
                if !e.is_certain_refusal() {
                    // The datagram may be on the wire: its IV must never seal other bytes.
                    // The beat is the session's current one (prepared under `&mut self`), so
                    // this commit cannot be stale.
                    let _ = self.sender.commit(prepared);
                }
                Err(Error::Send(e))
            }
        }
    }

    /// A regular beat through [`Agent::try_send`].
    ///
    /// # Errors
    /// As [`Agent::try_send`].
    pub fn try_beat<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        status: Status,
        payload: u32,
        now: u64,
    ) -> Result<(), Error> {
        self.try_send(transport, Kind::Beat(status, payload), now)
    }

    /// Prepares `kind`, awaits `transport`, and commits it if sent.
    ///
    /// Cancel safety: a future dropped before its first poll changed nothing. A future dropped
    /// after it was polled (a `select!` timeout) may have handed the datagram to the stack
    /// (the async traits do not promise a send completes in one poll), so the beat's nonce
    /// and IV are then consumed, as for an uncertain send error.
    ///
    /// # Errors
    /// As [`Agent::try_send`].
    pub async fn send<T: AsyncTransport + ?Sized>(
        &mut self,
        transport: &mut T,
        kind: Kind,
        now: u64,
    ) -> Result<(), Error> {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let prepared = self.prepare_into(kind, now, &mut buf)?;
        let guard = BurnOnDrop {
            agent: self,
            prepared: Some(prepared),
        };
        let sent = transport.send(prepared.datagram(&buf)).await;
        guard.settle(sent)
    }

    /// A regular beat through [`Agent::send`].
    ///
    /// # Errors
    /// As [`Agent::send`].
    pub async fn beat<T: AsyncTransport + ?Sized>(
        &mut self,
        transport: &mut T,
        status: Status,
        payload: u32,
        now: u64,
    ) -> Result<(), Error> {
        self.send(transport, Kind::Beat(status, payload), now).await
    }

    /// Test hook (feature `testing`): the session, mutably, to jump its nonce or IV counter.
    /// Never enable `testing` in firmware: it can rewind the IV sequence.
    #[cfg(feature = "testing")]
    pub fn session_mut(&mut self) -> &mut Session {
        self.sender.session_mut()
    }
}
