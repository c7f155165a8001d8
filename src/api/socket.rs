//! The control socket's file: created before the sandbox, mode 0600, removed when the helper
//! is gone.
//!
//! Owns: the path's life. A stale socket (nobody accepts on it: a helper that was killed) is
//! replaced; a live one, or anything that is not a socket, is refused with the path named.
//! Removal is left to a small child process (`sys::unlink_when_gone`) that outlives the
//! helper by a moment: the helper itself, privileges dropped and sandboxed, could not.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the control socket could not be created: the helper refuses to start.
#[derive(Debug)]
pub enum ApiSocketError {
    /// Something other than a socket is at the path.
    NotASocket { path: PathBuf },
    /// A process accepts connections on the socket at the path.
    InUse { path: PathBuf },
    /// A system call on the path failed.
    Call {
        path: PathBuf,
        call: &'static str,
        err: io::Error,
    },
}

impl fmt::Display for ApiSocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiSocketError::NotASocket { path } => write!(
                f,
                "api: {} exists and is not a socket; refusing to replace it",
                path.display()
            ),
            ApiSocketError::InUse { path } => write!(
                f,
                "api: {} is in use (a process accepts connections on it)",
                path.display()
            ),
            ApiSocketError::Call { path, call, err } => {
                write!(f, "api: {}: {call}: {err}", path.display())
            }
        }
    }
}

impl std::error::Error for ApiSocketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiSocketError::Call { err, .. } => Some(err),
            _ => None,
        }
    }
}

/// The listening socket; its file goes when the process does.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Held open for the process's life: its closing tells the remover to unlink the path.
    _remover: OwnedFd,
}

impl ControlSocket {
    /// Create the socket at `path` (see the module comment), non-blocking and close-on-exec.
    pub fn create(path: &Path) -> Result<ControlSocket, ApiSocketError> {
        let call = |call: &'static str| {
            let path = path.to_path_buf();
            move |err| ApiSocketError::Call { path, call, err }
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => match probe(path) {
                // Someone accepts (or its backlog is full: EAGAIN): in use.
                Ok(()) => {
                    return Err(ApiSocketError::InUse {
                        path: path.to_path_buf(),
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    return Err(ApiSocketError::InUse {
                        path: path.to_path_buf(),
                    })
                }
                // Nobody listens: a dead helper's socket.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(call("unlink (stale socket)"))?
                }
                Err(e) => return Err(call("connect (is the socket stale?)")(e)),
            },
            Ok(_) => {
                return Err(ApiSocketError::NotASocket {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(call("lstat")(e)),
        }
        // The file is born 0600: no moment when another user could connect.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(call("bind"))?;
        let created = std::fs::symlink_metadata(path).map_err(call("lstat"))?;
        let remover =
            crate::sys::unlink_when_gone(path, created.dev(), created.ino()).map_err(|err| {
                let _ = std::fs::remove_file(path);
                call("fork (the process that removes the socket at exit)")(err)
            })?;
        listener
            .set_nonblocking(true)
            .map_err(call("fcntl(O_NONBLOCK)"))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            _remover: remover,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A waiting client, if any (non-blocking, close-on-exec).
    pub fn accept(&self) -> io::Result<Option<UnixStream>> {
        match self.listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                Ok(Some(stream))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A non-blocking connect to the socket at `path`: a live listener whose backlog is full
/// answers EAGAIN at once, where a blocking connect would wait for it.
fn probe(path: &Path) -> io::Result<()> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(sock.as_raw_fd(), &addr)?;
    Ok(())
}

impl AsFd for ControlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}
