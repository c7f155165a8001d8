//! Why the helper ends with a non-zero status, and which status: the one place that maps an
//! error to an exit code. Exit 0 (bhyve hung up, SIGTERM/SIGINT) is not an error.
//!
//! Owns: the top-level error type and its wording. Each `Display` is the whole line the user
//! reads, its cause's text included (one line on stderr or in syslog, never a chain);
//! `source()` hands the typed cause to callers and tests.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use crate::api::socket::ApiSocketError;
use crate::cli::UsageError;
use crate::config::{ConfigError, HostFwdRule, RecvError};
use crate::event_loop::LoopError;
use crate::pcap::CaptureError;
use crate::sandbox::SandboxError;
use crate::slirp::api::LoadError;

/// A failure that ends the helper.
#[derive(Debug)]
pub enum HelperError {
    /// The command line cannot be run.
    Usage(UsageError),
    /// `-S` names no descriptor the helper can use as bhyve's socket.
    Socket(SocketError),
    /// A call setting up the helper's own process or descriptors failed.
    Setup { call: &'static str, err: io::Error },
    /// A standard descriptor could not be pointed at `/dev/null`.
    DevNull { fd: RawFd, err: io::Error },
    /// No complete configuration came from bhyve.
    Recv(RecvError),
    /// bhyve's configuration has a value the helper refuses.
    Config(ConfigError),
    /// libslirp could not be loaded.
    Libslirp(LoadError),
    /// `slirp_new` refused the configuration.
    SlirpNew(io::Error),
    /// The poller or its wakeup pipe could not be created.
    Poller(io::Error),
    /// libslirp could not install a forward (its host port is taken, for one).
    HostFwd {
        /// 1-based position of the rule in the `hostfwd` value.
        index: usize,
        rule: HostFwdRule,
        err: io::Error,
    },
    /// The capture file (`pcap`) cannot be used.
    Capture(CaptureError),
    /// The control socket (`api`) could not be created.
    Api(ApiSocketError),
    /// Privileges could not be dropped or the sandbox entered: never run unconfined.
    Sandbox(SandboxError),
    /// The loop could not go on.
    Loop {
        err: LoopError,
        /// The counters line at that moment.
        stats: String,
    },
}

impl HelperError {
    /// The process exit status, as the C helper's: 4 for a bad boolean `open`, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            HelperError::Config(e) => match e.exit_code() {
                4 => 4,
                _ => 1,
            },
            _ => 1,
        }
    }

    /// Whether the usage line follows the message: the command line was wrong.
    pub fn shows_usage(&self) -> bool {
        matches!(self, HelperError::Usage(_) | HelperError::Socket(_))
    }
}

impl fmt::Display for HelperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelperError::Usage(e) => e.fmt(f),
            HelperError::Socket(e) => e.fmt(f),
            HelperError::Setup { call, err } => write!(f, "{call}: {err}"),
            HelperError::DevNull { fd, err } => write!(f, "/dev/null on descriptor {fd}: {err}"),
            HelperError::Recv(e) => write!(f, "reading the configuration from bhyve: {e}"),
            HelperError::Config(e) => write!(f, "configuration: {e}"),
            HelperError::Libslirp(e) => e.fmt(f),
            HelperError::SlirpNew(e) => write!(f, "libslirp: {e}"),
            HelperError::Poller(e) => write!(f, "creating the poller: {e}"),
            HelperError::HostFwd { index, rule, err } => {
                write!(
                    f,
                    "hostfwd: rule {index} '{rule}': libslirp cannot install it: {err}"
                )
            }
            HelperError::Capture(e) => e.fmt(f),
            HelperError::Api(e) => e.fmt(f),
            HelperError::Sandbox(e) => e.fmt(f),
            HelperError::Loop { err, stats } => write!(f, "{err}; {stats}"),
        }
    }
}

impl std::error::Error for HelperError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HelperError::Usage(e) => Some(e),
            HelperError::Socket(e) => Some(e),
            HelperError::Setup { err, .. }
            | HelperError::DevNull { err, .. }
            | HelperError::SlirpNew(err)
            | HelperError::Poller(err)
            | HelperError::HostFwd { err, .. } => Some(err),
            HelperError::Recv(e) => Some(e),
            HelperError::Config(e) => Some(e),
            HelperError::Libslirp(e) => Some(e),
            HelperError::Capture(e) => Some(e),
            HelperError::Api(e) => Some(e),
            HelperError::Sandbox(e) => Some(e),
            HelperError::Loop { err, .. } => Some(err),
        }
    }
}

macro_rules! from_cause {
    ($($cause:ty => $variant:ident),* $(,)?) => {$(
        impl From<$cause> for HelperError {
            fn from(e: $cause) -> HelperError {
                HelperError::$variant(e)
            }
        }
    )*};
}

from_cause! {
    UsageError => Usage,
    SocketError => Socket,
    RecvError => Recv,
    ConfigError => Config,
    LoadError => Libslirp,
    SandboxError => Sandbox,
    CaptureError => Capture,
}

