//! The agent table: a slab of fixed-size entries, a compact hash index over it, and intrusive
//! deadline lists threaded through the slab.
//!
//! Memory per agent is one [`Agent`] (96 bytes, pinned by a `const` assertion) plus one `u32`
//! bucket and one control byte of the hash index (about 10 bytes at hashbrown's load factor).
//! The index stores only slot numbers: the key lives once, in the slab entry.
//!
//! With one global threshold, an agent's stall deadline is `last_beat + threshold`, and
//! `last_beat` is the (monotonic) time its last beat was accepted; appending an agent to the
//! tail of the `alive` list whenever it beats therefore keeps the list sorted by deadline, and
//! the earliest deadline is always at its head: O(1) per beat, O(1) per fired deadline. The
//! `stalled` list is filled in stall order, which is `last_beat` order, so its eviction
//! deadlines (`last_beat + threshold + evict_after`) are sorted too; the `dead` list is filled
//! at death time (`last_beat` = time of the terminal frame), sorted the same way.
//!
//! Per-class thresholds keep that property by giving each **threshold class** (a small index,
//! one per distinct threshold, at most [`MAX_THRESHOLD_CLASSES`]) its own `alive` and `stalled`
//! lists: within one class every deadline is `last_beat + threshold_of(class)`, so each list
//! stays sorted, and the earliest deadline is among the list heads (a few dozen at most). The
//! class of a slot is one byte in a side array beside the slab (the 96-byte entry has no spare
//! byte), read when the slot is linked into a list. The `dead` lists do not depend on it.

use hashbrown::HashTable;
use vlp_core::{ReplayWindow, Status};

use super::{AgentId, KeyClass, Listener, Nanos};

/// Most threshold classes (distinct thresholds) the table keeps lists for; a class is a `u8`.
pub(crate) const MAX_THRESHOLD_CLASSES: usize = 128;

/// No class change waits for the slot's next beat.
pub(crate) const NO_PENDING: u8 = u8::MAX;

/// Most entries [`Table::insert_sorted`] steps over before it gives up.
pub(crate) const MAX_INSERT_STEPS: usize = 64;

/// "No slot" in the intrusive links.
pub(crate) const NIL: u32 = u32::MAX;

/// Lifecycle of a slab entry (low bits of [`Agent::bits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// On the free list.
    Free = 0,
    /// Beating; on the `alive` list.
    Alive = 1,
    /// Silent for the threshold; on the `stalled` list.
    Stalled = 2,
    /// Terminal frame seen (crash); on the `dead` list.
    DeadCrash = 3,
    /// Goodbye seen (clean exit); on the `dead` list.
    DeadClean = 4,
}

const PHASE_MASK: u8 = 0b0000_0111;
/// The agent speaks through a secure listener: its window is live and its earlier streams are
/// in the tracker's histories.
const FLAG_SECURE: u8 = 0b0000_1000;
/// The identity's datagrams are sealed with its own (master-derived) key: part of the
/// identity ([`KeyClass::Agent`]).
const FLAG_AGENT_KEY: u8 = 0b0001_0000;
/// The tracker's per-slot key store holds this agent's master-derived key.
const FLAG_KEY: u8 = 0b0100_0000;

/// One tracked agent. Kept at 96 bytes: see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    /// Replay window over the current AEAD stream (secure agents only).
    pub window: ReplayWindow,
    /// Nonce of the last accepted regular (non-terminal) beat of the current session.
    pub last_nonce: u64,
    /// Sender timestamp of the last accepted frame (terminal included) of the session (plain
    /// agents; secure agents order frames by the AEAD counter and never read timestamps).
    pub last_ts: u64,
    /// Observer time the last beat (or terminal frame) was accepted; orders the lists.
    pub last_beat: Nanos,
    /// Regular (non-terminal) frames accepted from this identity, across sessions.
    pub beats: u64,
    /// Plaintext UDP agents: fingerprint of the source address of the last accepted frame
    /// (0: not known). See [`super::origin`].
    pub origin: u64,
    /// The agent's pid (frame pid, attested for Unix).
    pub pid: u32,
    /// Previous entry on this entry's list.
    pub prev: u32,
    /// Next entry on this entry's list, or next free slot.
    pub next: u32,
    /// Stall events raised for this identity.
    pub stalls: u32,
    /// Payload of the last accepted frame.
    pub payload: u32,
    /// 0 = Unix, n + 1 = UDP listener n.
    pub listener: u16,
    /// Last wire status.
    pub status: u8,
    /// [`Phase`] in the low bits, flags above.
    pub bits: u8,
}

