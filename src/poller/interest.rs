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

use super::ready;
use std::ffi::c_int;
use std::os::fd::RawFd;

/// What a backend must do in the kernel for one fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Register `events` (ready bits) under `token`.
    Add {
        fd: RawFd,
        events: c_int,
        token: u64,
    },
    /// Change a registration's events.
    Modify {
        fd: RawFd,
        events: c_int,
        token: u64,
    },
    /// Remove the registration (`fd` is still open).
    Delete { fd: RawFd, events: c_int },
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
    wanted: c_int,
    seen: u32,
    /// Events the kernel holds; meaningful while `in_kernel`.
    registered: c_int,
    in_kernel: bool,
    /// The kernel registration may be gone or belong to an earlier file (register hint):
    /// the next diff re-adds it.
    suspect: bool,
    /// Generation tag of the current registration.
    tag: u32,
    /// Readiness reported by the last wait of `ready_seen`.
    ready: c_int,
    ready_seen: u32,
}

/// Token layout: `tag << 32 | fd`. Our own descriptors use tokens above every possible fd tag.
pub fn token(fd: RawFd, tag: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(fd as u32)
}

#[derive(Debug, Default)]
pub struct InterestTable {
    entries: Vec<Entry>,
    /// Current fill generation (starts at 1, so a zeroed entry is never "seen").
    generation: u32,
    /// Fds added in the current fill, in order.
    filled: Vec<RawFd>,
    /// Fds the kernel holds (may contain fds since deleted by a hint).
    in_kernel: Vec<RawFd>,
    pub counters: InterestCounters,
}

impl InterestTable {
    pub fn new() -> InterestTable {
        InterestTable::default()
    }

    fn entry(&mut self, fd: RawFd) -> Option<&mut Entry> {
        let i = usize::try_from(fd).ok()?;
        if i >= self.entries.len() {
            // Descriptors are bounded by RLIMIT_NOFILE; grow once to the new high-water mark.
            self.entries.resize(i + 1, Entry::default());
        }
        self.entries.get_mut(i)
    }

    /// Start a fill.
    pub fn begin_fill(&mut self) {
        self.generation = self.generation.wrapping_add(1).max(1);
        self.filled.clear();
    }

    /// `add_poll`: returns the index libslirp keeps (the fd), or -1 for a negative fd.
    pub fn add(&mut self, fd: RawFd, events: c_int) -> c_int {
        let generation = self.generation;
        let Some(entry) = self.entry(fd) else {
            return -1;
        };
        if entry.seen == generation {
            entry.wanted |= events;
        } else {
            entry.seen = generation;
            entry.wanted = events;
            self.filled.push(fd);
        }
        fd
    }

    /// Hint: libslirp opened a socket with this number; whatever the kernel holds for the
    /// number belonged to an earlier file.
    pub fn opened(&mut self, fd: RawFd) {
        if let Some(entry) = self.entry(fd) {
            entry.suspect = true;
        }
    }

    /// Hint: libslirp is about to close `fd`: delete now, while it is open.
    pub fn closing(&mut self, fd: RawFd, changes: &mut Vec<Change>) {
        let Some(entry) = self.entry(fd) else {
            return;
        };
        let was_in_kernel = std::mem::replace(&mut entry.in_kernel, false);
        let events = entry.registered;
        entry.seen = 0;
        entry.suspect = false;
        if was_in_kernel {
            changes.push(Change::Delete { fd, events });
            self.counters.deletes += 1;
        }
    }

    /// The changes that bring the kernel to this fill's set.
    pub fn diff(&mut self, changes: &mut Vec<Change>) {
        let generation = self.generation;
        // Registrations libslirp no longer asked for.
        for i in 0..self.in_kernel.len() {
            let fd = self.in_kernel[i];
            let entry = &mut self.entries[fd as usize];
            if entry.in_kernel && entry.seen != generation {
                entry.in_kernel = false;
                changes.push(Change::Delete {
                    fd,
                    events: entry.registered,
                });
                self.counters.deletes += 1;
            }
        }
        self.in_kernel.clear();
        for &fd in &self.filled {
            let entry = &mut self.entries[fd as usize];
            if !entry.in_kernel || entry.suspect {
                entry.tag = entry.tag.wrapping_add(1);
                changes.push(Change::Add {
                    fd,
                    events: entry.wanted,
                    token: token(fd, entry.tag),
                });
                self.counters.adds += 1;
            } else if entry.registered != entry.wanted {
                changes.push(Change::Modify {
                    fd,
                    events: entry.wanted,
                    token: token(fd, entry.tag),
                });
                self.counters.modifies += 1;
            }
            entry.in_kernel = true;
            entry.suspect = false;
            entry.registered = entry.wanted;
            self.in_kernel.push(fd);
        }
    }

