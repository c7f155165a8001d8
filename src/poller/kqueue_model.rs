//! A model of FreeBSD's kqueue, for running the kqueue backend's code on Linux (tests only:
//! behind the `kqueue-model` feature, which only the test build turns on).
//!
//! Owns: the knote bookkeeping of one kqueue, after `sys/kern/kern_event.c`, and the socket
//! filters' answers, after `sys/kern/uipc_socket.c`, computed from the real state of real
//! Linux descriptors (poll(2) on them). Never used by the helper itself.
//!
//! What it follows (FreeBSD `kern_event.c`, `kqueue(2)`):
//! - `kern_kevent_fp`: changes are applied one by one, in order, before any scan. A change
//!   that fails, or one with EV_RECEIPT, is written to the eventlist as an entry with
//!   `flags = EV_ERROR` and `data = errno`, if the eventlist has room; without room kevent()
//!   fails with that errno and the rest of the changelist is not applied. When at least one
//!   such entry was written, kevent() returns them alone: it does not scan for readiness.
//! - `kqueue_register`: the ident must be an open descriptor (`fget`: else EBADF, whatever the
//!   flags). A knote is found by (fd, filter). None found: EV_ADD creates one (enabled unless
//!   EV_DISABLE is also given), anything else is ENOENT. Found: EV_DELETE drops it; otherwise
//!   `udata` is replaced, then EV_DISABLE / EV_ENABLE apply. An EV_ADD of an existing knote
//!   is a modification: there is no EEXIST for fd filters (unlike epoll's EPOLL_CTL_ADD).
//! - `knote_fdclose` (called from `close()`): every knote of the descriptor goes, even when
//!   the open file lives on through a dup (unlike epoll). The model notices closes by file
//!   identity (device and inode) at its next call, which is all a kevent() caller can observe;
//!   a close followed by a `dup2` of the very same file onto the same number is the one case it
//!   cannot see (the helper does no such thing).
//! - `kqueue_scan`: level-triggered EVFILT_READ/EVFILT_WRITE knotes without EV_CLEAR are
//!   reported while enabled and their filter holds (`f_event` is re-evaluated on every scan).
//! - `filt_soread` / `filt_sowrite` (`uipc_socket.c`): with the receive (send) side shut
//!   (SBS_CANTRCVMORE / SBS_CANTSENDMORE) the filter fires with EV_EOF and `fflags` =
//!   `so_error`; else a pending `so_error` fires it; else data to read (room to write).
//!   Linux's poll(2) gives those states: RDHUP or HUP = receive side shut, HUP = both shut,
//!   ERR = a pending error (stood in for by ECONNRESET: reading SO_ERROR would clear it).
//!
//! What it cannot show: FreeBSD's own socket and pipe state machines (when exactly a
//! FreeBSD socket becomes CANTSENDMORE, what `so_error` holds, the pipe filters), EV_CLEAR,
//! EV_ONESHOT or EV_DISPATCH (unused), the order of events in the eventlist, EINTR, and
//! macOS's kqueue.

use super::kqueue::{ev, Filter, Kev, KeventSyscall};
use crate::sys::cvt;
use std::collections::BTreeMap;
use std::ffi::c_int;
use std::io;
use std::os::fd::RawFd;

/// Which open file a descriptor number refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(fd: RawFd) -> Option<FileId> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable for a whole `stat` during the call; fstat fills it or fails.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) }).ok()?;
    // SAFETY: fstat returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Some(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

#[derive(Debug, Clone, Copy)]
struct Knote {
    udata: u64,
    disabled: bool,
    file: FileId,
}

/// The socket-buffer states the filters look at.
#[derive(Debug, Clone, Copy)]
struct SocketState {
    readable: bool,
    writable: bool,
    cant_rcv_more: bool,
    cant_send_more: bool,
    so_error: u32,
}

fn socket_state(fd: RawFd) -> SocketState {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd, exclusively borrowed for the call; timeout 0 never
    // blocks.
    let revents = match cvt(unsafe { libc::poll(&mut pfd, 1, 0) }) {
        Ok(_) => pfd.revents,
        Err(_) => 0,
    };
    let hup = revents & libc::POLLHUP != 0;
    SocketState {
        readable: revents & libc::POLLIN != 0,
        writable: revents & libc::POLLOUT != 0,
        cant_rcv_more: hup || revents & libc::POLLRDHUP != 0,
        cant_send_more: hup,
        so_error: if revents & libc::POLLERR != 0 {
            libc::ECONNRESET as u32
        } else {
            0
        },
    }
}

