//! libslirp's timers: created, armed and freed through callbacks, fired by the loop.
//!
//! libslirp keeps the pointer we return as the timer's identity; ours is `slot index + 1`, so
//! it is never NULL and needs no allocation per timer. Timers are rare (IPv6 router
//! advertisements), so a small vector is all this needs.

use super::ffi::{SlirpTimerCb, SlirpTimerId};
use std::ffi::c_void;

/// What firing a timer means.
#[derive(Clone, Copy, Debug)]
pub enum TimerTarget {
    /// Version-4 timers: the loop calls `slirp_handle_timer(id, cb_opaque)`.
    Opaque {
        id: SlirpTimerId,
        cb_opaque: *mut c_void,
    },
    /// Legacy timers: the loop calls `cb(cb_opaque)`.
    Callback {
        cb: SlirpTimerCb,
        cb_opaque: *mut c_void,
    },
}

#[derive(Debug)]
struct Timer {
    target: TimerTarget,
    /// Deadline in ms of the `clock_get_ns` clock; `None` while disarmed.
    expire_ms: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Timers {
    slots: Vec<Option<Timer>>,
}

impl Timers {
    pub fn create(&mut self, target: TimerTarget) -> *mut c_void {
        let timer = Some(Timer {
            target,
            expire_ms: None,
        });
        let index = match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = timer;
                i
            }
            None => {
                self.slots.push(timer);
                self.slots.len() - 1
            }
        };
        (index + 1) as *mut c_void
    }

    fn slot(&mut self, handle: *mut c_void) -> Option<&mut Option<Timer>> {
        (handle as usize)
            .checked_sub(1)
            .and_then(|i| self.slots.get_mut(i))
    }

    pub fn free(&mut self, handle: *mut c_void) {
        if let Some(slot) = self.slot(handle) {
            *slot = None;
        }
    }

    pub(crate) fn arm(&mut self, handle: *mut c_void, expire_ms: i64) {
        if let Some(Some(timer)) = self.slot(handle) {
            timer.expire_ms = Some(expire_ms);
        }
    }

    /// The earliest armed deadline, in ms.
    pub(crate) fn next_deadline_ms(&self) -> Option<i64> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|t| t.expire_ms)
            .min()
    }

    /// Disarm every timer due at `now_ms` and append its target to `due` (one-shot, as QEMU's).
    pub(crate) fn take_due(&mut self, now_ms: i64, due: &mut Vec<TimerTarget>) {
        for timer in self.slots.iter_mut().flatten() {
            if timer.expire_ms.is_some_and(|t| t <= now_ms) {
                timer.expire_ms = None;
                due.push(timer.target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opaque(id: SlirpTimerId) -> TimerTarget {
        TimerTarget::Opaque {
            id,
            cb_opaque: std::ptr::null_mut(),
        }
    }

    #[test]
    fn timers_fire_once_and_slots_are_reused() {
        let mut timers = Timers::default();
        let a = timers.create(opaque(0));
        let b = timers.create(opaque(1));
        assert!(!a.is_null() && a != b);
        assert_eq!(timers.next_deadline_ms(), None);
        timers.arm(a, 100);
        timers.arm(b, 50);
        assert_eq!(timers.next_deadline_ms(), Some(50));
        let mut due = Vec::new();
        timers.take_due(60, &mut due);
        assert!(matches!(
            due.as_slice(),
            [TimerTarget::Opaque { id: 1, .. }]
        ));
        due.clear();
        timers.take_due(60, &mut due);
        assert!(due.is_empty(), "a fired timer is disarmed");
        timers.free(a);
        assert_eq!(timers.next_deadline_ms(), None);
        assert_eq!(timers.create(opaque(2)), a, "freed slot is reused");
        // Unknown handles are ignored, never a panic.
        timers.arm(std::ptr::null_mut(), 1);
        timers.free(usize::MAX as *mut c_void);
    }
}
