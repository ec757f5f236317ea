//! The sender's session: nonces, timestamps and AEAD IVs, written once for every client.
//!
//! A [`Session`] is a pure state machine. [`Session::beat`] (or [`Session::terminal`],
//! [`Session::goodbye`]) *prepares* a [`Beat`] without changing anything; the client hands the
//! beat's bytes to its transport and calls [`Session::commit`] only if the transport took
//! them. A datagram the stack refused therefore consumes neither its frame nonce nor its AEAD
//! counter, and the next attempt reuses both, which is safe because nothing was sent.
//!
//! * Frame nonces run 1, 2, …, `u64::MAX - 1`, then 0 (§2); terminal frames carry
//!   [`NONCE_TERMINAL`] and do not advance the sequence.
//! * Timestamps are the caller's clock, made monotonic: a clock that goes backwards is clamped
//!   to the last value sent and counted ([`Session::clock_regressions`]).
//! * AEAD IVs (§3): `iv_random` is derived from a 16-byte session salt with
//!   [`derive_iv_prefix`] (index 0, 1, …); the counter starts at [`COUNTER_START`] and, once
//!   `u32::MAX` has been used, the sequence moves to the next prefix index before any counter
//!   could repeat. Every committed beat, terminal ones included, consumes one IV.
//!
//! Nonce reuse across process or device restarts is prevented by the salt: the caller draws a
//! fresh salt from OS entropy (a forked child, a new process) or a hardware RNG (each boot),
//! and calls [`Session::restart`] after a fork.

use core::fmt;

use crate::envelope::{Iv, Key, MasterDatagram, SharedDatagram};
use crate::kdf::{derive_iv_prefix, SALT_LEN};
use crate::wire::{DecodeError, Frame, Status, FRAME_LEN, NONCE_TERMINAL, TIMESTAMP_RESERVED};

/// The first AEAD counter of every IV prefix.
pub const COUNTER_START: u32 = 1;
/// The first frame nonce of a session.
pub const NONCE_START: u64 = 1;

