//! The poller's own words for readiness and for libslirp's handle on one watched descriptor.
//!
//! Owns: `Readiness` (poll(2)'s bits, named here, mapped to each kernel's flags by each backend
//! and to libslirp's `SLIRP_POLL_*` by `crate::slirp`) and `Slot`. Never imports libslirp.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign, Not};

/// A set of poll(2)-style readiness conditions.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Readiness(u8);

impl Readiness {
    pub const EMPTY: Readiness = Readiness(0);
    /// Readable (or end of file).
    pub const IN: Readiness = Readiness(1 << 0);
    /// Writable.
    pub const OUT: Readiness = Readiness(1 << 1);
    /// Urgent (out-of-band) data.
    pub const PRI: Readiness = Readiness(1 << 2);
    /// An error is pending; always reported, whether asked for or not.
    pub const ERR: Readiness = Readiness(1 << 3);
    /// Hung up: both directions shut.
    pub const HUP: Readiness = Readiness(1 << 4);
    /// The peer shut down writing; only the frontend socket is watched for it.
    pub(crate) const RDHUP: Readiness = Readiness(1 << 5);
    const ALL: Readiness = Readiness((1 << 6) - 1);
    const NAMES: [(Readiness, &'static str); 6] = [
        (Readiness::IN, "IN"),
        (Readiness::OUT, "OUT"),
        (Readiness::PRI, "PRI"),
        (Readiness::ERR, "ERR"),
        (Readiness::HUP, "HUP"),
        (Readiness::RDHUP, "RDHUP"),
    ];

    /// Every condition of `other` is in `self`.
    pub const fn contains(self, other: Readiness) -> bool {
        self.0 & other.0 == other.0
    }

    /// Some condition of `other` is in `self`.
    pub const fn intersects(self, other: Readiness) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `self | other`, usable in constants.
    pub const fn union(self, other: Readiness) -> Readiness {
        Readiness(self.0 | other.0)
    }

    /// `self` with the conditions of `other` flipped.
    pub const fn toggle(self, other: Readiness) -> Readiness {
        Readiness(self.0 ^ other.0)
    }
}

impl BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 | rhs.0)
    }
}

impl BitOrAssign for Readiness {
    fn bitor_assign(&mut self, rhs: Readiness) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Readiness {
    type Output = Readiness;
    fn bitand(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 & rhs.0)
    }
}

impl Not for Readiness {
    type Output = Readiness;
    fn not(self) -> Readiness {
        Readiness(!self.0 & Readiness::ALL.0)
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("EMPTY");
        }
        let mut first = true;
        for (bit, name) in Readiness::NAMES {
            if self.contains(bit) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// What `add` hands back for libslirp to keep and later ask `revents` about: the poll
/// backend's array index, or the fd itself for the persistent backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u32);

impl Slot {
    pub const fn new(index: u32) -> Slot {
        Slot(index)
    }

    /// The index as a number (what libslirp stores).
    pub const fn index(self) -> u32 {
        self.0
    }

    /// A number libslirp gave back; `None` for one no `add` can have returned (negative).
    pub(crate) fn from_index(index: i64) -> Option<Slot> {
        u32::try_from(index).ok().map(Slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_and_names() {
        let r = Readiness::IN | Readiness::HUP;
        assert!(r.contains(Readiness::IN) && !r.contains(Readiness::IN | Readiness::OUT));
        assert!(r.intersects(Readiness::IN | Readiness::OUT));
        assert!(!r.intersects(Readiness::OUT));
        assert_eq!(r & Readiness::HUP, Readiness::HUP);
        assert_eq!(!r & Readiness::IN, Readiness::EMPTY);
        assert_eq!(!Readiness::EMPTY, Readiness::ALL);
        assert!(Readiness::default().is_empty());
        assert_eq!(format!("{r:?}"), "IN|HUP");
        assert_eq!(format!("{:?}", Readiness::EMPTY), "EMPTY");
        assert_eq!(Slot::from_index(-1), None);
        assert_eq!(Slot::from_index(7).map(Slot::index), Some(7));
        assert_eq!(Slot::from_index(1 << 40), None);
    }
}
