//! The one place the benchmarks turn an identity's next beat into datagram bytes.
//!
//! Agents (`varta agent`, the demo) send through `varta-client`, as users do. A load generator
//! must instead speak for thousands of identities from one process at hundreds of thousands of
//! datagrams per second, which one `Varta` per identity (one socket each) cannot; it keeps one
//! [`vlp_core::sender::Sender`] per identity, the same sender both clients use, so the key
//! class (plain 32-byte frame, 60-byte shared-key datagram, 64-byte master-key datagram under
//! the key derived for the identity's pid; VLP v0.2 §3, §4) is decided there, once.
//!
//! The sender's prepare → commit is collapsed: a generator commits as soon as it has the
//! bytes, because it sends pre-built batches. A datagram the kernel then refuses is a gap in
//! the nonce sequence, which observers accept; no nonce or IV is ever used twice.

use vlp_core::sender::{Kind, Sender};
use vlp_core::{Key, SessionError, Status};

/// Room for the largest datagram (master key, 64 bytes).
pub const MAX_DATAGRAM: usize = vlp_core::sender::MAX_DATAGRAM_LEN;

/// One simulated agent: a started sender.
pub struct Identity {
    sender: Sender,
}

impl Identity {
    /// Plain frames for `pid`.
    #[must_use]
    pub fn plain(pid: u32) -> Identity {
        Identity {
            sender: Sender::plain(pid),
        }
    }

    /// Shared-key datagrams for `pid`, IVs from `salt`.
    #[must_use]
    pub fn shared(pid: u32, key: Key, salt: [u8; 16]) -> Identity {
        let mut sender = Sender::shared(pid, key);
        sender.start(salt);
        Identity { sender }
    }

    /// Master-key datagrams for `pid` (the sender derives the agent key once, as it starts),
    /// IVs from `salt`.
    #[must_use]
    pub fn master(pid: u32, master: &Key, salt: [u8; 16]) -> Identity {
        let mut sender = Sender::master(pid, master.clone());
        sender.start(salt);
        Identity { sender }
    }

    /// The length of every datagram this identity sends.
    #[must_use]
    pub const fn datagram_len(&self) -> usize {
        self.sender.key_class().datagram_len()
    }

    /// Writes the next beat (status Ok, `payload`, timestamp `now`) into `out` and commits it;
    /// returns its length.
    ///
    /// # Errors
    /// The sender's refusal (a pid VLP reserves, an exhausted IV sequence).
    pub fn next_beat(
        &mut self,
        payload: u32,
        now: u64,
        out: &mut [u8; MAX_DATAGRAM],
    ) -> Result<usize, SessionError> {
        let prepared = self
            .sender
            .prepare(Kind::Beat(Status::Ok, payload), now, out)?;
        self.sender.commit(&prepared)?;
        Ok(prepared.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::envelope::SHARED_LEN;
    use vlp_core::kdf::derive_agent_key;
    use vlp_core::{Frame, MasterDatagram, SharedDatagram, FRAME_LEN};

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