/// `-S <fd>` or `--fd <fd>` names a descriptor that cannot be the frontend's socket.
#[derive(Debug)]
pub struct SocketError {
    /// `-S` or `--fd`, as given.
    pub option: &'static str,
    pub fd: RawFd,
    pub problem: SocketProblem,
}

/// What is wrong with the `-S` descriptor.
#[derive(Debug)]
pub enum SocketProblem {
    /// Nothing is open at that number.
    NotOpen,
    /// A file, a pipe, a terminal…
    NotSocket,
    /// A byte stream merges frames silently; SOCK_SEQPACKET (bhyve's) and SOCK_DGRAM (QEMU's
    /// `-netdev socket`) keep their boundaries.
    Stream,
    /// Asking the kernel what it is failed.
    Query { call: &'static str, err: io::Error },
    /// `--fd` 0, 1 or 2: those are pointed at `/dev/null` when stderr goes nowhere, and
    /// `--fd` keeps the socket's number (libvirt never passes them).
    Standard,
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: '{}' ", self.option, self.fd)?;
        match &self.problem {
            SocketProblem::NotOpen => f.write_str("is not an open descriptor"),
            SocketProblem::NotSocket => f.write_str("is not a socket"),
            SocketProblem::Stream => f.write_str(
                "is a SOCK_STREAM socket, which does not keep frame boundaries \
                 (use SOCK_SEQPACKET, as bhyve does, or SOCK_DGRAM)",
            ),
            SocketProblem::Query { call, err } => write!(f, "cannot be checked: {call}: {err}"),
            SocketProblem::Standard => {
                f.write_str("is a standard descriptor (0, 1, 2); pass the socket on 3 or above")
            }
        }
    }
}

impl std::error::Error for SocketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            SocketProblem::Query { err, .. } => Some(err),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::value::{Expected, ValueError};
    use crate::config::Proto;
    use std::error::Error;
    use std::net::Ipv4Addr;

    #[test]
    fn exit_codes_have_one_home() {
        let open = ConfigError::Open(ValueError::new("open", "maybe", Expected::Boolean));
        assert_eq!(HelperError::Config(open).exit_code(), 4);
        let coalesce =
            ConfigError::Tunable(ValueError::new("coalesce", "maybe", Expected::Boolean));
        assert_eq!(HelperError::Config(coalesce).exit_code(), 1);
        assert_eq!(HelperError::Usage(UsageError::MissingSocket).exit_code(), 1);
        assert_eq!(HelperError::SlirpNew(io::Error::other("x")).exit_code(), 1);
    }

    #[test]
    fn the_key_path_reads_as_the_option_path_after_its_prefix() {
        let key = HelperError::Config(ConfigError::Tunable(ValueError::new(
            "poller",
            "kqueue",
            Expected::OneOf(&["poll", "epoll"]),
        )));
        assert_eq!(
            key.to_string(),
            "configuration: poller: 'kqueue' is not available here (use poll or epoll)"
        );
        assert!(!key.shows_usage());
        let option = HelperError::Usage(UsageError::Value(ValueError::new(
            "--poller",
            "kqueue",
            Expected::OneOf(&["poll", "epoll"]),
        )));
        assert_eq!(
            option.to_string(),
            "--poller: 'kqueue' is not available here (use poll or epoll)"
        );
        assert!(option.shows_usage());
        assert!(option.source().is_some());
    }

    #[test]
    fn socket_errors_name_the_option() {
        let cases = [
            (
                SocketProblem::NotOpen,
                "-S: '999' is not an open descriptor",
            ),
            (SocketProblem::NotSocket, "-S: '999' is not a socket"),
            (
                SocketProblem::Stream,
                "-S: '999' is a SOCK_STREAM socket, which does not keep frame boundaries \
                 (use SOCK_SEQPACKET, as bhyve does, or SOCK_DGRAM)",
            ),
        ];
        for (problem, want) in cases {
            let e = HelperError::from(SocketError {
                option: "-S",
                fd: 999,
                problem,
            });
            assert_eq!(e.to_string(), want);
            assert!(e.shows_usage());
            assert_eq!(e.exit_code(), 1);
        }
        let query = SocketError {
            option: "-S",
            fd: 5,
            problem: SocketProblem::Query {
                call: "fstat",
                err: io::Error::from_raw_os_error(libc::EBADF),
            },
        };
        assert!(query
            .to_string()
            .starts_with("-S: '5' cannot be checked: fstat: "));
        assert!(query.source().is_some());
    }

    #[test]
    fn a_forward_libslirp_refuses_names_the_rule() {
        let e = HelperError::HostFwd {
            index: 2,
            rule: HostFwdRule {
                proto: Proto::Tcp,
                host_addr: Ipv4Addr::LOCALHOST.into(),
                host_port: 2222,
                guest_addr: Ipv4Addr::new(10, 0, 2, 15).into(),
                guest_port: 22,
            },
            err: io::Error::from_raw_os_error(libc::EADDRINUSE),
        };
        let text = e.to_string();
        assert!(
            text.starts_with(
                "hostfwd: rule 2 'tcp:127.0.0.1:2222-10.0.2.15:22': libslirp cannot install it: "
            ),
            "{text}"
        );
        assert!(text.contains("in use"), "{text}");
        assert!(e.source().is_some());
    }
}
