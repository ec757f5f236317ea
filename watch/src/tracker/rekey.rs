//! Replacing the UDP listeners' keys while running (configuration reload): tracked agents,
//! their deadlines and replay windows stay; only what the keys decide changes.

use super::{Tracker, UdpMode};

/// A refused [`Tracker::set_udp_modes`]: the listeners' shape changed, which needs a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RekeyError {
    /// Another number of UDP listeners.
    #[error("UDP listeners: {had} configured at start, {got} now (needs a restart)")]
    Listeners {
        /// At start.
        had: usize,
        /// Now.
        got: usize,
    },
    /// A listener changed between plaintext and secure, or gained or lost its master key.
    #[error("UDP listener {0}: plaintext/secure or master-key presence changed (needs a restart)")]
    Kind(usize),
}

impl Tracker {
    /// Replaces each UDP listener's accepted keys. The shape must stay (same listeners, each
    /// still plaintext or secure, with or without a master key); cached per-agent keys are
    /// dropped when a master key changes, so the next datagram derives them again.
    ///
    /// # Errors
    /// [`RekeyError`]; nothing changes then.
    pub fn set_udp_modes(&mut self, modes: Vec<UdpMode>) -> Result<(), RekeyError> {
        if modes.len() != self.udp.len() {
            return Err(RekeyError::Listeners {
                had: self.udp.len(),
                got: modes.len(),
            });
        }
        let mut master_changed = false;
        for (i, (old, new)) in self.udp.iter().zip(&modes).enumerate() {
            match (old, new) {
                (UdpMode::Plain, UdpMode::Plain) => {}
                (UdpMode::Secure { master: a, .. }, UdpMode::Secure { master: b, .. })
                    if a.is_some() == b.is_some() =>
                {
                    master_changed |= a != b;
                }
                _ => return Err(RekeyError::Kind(i)),
            }
        }
        self.udp = modes;
        if master_changed {
            for slot in 0..self.table.slab.len() {
                if self.table.slab[slot].has_key() {
                    let s = u32::try_from(slot).unwrap_or(u32::MAX);
                    if let Some(keys) = self.keys.as_mut() {
                        keys.clear(s);
                    }
                    self.table.slab[slot].clear_has_key();
                }
            }
        }
        Ok(())
    }
}
