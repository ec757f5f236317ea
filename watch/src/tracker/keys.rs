//! Agent keys derived from a master key (VLP v0.2 §4), kept per agent slot.
//!
//! Deriving an agent key is two HMAC-SHA256 passes; a beat's open is one ChaCha20-Poly1305
//! pass. The key of an admitted agent is kept in a dense vector indexed by the agent's slab
//! slot (the slot's [`super::table::Agent::has_key`] flag says whether it holds that agent's
//! key), so a beat finds its key with the table lookup it makes anyway: no second hash, no
//! probing, one cache line. Only keys whose datagram authenticated are kept, and only in the
//! slot of the agent they authenticated, so forged datagrams can neither fill nor evict
//! anything. Keys are kept for the first [`super::KEY_CACHE_MAX`] slots (4 MiB at most, grown
//! as agents are admitted); agents in later slots cost one derivation per beat.

use vlp_core::Key;

/// Per-slot agent keys (see the module docs).
pub(crate) struct AgentKeys {
    keys: Vec<Key>,
    max: usize,
}

impl AgentKeys {
    /// Room for the keys of slots `0..max`, allocated as they are used.
    pub(crate) fn new(max: usize) -> AgentKeys {
        AgentKeys {
            keys: Vec::new(),
            max,
        }
    }

    /// The key stored for `slot` (meaningful only if the slot's flag says it holds one).
    pub(crate) fn get(&self, slot: u32) -> Option<&Key> {
        self.keys.get(slot as usize)
    }

    /// Stores `key` for `slot`; `false` if the slot is beyond the bound (not kept).
    pub(crate) fn store(&mut self, slot: u32, key: Key) -> bool {
        let i = slot as usize;
        if i >= self.max {
            return false;
        }
        if i >= self.keys.len() {
            // Slots are handed out densely, so this grows by about one key per admission.
            self.keys
                .resize_with(i + 1, || Key::from_bytes([0; vlp_core::envelope::KEY_LEN]));
        }
        self.keys[i] = key;
        true
    }

    /// Forgets the key of `slot` (the old key is zeroized on drop).
    pub(crate) fn clear(&mut self, slot: u32) {
        if let Some(k) = self.keys.get_mut(slot as usize) {
            *k = Key::from_bytes([0; vlp_core::envelope::KEY_LEN]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_per_slot_up_to_the_bound() {
        let mut c = AgentKeys::new(4);
        let k = |b| Key::from_bytes([b; 32]);
        assert!(c.store(2, k(2)));
        assert!(c.store(0, k(1)));
        assert_eq!(c.get(2), Some(&k(2)));
        assert_eq!(c.get(0), Some(&k(1)));
        assert!(!c.store(4, k(4)), "beyond the bound");
        assert_eq!(c.get(4), None);
        c.clear(2);
        assert_eq!(c.get(2), Some(&k(0)));
    }
}
