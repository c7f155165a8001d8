//! The interest table shared by the persistent backends (epoll, kqueue): what libslirp asked
//! for this iteration, what the kernel already holds, and the difference between the two.
//!
//! Owns: per-fd bookkeeping and the change list. Rules (design notes 1-2):
//! - the fill set of each iteration is the ground truth: a registration libslirp did not ask
//!   for this iteration is deleted;
//! - the unregister hint deletes at once, while the fd is still open (epoll forgets a
//!   registration only when the last reference to the file goes; kqueue on close);
//! - registrations carry a generation tag, so an event for a closed-and-reused number is
//!   recognised as stale;
//! - answers are poll(2)'s: what was asked for, plus ERR (and HUP only when asked for).
//!   Dense by fd: descriptors are small integers, and libslirp's index is the fd itself.

use super::{Readiness, Slot};
use std::os::fd::RawFd;

/// What a backend must do in the kernel for one fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Register `events` (ready bits) under `token`.
    Add {
        fd: RawFd,
        events: Readiness,
        token: u64,
    },
    /// Change a registration's events.
    Modify {
        fd: RawFd,
        events: Readiness,
        token: u64,
    },
    /// Remove the registration (`fd` is still open).
    Delete { fd: RawFd, events: Readiness },
}

/// Bookkeeping counters (drift shows up as recoveries).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InterestCounters {
    pub adds: u64,
    pub modifies: u64,
    pub deletes: u64,
    /// ENOENT on modify (re-added) or EEXIST on add (modified instead).
    pub recoveries: u64,
    /// Events whose generation tag no longer matched (fd closed and reused).
    pub stale_events: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Events libslirp asked for in the fill of `seen`.
    wanted: Readiness,
    seen: u32,
    /// Events the kernel holds; meaningful while `in_kernel`.
    registered: Readiness,
    in_kernel: bool,
    /// Position in `InterestTable::held` while `in_kernel`.
    slot: u32,
    /// In `InterestTable::pending`: the next diff looks at this fd.
    pending: bool,
    /// The kernel registration may be gone or belong to an earlier file (register hint):
    /// the next diff re-adds it.
    suspect: bool,
    /// Generation tag of the current registration.
    tag: u32,
    /// Readiness reported by the last wait of `ready_seen`.
    ready: Readiness,
    ready_seen: u32,
}

impl Entry {
    /// The kernel does not hold exactly what this fill asks for.
    fn needs_change(&self) -> bool {
        !self.in_kernel || self.suspect || self.registered != self.wanted
    }
}

/// Token layout: `tag << 32 | fd`. Our own descriptors use tokens above every possible fd tag.
pub fn token(fd: RawFd, tag: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(fd as u32)
}

/// Per-iteration cost is O(changes), not O(registrations): with 1000 idle connections
/// libslirp asks for the same 1000 fds every iteration and nothing is to be done for them.
/// `add` queues an fd in `pending` only when the kernel does not already hold what is asked;
/// deletions are found by counting: when every held registration was asked for again
/// (`reseen == held.len()`), there is nothing to delete and nothing is walked.
#[derive(Debug, Default)]
pub struct InterestTable {
    entries: Vec<Entry>,
    /// Current fill generation (starts at 1, so a zeroed entry is never "seen").
    generation: u32,
    /// Fds the next diff must look at (new, suspect, or asked for other events), in add
    /// order; an fd appears at most once (`Entry::pending`).
    pending: Vec<RawFd>,
    /// Fds the kernel holds, in no order (`Entry::slot` is the position): only walked when
    /// some of them were not asked for this fill.
    held: Vec<RawFd>,
    /// Held registrations asked for again in this fill.
    reseen: usize,
    /// The last wait reported readiness libslirp would see for one of its sockets.
    any_ready: bool,
    pub counters: InterestCounters,
}

impl InterestTable {
    pub fn new() -> InterestTable {
        InterestTable::default()
    }