/// Why a beat could not be prepared, sealed or committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SessionError {
    /// The frame's fields break a rule of §2 (e.g. [`DecodeError::StallOnWire`] for a Stall
    /// status, [`DecodeError::BadPid`] for pid 0 or 1).
    Frame(DecodeError),
    /// Sealing was asked of a plain session (it has no IV sequence).
    NotSecure,
    /// All 2^64 IVs of this salt are used; a new salt is needed.
    IvExhausted,
    /// The beat being committed is not the session's current one (it was prepared before
    /// another commit or a restart).
    StaleBeat,
    /// An agent-key sender was asked to speak for another pid: its key is only valid for
    /// the agent id it was derived for (VLP v0.2 §4, §5).
    KeyBoundToPid,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Frame(e) => write!(f, "invalid frame: {e}"),
            SessionError::NotSecure => f.write_str("plain session has no AEAD IV sequence"),
            SessionError::IvExhausted => f.write_str("every IV of this session salt is used"),
            SessionError::StaleBeat => f.write_str("beat is not the session's current one"),
            SessionError::KeyBoundToPid => {
                f.write_str("an agent key is bound to its agent id; the pid cannot change")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SessionError {}

/// Derives the IV prefix of a given index; always [`derive_iv_prefix`] outside tests.
type PrefixFn = fn(&[u8; SALT_LEN], u32) -> [u8; 8];

/// The AEAD IV sequence of one session salt.
///
/// The prefix derivation is reached through a function pointer set by [`IvSequence::new`]:
/// a firmware image that only ever builds plain sessions never calls `new`, so the linker
/// drops HKDF and SHA-256 (about 2 KB of Cortex-M text) from plain-only builds.
#[derive(Clone)]
pub struct IvSequence {
    salt: [u8; SALT_LEN],
    index: u32,
    random: [u8; 8],
    counter: u32,
    exhausted: bool,
    derive: PrefixFn,
}

impl PartialEq for IvSequence {
    fn eq(&self, other: &IvSequence) -> bool {
        // `derive` is always the same function; comparing the state is enough.
        self.salt == other.salt
            && self.index == other.index
            && self.random == other.random
            && self.counter == other.counter
            && self.exhausted == other.exhausted
    }
}

impl Eq for IvSequence {}

impl fmt::Debug for IvSequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IvSequence")
            .field("index", &self.index)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl IvSequence {
    /// A sequence starting at prefix index 0, counter [`COUNTER_START`].
    #[must_use]
    pub fn new(salt: [u8; SALT_LEN]) -> IvSequence {
        IvSequence {
            random: derive_iv_prefix(&salt, 0),
            salt,
            index: 0,
            counter: COUNTER_START,
            exhausted: false,
            derive: derive_iv_prefix,
        }
    }

    /// The IV the next datagram uses.
    ///
    /// # Errors
    /// [`SessionError::IvExhausted`] once every IV of the salt is used.
    pub fn current(&self) -> Result<Iv, SessionError> {
        if self.exhausted {
            return Err(SessionError::IvExhausted);
        }
        Ok(Iv {
            random: self.random,
            counter: self.counter,
        })
    }

    /// Marks the current IV used. Moves to the next prefix before the counter would wrap.
    pub fn advance(&mut self) {
        if self.counter < u32::MAX {
            self.counter += 1;
        } else if self.index < u32::MAX {
            self.index += 1;
            self.random = (self.derive)(&self.salt, self.index);
            self.counter = COUNTER_START;
        } else {
            self.exhausted = true;
        }
    }

    /// The current prefix index (how many rotations happened).
    #[must_use]
    pub const fn prefix_index(&self) -> u32 {
        self.index
    }

    /// Test and simulation hook: jump to `counter` within the current prefix.
    /// Behind the `testing` feature: it can rewind the sequence and reuse nonces.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_counter(&mut self, counter: u32) {
        self.counter = counter;
    }

    /// Test and simulation hook: jump to prefix `index` (re-deriving `iv_random`), keeping the
    /// counter; lets tests reach the end of the IV space.
    /// Behind the `testing` feature: it can rewind the sequence and reuse nonces.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_prefix_index(&mut self, index: u32) {
        self.index = index;
        self.random = derive_iv_prefix(&self.salt, index);
    }
}

/// A prepared beat: the frame and, for secure sessions, the IV it must be sealed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    frame: Frame,
    iv: Option<Iv>,
    clock_regressed: bool,
}

impl Beat {
    /// The frame.
    #[must_use]
    pub const fn frame(&self) -> &Frame {
        &self.frame
    }

    /// The IV, for secure sessions.
    #[must_use]
    pub const fn iv(&self) -> Option<Iv> {
        self.iv
    }

    /// The 32-byte plain frame.
    #[must_use]
    pub fn emit(&self) -> [u8; FRAME_LEN] {
        self.frame.emit()
    }

    /// Seals the beat as a 60-byte shared-key datagram.
    ///
    /// # Errors
    /// [`SessionError::NotSecure`] for a beat of a plain session.
    pub fn seal_shared(&self, key: &Key) -> Result<SharedDatagram, SessionError> {
        let iv = self.iv.ok_or(SessionError::NotSecure)?;
        Ok(SharedDatagram::seal(key, &iv, &self.frame))
    }

    /// Seals the beat as a 64-byte master-key datagram; `agent_key` is the key derived for
    /// this session's pid ([`crate::kdf::derive_agent_key`]).
    ///
    /// # Errors
    /// [`SessionError::NotSecure`] for a beat of a plain session.
    pub fn seal_master(&self, agent_key: &Key) -> Result<MasterDatagram, SessionError> {
        let iv = self.iv.ok_or(SessionError::NotSecure)?;
        Ok(MasterDatagram::seal(agent_key, &iv, &self.frame))
    }
}

