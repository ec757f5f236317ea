//! The bounded cache of per-agent keys derived from a master key (VLP v0.2 §4).
//!
//! Deriving an agent key is two HMAC-SHA256 passes; a beat's open is one ChaCha20-Poly1305
//! pass. The cache keeps the derived key of recently seen agents so the steady state does not
//! derive at all. It is direct-mapped (one slot per hash bucket, a collision replaces the
//! occupant), allocated once, and filled only with keys whose datagram authenticated, so a
//! flood of forged pids costs a derivation each but cannot push good agents out.

use core::hash::BuildHasher;

use vlp_core::Key;

struct Slot {
    tag: u64,
    key: Key,
}

/// Direct-mapped cache `(listener, pid) -> agent key`.
pub(crate) struct KeyCache {
    slots: Vec<Option<Slot>>,
    mask: usize,
    hasher: foldhash::fast::RandomState,
}

impl KeyCache {
    /// A cache of `slots` entries, rounded up to a power of two (at least 1).
    pub(crate) fn new(slots: usize) -> KeyCache {
        let n = slots.max(1).next_power_of_two();
        let mut v = Vec::with_capacity(n);
        v.resize_with(n, || None);
        KeyCache {
            slots: v,
            mask: n - 1,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn bucket(&self, tag: u64) -> usize {
        // Truncation is the point: the low bits select the bucket.
        let h = self.hasher.hash_one(tag) as usize;
        h & self.mask
    }

    /// The cached key of identity `tag`.
    pub(crate) fn get(&self, tag: u64) -> Option<&Key> {
        match &self.slots[self.bucket(tag)] {
            Some(s) if s.tag == tag => Some(&s.key),
            _ => None,
        }
    }

    /// Caches `key` for `tag`, replacing whatever shared its bucket (the old key is zeroized
    /// on drop).
    pub(crate) fn insert(&mut self, tag: u64, key: Key) {
        let b = self.bucket(tag);
        self.slots[b] = Some(Slot { tag, key });
    }
}