    fn entry(&mut self, fd: RawFd) -> Option<&mut Entry> {
        let i = usize::try_from(fd).ok()?;
        if i >= self.entries.len() {
            self.grow(i);
        }
        self.entries.get_mut(i)
    }

    /// Out of `add`'s way: called once per new high-water mark of descriptor numbers.
    #[cold]
    fn grow(&mut self, i: usize) {
        // Descriptors are bounded by RLIMIT_NOFILE; grow once to the new high-water mark.
        self.entries.resize(i + 1, Entry::default());
    }

    /// Start a fill.
    pub fn begin_fill(&mut self) {
        self.generation = self.generation.wrapping_add(1).max(1);
        self.reseen = 0;
        self.any_ready = false;
    }

    /// `add_poll`: returns the slot libslirp keeps (the fd), `None` for a negative fd.
    pub fn add(&mut self, fd: RawFd, events: Readiness) -> Option<Slot> {
        let generation = self.generation;
        let entry = self.entry(fd)?;
        let first_add = entry.seen != generation;
        if first_add {
            entry.seen = generation;
            entry.wanted = events;
        } else {
            // libslirp may add one fd twice in a fill: poll(2) would watch the union.
            entry.wanted |= events;
        }
        let reseen = first_add && entry.in_kernel;
        let queue = !entry.pending && entry.needs_change();
        entry.pending |= queue;
        if reseen {
            self.reseen += 1;
        }
        if queue {
            self.pending.push(fd);
        }
        Some(Slot::new(fd as u32))
    }

    /// Hint: libslirp opened a socket with this number; whatever the kernel holds for the
    /// number belonged to an earlier file.
    pub fn opened(&mut self, fd: RawFd) {
        let generation = self.generation;
        let Some(entry) = self.entry(fd) else {
            return;
        };
        entry.suspect = true;
        // Already asked for in this fill (a hint from inside the fill): the diff must see it.
        if entry.seen == generation && !entry.pending {
            entry.pending = true;
            self.pending.push(fd);
        }
    }

    /// Hint: libslirp is about to close `fd`: delete now, while it is open.
    pub fn closing(&mut self, fd: RawFd, changes: &mut Vec<Change>) {
        let Some(entry) = self.entry(fd) else {
            return;
        };
        let (was_in_kernel, events) = (entry.in_kernel, entry.registered);
        if was_in_kernel {
            self.release(fd);
            changes.push(Change::Delete { fd, events });
            self.counters.deletes += 1;
        }
        // Forget this fill's request too (after `release`, which counts it): a later add of
        // the number starts afresh, and the diff skips a pending entry no longer asked for.
        let entry = &mut self.entries[fd as usize];
        entry.seen = 0;
        entry.suspect = false;
    }

    /// The kernel now holds a registration for `fd` (not held before).
    fn hold(&mut self, fd: RawFd) {
        let slot = self.held.len() as u32;
        self.held.push(fd);
        let entry = &mut self.entries[fd as usize];
        entry.in_kernel = true;
        entry.slot = slot;
        if entry.seen == self.generation {
            self.reseen += 1;
        }
    }

    /// The kernel no longer holds a registration for `fd` (held before).
    fn release(&mut self, fd: RawFd) {
        let entry = &mut self.entries[fd as usize];
        debug_assert!(entry.in_kernel);
        entry.in_kernel = false;
        if entry.seen == self.generation {
            self.reseen -= 1;
        }
        let slot = entry.slot as usize;
        self.held.swap_remove(slot);
        if let Some(&moved) = self.held.get(slot) {
            self.entries[moved as usize].slot = slot as u32;
        }
    }

