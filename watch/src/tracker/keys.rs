//! The bounded cache of per-agent keys derived from a master key (VLP v0.2 §4).
//!
//! Deriving an agent key is two HMAC-SHA256 passes; a beat's open is one ChaCha20-Poly1305
//! pass. The cache keeps the derived key of recently seen agents so the steady state does not
//! derive at all. It is two-way set-associative (a key may sit in either slot of its pair; a
//! newcomer replaces the less recently used one, so two agents whose hashes collide do not
//! evict each other on every beat), allocated once, and filled only with keys whose datagram
//! authenticated, so a flood of forged pids costs a derivation each but cannot push good
//! agents out.

use core::hash::BuildHasher;

use vlp_core::Key;

struct Slot {
    tag: u64,
    /// Value of the cache's clock at the last hit or insertion.
    used: u64,
    key: Key,
}

/// Two-way set-associative cache `(listener, pid) -> agent key`.
pub(crate) struct KeyCache {
    slots: Vec<Option<Slot>>,
    mask: usize,
    hasher: foldhash::fast::RandomState,
    clock: u64,
}

impl KeyCache {
    /// A cache of `slots` entries, rounded up to a power of two (at least 2).
    pub(crate) fn new(slots: usize) -> KeyCache {
        let n = slots.max(2).next_power_of_two();
        let mut v = Vec::with_capacity(n);
        v.resize_with(n, || None);
        KeyCache {
            slots: v,
            // Buckets are pairs: the low bit selects the way.
            mask: (n - 1) & !1,
            hasher: foldhash::fast::RandomState::default(),
            clock: 0,
        }
    }

    fn bucket(&self, tag: u64) -> usize {
        // Truncation is the point: the low bits select the bucket.
        let h = self.hasher.hash_one(tag) as usize;
        h & self.mask
    }

    /// The cached key of identity `tag` (marks it recently used).
    pub(crate) fn get(&mut self, tag: u64) -> Option<&Key> {
        let b = self.bucket(tag);
        self.clock += 1;
        let clock = self.clock;
        let way = (b..b + 2).find(|&i| matches!(&self.slots[i], Some(s) if s.tag == tag))?;
        let slot = self.slots[way].as_mut()?;
        slot.used = clock;
        Some(&slot.key)
    }

    /// Caches `key` for `tag` in the less recently used (or empty) way of its pair; the
    /// replaced key is zeroized on drop.
    pub(crate) fn insert(&mut self, tag: u64, key: Key) {
        let b = self.bucket(tag);
        self.clock += 1;
        let age = |s: &Option<Slot>| s.as_ref().map_or(0, |s| s.used);
        let way = if age(&self.slots[b]) <= age(&self.slots[b + 1]) {
            b
        } else {
            b + 1
        };
        self.slots[way] = Some(Slot {
            tag,
            used: self.clock,
            key,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_ways_hold_colliding_keys_and_the_least_recently_used_goes() {
        // One pair of slots: every tag collides.
        let mut c = KeyCache::new(2);
        let k = |b| Key::from_bytes([b; 32]);
        c.insert(1, k(1));
        c.insert(2, k(2));
        assert_eq!(c.get(1), Some(&k(1)));
        assert_eq!(c.get(2), Some(&k(2)));
        assert_eq!(c.get(1), Some(&k(1)));
        // 2 is now the less recently used: 3 replaces it.
        c.insert(3, k(3));
        assert_eq!(c.get(2), None);
        assert_eq!(c.get(1), Some(&k(1)));
        assert_eq!(c.get(3), Some(&k(3)));
    }
}
