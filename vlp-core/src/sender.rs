//! The sender: one key class and one [`Session`], writing the next datagram into the caller's
//! buffer. Every client (the Linux client, the firmware client, the load tools) sends through
//! it, so the choice of framing (plain 32 bytes, shared-key 60 bytes, agent-key 64 bytes;
//! VLP v0.2 §1, §3), the seal, and the nonce / IV bookkeeping exist once.
//!
//! Sending is *prepare → hand to the transport → settle*:
//!
//! ```
//! use vlp_core::sender::{Kind, Sender, MAX_DATAGRAM_LEN};
//! use vlp_core::{Key, Status};
//!
//! let mut sender = Sender::shared(4242, Key::from_bytes([7; 32]));
//! sender.start([0x5a; 16]); // a fresh salt per process or per boot
//! let mut buf = [0u8; MAX_DATAGRAM_LEN];
//! let prepared = sender.prepare(Kind::Beat(Status::Ok, 0), 1_000, &mut buf)?;
//! let datagram = prepared.datagram(&buf); // 60 bytes: hand them to the socket
//! assert_eq!(datagram.len(), 60);
//! // The socket took them: consume the nonce and the IV.
//! sender.commit(&prepared)?;
//! # Ok::<(), vlp_core::SessionError>(())
//! ```
//!
//! * A send the transport *certainly refused* is simply not committed: the next prepare
//!   reuses the same frame nonce and AEAD IV, which is safe because nothing left.
//! * A send whose outcome is *uncertain* (a timeout, an opaque stack error, a cancelled async
//!   send) must be committed anyway ([`Sender::commit`]), or the IV burned with
//!   [`Sender::burn`]: the retry is prepared with a new timestamp, and two different
//!   plaintexts under one (key, IV) would break the AEAD.
//!
//! # Key classes
//!
//! * [`Sender::plain`]: 32-byte frames, ready at once.
//! * [`Sender::shared`]: 60-byte datagrams under a key every agent holds.
//! * [`Sender::agent_key`]: 64-byte datagrams under this agent's own key, derived from the
//!   observer's master key for this agent id by whoever provisioned it
//!   ([`crate::kdf::derive_agent_key`]); the sender never holds the master.
//! * [`Sender::master`]: 64-byte datagrams; [`Sender::start`] derives the agent key from the
//!   master once and overwrites the master with it.
//!
//! Secure senders must be [`Sender::start`]ed with a fresh 16-byte salt (OS entropy, a
//! hardware RNG) before they can seal; until then [`Sender::prepare`] fails with
//! [`SessionError::NotSecure`]. Constructors are `const` and derive nothing, so a sender can
//! live in a `static` and a load generator can build many cheaply (the HKDF work happens in
//! `start`: one derivation for the IV prefix, one more for a master-key sender; about 2 µs
//! on x86_64, `cargo bench -p vlp-core -- sender`). A sender is at most 128 bytes (asserted
//! at compile time; 120 on x86_64) and never allocates.

use crate::envelope::{Key, MasterDatagram, SharedDatagram, MASTER_LEN, SHARED_LEN};
use crate::kdf::{derive_agent_key, SALT_LEN};
use crate::session::{Beat, Session, SessionError};
use crate::wire::{Status, FRAME_LEN};

/// The largest datagram a sender writes (an agent-key datagram, 64 bytes).
pub const MAX_DATAGRAM_LEN: usize = MASTER_LEN;

/// What goes on the wire, by the key that seals it (VLP v0.2 §1, §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KeyClass {
    /// 32-byte plain frames.
    Plain,
    /// 60-byte datagrams sealed with a key shared by every agent.
    Shared,
    /// 64-byte master-key datagrams: sealed with the agent key derived from the observer's
    /// master key for the pid the datagram carries in the clear (VLP v0.2 §3, §4).
    Master,
}

impl KeyClass {
    /// The datagram length of this class.
    #[must_use]
    pub const fn datagram_len(self) -> usize {
        match self {
            KeyClass::Plain => FRAME_LEN,
            KeyClass::Shared => SHARED_LEN,
            KeyClass::Master => MASTER_LEN,
        }
    }

    /// Whether datagrams of this class are sealed, so that starting a sender of it needs a
    /// fresh salt ([`Sender::start`]).
    #[must_use]
    pub const fn is_sealed(self) -> bool {
        !matches!(self, KeyClass::Plain)
    }

    /// A stable lower-case name (`plain`, `shared-key`, `master-key`), for logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            KeyClass::Plain => "plain",
            KeyClass::Shared => "shared-key",
            KeyClass::Master => "master-key",
        }
    }
}

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind {
    /// A regular beat with this status and payload.
    Beat(Status, u32),
    /// A terminal frame (Critical, terminal nonce): the agent is dying; the payload says why.
    Terminal(u32),
    /// An announced clean exit (a terminal frame carrying [`crate::GOODBYE_PAYLOAD`]).
    Goodbye,
}