    /// The changes that bring the kernel to this fill's set: deletions first, then the
    /// pending fds. Costs O(pending) when libslirp asked again for everything the kernel
    /// holds; otherwise one walk of the held registrations finds the ones not asked for.
    pub fn diff(&mut self, changes: &mut Vec<Change>) {
        let generation = self.generation;
        // `reseen` never exceeds `held.len()`; were it ever off, a full walk is still right.
        let mut unseen = (self.held.len().checked_sub(self.reseen)).unwrap_or(self.held.len());
        let mut i = 0;
        while unseen > 0 && i < self.held.len() {
            let fd = self.held[i];
            let entry = &self.entries[fd as usize];
            if entry.seen == generation {
                i += 1;
                continue;
            }
            // Not asked for this fill: delete (the last held fd moves into slot i).
            changes.push(Change::Delete {
                fd,
                events: entry.registered,
            });
            self.counters.deletes += 1;
            self.release(fd);
            unseen -= 1;
        }
        for p in 0..self.pending.len() {
            let fd = self.pending[p];
            let entry = &mut self.entries[fd as usize];
            entry.pending = false;
            // Closed (unregister hint) after it was asked for, and not asked for again.
            if entry.seen != generation || !entry.needs_change() {
                continue;
            }
            if !entry.in_kernel || entry.suspect {
                entry.tag = entry.tag.wrapping_add(1);
                changes.push(Change::Add {
                    fd,
                    events: entry.wanted,
                    token: token(fd, entry.tag),
                });
                self.counters.adds += 1;
            } else {
                changes.push(Change::Modify {
                    fd,
                    events: entry.wanted,
                    token: token(fd, entry.tag),
                });
                self.counters.modifies += 1;
            }
            entry.suspect = false;
            entry.registered = entry.wanted;
            if !entry.in_kernel {
                self.hold(fd);
            }
        }
        self.pending.clear();
    }

    /// Number of registrations the kernel holds after the last diff.
    pub fn registered(&self) -> usize {
        self.held.len()
    }

    /// Record readiness reported by the kernel for `token` in this iteration.
    pub(crate) fn set_ready(&mut self, token: u64, revents: Readiness) {
        let fd = (token & 0xffff_ffff) as u32 as RawFd;
        let tag = (token >> 32) as u32;
        let generation = self.generation;
        match usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        {
            Some(entry) if entry.in_kernel && entry.tag == tag => {
                if entry.ready_seen == generation {
                    entry.ready |= revents;
                } else {
                    entry.ready = revents;
                    entry.ready_seen = generation;
                }
                if entry.seen == generation && revents.intersects(entry.wanted | Readiness::ERR) {
                    self.any_ready = true;
                }
            }
            _ => self.counters.stale_events += 1,
        }
    }

    /// Whether `revents` gives a non-zero answer for any fd this iteration. When it does not,
    /// libslirp's walk of its sockets in `slirp_pollfds_poll` would find nothing to do.
    pub(crate) fn any_ready(&self) -> bool {
        self.any_ready
    }

    /// `get_revents`: poll(2)'s answer for `slot` (= fd).
    pub fn revents(&self, slot: Slot) -> Readiness {
        let Some(entry) = usize::try_from(slot.index())
            .ok()
            .and_then(|i| self.entries.get(i))
        else {
            return Readiness::EMPTY;
        };
        if entry.seen != self.generation || entry.ready_seen != self.generation {
            return Readiness::EMPTY;
        }
        // poll(2) reports what was asked plus ERR and HUP; HUP is then masked unless asked
        // for (the C helper's rule), which leaves: asked-for bits plus ERR.
        entry.ready & (entry.wanted | Readiness::ERR)
    }

    /// Undo a change the kernel refused (the registration state is then "not held").
    pub(crate) fn change_failed(&mut self, fd: RawFd) {
        if self.entry(fd).is_some_and(|entry| entry.in_kernel) {
            self.release(fd);
        }
    }