const _: () = assert!(core::mem::size_of::<Agent>() <= 96);

impl Agent {
    pub(crate) const EMPTY: Agent = Agent {
        window: ReplayWindow::new(),
        last_nonce: 0,
        last_ts: 0,
        last_beat: 0,
        beats: 0,
        origin: 0,
        pid: 0,
        prev: NIL,
        next: NIL,
        stalls: 0,
        payload: 0,
        listener: 0,
        status: 0,
        bits: 0,
    };

    pub(crate) fn phase(&self) -> Phase {
        match self.bits & PHASE_MASK {
            1 => Phase::Alive,
            2 => Phase::Stalled,
            3 => Phase::DeadCrash,
            4 => Phase::DeadClean,
            _ => Phase::Free,
        }
    }

    pub(crate) fn set_phase(&mut self, p: Phase) {
        self.bits = (self.bits & !PHASE_MASK) | p as u8;
    }

    pub(crate) fn is_dead(&self) -> bool {
        matches!(self.phase(), Phase::DeadCrash | Phase::DeadClean)
    }

    pub(crate) fn secure(&self) -> bool {
        self.bits & FLAG_SECURE != 0
    }

    pub(crate) fn set_secure(&mut self) {
        self.bits |= FLAG_SECURE;
    }

    /// Whether the identity is a per-agent-key one ([`KeyClass::Agent`]).
    pub(crate) fn agent_key(&self) -> bool {
        self.bits & FLAG_AGENT_KEY != 0
    }

    pub(crate) fn set_agent_key(&mut self) {
        self.bits |= FLAG_AGENT_KEY;
    }

    /// Whether no other sender can claim the identity ([`AgentId::is_proven`]).
    pub(crate) fn proven(&self) -> bool {
        self.listener == 0 || self.agent_key()
    }

    /// Whether the per-slot key store holds this agent's key.
    pub(crate) fn has_key(&self) -> bool {
        self.bits & FLAG_KEY != 0
    }

    pub(crate) fn set_has_key(&mut self) {
        self.bits |= FLAG_KEY;
    }

    pub(crate) fn clear_has_key(&mut self) {
        self.bits &= !FLAG_KEY;
    }

    pub(crate) fn status(&self) -> Status {
        Status::from_u8(self.status).unwrap_or(Status::Ok)
    }

    pub(crate) fn key_class(&self) -> KeyClass {
        if self.agent_key() {
            KeyClass::Agent
        } else if self.secure() {
            KeyClass::Shared
        } else {
            KeyClass::None
        }
    }

    pub(crate) fn id(&self) -> AgentId {
        AgentId {
            listener: listener_of(self.listener),
            pid: self.pid,
            key_class: self.key_class(),
        }
    }

    pub(crate) fn tag(&self) -> u64 {
        tag(self.listener, self.agent_key(), self.pid)
    }

    /// The raw flag byte for the state file (phase and flags; the key-store flag excluded,
    /// keys are not persisted).
    pub(crate) fn persisted_bits(&self) -> u8 {
        self.bits & !FLAG_KEY
    }

    /// Restores [`Agent::persisted_bits`]; `None` if they name no live phase or hold
    /// unknown flags.
    pub(crate) fn from_persisted_bits(bits: u8) -> Option<u8> {
        let known = PHASE_MASK | FLAG_SECURE | FLAG_AGENT_KEY;
        let phase = bits & PHASE_MASK;
        (bits & !known == 0 && (1..=4).contains(&phase)).then_some(bits)
    }
}