/// The sender's keys. A master key is only held until [`Sender::start`] derives from it.
#[derive(Clone, PartialEq, Eq)]
enum Keys {
    Plain,
    Shared(Key),
    /// The agent key for the session's pid.
    Agent(Key),
    /// The master key; `start` replaces it with the agent key for the session's pid.
    Master(Key),
}

/// A datagram written by [`Sender::prepare`]: its length in the caller's buffer and what
/// [`Sender::commit`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    beat: Beat,
    len: usize,
}

impl Prepared {
    /// The datagram's length (32, 60 or 64 bytes).
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Never true: a datagram has at least 32 bytes. (For `len`'s sake.)
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The datagram in the buffer it was prepared into.
    #[must_use]
    pub fn datagram<'b>(&self, buf: &'b [u8; MAX_DATAGRAM_LEN]) -> &'b [u8] {
        &buf[..self.len]
    }

    /// The session's beat (frame and IV).
    #[must_use]
    pub const fn beat(&self) -> &Beat {
        &self.beat
    }
}

/// One agent's sending side: its key class and its session (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Sender {
    session: Session,
    keys: Keys,
}

impl core::fmt::Debug for Sender {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sender")
            .field("pid", &self.session.pid())
            .field("class", &self.key_class())
            .field("ready", &self.is_ready())
            .field("next_nonce", &self.session.next_nonce())
            .finish_non_exhaustive()
    }
}

impl Sender {
    const fn with(pid: u32, keys: Keys) -> Sender {
        Sender {
            session: Session::plain(pid),
            keys,
        }
    }

    /// A sender of 32-byte plain frames for `pid` (≥ 2, VLP §2 rule 6). Ready at once.
    #[must_use]
    pub const fn plain(pid: u32) -> Sender {
        Sender::with(pid, Keys::Plain)
    }

    /// A sender of 60-byte shared-key datagrams. [`Sender::start`] it before sending.
    #[must_use]
    pub const fn shared(pid: u32, key: Key) -> Sender {
        Sender::with(pid, Keys::Shared(key))
    }

    /// A sender of 64-byte datagrams under `agent_id`'s own key (`key` =
    /// [`derive_agent_key`]`(master, agent_id)`, provisioned to this agent). Every frame
    /// carries `agent_id` as its pid, which is what the observer derives the key for (VLP
    /// §5); it never changes ([`Sender::restart`] refuses another). [`Sender::start`] it
    /// before sending.
    #[must_use]
    pub const fn agent_key(agent_id: u32, key: Key) -> Sender {
        Sender::with(agent_id, Keys::Agent(key))
    }

    /// A sender of 64-byte datagrams under the key derived from `master_key` for `pid`.
    /// [`Sender::start`] derives it (HKDF-SHA256, VLP §4) and overwrites the master key, so
    /// the master does not stay in the sender. Prefer [`Sender::agent_key`]: an agent holding
    /// the master can speak for every other agent.
    #[must_use]
    pub const fn master(pid: u32, master_key: Key) -> Sender {
        Sender::with(pid, Keys::Master(master_key))
    }

    /// Starts (or restarts) the session: nonces from 1 and, for secure senders, a new IV
    /// sequence from `salt`, which must be fresh (never used before with this key). A
    /// master-key sender derives its agent key here. Plain senders ignore the salt.
    pub fn start(&mut self, salt: [u8; SALT_LEN]) {
        let pid = self.session.pid();
        if let Keys::Master(master) = &self.keys {
            self.keys = Keys::Agent(derive_agent_key(master, pid));
        }
        let salt = self.key_class().is_sealed().then_some(salt);
        self.session.restart(pid, salt);
    }

    /// Starts a new session as `pid` (a forked child): [`Sender::start`] under a new pid.
    /// `salt` is required for secure senders (`None` leaves them unable to seal until the
    /// next start).
    ///
    /// # Errors
    /// [`SessionError::KeyBoundToPid`] for an agent-key sender asked to change its pid (its
    /// key is only valid for its own id); nothing changes then.
    pub fn restart(&mut self, pid: u32, salt: Option<[u8; SALT_LEN]>) -> Result<(), SessionError> {
        if pid != self.session.pid() && matches!(self.keys, Keys::Agent(_)) {
            return Err(SessionError::KeyBoundToPid);
        }
        match salt {
            Some(salt) => {
                self.session.restart(pid, None);
                self.start(salt);
            }
            None => self.session.restart(pid, None),
        }
        Ok(())
    }