    /// Count a recovery (ENOENT on modify, EEXIST on add).
    pub(crate) fn recovered(&mut self) {
        self.counters.recoveries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `held` and the entries agree, and `reseen` counts what it says.
    fn assert_consistent(t: &InterestTable) {
        let mut reseen = 0;
        for (fd, entry) in t.entries.iter().enumerate() {
            if entry.in_kernel {
                assert_eq!(t.held[entry.slot as usize], fd as RawFd, "slot of fd {fd}");
                reseen += usize::from(entry.seen == t.generation);
            }
        }
        assert_eq!(
            t.held.len(),
            t.entries.iter().filter(|e| e.in_kernel).count()
        );
        assert_eq!(t.reseen, reseen);
    }

    /// One fill of `(fd, events)` adds, then the diff.
    fn fill(t: &mut InterestTable, adds: &[(RawFd, Readiness)]) -> Vec<Change> {
        let mut changes = Vec::new();
        t.begin_fill();
        for &(fd, events) in adds {
            assert_eq!(t.add(fd, events), Some(Slot::new(fd as u32)));
        }
        t.diff(&mut changes);
        assert_consistent(t);
        changes
    }

    /// 1000 idle sockets, as in the N = 1000 measurement.
    fn idle_fill() -> Vec<(RawFd, Readiness)> {
        (10..1010)
            .map(|fd| (fd, Readiness::IN | Readiness::HUP))
            .collect()
    }

    #[test]
    fn an_identical_fill_queues_nothing_and_changes_nothing() {
        let mut t = InterestTable::new();
        let set = idle_fill();
        assert_eq!(fill(&mut t, &set).len(), 1000);
        t.begin_fill();
        for &(fd, events) in &set {
            t.add(fd, events);
        }
        assert!(t.pending.is_empty(), "nothing to look at: {:?}", t.pending);
        assert_eq!(t.reseen, t.held.len(), "no deletion walk needed");
        let mut changes = Vec::new();
        t.diff(&mut changes);
        assert_eq!(changes, []);
        assert_eq!(t.registered(), 1000);
    }

    #[test]
    fn one_changed_mask_is_one_modify() {
        let mut t = InterestTable::new();
        let mut set = idle_fill();
        fill(&mut t, &set);
        set[500].1 |= Readiness::OUT;
        t.begin_fill();
        for &(fd, events) in &set {
            t.add(fd, events);
        }
        assert_eq!(t.pending, [510]);
        let mut changes = Vec::new();
        t.diff(&mut changes);
        assert!(
            matches!(
                changes.as_slice(),
                [Change::Modify { fd: 510, events, .. }] if *events == Readiness::IN | Readiness::HUP | Readiness::OUT
            ),
            "{changes:?}"
        );
        assert_eq!(fill(&mut t, &set), [], "and nothing the next time");
    }

    #[test]
    fn one_fd_not_asked_for_is_one_delete_and_comes_back_as_an_add() {
        let mut t = InterestTable::new();
        let mut set = idle_fill();
        fill(&mut t, &set);
        let (fd, events) = set.remove(123);
        assert_eq!(fill(&mut t, &set), [Change::Delete { fd, events }]);
        assert_eq!(t.registered(), 999);
        assert_eq!(fill(&mut t, &set), []);
        set.push((fd, events));
        let changes = fill(&mut t, &set);
        assert!(
            matches!(changes.as_slice(), [Change::Add { fd: 133, .. }]),
            "{changes:?}"
        );
        assert_eq!(t.registered(), 1000);
    }

    #[test]
    fn two_adds_of_one_fd_in_a_fill_watch_the_union() {
        let mut t = InterestTable::new();
        let changes = fill(&mut t, &[(5, Readiness::IN), (5, Readiness::OUT)]);
        assert!(
            matches!(changes.as_slice(), [Change::Add { fd: 5, events, .. }] if *events == Readiness::IN | Readiness::OUT),
            "{changes:?}"
        );
        // The same two adds again: the union is what the kernel holds.
        assert_eq!(fill(&mut t, &[(5, Readiness::IN), (5, Readiness::OUT)]), []);
        assert!(t.pending.is_empty());
        // The first add alone matches nothing held, the second completes it: no change.
        assert_eq!(fill(&mut t, &[(5, Readiness::OUT), (5, Readiness::IN)]), []);
        // Only one of the two: a modify.
        let changes = fill(&mut t, &[(5, Readiness::IN), (5, Readiness::IN)]);
        assert!(
            matches!(changes.as_slice(), [Change::Modify { fd: 5, events, .. }] if *events == Readiness::IN),
            "{changes:?}"
        );
    }

    #[test]
    fn deleted_by_the_hint_then_added_again_in_the_same_fill() {
        let mut t = InterestTable::new();
        fill(&mut t, &[(3, Readiness::IN), (4, Readiness::IN)]);
        let mut changes = Vec::new();
        t.begin_fill();
        t.add(3, Readiness::IN);
        t.add(4, Readiness::IN);
        // libslirp's fill detaches an expired socket (udp_detach): the hint comes mid-fill.
        t.closing(3, &mut changes);
        assert_eq!(
            changes,
            [Change::Delete {
                fd: 3,
                events: Readiness::IN
            }]
        );
        assert_eq!(
            t.revents(Slot::new(3)),
            Readiness::EMPTY,
            "no longer asked for"
        );
        changes.clear();
        t.opened(3);
        t.add(3, Readiness::OUT);
        t.diff(&mut changes);
        assert_consistent(&t);
        assert!(
            matches!(changes.as_slice(), [Change::Add { fd: 3, events, .. }] if *events == Readiness::OUT),
            "{changes:?}"
        );
        assert_eq!(t.registered(), 2);

        // Closed by the hint after its add and not asked for again: nothing to add.
        let mut changes = Vec::new();
        t.begin_fill();
        t.add(4, Readiness::IN | Readiness::OUT);
        t.add(3, Readiness::OUT);
        t.closing(4, &mut changes);
        t.diff(&mut changes);
        assert_consistent(&t);
        assert_eq!(
            changes,
            [Change::Delete {
                fd: 4,
                events: Readiness::IN
            }]
        );
        assert_eq!(t.registered(), 1);
    }

    #[test]
    fn a_register_hint_inside_the_fill_still_forces_an_add() {
        let mut t = InterestTable::new();
        fill(&mut t, &[(8, Readiness::IN)]);
        let mut changes = Vec::new();
        t.begin_fill();
        t.add(8, Readiness::IN);
        assert!(t.pending.is_empty());
        t.opened(8);
        t.diff(&mut changes);
        assert!(
            matches!(changes.as_slice(), [Change::Add { fd: 8, .. }]),
            "{changes:?}"
        );
        assert_consistent(&t);
    }

    #[test]
    fn a_refused_change_is_retried_in_the_next_fill() {
        let mut t = InterestTable::new();
        fill(&mut t, &[(6, Readiness::IN), (7, Readiness::IN)]);
        t.change_failed(6);
        assert_consistent(&t);
        assert_eq!(t.registered(), 1);
        let changes = fill(&mut t, &[(6, Readiness::IN), (7, Readiness::IN)]);
        assert!(
            matches!(changes.as_slice(), [Change::Add { fd: 6, .. }]),
            "{changes:?}"
        );
    }

    #[test]
    fn any_ready_says_whether_some_answer_is_non_zero() {
        let mut t = InterestTable::new();
        let changes = fill(&mut t, &[(9, Readiness::IN), (10, Readiness::OUT)]);
        let tokens: Vec<u64> = changes
            .iter()
            .map(|c| match *c {
                Change::Add { token, .. } => token,
                _ => panic!("{changes:?}"),
            })
            .collect();
        assert!(!t.any_ready());
        // HUP not asked for is masked: still nothing to answer.
        t.set_ready(tokens[0], Readiness::HUP);
        assert!(!t.any_ready());
        assert_eq!(t.revents(Slot::new(9)), Readiness::EMPTY);
        t.set_ready(tokens[1], Readiness::OUT);
        assert!(t.any_ready());
        assert_eq!(t.revents(Slot::new(10)), Readiness::OUT);
        // A new fill forgets it.
        fill(&mut t, &[(9, Readiness::IN), (10, Readiness::OUT)]);
        assert!(!t.any_ready());
        // ERR is always an answer.
        t.set_ready(tokens[0], Readiness::ERR);
        assert!(t.any_ready());
    }

    #[test]
    fn diff_adds_modifies_and_deletes_only_what_changed() {
        let mut t = InterestTable::new();
        let mut changes = Vec::new();
        t.begin_fill();
        assert_eq!(t.add(5, Readiness::IN), Some(Slot::new(5)));
        t.add(7, Readiness::IN | Readiness::OUT);
        t.diff(&mut changes);
        assert!(matches!(
            changes.as_slice(),
            [Change::Add { fd: 5, .. }, Change::Add { fd: 7, .. }]
        ));

        changes.clear();
        t.begin_fill();
        t.add(5, Readiness::IN);
        t.add(7, Readiness::IN | Readiness::OUT);
        t.diff(&mut changes);
        assert!(changes.is_empty(), "nothing changed: {changes:?}");

        changes.clear();
        t.begin_fill();
        t.add(7, Readiness::IN);
        t.diff(&mut changes);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes.contains(&Change::Delete {
            fd: 5,
            events: Readiness::IN
        }));
        assert!(matches!(
            changes[1],
            Change::Modify {
                fd: 7,
                events: Readiness::IN,
                ..
            }
        ));
        assert_eq!(t.registered(), 1);
    }