/// The sender's state for one session (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pid: u32,
    next_nonce: u64,
    last_timestamp: u64,
    clock_regressions: u64,
    iv: Option<IvSequence>,
}

impl Session {
    /// A plain session for `pid`; usable in a `static`.
    #[must_use]
    pub const fn plain(pid: u32) -> Session {
        Session {
            pid,
            next_nonce: NONCE_START,
            last_timestamp: 0,
            clock_regressions: 0,
            iv: None,
        }
    }

    /// A secure session for `pid` whose IVs derive from `salt` (fresh entropy per process or
    /// per boot).
    #[must_use]
    pub fn secure(pid: u32, salt: [u8; SALT_LEN]) -> Session {
        Session {
            iv: Some(IvSequence::new(salt)),
            ..Session::plain(pid)
        }
    }

    /// Starts over as a new session: new pid (a forked child), nonces from 1, and the IV
    /// sequence of `salt`. `None` leaves the session plain: a secure session restarted without
    /// a fresh salt refuses to seal ([`SessionError::NotSecure`]) rather than continue the old
    /// IV stream. Counters of clock regressions survive.
    pub fn restart(&mut self, pid: u32, salt: Option<[u8; SALT_LEN]>) {
        self.pid = pid;
        self.next_nonce = NONCE_START;
        self.last_timestamp = 0;
        // Never carry the old IV stream into a new session: without a fresh salt the session
        // has no IV sequence, and sealing fails with `NotSecure` instead of reusing nonces.
        self.iv = salt.map(IvSequence::new);
    }

    fn prepare(
        &self,
        status: Status,
        nonce: u64,
        payload: u32,
        now: u64,
    ) -> Result<Beat, SessionError> {
        let clock_regressed = now < self.last_timestamp;
        let timestamp = if clock_regressed {
            self.last_timestamp
        } else {
            now
        }
        .min(TIMESTAMP_RESERVED - 1);
        let frame =
            Frame::new(status, self.pid, timestamp, nonce, payload).map_err(SessionError::Frame)?;
        let iv = match &self.iv {
            Some(seq) => Some(seq.current()?),
            None => None,
        };
        Ok(Beat {
            frame,
            iv,
            clock_regressed,
        })
    }

    /// Prepares the next regular beat at sender time `now`.
    ///
    /// # Errors
    /// [`SessionError::Frame`] with [`DecodeError::StallOnWire`] for [`Status::Stall`] or
    /// [`DecodeError::BadPid`] for pid 0/1; [`SessionError::IvExhausted`].
    pub fn beat(&self, status: Status, payload: u32, now: u64) -> Result<Beat, SessionError> {
        self.prepare(status, self.next_nonce, payload, now)
    }

    /// Prepares a terminal frame (Critical, [`NONCE_TERMINAL`]): the agent is dying.
    ///
    /// # Errors
    /// As [`Session::beat`].
    pub fn terminal(&self, payload: u32, now: u64) -> Result<Beat, SessionError> {
        self.prepare(Status::Critical, NONCE_TERMINAL, payload, now)
    }

    /// Prepares an announced clean exit (a terminal frame carrying
    /// [`crate::wire::GOODBYE_PAYLOAD`]).
    ///
    /// # Errors
    /// As [`Session::beat`].
    pub fn goodbye(&self, now: u64) -> Result<Beat, SessionError> {
        self.terminal(crate::wire::GOODBYE_PAYLOAD, now)
    }

