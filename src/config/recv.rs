//! Reading the config nvlist from bhyve's socket by exact byte counts.
//!
//! INTERFACE CONTRACT: `recv_config(sock: BorrowedFd, timeout: Duration) -> Result<Nvlist, RecvError>`
//! (and `recv_config_until`, which also gives up when a stop flag is raised); `RecvError: Display`.
//!
//! Owns: getting the header, body and descriptors of `nvlist_send`'s message off the socket.
//! Must never read a byte past the configuration (on FreeBSD the first frame may share the
//! read), never allocate more than what has actually arrived, and never wait past the timeout.
//!
//! SOCK_SEQPACKET differs by system (protocol doc 3.1): FreeBSD delivers a byte stream with
//! record marks (reads may span or split sends), Linux delivers each send as one atomic record
//! and drops the unread rest of a record on a short read (MSG_TRUNC). So the header is only
//! peeked until all 19 bytes are visible, and then every read asks for at most the bytes the
//! configuration still lacks, never more than FIONREAD says are queued.

use std::fmt;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recv, recvmsg, MsgFlags, UnixAddr};

use super::nvlist::{self, DecodeError, Header, Nvlist, HEADER_LEN};

/// The errno of a failed call made through `crate::sys`.
fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// Largest configuration accepted (header plus body). bhyve's is a few hundred bytes; the cap
/// keeps a corrupt size field from making the helper wait for, and buffer, gigabytes.
pub const MAX_CONFIG_LEN: u64 = 16 << 20;
/// Most descriptors accepted with the configuration (bhyve sends none today).
pub const MAX_DESCRIPTORS: u64 = 1024;
/// libnv's `fd_send` sends up to 127 descriptors per message, each in its own cmsghdr; room
/// for 128 such headers also holds 500 descriptors packed into one (Linux merges them).
const FDS_PER_MESSAGE: usize = 128;
/// Longest single wait when a stop flag is watched: a signal that lands between the flag check
/// and `poll` (so no EINTR) is seen this late at worst, not at the end of the timeout.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Which part of the message was being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Header,
    Body,
    Descriptors,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Header => "header",
            Stage::Body => "body",
            Stage::Descriptors => "descriptors",
        })
    }
}

/// Why no configuration could be read.
#[derive(Debug)]
pub enum RecvError {
    /// The configuration was not complete within the timeout.
    Timeout { stage: Stage, timeout: Duration },
    /// bhyve hung up (closed its end, or shut down its sending side: either way no more bytes
    /// can come) before the configuration was complete.
    Closed { stage: Stage },
    /// The stop flag was raised (SIGTERM/SIGINT) while waiting.
    Stopped,
    /// Linux: a record held more than the configuration's remaining bytes and the kernel cut it.
    Truncated { stage: Stage },
    /// Descriptors arrived with more control data than the buffer held; the kernel closed them.
    ControlTruncated,
    /// The header announces a configuration above [`MAX_CONFIG_LEN`].
    TooLarge { size: u64 },
    /// The header announces more than [`MAX_DESCRIPTORS`] descriptors.
    TooManyDescriptors { announced: u64 },
    /// The descriptor messages did not match the header's count.
    DescriptorCount { announced: usize, received: usize },
    /// A system call failed.
    Io { call: &'static str, errno: Errno },
    /// The bytes are not a valid nvlist.
    Decode(DecodeError),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Timeout { stage, timeout } => write!(
                f,
                "no complete configuration from bhyve within {timeout:?} (waiting for the {stage})"
            ),
            RecvError::Closed { stage } => write!(
                f,
                "bhyve hung up before the configuration was complete (closed or shut down its \
                 end while the {stage} was being read)"
            ),
            RecvError::Stopped => f.write_str("stopped while waiting for the configuration"),
            RecvError::Truncated { stage } => write!(
                f,
                "configuration {stage} arrived in a record longer than the configuration (MSG_TRUNC)"
            ),
            RecvError::ControlTruncated => {
                f.write_str("descriptors sent with the configuration did not fit (MSG_CTRUNC)")
            }
            RecvError::TooLarge { size } => write!(
                f,
                "configuration header announces a {size}-byte body: with the {HEADER_LEN}-byte \
                 header that is more than the {MAX_CONFIG_LEN}-byte limit"
            ),
            RecvError::TooManyDescriptors { announced } => write!(
                f,
                "configuration header announces {announced} descriptors, more than the limit of {MAX_DESCRIPTORS}"
            ),
            RecvError::DescriptorCount {
                announced,
                received,
            } => write!(
                f,
                "configuration header announces {announced} descriptors but {received} arrived"
            ),
            RecvError::Io { call, errno } => {
                write!(f, "{call} on the bhyve socket failed: {}", errno.desc())
            }
            RecvError::Decode(e) => write!(f, "bad configuration from bhyve: {e}"),
        }
    }
}