    /// Writes the next datagram of `kind` at sender time `now` (any monotonic tick) into `buf`
    /// and returns where it is, without changing the sender. Every datagram prepared before
    /// the next [`Sender::commit`] carries the same nonce and IV: hand at most one to a
    /// transport.
    ///
    /// # Errors
    /// [`SessionError::NotSecure`] for a secure sender not yet started;
    /// [`SessionError::Frame`] for a Stall status or a reserved pid (0, 1);
    /// [`SessionError::IvExhausted`].
    pub fn prepare(
        &self,
        kind: Kind,
        now: u64,
        buf: &mut [u8; MAX_DATAGRAM_LEN],
    ) -> Result<Prepared, SessionError> {
        let beat = match kind {
            Kind::Beat(status, payload) => self.session.beat(status, payload, now),
            Kind::Terminal(payload) => self.session.terminal(payload, now),
            Kind::Goodbye => self.session.goodbye(now),
        }?;
        let len = match &self.keys {
            Keys::Plain => {
                let (out, _) = buf.split_first_chunk_mut::<FRAME_LEN>().expect(ROOM);
                beat.frame().emit_into(out);
                FRAME_LEN
            }
            Keys::Shared(key) => {
                let iv = beat.iv().ok_or(SessionError::NotSecure)?;
                let (out, _) = buf.split_first_chunk_mut::<SHARED_LEN>().expect(ROOM);
                SharedDatagram::seal_into(key, &iv, beat.frame(), out);
                SHARED_LEN
            }
            Keys::Agent(key) => {
                let iv = beat.iv().ok_or(SessionError::NotSecure)?;
                MasterDatagram::seal_into(key, &iv, beat.frame(), buf);
                MASTER_LEN
            }
            // Not started: the agent key is not derived yet.
            Keys::Master(_) => return Err(SessionError::NotSecure),
        };
        Ok(Prepared { beat, len })
    }

    /// Records that `prepared` was handed to the transport (or may have been): consumes its
    /// nonce (regular beats) and its IV (secure senders).
    ///
    /// # Errors
    /// [`SessionError::StaleBeat`] if another datagram was committed, or the sender
    /// restarted, since `prepared` was made; nothing changes then.
    pub fn commit(&mut self, prepared: &Prepared) -> Result<(), SessionError> {
        self.session.commit(&prepared.beat)
    }

    /// Consumes the current nonce and IV without sending anything: for when a datagram
    /// prepared from them may be in flight somewhere the caller cannot see (a send
    /// interrupted by a panic), so that nothing else is ever sealed under that IV.
    ///
    /// # Errors
    /// As [`Sender::prepare`].
    pub fn burn(&mut self, now: u64) -> Result<(), SessionError> {
        let mut scratch = [0u8; MAX_DATAGRAM_LEN];
        let p = self.prepare(Kind::Beat(Status::Ok, 0), now, &mut scratch)?;
        self.commit(&p)
    }

    /// The pid (agent id) frames carry.
    #[must_use]
    pub const fn pid(&self) -> u32 {
        self.session.pid()
    }

    /// The wire form.
    #[must_use]
    pub const fn key_class(&self) -> KeyClass {
        match self.keys {
            Keys::Plain => KeyClass::Plain,
            Keys::Shared(_) => KeyClass::Shared,
            Keys::Agent(_) | Keys::Master(_) => KeyClass::Master,
        }
    }

    /// Whether [`Sender::prepare`] can produce a datagram: plain, or secure and started.
    #[must_use]
    pub const fn is_ready(&self) -> bool {
        match self.keys {
            Keys::Plain => true,
            Keys::Master(_) => false,
            Keys::Shared(_) | Keys::Agent(_) => self.session.is_secure(),
        }
    }

    /// The session (nonce, timestamps, IV sequence), read-only.
    #[must_use]
    pub const fn session(&self) -> &Session {
        &self.session
    }

    /// Test and simulation hook: the session, mutably, to jump its nonce or IV sequence.
    /// Behind the `testing` feature: it can rewind the sequences and reuse nonces.
    #[cfg(any(test, feature = "testing"))]
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

const _: () = assert!(core::mem::size_of::<Sender>() <= 128);

/// Why the `expect`s of [`Sender::prepare`] cannot fire: the buffer's length is in its type.
const ROOM: &str = "a MAX_DATAGRAM_LEN buffer holds every datagram form";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Iv;
    use crate::kdf::derive_iv_prefix;
    use crate::wire::Frame;

    const SALT: [u8; SALT_LEN] = [0x5a; SALT_LEN];