/// The listener code stored in an [`Agent`]: 0 = Unix, n + 1 = UDP listener n. `None` for UDP
/// listener numbers that do not fit (the tracker refuses those as unknown listeners).
pub(crate) fn listener_code(l: Listener) -> Option<u16> {
    match l {
        Listener::Unix => Some(0),
        Listener::Udp(n) => u16::try_from(n).ok().and_then(|n| n.checked_add(1)),
    }
}

fn listener_of(code: u16) -> Listener {
    match code {
        0 => Listener::Unix,
        n => Listener::Udp(usize::from(n - 1)),
    }
}

/// The index key of an identity: listener code, key-class bit, pid.
pub(crate) fn tag(listener: u16, agent_key: bool, pid: u32) -> u64 {
    (u64::from(listener) << 33) | (u64::from(agent_key) << 32) | u64::from(pid)
}

/// Which deadline list an entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListId {
    Alive = 0,
    Stalled = 1,
    Dead = 2,
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };
}

/// Slab + index + lists. Every operation is O(1) (amortised for growth of the slab and the
/// index, which happens only when a new agent is admitted).
pub(crate) struct Table {
    pub slab: Vec<Agent>,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    free: u32,
    /// Per threshold class `c`, list `l` (alive or stalled) of unproven identities at
    /// `(2c + l) * 2`, proven ones at `(2c + l) * 2 + 1` (see [`Agent::proven`]), so the
    /// capacity reserve finds an unproven victim without a walk; the two dead lists last.
    lists: Vec<List>,
    /// Threshold classes with lists.
    classes: usize,
    /// The threshold class of each slot and the class it moves to at its next beat
    /// ([`NO_PENDING`] if none), parallel to `slab`.
    class: Vec<[u8; 2]>,
    len: usize,
    unproven: usize,
    capacity: usize,
}