    /// Number of registrations the kernel holds after the last diff.
    pub fn registered(&self) -> usize {
        self.in_kernel.len()
    }

    /// Record readiness reported by the kernel for `token` in this iteration.
    pub fn set_ready(&mut self, token: u64, revents: c_int) {
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
            }
            _ => self.counters.stale_events += 1,
        }
    }

    /// `get_revents`: poll(2)'s answer for index `idx` (= fd).
    pub fn revents(&self, idx: c_int) -> c_int {
        let Some(entry) = usize::try_from(idx).ok().and_then(|i| self.entries.get(i)) else {
            return 0;
        };
        if entry.seen != self.generation || entry.ready_seen != self.generation {
            return 0;
        }
        // poll(2) reports what was asked plus ERR and HUP; HUP is then masked unless asked
        // for (the C helper's rule), which leaves: asked-for bits plus ERR.
        entry.ready & (entry.wanted | ready::ERR)
    }

    /// Undo a change the kernel refused (the registration state is then "not held").
    pub fn change_failed(&mut self, fd: RawFd) {
        if let Some(entry) = self.entry(fd) {
            entry.in_kernel = false;
        }
    }

    /// Count a recovery (ENOENT on modify, EEXIST on add).
    pub fn recovered(&mut self) {
        self.counters.recoveries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_adds_modifies_and_deletes_only_what_changed() {
        let mut t = InterestTable::new();
        let mut changes = Vec::new();
        t.begin_fill();
        assert_eq!(t.add(5, ready::IN), 5);
        t.add(7, ready::IN | ready::OUT);
        t.diff(&mut changes);
        assert!(matches!(
            changes.as_slice(),
            [Change::Add { fd: 5, .. }, Change::Add { fd: 7, .. }]
        ));

        changes.clear();
        t.begin_fill();
        t.add(5, ready::IN);
        t.add(7, ready::IN | ready::OUT);
        t.diff(&mut changes);
        assert!(changes.is_empty(), "nothing changed: {changes:?}");

        changes.clear();
        t.begin_fill();
        t.add(7, ready::IN);
        t.diff(&mut changes);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes.contains(&Change::Delete {
            fd: 5,
            events: ready::IN
        }));
        assert!(matches!(
            changes[1],
            Change::Modify {
                fd: 7,
                events: ready::IN,
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
        t.add(3, ready::IN);
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
                events: ready::IN
            }]
        );
        changes.clear();
        t.begin_fill();
        t.add(3, ready::IN);
        t.diff(&mut changes);
        let Change::Add { token: new, .. } = changes[0] else {
            panic!("{changes:?}")
        };
        assert_ne!(old, new);
        t.set_ready(old, ready::IN);
        assert_eq!(t.revents(3), 0, "an event of the old registration is stale");
        assert_eq!(t.counters.stale_events, 1);
        t.set_ready(new, ready::IN | ready::HUP);
        assert_eq!(t.revents(3), ready::IN, "HUP masked when not asked for");
    }

    #[test]
    fn a_register_hint_forces_a_fresh_add() {
        let mut t = InterestTable::new();
        let mut changes = Vec::new();
        t.begin_fill();
        t.add(4, ready::IN);
        t.diff(&mut changes);
        changes.clear();
        // Closed without the unregister hint, then reopened with the register hint.
        t.opened(4);
        t.begin_fill();
        t.add(4, ready::IN);
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
        t.add(6, ready::OUT);
        t.diff(&mut changes);
        let Change::Add { token, .. } = changes[0] else {
            panic!()
        };
        t.set_ready(token, ready::OUT | ready::ERR);
        assert_eq!(t.revents(6), ready::OUT | ready::ERR);
        t.begin_fill();
        t.add(6, ready::OUT);
        assert_eq!(
            t.revents(6),
            0,
            "last iteration's readiness is not reported again"
        );
        assert_eq!(t.revents(-1), 0);
        assert_eq!(t.revents(100_000), 0);
    }
}