impl std::error::Error for RecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecvError::Io { errno, .. } => Some(errno),
            RecvError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

/// Receives one `nvlist_send` message: the 19-byte header, exactly `size` more bytes, then the
/// announced descriptors (closed again once decoding is done: the helper uses none).
pub fn recv_config(sock: BorrowedFd<'_>, timeout: Duration) -> Result<Nvlist, RecvError> {
    static NEVER: AtomicBool = AtomicBool::new(false);
    recv_config_until(sock, timeout, &NEVER)
}

/// [`recv_config`] that also gives up with [`RecvError::Stopped`] once `stop` is true (the
/// helper's SIGTERM/SIGINT flag: the wait must not outlive a request to exit).
pub fn recv_config_until(
    sock: BorrowedFd<'_>,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Nvlist, RecvError> {
    let mut rx = ConfigReader {
        sock,
        // None: a timeout too large to represent, i.e. wait for ever.
        deadline: Instant::now().checked_add(timeout),
        timeout,
        hangup: false,
        stop,
    };
    let (header, mut buf) = rx.header()?;
    let total = checked_total(&header)?;
    rx.body(&mut buf, total)?;
    let announced = header.descriptors as usize; // <= MAX_DESCRIPTORS, checked above
    let fds = rx.descriptors(announced)?;
    nvlist::decode(&buf, fds.len()).map_err(RecvError::Decode)
}

/// Header plus body length, within the limits.
fn checked_total(header: &Header) -> Result<usize, RecvError> {
    if header.descriptors > MAX_DESCRIPTORS {
        return Err(RecvError::TooManyDescriptors {
            announced: header.descriptors,
        });
    }
    match header.total_len() {
        Some(total) if total <= MAX_CONFIG_LEN => Ok(total as usize),
        _ => Err(RecvError::TooLarge { size: header.size }),
    }
}

struct ConfigReader<'fd> {
    sock: BorrowedFd<'fd>,
    deadline: Option<Instant>,
    timeout: Duration,
    /// The last poll saw the peer hang up.
    hangup: bool,
    stop: &'fd AtomicBool,
}

