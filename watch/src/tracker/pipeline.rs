//! The one decode pipeline every listener uses: uid and pid checks for the Unix socket,
//! decoding, opening of secure datagrams (replay window checked before any decryption where
//! the pid is in the clear), then the session rules ([`super::session`]).

use std::net::{IpAddr, SocketAddr};

use vlp_core::envelope::{MASTER_LEN, SHARED_LEN};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{DecodeError, Frame, Iv, Key, MasterDatagram, OpenError, SharedDatagram, FRAME_LEN};

use super::batch::Pre;
use super::session::precheck;
use super::table::{listener_code, tag};
use super::{Accepted, Listener, Nanos, Origin, Rejection, Tracker, UdpMode};

/// A frame that passed decoding and authentication, on its way into the table.
pub(super) struct Verified {
    pub(super) listener: u16,
    /// Sealed with the agent's own (master-derived) key: [`super::KeyClass::Agent`].
    pub(super) agent_key: bool,
    /// Plaintext UDP: fingerprint of the source address ([`origin_fingerprint`]); 0 when
    /// not known or not checked.
    pub(super) origin: u64,
    pub(super) frame: Frame,
    pub(super) iv: Option<Iv>,
    /// The identity's table lookup, if the pipeline made it already (master-key datagrams,
    /// whose pid is in the clear): `Some(slot)` or `Some(None)` for "not tracked". Nothing
    /// changes the table between that lookup and [`Tracker::track`], so it is not repeated.
    pub(super) looked_up: Option<Option<u32>>,
    /// The replay checks ([`precheck`]) passed on `looked_up`'s entry already.
    pub(super) prechecked: bool,
}

impl Tracker {
    /// `pre`: what the batched path ([`super::batch`]) opened ahead for this datagram; the
    /// decisions, counters and events are the same with or without it (an open is a pure
    /// function of key and bytes, and the agent key of a master-key datagram is a pure
    /// function of master key and pid, whether kept or derived).
    pub(super) fn pipeline(
        &mut self,
        now: Nanos,
        origin: &Origin,
        bytes: &[u8],
        pre: Option<Pre>,
    ) -> Result<Accepted, Rejection> {
        let v = match *origin {
            Origin::Unix { pid, uid } | Origin::UnixOtherNamespace { pid, uid } => {
                if !self.allowed_uids.contains(&uid) {
                    return Err(Rejection::UidRefused { uid });
                }
                let mut frame = Frame::parse(bytes).map_err(Rejection::Decode)?;
                if matches!(origin, Origin::UnixOtherNamespace { .. }) {
                    frame = with_pid(&frame, pid).map_err(Rejection::Decode)?;
                }
                if frame.pid() != pid {
                    return Err(Rejection::PidMismatch {
                        attested: pid,
                        claimed: frame.pid(),
                    });
                }
                Verified {
                    listener: 0,
                    agent_key: false,
                    origin: 0,
                    frame,
                    iv: None,
                    looked_up: None,
                    prechecked: false,
                }
            }
            Origin::Udp { listener } | Origin::UdpFrom { listener, .. } => {
                let source = match *origin {
                    Origin::UdpFrom { source, .. } => Some(source),
                    _ => None,
                };
                let (Some(mode), Some(code)) = (
                    self.udp.get(listener),
                    listener_code(Listener::Udp(listener)),
                ) else {
                    return Err(Rejection::UnknownListener { listener });
                };
                match mode {
                    UdpMode::Plain => Verified {
                        listener: code,
                        agent_key: false,
                        origin: source.map_or(0, |a| origin_fingerprint(self.origin_seed, a)),
                        frame: Frame::parse(bytes).map_err(Rejection::Decode)?,
                        iv: None,
                        looked_up: None,
                        prechecked: false,
                    },
                    UdpMode::Secure { keys, master } => match bytes.len() {
                        FRAME_LEN => return Err(Rejection::PlaintextRefused),
                        SHARED_LEN => {
                            let (iv, frame) = match pre {
                                Some(Pre::Shared(opened)) => opened?,
                                _ => open_shared(keys, bytes)?,
                            };
                            Verified {
                                listener: code,
                                agent_key: false,
                                origin: 0,
                                frame,
                                iv: Some(iv),
                                looked_up: None,
                                prechecked: false,
                            }
                        }
                        MASTER_LEN => {
                            let Some(master) = master else {
                                return Err(Rejection::NoKey { len: MASTER_LEN });
                            };
                            let d = MasterDatagram::from_bytes(bytes).map_err(Rejection::Open)?;
                            let slot = self.table.find(tag(code, true, d.pid()));
                            // Replay window first: a flood of replays costs a lookup, not an
                            // AEAD pass. The same lookup finds the agent's kept key.
                            let mut kept = None;
                            if let Some(s) = slot {
                                let a = &self.table.slab[s as usize];
                                precheck(a, &self.histories, s, &d.iv())?;
                                if a.has_key() {
                                    kept = self.keys.as_ref().and_then(|k| k.get(s));
                                }
                            }
                            let (opened, derived) = match pre {
                                Some(Pre::Master { opened, derived }) => (Some(opened), derived),
                                _ => (None, None),
                            };
                            let (iv, frame, new_key) = match kept {
                                Some(k) => {
                                    let opened = opened.unwrap_or_else(|| d.open(k));
                                    let (iv, frame) = opened.map_err(Rejection::Open)?;
                                    (iv, frame, None)
                                }
                                None => {
                                    // An identity not tracked yet: bounded HKDF work (`rate`).
                                    if slot.is_none() && !self.rate.try_derive(now) {
                                        return Err(Rejection::DeriveBudget);
                                    }
                                    // Counted whether or not the batch derived it already:
                                    // one per datagram that finds no kept key, as one by one.
                                    self.stats.key_derivations += 1;
                                    let k = derived
                                        .unwrap_or_else(|| derive_agent_key(master, d.pid()));
                                    let opened = opened.unwrap_or_else(|| d.open(&k));
                                    let (iv, frame) = opened.map_err(Rejection::Open)?;
                                    (iv, frame, Some(k))
                                }
                            };
                            let pid = frame.pid();
                            let r = self.track_limited(
                                now,
                                Verified {
                                    listener: code,
                                    agent_key: true,
                                    origin: 0,
                                    frame,
                                    iv: Some(iv),
                                    looked_up: Some(slot),
                                    prechecked: true,
                                },
                            );
                            if let (Some(k), Ok(_)) = (new_key, &r) {
                                // It opened an accepted datagram of this agent: keep it in
                                // the agent's slot (a second lookup, once per agent).
                                if let Some(s) = self.table.find(tag(code, true, pid)) {
                                    self.keep_key(s, k);
                                }
                            }
                            return r;
                        }
                        len => return Err(Rejection::Decode(DecodeError::BadLength { len })),
                    },
                }
            }
        };
        self.track_limited(now, v)
    }

