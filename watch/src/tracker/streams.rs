//! The AEAD streams an identity used before its current one, and the tombstones of evicted
//! identities.
//!
//! A secure agent's current stream (`iv_random`) is followed by the replay window in its slab
//! entry. Every stream it left (a restart, an IV rotation) and every stream a crash report
//! came from (the panic hook seals with a session of its own) is remembered here, with the
//! highest counter taken from it: at most [`STREAM_HISTORY`] per identity, the oldest dropped
//! first. A datagram of a left stream is refused whatever its counter
//! ([`super::Rejection::RetiredStream`]): cycling captured datagrams of older sessions cannot
//! make a hung agent look alive or restarted. A crash-report stream refuses the datagram it
//! took and anything older ([`super::Rejection::AfterTerminal`]).
//!
//! When a secure identity is evicted its history, its current stream included, becomes a
//! tombstone, kept in a bounded table (least recently written dropped first). A datagram of a
//! tombstoned stream does not create the agent again ([`super::Rejection::EvictedStream`]);
//! a new stream does, and inherits the tombstone as its history.
//!
//! Histories are kept per slab slot in a dense vector (grown as slots are first used), so a
//! lookup is an index, never a hash, and nothing is allocated per datagram.

use hashbrown::HashTable;
use vlp_core::{Iv, ReplayError};

use super::Rejection;

/// Streams remembered per identity besides the current one.
pub const STREAM_HISTORY: usize = 4;

/// What a remembered stream was to its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub(crate) enum SeenKind {
    /// A stream the agent left (a restart, an IV rotation): nothing more comes from it.
    #[default]
    Left = 0,
    /// A crash report's own stream: its terminal frame was taken at `highest`; a later
    /// counter is another crash report.
    CrashReport = 1,
    /// The stream that was current when the identity was evicted: a later counter is the
    /// same process resuming (it was silent past the eviction), not a replay.
    LastCurrent = 2,
}

impl SeenKind {
    pub(crate) fn from_u8(b: u8) -> Option<SeenKind> {
        match b {
            0 => Some(SeenKind::Left),
            1 => Some(SeenKind::CrashReport),
            2 => Some(SeenKind::LastCurrent),
            _ => None,
        }
    }
}

/// A stream an identity used before, or a crash report's own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Seen {
    /// The stream's `iv_random`.
    pub random: [u8; 8],
    /// Highest counter taken from it.
    pub highest: u32,
    /// What it was.
    pub kind: SeenKind,
}

impl Seen {
    /// Whether `iv` may be taken from this remembered stream; `left` is the refusal for a
    /// stream the agent left ([`super::Rejection::RetiredStream`] for a tracked identity,
    /// [`super::Rejection::EvictedStream`] for a tombstone).
    pub(crate) fn check(&self, iv: &Iv, left: Rejection) -> Result<(), Rejection> {
        match self.kind {
            SeenKind::Left => Err(left),
            SeenKind::LastCurrent if iv.counter <= self.highest => Err(left),
            SeenKind::CrashReport if iv.counter == self.highest => {
                Err(Rejection::Replay(ReplayError::Replayed {
                    counter: iv.counter,
                }))
            }
            SeenKind::CrashReport if iv.counter < self.highest => Err(Rejection::AfterTerminal),
            SeenKind::LastCurrent | SeenKind::CrashReport => Ok(()),
        }
    }
}

/// An identity's earlier streams, most recent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct History {
    seen: [Seen; STREAM_HISTORY],
    len: u8,
}

impl History {
    pub(crate) const EMPTY: History = History {
        seen: [Seen {
            random: [0; 8],
            highest: 0,
            kind: SeenKind::Left,
        }; STREAM_HISTORY],
        len: 0,
    };

    /// The entry of stream `random`.
    pub(crate) fn find(&self, random: &[u8; 8]) -> Option<Seen> {
        self.iter().find(|s| s.random == *random)
    }