/// `filt_soread` / `filt_sowrite`: whether the knote fires, and its flags and fflags.
fn filter_event(filter: Filter, state: SocketState) -> Option<(u16, u32)> {
    let (shut, ready) = match filter {
        Filter::Read => (state.cant_rcv_more, state.readable),
        Filter::Write => (state.cant_send_more, state.writable),
    };
    if shut {
        Some((ev::EOF, state.so_error))
    } else if state.so_error != 0 || ready {
        Some((0, 0))
    } else {
        None
    }
}

/// One kqueue's knotes for descriptor filters.
#[derive(Debug, Default)]
pub struct KqueueModel {
    knotes: BTreeMap<(RawFd, Filter), Knote>,
}

impl KqueueModel {
    pub fn new() -> KqueueModel {
        KqueueModel::default()
    }

    /// `knote_fdclose` for every descriptor closed (or closed and reused) since the last call.
    fn drop_closed_knotes(&mut self) {
        self.knotes
            .retain(|&(fd, _), knote| file_id(fd) == Some(knote.file));
    }

    /// `kqueue_register` for an fd filter: 0 or an errno.
    fn register(&mut self, change: &Kev) -> i32 {
        let Some(file) = file_id(change.ident) else {
            return libc::EBADF;
        };
        let key = (change.ident, change.filter);
        let knote = match self.knotes.get_mut(&key) {
            None if change.flags & ev::ADD == 0 => return libc::ENOENT,
            None => self.knotes.entry(key).or_insert(Knote {
                udata: change.udata,
                disabled: false,
                file,
            }),
            Some(_) if change.flags & ev::DELETE != 0 => {
                self.knotes.remove(&key);
                return 0;
            }
            Some(knote) => {
                knote.udata = change.udata;
                knote
            }
        };
        if change.flags & ev::DISABLE != 0 {
            knote.disabled = true;
        }
        if change.flags & ev::ENABLE != 0 {
            knote.disabled = false;
        }
        0
    }

    /// `kqueue_scan` of level-triggered knotes: every enabled knote whose filter holds.
    fn scan(&self, events: &mut [Kev]) -> usize {
        let mut n = 0;
        for (&(fd, filter), knote) in &self.knotes {
            if n == events.len() {
                break;
            }
            if knote.disabled {
                continue;
            }
            if let Some((flags, fflags)) = filter_event(filter, socket_state(fd)) {
                events[n] = Kev {
                    ident: fd,
                    filter,
                    flags,
                    fflags,
                    data: 0,
                    udata: knote.udata,
                };
                n += 1;
            }
        }
        n
    }