impl Table {
    /// Room for `capacity` agents; memory is reserved as agents arrive, not up front.
    pub(crate) fn new(capacity: usize) -> Table {
        let initial = capacity.min(1024);
        Table {
            slab: Vec::with_capacity(initial),
            index: HashTable::with_capacity(initial),
            hasher: foldhash::fast::RandomState::default(),
            free: NIL,
            lists: vec![List::EMPTY; 6],
            classes: 1,
            class: Vec::with_capacity(initial),
            len: 0,
            unproven: 0,
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries whose identity is not proven ([`Agent::proven`]).
    pub(crate) fn unproven_len(&self) -> usize {
        self.unproven
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    fn hash(&self, tag: u64) -> u64 {
        use core::hash::BuildHasher;
        self.hasher.hash_one(tag)
    }

    /// The slot of identity `tag`.
    pub(crate) fn find(&self, tag: u64) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(self.hash(tag), |&s| slab[s as usize].tag() == tag)
            .copied()
    }

    /// Takes a free slot (or grows the slab), resets it to `agent` and indexes it. The caller
    /// checked [`Table::is_full`] and that the identity is not present.
    pub(crate) fn insert(&mut self, agent: Agent) -> u32 {
        let slot = if self.free != NIL {
            let s = self.free;
            self.free = self.slab[s as usize].next;
            self.slab[s as usize] = agent;
            s
        } else {
            let s = u32::try_from(self.slab.len()).unwrap_or(NIL);
            debug_assert!(s != NIL, "capacity is clamped below u32::MAX");
            self.slab.push(agent);
            self.class.push([0, NO_PENDING]);
            s
        };
        // A new identity starts in the default class until the shell says otherwise.
        self.class[slot as usize] = [0, NO_PENDING];
        let h = self.hash(self.slab[slot as usize].tag());
        let Table {
            index,
            slab,
            hasher,
            ..
        } = self;
        index.insert_unique(h, slot, |&s| {
            use core::hash::BuildHasher;
            hasher.hash_one(slab[s as usize].tag())
        });
        self.len += 1;
        if !self.slab[slot as usize].proven() {
            self.unproven += 1;
        }
        slot
    }

    /// Unlinks `slot` from its list, de-indexes it and puts it on the free list.
    pub(crate) fn remove(&mut self, slot: u32) {
        self.unlink(slot);
        let tag = self.slab[slot as usize].tag();
        let h = self.hash(tag);
        let slab = &self.slab;
        if let Ok(e) = self.index.find_entry(h, |&s| slab[s as usize].tag() == tag) {
            e.remove();
        }
        let a = &mut self.slab[slot as usize];
        let proven = a.proven();
        a.set_phase(Phase::Free);
        a.next = self.free;
        a.prev = NIL;
        self.free = slot;
        self.len -= 1;
        if !proven {
            self.unproven -= 1;
        }
    }

    /// The index into `lists` of list `l` of threshold class `class`, proven or not.
    fn index_of(&self, l: ListId, class: usize, proven: bool) -> usize {
        let p = usize::from(proven);
        match l {
            ListId::Dead => self.classes * 4 + p,
            ListId::Alive | ListId::Stalled => (class * 2 + l as usize) * 2 + p,
        }
    }

    /// The index into `lists` of list `l` for `slot`'s identity.
    fn list_index(&self, l: ListId, slot: u32) -> usize {
        self.index_of(
            l,
            usize::from(self.class[slot as usize][0]),
            self.slab[slot as usize].proven(),
        )
    }

    /// The threshold class of `slot`.
    pub(crate) fn class(&self, slot: u32) -> u8 {
        self.class[slot as usize][0]
    }

    /// Makes `slot` move to `class` when it next beats (see [`Table::push_back`]).
    pub(crate) fn set_pending_class(&mut self, slot: u32, class: u8) {
        self.class[slot as usize][1] = class;
    }

    /// Threshold classes with lists.
    pub(crate) fn classes(&self) -> usize {
        self.classes
    }

    /// Sets `slot`'s class; the slot must not be on a list (unlink it first).
    pub(crate) fn set_class(&mut self, slot: u32, class: u8) {
        debug_assert!(usize::from(class) < self.classes);
        self.class[slot as usize] = [class, NO_PENDING];
    }

    /// Where `slot` would go in list `l` of threshold class `class` to keep it sorted by
    /// `key`: the entry to insert after (`NIL`: at the head), found walking from the tail;
    /// `None` past [`MAX_INSERT_STEPS`] entries (the caller then waits for the slot's next
    /// beat, which appends it at a tail in O(1)).
    pub(crate) fn sorted_position(
        &self,
        l: ListId,
        class: u8,
        slot: u32,
        key: impl Fn(&Table, u32) -> u64,
    ) -> Option<u32> {
        let li = self.index_of(l, usize::from(class), self.slab[slot as usize].proven());
        let k = key(self, slot);
        let mut after = self.lists[li].tail;
        for _ in 0..=MAX_INSERT_STEPS {
            if after == NIL || key(self, after) <= k {
                return Some(after);
            }
            after = self.slab[after as usize].prev;
        }
        None
    }

    /// Links `slot` (unlinked, its phase and class naming list `l`) right after `after`
    /// (`NIL`: at the head), as found by [`Table::sorted_position`].
    pub(crate) fn link_after(&mut self, l: ListId, slot: u32, after: u32) {
        let li = self.list_index(l, slot);
        let next = if after == NIL {
            self.lists[li].head
        } else {
            self.slab[after as usize].next
        };
        {
            let a = &mut self.slab[slot as usize];
            a.prev = after;
            a.next = next;
        }
        if after == NIL {
            self.lists[li].head = slot;
        } else {
            self.slab[after as usize].next = slot;
        }
        if next == NIL {
            self.lists[li].tail = slot;
        } else {
            self.slab[next as usize].prev = slot;
        }
    }

    /// Re-threads every list for `classes` threshold classes, each slot's class from
    /// `class_of` (clamped to the default class when out of range), each list sorted by `key`.
    /// O(n log n): for setup and reload, never per beat.
    pub(crate) fn rebuild(
        &mut self,
        classes: usize,
        mut class_of: impl FnMut(&Agent) -> u8,
        key: impl Fn(&Table, u32) -> u64,
    ) {
        self.classes = classes.clamp(1, MAX_THRESHOLD_CLASSES);
        self.lists = vec![List::EMPTY; self.classes * 4 + 2];
        let mut live: Vec<(usize, u64, u32)> = Vec::with_capacity(self.len);
        for s in 0..self.slab.len() {
            let phase = self.slab[s].phase();
            if phase == Phase::Free {
                continue;
            }
            let c = class_of(&self.slab[s]);
            self.class[s] = [
                if usize::from(c) < self.classes { c } else { 0 },
                NO_PENDING,
            ];
            let slot = u32::try_from(s).unwrap_or(NIL);
            let Some(li) = self.list_of(slot) else {
                continue;
            };
            live.push((li, key(self, slot), slot));
        }
        live.sort_unstable();
        for (li, _, slot) in live {
            let tail = self.lists[li].tail;
            let a = &mut self.slab[slot as usize];
            a.prev = tail;
            a.next = NIL;
            if tail == NIL {
                self.lists[li].head = slot;
            } else {
                self.slab[tail as usize].next = slot;
            }
            self.lists[li].tail = slot;
        }
    }

    fn list_of(&self, slot: u32) -> Option<usize> {
        let l = match self.slab[slot as usize].phase() {
            Phase::Free => return None,
            Phase::Alive => ListId::Alive,
            Phase::Stalled => ListId::Stalled,
            Phase::DeadCrash | Phase::DeadClean => ListId::Dead,
        };
        Some(self.list_index(l, slot))
    }

    /// Removes `slot` from the list its phase says it is on. Call before changing the phase.
    pub(crate) fn unlink(&mut self, slot: u32) {
        let Some(l) = self.list_of(slot) else {
            return;
        };
        let (prev, next) = {
            let a = &self.slab[slot as usize];
            (a.prev, a.next)
        };
        if prev == NIL {
            self.lists[l].head = next;
        } else {
            self.slab[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[l].tail = prev;
        } else {
            self.slab[next as usize].prev = prev;
        }
        let a = &mut self.slab[slot as usize];
        a.prev = NIL;
        a.next = NIL;
    }

    /// Appends `slot` at the tail of list `l` (its phase must already name `l`). On the alive
    /// list (a beat: the slot's deadline is the latest of any list), a class change that
    /// waited for this beat takes effect.
    pub(crate) fn push_back(&mut self, l: ListId, slot: u32) {
        if l == ListId::Alive {
            let c = &mut self.class[slot as usize];
            if c[1] != NO_PENDING {
                *c = [c[1], NO_PENDING];
            }
        }
        let l = self.list_index(l, slot);
        let tail = self.lists[l].tail;
        {
            let a = &mut self.slab[slot as usize];
            a.prev = tail;
            a.next = NIL;
        }
        if tail == NIL {
            self.lists[l].head = slot;
        } else {
            self.slab[tail as usize].next = slot;
        }
        self.lists[l].tail = slot;
    }

    /// The entry with the oldest last beat among the heads of list `l` (of every threshold
    /// class) of proven or unproven identities: O(classes), for the capacity reserve.
    pub(crate) fn head(&self, l: ListId, proven: bool) -> Option<u32> {
        let classes = if l == ListId::Dead { 1 } else { self.classes };
        (0..classes)
            .map(|c| self.lists[self.index_of(l, c, proven)].head)
            .filter(|&h| h != NIL)
            .min_by_key(|&h| self.slab[h as usize].last_beat)
    }

    /// The head of every list (the earliest deadline is among them).
    pub(crate) fn heads(&self) -> impl Iterator<Item = u32> + '_ {
        self.lists.iter().map(|l| l.head).filter(|&h| h != NIL)
    }

    /// Iterates the live entries in slab order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Agent> + '_ {
        self.slab.iter().filter(|a| a.phase() != Phase::Free)
    }

    /// Bytes of heap the table holds (slab capacity + index), for the scale bench.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slab.capacity() * core::mem::size_of::<Agent>()
            + self.class.capacity() * 2
            + self.index.allocation_size()
    }

    /// Walks list `l` of proven or unproven identities from head to tail (invariant checks;
    /// allocates, not for the hot path).
    pub(crate) fn walk(&self, l: ListId, class: usize, proven: bool) -> Vec<u32> {
        let mut v = Vec::new();
        let mut s = self.lists[self.index_of(l, class, proven)].head;
        while s != NIL {
            v.push(s);
            s = self.slab[s as usize].next;
        }
        v
    }
}