    /// Remembers `s`, replacing an entry of the same stream, dropping the oldest if full.
    pub(crate) fn remember(&mut self, s: Seen) {
        let len = usize::from(self.len);
        let at = self.seen[..len]
            .iter()
            .position(|e| e.random == s.random)
            .unwrap_or(len.min(STREAM_HISTORY - 1));
        // Shift the entries before `at` down by one and put `s` first.
        self.seen.copy_within(0..at, 1);
        self.seen[0] = s;
        if at == len && len < STREAM_HISTORY {
            self.len += 1;
        }
    }

    /// The entries, most recent first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Seen> + '_ {
        self.seen[..usize::from(self.len)].iter().copied()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Builds a history from entries, most recent first (the state file); extra entries
    /// beyond [`STREAM_HISTORY`] are dropped.
    pub(crate) fn from_entries(entries: &[Seen]) -> History {
        let mut h = History::EMPTY;
        for s in entries.iter().take(STREAM_HISTORY).rev() {
            h.remember(*s);
        }
        h
    }
}

/// Per-slot histories (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Histories {
    by_slot: Vec<History>,
}

impl Histories {
    /// Room for the first `slots` slots reserved up front (grown past it as needed).
    pub(crate) fn with_capacity(slots: usize) -> Histories {
        Histories {
            by_slot: Vec::with_capacity(slots),
        }
    }

    pub(crate) fn get(&self, slot: u32) -> History {
        self.by_slot
            .get(slot as usize)
            .copied()
            .unwrap_or(History::EMPTY)
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> &mut History {
        let i = slot as usize;
        if i >= self.by_slot.len() {
            // Slots are handed out densely: this grows by about one entry per new slot.
            self.by_slot.resize(i + 1, History::EMPTY);
        }
        &mut self.by_slot[i]
    }

    /// Forgets `slot`'s history, returning it.
    pub(crate) fn take(&mut self, slot: u32) -> History {
        self.by_slot
            .get_mut(slot as usize)
            .map(|h| std::mem::replace(h, History::EMPTY))
            .unwrap_or(History::EMPTY)
    }
}

/// One tombstone: an evicted identity's streams, on the recency list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tomb {
    pub tag: u64,
    pub history: History,
    prev: u32,
    next: u32,
}

const NIL: u32 = u32::MAX;

/// Tombstones of evicted secure identities: a bounded table with least-recently-written
/// eviction, O(1) per operation.
pub(crate) struct Tombstones {
    slab: Vec<Tomb>,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    free: u32,
    /// Least recently written.
    head: u32,
    /// Most recently written.
    tail: u32,
    len: usize,
    cap: usize,
    /// Tombstones dropped to make room.
    pub dropped: u64,
}

impl Tombstones {
    /// At most `cap` tombstones; room for `reserve` of them taken now.
    pub(crate) fn new(cap: usize, reserve: usize) -> Tombstones {
        let reserve = reserve.min(cap);
        Tombstones {
            slab: Vec::with_capacity(reserve),
            index: HashTable::with_capacity(reserve),
            hasher: foldhash::fast::RandomState::default(),
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
            cap: cap.min(super::MAX_CAPACITY),
            dropped: 0,
        }
    }

    fn hash(&self, tag: u64) -> u64 {
        use core::hash::BuildHasher;
        self.hasher.hash_one(tag)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn find(&self, tag: u64) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(self.hash(tag), |&i| slab[i as usize].tag == tag)
            .copied()
    }

    /// The tombstone of `tag`.
    pub(crate) fn get(&self, tag: u64) -> Option<&History> {
        self.find(tag).map(|i| &self.slab[i as usize].history)
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.slab[i as usize].prev, self.slab[i as usize].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slab[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slab[next as usize].prev = prev;
        }
    }