    /// Records that `beat` was handed to the transport: advances the nonce (regular beats), the
    /// AEAD counter (secure sessions) and the timestamp floor.
    ///
    /// # Errors
    /// [`SessionError::StaleBeat`] if `beat` is not the one [`Session::beat`] /
    /// [`Session::terminal`] would prepare now; nothing changes then.
    pub fn commit(&mut self, beat: &Beat) -> Result<(), SessionError> {
        let f = beat.frame;
        let current_iv = match &self.iv {
            Some(seq) => seq.current().ok(),
            None => None,
        };
        if f.pid() != self.pid
            || (!f.is_terminal() && f.nonce() != self.next_nonce)
            || beat.iv != current_iv
        {
            return Err(SessionError::StaleBeat);
        }
        if beat.clock_regressed {
            self.clock_regressions += 1;
        }
        // Never lowered: a terminal frame of a plain session has neither a nonce nor an IV to
        // tell whether it is current, so an old one may be committed after newer beats.
        self.last_timestamp = self.last_timestamp.max(f.timestamp());
        if !f.is_terminal() {
            self.next_nonce = if f.nonce() == NONCE_TERMINAL - 1 {
                0
            } else {
                f.nonce() + 1
            };
        }
        if let Some(seq) = &mut self.iv {
            seq.advance();
        }
        Ok(())
    }