impl ConfigReader<'_> {
    /// Peeks until the whole header is visible; bytes of a short record (Linux) or partial
    /// stream (FreeBSD) are consumed on the way so that poll does not spin on them.
    /// Returns the header and the header bytes already consumed.
    fn header(&mut self) -> Result<(Header, Vec<u8>), RecvError> {
        let mut raw = [0u8; HEADER_LEN];
        let mut have = 0;
        while have < HEADER_LEN {
            self.wait_readable(Stage::Header)?;
            let Some(rest) = raw.get_mut(have..) else {
                break;
            };
            let Some(peeked) = self.recv(rest, MsgFlags::MSG_PEEK)? else {
                continue;
            };
            if peeked == 0 {
                self.empty_read(Stage::Header)?;
                // An empty record: take it off the queue (0-byte read) and go on.
                self.recv(&mut [], MsgFlags::empty())?;
                continue;
            }
            if have + peeked == HEADER_LEN {
                break;
            }
            // Fewer than the missing bytes are queued: take them (on Linux the whole record).
            let Some(part) = raw.get_mut(have..have + peeked) else {
                break;
            };
            have += self.recv_into(part, Stage::Header)?.unwrap_or(0);
        }
        let header = Header::parse(&raw).map_err(RecvError::Decode)?;
        Ok((header, raw.get(..have).unwrap_or_default().to_vec()))
    }

    /// Reads until `buf` holds `total` bytes, each read bounded by what is queued.
    fn body(&mut self, buf: &mut Vec<u8>, total: usize) -> Result<(), RecvError> {
        while buf.len() < total {
            self.wait_readable(Stage::Body)?;
            // At least 1 so that an empty record or EOF shows up as a 0-byte read.
            let chunk = self.queued()?.clamp(1, total - buf.len());
            let start = buf.len();
            buf.resize(start + chunk, 0);
            let got = match buf.get_mut(start..) {
                Some(space) => self.recv_into(space, Stage::Body)?,
                None => None,
            };
            buf.truncate(start + got.unwrap_or(0));
            if got == Some(0) {
                self.empty_read(Stage::Body)?;
            }
        }
        Ok(())
    }

    /// Receives `announced` descriptors from one-byte messages carrying SCM_RIGHTS.
    fn descriptors(&mut self, announced: usize) -> Result<Vec<OwnedFd>, RecvError> {
        let mut fds = Vec::new();
        let per_fd = nix::cmsg_space!(RawFd).len();
        let mut cmsg = vec![0u8; FDS_PER_MESSAGE * per_fd];
        while fds.len() < announced {
            self.wait_readable(Stage::Descriptors)?;
            let before = fds.len();
            match self.recv_fds(&mut cmsg, &mut fds)? {
                None => {}
                Some(0) => self.empty_read(Stage::Descriptors)?,
                // A data byte without descriptors is not libnv's protocol (its fd_recv
                // refuses it too); on FreeBSD it may already be the first frame.
                Some(_) if fds.len() == before => break,
                Some(_) => {}
            }
        }
        if fds.len() != announced {
            return Err(RecvError::DescriptorCount {
                announced,
                received: fds.len(),
            });
        }
        Ok(fds)
    }

    /// One descriptor message; every fd received is owned (and so closed) before any error.
    fn recv_fds(
        &mut self,
        cmsg: &mut [u8],
        fds: &mut Vec<OwnedFd>,
    ) -> Result<Option<usize>, RecvError> {
        let mut byte = [0u8; 1];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        let (bytes, msg_flags) = loop {
            match crate::sys::recv_with_fds(self.sock, &mut byte, cmsg, flags, fds) {
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(errno) => {
                    return Err(RecvError::Io {
                        call: "recvmsg",
                        errno,
                    })
                }
                Ok(msg) => break msg,
            }
        };
        if msg_flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(RecvError::ControlTruncated);
        }
        Ok(Some(bytes))
    }

    /// A 0-byte read is EOF only if the peer hung up; otherwise it was an empty record.
    fn empty_read(&self, stage: Stage) -> Result<(), RecvError> {
        if self.hangup {
            Err(RecvError::Closed { stage })
        } else {
            Ok(())
        }
    }

    /// Waits until the socket is readable (or hung up), up to the deadline.
    fn wait_readable(&mut self, stage: Stage) -> Result<(), RecvError> {
        // POLLRDHUP: a peer that shut down its sending side (`shutdown(SHUT_WR)`) has hung up
        // for the config's purpose, but only POLLIN (with 0-byte reads) and POLLRDHUP show it;
        // POLLHUP comes only once both directions are shut. Linux and FreeBSD both report it.
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        const HANGUP: libc::c_short = libc::POLLHUP | libc::POLLRDHUP;
        #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
        const HANGUP: libc::c_short = libc::POLLHUP;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(RecvError::Stopped);
            }
            let left = match self.deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Err(RecvError::Timeout {
                    stage,
                    timeout: self.timeout,
                });
            }
            // Round up so a sub-millisecond rest does not turn into a busy loop.
            let ms = left.min(STOP_CHECK).as_micros().div_ceil(1000);
            let wait = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
            let revents = match crate::sys::poll_one(self.sock, libc::POLLIN | HANGUP, wait) {
                Ok(0) => continue,
                Ok(revents) => revents,
                Err(e) => match errno_of(&e) {
                    Errno::EINTR => continue,
                    errno => {
                        return Err(RecvError::Io {
                            call: "poll",
                            errno,
                        })
                    }
                },
            };
            if revents & libc::POLLNVAL != 0 {
                return Err(RecvError::Io {
                    call: "poll",
                    errno: Errno::EBADF,
                });
            }
            self.hangup = revents & HANGUP != 0;
            if revents != 0 {
                return Ok(());
            }
        }
    }

    /// Bytes queued on the socket (FIONREAD; on Linux the sum of all queued records).
    fn queued(&self) -> Result<usize, RecvError> {
        crate::sys::bytes_queued(self.sock).map_err(|e| RecvError::Io {
            call: "ioctl(FIONREAD)",
            errno: errno_of(&e),
        })
    }

    /// `recv` without blocking; `None` when nothing is queued after all (spurious wakeup).
    fn recv(&self, buf: &mut [u8], flags: MsgFlags) -> Result<Option<usize>, RecvError> {
        loop {
            match recv(self.sock.as_raw_fd(), buf, flags | MsgFlags::MSG_DONTWAIT) {
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(errno) => {
                    return Err(RecvError::Io {
                        call: "recv",
                        errno,
                    })
                }
                Ok(n) => return Ok(Some(n)),
            }
        }
    }

    /// Consuming read that fails on MSG_TRUNC (Linux cut a record: bytes are lost).
    fn recv_into(&self, buf: &mut [u8], stage: Stage) -> Result<Option<usize>, RecvError> {
        let mut iov = [IoSliceMut::new(buf)];
        loop {
            let flags = MsgFlags::MSG_DONTWAIT;
            match recvmsg::<UnixAddr>(self.sock.as_raw_fd(), &mut iov, None, flags) {
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(errno) => {
                    return Err(RecvError::Io {
                        call: "recvmsg",
                        errno,
                    })
                }
                Ok(msg) if msg.flags.contains(MsgFlags::MSG_TRUNC) => {
                    return Err(RecvError::Truncated { stage })
                }
                Ok(msg) => return Ok(Some(msg.bytes)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(descriptors: u64, size: u64) -> Header {
        Header {
            version: 0,
            flags: 0,
            descriptors,
            size,
        }
    }

    #[test]
    fn limits() {
        assert_eq!(checked_total(&header(0, 91)).unwrap(), 110);
        let max = MAX_CONFIG_LEN - HEADER_LEN as u64;
        assert_eq!(
            checked_total(&header(0, max)).unwrap(),
            MAX_CONFIG_LEN as usize
        );
        assert!(matches!(
            checked_total(&header(0, max + 1)),
            Err(RecvError::TooLarge { .. })
        ));
        assert!(matches!(
            checked_total(&header(0, u64::MAX)),
            Err(RecvError::TooLarge { .. })
        ));
        assert_eq!(
            checked_total(&header(MAX_DESCRIPTORS, 0)).unwrap(),
            HEADER_LEN
        );
        assert!(matches!(
            checked_total(&header(MAX_DESCRIPTORS + 1, 0)),
            Err(RecvError::TooManyDescriptors { announced: 1025 })
        ));
    }

    #[test]
    fn messages_say_what_went_wrong() {
        let closed = RecvError::Closed { stage: Stage::Body };
        assert!(closed
            .to_string()
            .starts_with("bhyve hung up before the configuration was complete"));
        assert!(closed.to_string().contains("body"));
        let big = RecvError::TooLarge { size: 1 << 40 }.to_string();
        assert!(
            big.contains("1099511627776-byte body")
                && big.contains("19-byte header")
                && big.contains("16777216-byte limit"),
            "{big}"
        );
    }
}