    /// Removes and returns the tombstone of `tag`.
    pub(crate) fn take(&mut self, tag: u64) -> Option<History> {
        let i = self.find(tag)?;
        self.unlink(i);
        let h = self.hash(tag);
        let slab = &self.slab;
        if let Ok(e) = self.index.find_entry(h, |&s| slab[s as usize].tag == tag) {
            e.remove();
        }
        let t = &mut self.slab[i as usize];
        let history = t.history;
        t.next = self.free;
        self.free = i;
        self.len -= 1;
        Some(history)
    }

    /// Writes the tombstone of `tag` (replacing an older one), dropping the least recently
    /// written one if full. A zero capacity keeps nothing.
    pub(crate) fn put(&mut self, tag: u64, history: History) {
        if self.cap == 0 || history.is_empty() {
            return;
        }
        self.take(tag);
        if self.len >= self.cap {
            let oldest = self.slab[self.head as usize].tag;
            self.take(oldest);
            self.dropped += 1;
        }
        let t = Tomb {
            tag,
            history,
            prev: self.tail,
            next: NIL,
        };
        let i = if self.free == NIL {
            let i = u32::try_from(self.slab.len()).unwrap_or(NIL);
            self.slab.push(t);
            i
        } else {
            let i = self.free;
            self.free = self.slab[i as usize].next;
            self.slab[i as usize] = t;
            i
        };
        if self.tail == NIL {
            self.head = i;
        } else {
            self.slab[self.tail as usize].next = i;
        }
        self.tail = i;
        let h = self.hash(tag);
        let Tombstones {
            index,
            slab,
            hasher,
            ..
        } = self;
        index.insert_unique(h, i, |&s| {
            use core::hash::BuildHasher;
            hasher.hash_one(slab[s as usize].tag)
        });
        self.len += 1;
    }

    /// Every tombstone, least recently written first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Tomb> + '_ {
        let mut i = self.head;
        std::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let t = &self.slab[i as usize];
            i = t.next;
            Some(t)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(b: u8) -> Seen {
        Seen {
            random: [b; 8],
            highest: u32::from(b),
            kind: SeenKind::Left,
        }
    }

    #[test]
    fn history_keeps_the_most_recent_streams_first_and_drops_the_oldest() {
        let mut h = History::EMPTY;
        for b in 1..=6 {
            h.remember(seen(b));
        }
        let order: Vec<u8> = h.iter().map(|s| s.random[0]).collect();
        assert_eq!(order, [6, 5, 4, 3]);
        // Remembering a stream again moves it to the front without a duplicate.
        h.remember(Seen {
            highest: 99,
            ..seen(4)
        });
        let order: Vec<u8> = h.iter().map(|s| s.random[0]).collect();
        assert_eq!(order, [4, 6, 5, 3]);
        assert_eq!(h.find(&[4; 8]).unwrap().highest, 99);
        assert_eq!(h.find(&[1; 8]), None);
    }

    #[test]
    fn tombstones_are_bounded_and_drop_the_least_recently_written() {
        let mut t = Tombstones::new(2, 2);
        let mut h = History::EMPTY;
        h.remember(seen(1));
        t.put(10, h);
        t.put(11, h);
        t.put(10, h); // rewritten: now the most recent
        t.put(12, h); // drops 11
        assert_eq!(t.len(), 2);
        assert!(t.get(11).is_none());
        assert!(t.get(10).is_some() && t.get(12).is_some());
        assert_eq!(t.dropped, 1);
        assert_eq!(t.take(10), Some(h));
        assert_eq!(t.len(), 1);
        let tags: Vec<u64> = t.iter().map(|x| x.tag).collect();
        assert_eq!(tags, [12]);
        // Nothing is kept with capacity 0, nor an empty history.
        let mut z = Tombstones::new(0, 0);
        z.put(1, h);
        assert_eq!(z.len(), 0);
        t.put(13, History::EMPTY);
        assert!(t.get(13).is_none());
    }
}