    fn key(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    fn send(s: &mut Sender, kind: Kind, now: u64) -> ([u8; MAX_DATAGRAM_LEN], usize) {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let p = s.prepare(kind, now, &mut buf).unwrap();
        s.commit(&p).unwrap();
        (buf, p.len())
    }

    #[test]
    fn each_class_writes_its_form_byte_for_byte() {
        let frame = Frame::new(Status::Ok, 4242, 10, 1, 7).unwrap();
        let iv = Iv {
            random: derive_iv_prefix(&SALT, 0),
            counter: 1,
        };

        let mut plain = Sender::plain(4242);
        let (buf, len) = send(&mut plain, Kind::Beat(Status::Ok, 7), 10);
        assert_eq!(&buf[..len], &frame.emit()[..]);

        let mut shared = Sender::shared(4242, key(1));
        shared.start(SALT);
        let (buf, len) = send(&mut shared, Kind::Beat(Status::Ok, 7), 10);
        assert_eq!(
            &buf[..len],
            &SharedDatagram::seal(&key(1), &iv, &frame).0[..]
        );

        let agent = derive_agent_key(&key(2), 4242);
        let want = MasterDatagram::seal(&agent, &iv, &frame).0;
        let mut by_agent_key = Sender::agent_key(4242, agent.clone());
        by_agent_key.start(SALT);
        assert_eq!(
            send(&mut by_agent_key, Kind::Beat(Status::Ok, 7), 10).0,
            want
        );
        let mut by_master = Sender::master(4242, key(2));
        by_master.start(SALT);
        assert_eq!(send(&mut by_master, Kind::Beat(Status::Ok, 7), 10).0, want);
        assert_eq!(
            by_master, by_agent_key,
            "the master is replaced by the agent key"
        );
    }

    #[test]
    fn uncommitted_prepare_reuses_nonce_and_iv() {
        let mut s = Sender::shared(4242, key(1));
        s.start(SALT);
        let mut a = [0u8; MAX_DATAGRAM_LEN];
        let mut b = [0u8; MAX_DATAGRAM_LEN];
        let pa = s.prepare(Kind::Beat(Status::Ok, 0), 5, &mut a).unwrap();
        let pb = s.prepare(Kind::Beat(Status::Ok, 0), 5, &mut b).unwrap();
        assert_eq!(pa.datagram(&a), pb.datagram(&b));
        s.commit(&pb).unwrap();
        assert_eq!(s.commit(&pa), Err(SessionError::StaleBeat));
        let pc = s.prepare(Kind::Beat(Status::Ok, 0), 5, &mut a).unwrap();
        assert_eq!(pc.beat().frame().nonce(), 2);
        assert_eq!(pc.beat().iv().unwrap().counter, 2);
    }

    #[test]
    fn burn_consumes_the_iv() {
        let mut s = Sender::agent_key(4242, key(3));
        s.start(SALT);
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let before = s.prepare(Kind::Terminal(9), 5, &mut buf).unwrap();
        s.burn(5).unwrap();
        let after = s.prepare(Kind::Terminal(9), 5, &mut buf).unwrap();
        assert_ne!(before.beat().iv(), after.beat().iv());
        assert_eq!(s.commit(&before), Err(SessionError::StaleBeat));
    }

    #[test]
    fn secure_senders_refuse_until_started() {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        for (s, class) in [
            (Sender::shared(4242, key(1)), KeyClass::Shared),
            (Sender::agent_key(4242, key(1)), KeyClass::Master),
            (Sender::master(4242, key(1)), KeyClass::Master),
        ] {
            assert!(!s.is_ready());
            assert_eq!(s.key_class(), class);
            assert_eq!(
                s.prepare(Kind::Goodbye, 1, &mut buf),
                Err(SessionError::NotSecure)
            );
        }
        assert!(Sender::plain(4242).is_ready());
        assert_eq!(
            Sender::plain(4242).prepare(Kind::Beat(Status::Stall, 0), 1, &mut buf),
            Err(SessionError::Frame(crate::DecodeError::StallOnWire))
        );
    }

    #[test]
    fn agent_key_is_bound_to_its_id() {
        let mut s = Sender::agent_key(4242, key(1));
        s.start(SALT);
        assert_eq!(
            s.restart(4243, Some([1; 16])),
            Err(SessionError::KeyBoundToPid)
        );
        assert_eq!(s.pid(), 4242);
        s.restart(4242, Some([1; 16])).unwrap();
        let mut shared = Sender::shared(4242, key(1));
        shared.restart(77, Some([1; 16])).unwrap();
        assert_eq!((shared.pid(), shared.is_ready()), (77, true));
        shared.restart(78, None).unwrap();
        assert!(!shared.is_ready(), "no salt, no sealing");
        assert_eq!(
            [
                KeyClass::Plain.datagram_len(),
                KeyClass::Shared.datagram_len(),
                KeyClass::Master.datagram_len()
            ],
            [32, 60, 64]
        );
        assert_eq!(
            [KeyClass::Plain, KeyClass::Shared, KeyClass::Master].map(KeyClass::is_sealed),
            [false, true, true]
        );
    }
}
