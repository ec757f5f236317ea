//! The one place the benchmarks turn an identity's next beat into datagram bytes.
//!
//! Agents (`varta agent`, the demo) send through `varta-client`, as users do. A load generator
//! must instead speak for thousands of identities from one process at hundreds of thousands of
//! datagrams per second, which one `Varta` per identity (one socket each) cannot; it keeps a
//! `vlp_core::Session` per identity and seals here. The key class decides the envelope
//! (VLP v0.2 §3): plain 32-byte frame, 60-byte shared-key datagram, or 64-byte master-key
//! datagram sealed with the key derived for the identity's pid (§4).
//!
//! The session's prepare → commit is collapsed: a generator commits as soon as it has the
//! bytes, because it sends pre-built batches. A datagram the kernel then refuses is a gap in
//! the nonce sequence, which observers accept; no nonce or IV is ever used twice.

use vlp_core::envelope::{MASTER_LEN, SHARED_LEN};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{Key, Session, SessionError, Status, FRAME_LEN};

/// Room for the largest datagram (master key, 64 bytes).
pub const MAX_DATAGRAM: usize = MASTER_LEN;

/// The envelope of one identity's datagrams.
enum Class {
    Plain,
    Shared(Key),
    /// The agent key derived from the master key for this identity's pid.
    Master(Key),
}

/// One simulated agent: its session and its envelope.
pub struct Identity {
    session: Session,
    class: Class,
}

impl Identity {
    /// Plain frames for `pid`.
    #[must_use]
    pub fn plain(pid: u32) -> Identity {
        Identity {
            session: Session::plain(pid),
            class: Class::Plain,
        }
    }

    /// Shared-key datagrams for `pid`, IVs from `salt`.
    #[must_use]
    pub fn shared(pid: u32, key: Key, salt: [u8; 16]) -> Identity {
        Identity {
            session: Session::secure(pid, salt),
            class: Class::Shared(key),
        }
    }

    /// Master-key datagrams for `pid` (the agent key is derived once, here), IVs from `salt`.
    #[must_use]
    pub fn master(pid: u32, master: &Key, salt: [u8; 16]) -> Identity {
        Identity {
            session: Session::secure(pid, salt),
            class: Class::Master(derive_agent_key(master, pid)),
        }
    }

    /// The length of every datagram this identity sends.
    #[must_use]
    pub const fn datagram_len(&self) -> usize {
        match self.class {
            Class::Plain => FRAME_LEN,
            Class::Shared(_) => SHARED_LEN,
            Class::Master(_) => MASTER_LEN,
        }
    }

    /// Writes the next beat (status Ok, `payload`, timestamp `now`) into `out` and commits it;
    /// returns its length.
    ///
    /// # Errors
    /// The session's refusal (a pid VLP reserves, an exhausted IV sequence).
    pub fn next_beat(
        &mut self,
        payload: u32,
        now: u64,
        out: &mut [u8; MAX_DATAGRAM],
    ) -> Result<usize, SessionError> {
        let beat = self.session.beat(Status::Ok, payload, now)?;
        let len = match &self.class {
            Class::Plain => {
                out[..FRAME_LEN].copy_from_slice(&beat.emit());
                FRAME_LEN
            }
            Class::Shared(k) => {
                out[..SHARED_LEN].copy_from_slice(&beat.seal_shared(k)?.0);
                SHARED_LEN
            }
            Class::Master(k) => {
                out[..MASTER_LEN].copy_from_slice(&beat.seal_master(k)?.0);
                MASTER_LEN
            }
        };
        self.session.commit(&beat)?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::{Frame, MasterDatagram, SharedDatagram};

    #[test]
    fn every_class_writes_datagrams_that_open_to_consecutive_nonces() {
        let key = Key::from_bytes([9; 32]);
        let mut out = [0u8; MAX_DATAGRAM];
        for mut id in [
            Identity::plain(4321),
            Identity::shared(4321, key.clone(), [1; 16]),
            Identity::master(4321, &key, [2; 16]),
        ] {
            for want_nonce in 1..=3u64 {
                let n = id.next_beat(7, 1_000 * want_nonce, &mut out).unwrap();
                assert_eq!(n, id.datagram_len());
                let frame = match n {
                    FRAME_LEN => Frame::parse(&out[..n]).unwrap(),
                    SHARED_LEN => {
                        SharedDatagram::from_bytes(&out[..n])
                            .unwrap()
                            .open(&key)
                            .unwrap()
                            .1
                    }
                    _ => {
                        let d = MasterDatagram::from_bytes(&out[..n]).unwrap();
                        assert_eq!(d.pid(), 4321, "the pid travels in clear");
                        d.open(&derive_agent_key(&key, 4321)).unwrap().1
                    }
                };
                assert_eq!(frame.pid(), 4321);
                assert_eq!(frame.nonce(), want_nonce);
                assert_eq!(frame.payload(), 7);
            }
        }
    }
}