    /// The identity frames carry.
    #[must_use]
    pub const fn pid(&self) -> u32 {
        self.pid
    }
    /// The nonce of the next regular beat.
    #[must_use]
    pub const fn next_nonce(&self) -> u64 {
        self.next_nonce
    }
    /// How many committed beats had their timestamp clamped because the clock went backwards.
    #[must_use]
    pub const fn clock_regressions(&self) -> u64 {
        self.clock_regressions
    }
    /// Whether the session seals (has an IV sequence).
    #[must_use]
    pub const fn is_secure(&self) -> bool {
        self.iv.is_some()
    }
    /// The IV sequence, for secure sessions.
    #[must_use]
    pub const fn iv_sequence(&self) -> Option<&IvSequence> {
        self.iv.as_ref()
    }
    /// Test and simulation hook: jump the nonce sequence.
    /// Behind the `testing` feature: it can rewind the sequence and reuse nonces.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_next_nonce(&mut self, nonce: u64) {
        self.next_nonce = nonce;
    }
    /// Test and simulation hook: the IV sequence, mutably.
    /// Behind the `testing` feature: it can rewind the sequence and reuse nonces.
    #[cfg(any(test, feature = "testing"))]
    pub fn iv_sequence_mut(&mut self) -> Option<&mut IvSequence> {
        self.iv.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_count_and_wrap_and_only_advance_on_commit() {
        let mut s = Session::plain(100);
        let b = s.beat(Status::Ok, 0, 10).unwrap();
        assert_eq!(b.frame().nonce(), 1);
        // Not committed: the next prepare reuses nonce 1.
        assert_eq!(s.beat(Status::Ok, 0, 11).unwrap().frame().nonce(), 1);
        s.commit(&b).unwrap();
        assert_eq!(s.beat(Status::Ok, 0, 12).unwrap().frame().nonce(), 2);
        // Committing the same beat twice is refused.
        assert_eq!(s.commit(&b), Err(SessionError::StaleBeat));
        s.set_next_nonce(NONCE_TERMINAL - 1);
        let b = s.beat(Status::Ok, 0, 13).unwrap();
        assert_eq!(b.frame().nonce(), NONCE_TERMINAL - 1);
        s.commit(&b).unwrap();
        assert_eq!(s.next_nonce(), 0);
    }

    #[test]
    fn stall_and_reserved_pid_refused() {
        let s = Session::plain(100);
        assert_eq!(
            s.beat(Status::Stall, 0, 1),
            Err(SessionError::Frame(DecodeError::StallOnWire))
        );
        assert_eq!(
            Session::plain(1).beat(Status::Ok, 0, 1),
            Err(SessionError::Frame(DecodeError::BadPid(1)))
        );
    }

    #[test]
    fn clock_regression_clamped_and_counted() {
        let mut s = Session::plain(100);
        let b = s.beat(Status::Ok, 0, 50).unwrap();
        s.commit(&b).unwrap();
        let b = s.beat(Status::Ok, 0, 20).unwrap();
        assert_eq!(b.frame().timestamp(), 50);
        s.commit(&b).unwrap();
        assert_eq!(s.clock_regressions(), 1);
        let b = s.beat(Status::Ok, 0, u64::MAX).unwrap();
        assert_eq!(b.frame().timestamp(), u64::MAX - 1);
    }

    #[test]
    fn terminal_does_not_advance_nonce_but_uses_iv() {
        let mut s = Session::secure(100, [3; 16]);
        let t = s.terminal(9, 1).unwrap();
        assert!(t.frame().is_terminal());
        let iv0 = t.iv().unwrap();
        s.commit(&t).unwrap();
        let b = s.beat(Status::Ok, 0, 2).unwrap();
        assert_eq!(b.frame().nonce(), 1);
        assert_eq!(b.iv().unwrap().counter, iv0.counter + 1);
        assert!(s.goodbye(3).unwrap().frame().is_goodbye());
    }

    #[test]
    fn late_terminal_commit_never_lowers_the_timestamp_floor() {
        let mut s = Session::plain(100);
        let old = s.terminal(7, 10).unwrap();
        let b = s.beat(Status::Ok, 0, 50).unwrap();
        s.commit(&b).unwrap();
        // A plain terminal frame has no nonce or IV to go stale: it is accepted late...
        s.commit(&old).unwrap();
        // ...but the next beat's timestamp still does not go back below 50.
        let next = s.beat(Status::Ok, 0, 20).unwrap();
        assert_eq!(next.frame().timestamp(), 50);
        s.commit(&next).unwrap();
        assert_eq!(s.clock_regressions(), 1);
    }

    #[test]
    fn iv_rotates_before_counter_wraps() {
        let mut s = Session::secure(100, [3; 16]);
        let first = s.beat(Status::Ok, 0, 1).unwrap().iv().unwrap();
        assert_eq!(first.counter, COUNTER_START);
        assert_eq!(first.random, derive_iv_prefix(&[3; 16], 0));
        s.iv_sequence_mut().unwrap().set_counter(u32::MAX);
        let b = s.beat(Status::Ok, 0, 2).unwrap();
        assert_eq!(b.iv().unwrap().counter, u32::MAX);
        s.commit(&b).unwrap();
        let next = s.beat(Status::Ok, 0, 3).unwrap().iv().unwrap();
        assert_eq!(next.counter, COUNTER_START);
        assert_eq!(next.random, derive_iv_prefix(&[3; 16], 1));
        assert_eq!(s.iv_sequence().unwrap().prefix_index(), 1);
    }

    #[test]
    fn secure_restart_without_salt_cannot_seal() {
        let mut s = Session::secure(100, [3; 16]);
        let b = s.beat(Status::Ok, 0, 1).unwrap();
        s.commit(&b).unwrap();
        s.restart(200, None);
        let b = s.beat(Status::Ok, 0, 2).unwrap();
        assert_eq!(b.iv(), None);
        assert_eq!(
            b.seal_shared(&Key::from_bytes([0; 32])),
            Err(SessionError::NotSecure)
        );
    }

    #[test]
    fn restart_starts_fresh_stream() {
        let mut s = Session::secure(100, [3; 16]);
        let b = s.beat(Status::Ok, 0, 1).unwrap();
        s.commit(&b).unwrap();
        s.restart(200, Some([4; 16]));
        let b2 = s.beat(Status::Ok, 0, 0).unwrap();
        assert_eq!(b2.frame().pid(), 200);
        assert_eq!(b2.frame().nonce(), 1);
        assert_ne!(b2.iv().unwrap().random, b.iv().unwrap().random);
        assert_eq!(
            Session::plain(5)
                .beat(Status::Ok, 0, 0)
                .unwrap()
                .seal_shared(&Key::from_bytes([0; 32])),
            Err(SessionError::NotSecure)
        );
    }
}