    /// Sleep until one enabled knote's descriptor changes state, or the timeout.
    fn sleep(&self, timeout_ms: c_int) {
        let mut fds: Vec<libc::pollfd> = self
            .knotes
            .iter()
            .filter(|(_, k)| !k.disabled)
            .map(|(&(fd, filter), _)| libc::pollfd {
                fd,
                events: match filter {
                    Filter::Read => libc::POLLIN | libc::POLLRDHUP,
                    Filter::Write => libc::POLLOUT,
                },
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is an array of `fds.len()` valid pollfd entries, exclusively borrowed
        // for the call; the kernel writes only their `revents`.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    }
}

impl KeventSyscall for KqueueModel {
    fn kevent(
        &mut self,
        changes: &[Kev],
        events: &mut [Kev],
        timeout_ms: c_int,
    ) -> io::Result<usize> {
        self.drop_closed_knotes();
        let mut n = 0;
        for change in changes {
            let error = self.register(change);
            if error == 0 && change.flags & ev::RECEIPT == 0 {
                continue;
            }
            if n == events.len() {
                // No room for the entry: the call fails, the rest is not applied.
                return if error == 0 {
                    Ok(n)
                } else {
                    Err(io::Error::from_raw_os_error(error))
                };
            }
            events[n] = Kev {
                flags: ev::ERROR,
                data: i64::from(error),
                ..*change
            };
            n += 1;
        }
        if n > 0 {
            return Ok(n);
        }
        let ready = self.scan(events);
        if ready > 0 || timeout_ms == 0 {
            return Ok(ready);
        }
        self.sleep(timeout_ms);
        Ok(self.scan(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;

    fn add(fd: RawFd, filter: Filter, flags: u16, udata: u64) -> Kev {
        Kev::change(fd, filter, ev::ADD | flags, udata)
    }

    fn kevent(kq: &mut KqueueModel, changes: &[Kev]) -> Vec<Kev> {
        let mut events = vec![Kev::change(0, Filter::Read, 0, 0); 16];
        let n = kq.kevent(changes, &mut events, 0).unwrap();
        events.truncate(n);
        events
    }

    #[test]
    fn knote_bookkeeping_follows_kern_event() {
        // The watched socket sits on a high number of this test's own: tests run in parallel
        // threads of one process, and the lowest free number, which the close-and-reuse steps
        // below need to control, is anybody's.
        const FD: RawFd = 777;
        let (low, mut b) = UnixStream::pair().unwrap();
        // SAFETY: dup2 reads no memory; FD is a number no other test uses, and `a` below owns
        // what dup2 put there.
        assert_eq!(unsafe { libc::dup2(low.as_raw_fd(), FD) }, FD);
        drop(low);
        // SAFETY: FD was just opened by dup2 above and nothing else owns it.
        let a = unsafe { OwnedFd::from_raw_fd(FD) };
        let fd = FD;
        let mut kq = KqueueModel::new();
        // Writable at once; READ disabled; nothing to read anyway.
        let got = kevent(
            &mut kq,
            &[
                add(fd, Filter::Read, ev::DISABLE, 1),
                add(fd, Filter::Write, ev::ENABLE, 1),
            ],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].filter, got[0].flags, got[0].udata),
            (Filter::Write, 0, 1)
        );
        // EV_ADD again: a modification (new udata), never EEXIST.
        let got = kevent(&mut kq, &[add(fd, Filter::Write, 0, 2)]);
        assert_eq!(got[0].udata, 2);
        // EV_ENABLE alone on a knote that does not exist: ENOENT, as an EV_ERROR entry,
        // and no scan in that call.
        let (c, _d) = UnixStream::pair().unwrap();
        let got = kevent(
            &mut kq,
            &[Kev::change(c.as_raw_fd(), Filter::Read, ev::ENABLE, 3)],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].flags, got[0].data),
            (ev::ERROR, libc::ENOENT as i64)
        );
        // EV_RECEIPT: an entry with data 0 even on success.
        let got = kevent(
            &mut kq,
            &[add(fd, Filter::Read, ev::RECEIPT | ev::ENABLE, 1)],
        );
        assert_eq!((got.len(), got[0].flags, got[0].data), (1, ev::ERROR, 0));
        // Readable data; then the peer goes: EOF on both filters (and so_error as fflags).
        b.write_all(b"x").unwrap();
        let got = kevent(&mut kq, &[]);
        assert_eq!(got.len(), 2, "{got:?}");
        drop(b);
        let got = kevent(&mut kq, &[]);
        assert!(got.iter().all(|e| e.flags & ev::EOF != 0), "{got:?}");
        // EV_DELETE, then deleting again: ENOENT.
        let got = kevent(&mut kq, &[Kev::change(fd, Filter::Write, ev::DELETE, 0)]);
        assert!(got.iter().all(|e| e.filter == Filter::Read), "{got:?}");
        let got = kevent(&mut kq, &[Kev::change(fd, Filter::Write, ev::DELETE, 0)]);
        assert_eq!(
            (got[0].flags, got[0].data),
            (ev::ERROR, libc::ENOENT as i64)
        );
        // close() drops the knotes: the number, unused, is EBADF; reused, the new file has
        // no knotes (ENOENT).
        drop(a);
        let got = kevent(&mut kq, &[Kev::change(fd, Filter::Read, ev::DELETE, 0)]);
        assert_eq!((got[0].flags, got[0].data), (ev::ERROR, libc::EBADF as i64));
        // The number reused by another file (as the lowest free one would be).
        let (other, _f) = UnixStream::pair().unwrap();
        // SAFETY: as above: FD is closed now and this test's own.
        assert_eq!(unsafe { libc::dup2(other.as_raw_fd(), FD) }, FD);
        // SAFETY: dup2 just opened FD; `_e` owns it and closes it at the end.
        let _e = unsafe { OwnedFd::from_raw_fd(FD) };
        let got = kevent(&mut kq, &[Kev::change(fd, Filter::Read, ev::DELETE, 0)]);
        assert_eq!(
            (got[0].flags, got[0].data),
            (ev::ERROR, libc::ENOENT as i64)
        );
        assert!(kq.knotes.is_empty());
    }

    #[test]
    fn without_room_for_the_error_entry_the_call_fails_and_stops() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut kq = KqueueModel::new();
        let mut events: [Kev; 0] = [];
        let err = kq
            .kevent(
                &[
                    Kev::change(a.as_raw_fd(), Filter::Read, ev::DELETE, 0),
                    add(a.as_raw_fd(), Filter::Read, 0, 1),
                ],
                &mut events,
                0,
            )
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert!(
            kq.knotes.is_empty(),
            "the add after the failure was not applied"
        );
    }
}
