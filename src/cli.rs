//! The command line, compatible with the C helper: `-S <fd>` (getopt style), plus `--help`,
//! `--version` and the helper's own options.

use crate::poller::PollerKind;
use std::ffi::OsString;
use std::os::fd::RawFd;

pub const USAGE: &str = "usage: bhyve-slirp-helper -S <socket>";

pub const HELP: &str = "\
usage: bhyve-slirp-helper -S <socket> [options]

User-mode networking for a bhyve guest: libslirp behind bhyve's slirp backend.
bhyve starts the helper with one end of a SOCK_SEQPACKET socket, sends the
device configuration (a libnv nvlist), then exchanges Ethernet frames.

  -S <socket>         descriptor of the socket to bhyve (required)
  --libslirp <path>   libslirp to load (default libslirp.so.0, or
                      $SLIRP_HELPER_LIBSLIRP)
  --batch <n>         frames per socket syscall, 1..=256 (1: the C helper's
                      one frame per syscall)
  --poller <name>     readiness backend: epoll (Linux default), kqueue
                      (FreeBSD default) or poll
                      (the C helper's loop)
  --coalesce on|off   merge consecutive guest TCP segments read together
                      into one packet before libslirp (default: on when
                      the batch is above 1)
  -h, --help          this text
  -V, --version       the version

Exit status: 0 when bhyve hangs up, 1 on bad usage, configuration, or
libslirp, 4 on a bad boolean for 'open'.
";

/// Environment override of the libslirp path.
pub const LIBSLIRP_ENV: &str = "SLIRP_HELPER_LIBSLIRP";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub socket: RawFd,
    /// Explicit `--libslirp`; otherwise the environment or the default.
    pub libslirp: Option<String>,
    pub poller: Option<PollerKind>,
    /// Frames moved per syscall on the frontend socket; `None`: the measured default.
    pub batch: Option<usize>,
    /// Merge guest TCP segments before libslirp; `None`: on when the batch is above 1.
    pub coalesce: Option<bool>,
}

/// A usage error: printed after the usage line; exit 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

fn parse_fd(text: &str) -> Result<RawFd, UsageError> {
    let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<RawFd>() {
        Ok(fd) if valid => Ok(fd),
        _ => Err(UsageError(format!(
            "invalid socket '{text}': not a descriptor number"
        ))),
    }
}

/// Largest batch: beyond this the rings only cost memory (measured in `benches/frames.rs`).
pub const MAX_BATCH: usize = 256;

/// A batch size: 1..=MAX_BATCH.
pub fn parse_batch(text: &str) -> Result<usize, UsageError> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_BATCH).contains(&n) && text.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(UsageError(format!(
            "invalid batch '{text}': a number from 1 to {MAX_BATCH}"
        ))),
    }
}

/// An on/off switch, in bhyve's boolean spellings (`on`/`off`, `true`/`false`, `yes`/`no`,
/// `1`/`0`, any case).
pub fn parse_switch(text: &str) -> Result<bool, UsageError> {
    crate::config::bhyve::parse_bool(text)
        .ok_or_else(|| UsageError(format!("invalid switch '{text}': on or off")))
}

/// Parse the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut socket = None;
    let mut libslirp = None;
    let mut poller = None;
    let mut batch = None;
    let mut coalesce = None;
    let mut args = args.into_iter().map(|a| {
        a.into_string()
            .map_err(|a| UsageError(format!("argument {a:?} is not UTF-8")))
    });
    while let Some(arg) = args.next() {
        let arg = arg?;
        let mut value = |name: &str| match args.next() {
            Some(v) => v,
            None => Err(UsageError(format!("option {name} needs a value"))),
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-S" => socket = Some(parse_fd(&value("-S")?)?),
            s if s.starts_with("-S") => socket = Some(parse_fd(&s[2..])?),
            "--libslirp" => {
                let path = value("--libslirp")?;
                // dlopen("") would hand back the helper's own binary.
                if path.is_empty() {
                    return Err(UsageError(String::from(
                        "option --libslirp needs a path, not an empty string",
                    )));
                }
                libslirp = Some(path);
            }
            "--poller" => {
                let name = value("--poller")?;
                poller = Some(
                    PollerKind::parse(&name)
                        .ok_or_else(|| UsageError(format!("unknown poller '{name}'")))?,
                );
            }
            "--batch" => batch = Some(parse_batch(&value("--batch")?)?),
            "--coalesce" => coalesce = Some(parse_switch(&value("--coalesce")?)?),
            other => return Err(UsageError(format!("unexpected argument '{other}'"))),
        }
    }
    let socket = socket.ok_or_else(|| UsageError(String::from("missing -S <socket>")))?;
    Ok(Command::Run(Options {
        socket,
        libslirp,
        poller,
        batch,
        coalesce,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn accepts_the_c_helpers_forms() {
        let expect = Command::Run(Options {
            socket: 3,
            libslirp: None,
            poller: None,
            batch: None,
            coalesce: None,
        });
        assert_eq!(parse(args(&["-S", "3"])), Ok(expect.clone()));
        assert_eq!(parse(args(&["-S3"])), Ok(expect));
        assert_eq!(parse(args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse(args(&["-V"])), Ok(Command::Version));
    }

    #[test]
    fn rejects_what_is_not_a_descriptor() {
        for bad in [
            &[][..],
            &["-S"],
            &["-S", ""],
            &["-S", "x"],
            &["-S", "-1"],
            &["-S", "3x"],
            &["-X"],
            &["-S", "3", "extra"],
        ] {
            assert!(parse(args(bad)).is_err(), "{bad:?}");
        }
        assert!(parse(args(&["-S", "3", "--poller", "nope"])).is_err());
        for bad in ["0", "257", "x", "+1", ""] {
            assert!(parse(args(&["-S", "3", "--batch", bad])).is_err(), "{bad}");
        }
        for bad in ["", "maybe", "2"] {
            assert!(
                parse(args(&["-S", "3", "--coalesce", bad])).is_err(),
                "{bad}"
            );
        }
        assert!(parse(args(&["-S", "3", "--coalesce"])).is_err());
        let empty = parse(args(&["-S", "3", "--libslirp", ""])).unwrap_err();
        assert!(empty.0.contains("--libslirp"), "{empty:?}");
    }

    #[test]
    fn coalesce_switch() {
        for (text, want) in [("on", true), ("OFF", false), ("1", true), ("no", false)] {
            match parse(args(&["-S", "3", "--coalesce", text])) {
                Ok(Command::Run(o)) => assert_eq!(o.coalesce, Some(want), "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