    #[test]
    fn closing_deletes_at_once_and_reuse_gets_a_new_tag() {
        let mut t = InterestTable::new();
        let mut changes = Vec::new();
        t.begin_fill();
        t.add(3, Readiness::IN);
        t.diff(&mut changes);
        let Change::Add { token: old, .. } = changes[0] else {
            panic!()
        };
        changes.clear();
        t.closing(3, &mut changes);
        assert_eq!(
            changes,
            [Change::Delete {
                fd: 3,
                events: Readiness::IN
            }]
        );
        changes.clear();
        t.begin_fill();
        t.add(3, Readiness::IN);
        t.diff(&mut changes);
        let Change::Add { token: new, .. } = changes[0] else {
            panic!("{changes:?}")
        };
        assert_ne!(old, new);
        t.set_ready(old, Readiness::IN);
        assert_eq!(
            t.revents(Slot::new(3)),
            Readiness::EMPTY,
            "an event of the old registration is stale"
        );
        assert_eq!(t.counters.stale_events, 1);
        t.set_ready(new, Readiness::IN | Readiness::HUP);
        assert_eq!(
            t.revents(Slot::new(3)),
            Readiness::IN,
            "HUP masked when not asked for"
        );
    }

    #[test]
    fn a_register_hint_forces_a_fresh_add() {
        let mut t = InterestTable::new();
        let mut changes = Vec::new();
        t.begin_fill();
        t.add(4, Readiness::IN);
        t.diff(&mut changes);
        changes.clear();
        // Closed without the unregister hint, then reopened with the register hint.
        t.opened(4);
        t.begin_fill();
        t.add(4, Readiness::IN);
        t.diff(&mut changes);
        assert!(
            matches!(changes.as_slice(), [Change::Add { fd: 4, .. }]),
            "{changes:?}"
        );
    }

    #[test]
    fn readiness_is_per_iteration() {
        let mut t = InterestTable::new();
        let mut changes = Vec::new();
        t.begin_fill();
        t.add(6, Readiness::OUT);
        t.diff(&mut changes);
        let Change::Add { token, .. } = changes[0] else {
            panic!()
        };
        t.set_ready(token, Readiness::OUT | Readiness::ERR);
        assert_eq!(t.revents(Slot::new(6)), Readiness::OUT | Readiness::ERR);
        t.begin_fill();
        t.add(6, Readiness::OUT);
        assert_eq!(
            t.revents(Slot::new(6)),
            Readiness::EMPTY,
            "last iteration's readiness is not reported again"
        );
        assert_eq!(t.revents(Slot::new(u32::MAX)), Readiness::EMPTY);
        assert_eq!(t.revents(Slot::new(100_000)), Readiness::EMPTY);
    }
}