    /// Keeps a master-derived agent key in `slot`'s key store (if the slot is within it).
    pub(super) fn keep_key(&mut self, slot: u32, key: Key) {
        if let Some(keys) = self.keys.as_mut() {
            if keys.store(slot, key) {
                self.table.slab[slot as usize].set_has_key();
            }
        }
    }
}

pub(super) fn open_shared(keys: &[Key], bytes: &[u8]) -> Result<(Iv, Frame), Rejection> {
    if keys.is_empty() {
        return Err(Rejection::NoKey { len: SHARED_LEN });
    }
    let d = SharedDatagram::from_bytes(bytes).map_err(Rejection::Open)?;
    for k in keys {
        match d.open(k) {
            Ok(ok) => return Ok(ok),
            Err(OpenError::BadTag) => {}
            Err(e) => return Err(Rejection::Open(e)),
        }
    }
    Err(Rejection::Open(OpenError::BadTag))
}

/// A 64-bit fingerprint of a UDP source address, never 0: an IPv4 address and port exactly
/// (top bit set), an IPv6 one by a hash keyed with `seed` (top bit clear), which the state
/// file carries so fingerprints stay comparable across restarts.
pub(super) fn origin_fingerprint(seed: u64, addr: SocketAddr) -> u64 {
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => (1 << 63) | (u64::from(u32::from(ip)) << 16) | u64::from(addr.port()),
        IpAddr::V6(ip) => {
            use core::hash::BuildHasher;
            let h = foldhash::quality::FixedState::with_seed(seed)
                .hash_one((u128::from(ip), addr.port()));
            (h >> 1).max(1)
        }
    }
}

/// `frame` as sent under `pid` instead (an agent of another PID namespace, tracked under the
/// pid this observer sees).
fn with_pid(frame: &Frame, pid: u32) -> Result<Frame, vlp_core::DecodeError> {
    if frame.is_goodbye() {
        Frame::goodbye(pid, frame.timestamp())
    } else if frame.is_terminal() {
        Frame::terminal(pid, frame.timestamp(), frame.payload())
    } else {
        Frame::new(
            frame.status(),
            pid,
            frame.timestamp(),
            frame.nonce(),
            frame.payload(),
        )
    }
}
