//! The command line, compatible with the C helper: `-S <fd>` (getopt style), plus `--help`,
//! `--version` and the helper's own options; and libvirt's slirp-helper contract
//! (`src/qemu/qemu_slirp.c`): `--print-capabilities`, then `--fd=N` with the configuration
//! on the command line instead of an nvlist.

use crate::config::hostfwd::{self, HostFwdError, HostFwdRule};
use crate::config::settings::{self, Overrides};
use crate::config::value::{self, Expected, ValueError};
use crate::poller::PollerKind;
use std::ffi::OsString;
use std::fmt;
use std::os::fd::RawFd;

/// Printed after a usage error: the synopsis, and where the rest is.
pub const USAGE: &str = "usage: bhyve-slirp-helper -S <socket> [options] (see --help)";

pub const HELP: &str = "\
usage: bhyve-slirp-helper -S <socket> [options]
       bhyve-slirp-helper --fd=<socket> [options]
       bhyve-slirp-helper --print-capabilities
       bhyve-slirp-helper --api <path> <request>

User-mode networking for a bhyve guest: libslirp behind bhyve's slirp backend.
bhyve starts the helper with one end of a SOCK_SEQPACKET socket, sends the
device configuration (a libnv nvlist), then exchanges Ethernet frames.
QEMU's -netdev socket,fd=N works the same over a SOCK_DGRAM socketpair.

  -S <socket>         descriptor of the socket to bhyve (the configuration
                      comes first on it, as an nvlist)
  --fd <socket>       descriptor of a SOCK_DGRAM or SOCK_SEQPACKET socket
                      that carries frames only, as libvirt starts a slirp
                      helper for QEMU: no nvlist is read, the configuration
                      is the keys' defaults and the options, in open mode
                      unless --restrict (as QEMU's own user network);
                      inherited descriptors are kept (libvirt's pidfile lock)
  --restrict          restricted mode, whatever the open key says: no
                      outbound connections, DHCP offers no router or DNS
  --hostfwd <rules>   port forwards, the hostfwd key's grammar
                      (tcp:127.0.0.1:8080-:80;udp:...); repeatable; they
                      replace the key's rules
  --mtu <n>           the guest's MTU, 68..=65520, as bhyve's mtui (QEMU's
                      host_mtu); without it and the key, frames up to 2048
                      bytes
  --print-capabilities
                      print what this helper supports, as JSON for libvirt
  --libslirp <path>   libslirp to load (default libslirp.so.0, or
                      $SLIRP_HELPER_LIBSLIRP)
  --batch <n>         frames per socket syscall, 1..=256 (1: the C helper's
                      one frame per syscall)
  --poller <name>     readiness backend: epoll (Linux default), io_uring
                      (Linux; epoll if the kernel refuses a ring), kqueue
                      (FreeBSD default) or poll (the C helper's loop)
  --coalesce on|off   merge consecutive guest TCP segments read together
                      into one packet before libslirp (default: on when
                      the batch is above 1)
  --pcap <path>       record every frame to and from bhyve in a pcap file
                      (created 0600; an existing path must be a regular
                      file, and is overwritten)
  --pcap-max <bytes>  stop recording when the file would pass this size,
                      24..=9223372036854775807 (default 1073741824, 1 GiB)
  --exit-with-parent  end (as on SIGTERM) when the process that started
                      the helper exits, even if it is killed
  --api <path>        control socket: add/remove port forwards, stats and
                      connections as JSON (slirp4netns's API requests);
                      without -S and with a request, send it to a running
                      helper's socket and print the reply

The guest's network (also bhyve keys of the same name; see the man page):
  --net A/LEN         IPv4 network, LEN 8..30 (default 10.0.2.0/24)
  --host A, --dhcpstart A, --dns A
                      the host, the first DHCP lease, the DNS proxy
                      (default .2, .15 and .3 of the network)
  --dnssearch N;N     DHCP domain search list (at most 6)
  --domainname N, --hostname N
                      DHCP domain name and the guest's host name
  --dnsproxy on|off, --dhcp on|off
                      libslirp's DNS proxy and DHCP server (default on)
  --hostloopback on|off
                      the guest reaches the host's 127.0.0.1 through the
                      host address (default on)
  --outbound A, --outbound6 A6
                      source address of the guest's outbound connections
  --ipv6 on|off       IPv6 for the guest (default off): router
                      advertisements for SLAAC, DNS proxy, IPv6 forwards
  --net6 P/LEN, --host6 A6, --dns6 A6
                      IPv6 prefix, host and DNS (default fec0::/64, ::2, ::3)
Every option also takes the form --name=value.
  -h, --help          this text
  -V, --version       this helper's version, and libslirp's (loaded as
                      for a run)

--poller, --batch, --coalesce, --pcap, --pcap-max and --api can also come as
bhyve keys (poller, batch, coalesce, pcap, pcap_max, api: -s 2,virtio-net,
slirp,poller=poll,pcap=/tmp/vm0.pcap); an option always wins over its key.

Exit status: 0 when bhyve hangs up or on SIGTERM/SIGINT, 1 on bad usage,
configuration, or libslirp, 4 on a bad boolean for 'open'.
";

/// Environment override of the libslirp path.
pub const LIBSLIRP_ENV: &str = "SLIRP_HELPER_LIBSLIRP";

/// What libvirt may use (`qemuSlirpFeature` in libvirt's `src/qemu/qemu_slirp.c`): only what
/// really works here: `ipv6` because libvirt's `--net6=ADDR/LEN` turns IPv6 on with that
/// prefix (tests/qemu.rs boots a guest that way). Never `tftp`, `dbus-address`, `dbus-p2p` or `migrate`: the
/// helper has none of them, and libvirt would then pass `--dbus-*` options it refuses.
pub const CAPABILITIES: &[&str] = if cfg!(any(target_os = "linux", target_os = "freebsd")) {
    &["ipv4", "ipv6", "restrict", "exit-with-parent"]
} else {
    // No parent-death signal elsewhere (`sys::exit_with_parent`).
    &["ipv4", "ipv6", "restrict"]
};

/// `--print-capabilities`: `{"features":[…]}` and a newline, the document libvirt parses.
pub fn capabilities_json() -> String {
    let names: Vec<String> = CAPABILITIES.iter().map(|n| format!("\"{n}\"")).collect();
    format!("{{\"features\":[{}]}}\n", names.join(","))
}

/// Where the frontend's socket came from, which decides where the configuration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// `-S <fd>`: bhyve's socket; the config nvlist comes first on it, the socket moves to
    /// descriptor 3 and every other inherited descriptor is closed, as the C helper does.
    Bhyve(RawFd),
    /// `--fd <fd>`: libvirt's (or any QEMU launcher's) socket; frames only, the configuration
    /// is the options. The socket keeps its number and inherited descriptors stay open:
    /// libvirt hands the helper its pidfile locked on one of them, and stops the helper only
    /// while that lock is held.
    Frames(RawFd),
}

impl Socket {
    pub fn fd(self) -> RawFd {
        match self {
            Socket::Bhyve(fd) | Socket::Frames(fd) => fd,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
    /// `--print-capabilities` ([`capabilities_json`]).
    Capabilities,
    /// Print the versions; libslirp is found as for a run (`--libslirp`, then the
    /// environment, then the default).
    Version {
        libslirp: Option<String>,
    },
    /// `--api PATH REQUEST` without `-S`: send `request` to a running helper's control socket.
    ApiRequest {
        path: std::path::PathBuf,
        request: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub socket: Socket,
    /// Explicit `--libslirp`; otherwise the environment or the default.
    pub libslirp: Option<String>,
    pub poller: Option<PollerKind>,
    /// Frames moved per syscall on the frontend socket; `None`: the measured default.
    pub batch: Option<usize>,
    /// Merge guest TCP segments before libslirp; `None`: on when the batch is above 1.
    pub coalesce: Option<bool>,
    /// End when the parent exits (a hypervisor killed without closing its socket end).
    pub exit_with_parent: bool,
    /// `--restrict`: restricted whatever the `open` key says (libslirp-rs's slirp-helper
    /// option, which libvirt's `restrict` capability names).
    pub restrict: bool,
    /// Network settings given as options (`--net 192.168.77.0/24`); they win over bhyve's keys.
    pub settings: Overrides,
    /// Capture file; `None`: the `pcap` key, else no capture.
    pub pcap: Option<String>,
    /// Capture cap in bytes; `None`: the `pcap_max` key, else 1 GiB.
    pub pcap_max: Option<u64>,
    /// The control socket's path (`--api`); `None`: the `api` key, else no control socket.
    pub api: Option<std::path::PathBuf>,
    /// `--hostfwd` rules, every occurrence's in order; `None`: the `hostfwd` key's. The
    /// `--fd` path has no nvlist, so this is how a launcher gives it forwards.
    pub hostfwd: Option<Vec<HostFwdRule>>,
    /// `--mtu`: the guest's MTU; `None`: bhyve's `mtui`, else frames up to 2048 bytes.
    pub mtu: Option<u32>,
}

/// A command line that cannot be run: one line, then [`USAGE`]; exit 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// An argument that is not UTF-8 (shown escaped).
    NotUtf8(String),
    /// An option given last, without its value.
    MissingValue(&'static str),
    /// An argument that is no option of ours.
    Unexpected(String),
    /// `-S` and `--fd` both, or either twice.
    TwoSockets,
    /// No `-S <socket>` or `--fd <socket>`.
    MissingSocket,
    /// A request to send (`--api PATH REQUEST`) and `-S` too: a client or a helper, not both.
    RequestWithSocket,
    /// An option's value that it does not take.
    Value(ValueError),
    /// A `--hostfwd` rule that does not parse.
    HostFwd(HostFwdError),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::NotUtf8(arg) => write!(f, "argument '{arg}' is not UTF-8"),
            UsageError::MissingValue(option) => write!(f, "{option}: missing value"),
            UsageError::Unexpected(arg) => {
                write!(f, "unexpected argument '{}'", arg.escape_debug())
            }
            UsageError::TwoSockets => {
                f.write_str("-S, --fd: give one socket, once (-S for bhyve, --fd for libvirt)")
            }
            UsageError::MissingSocket => {
                f.write_str("-S: missing (the socket to bhyve; --fd for libvirt)")
            }
            UsageError::RequestWithSocket => f.write_str(
                "a request after --api <path> sends it to a running helper; it takes no -S",
            ),
            UsageError::Value(e) => e.fmt(f),
            // The key's message, `hostfwd: rule N …`, under the option's name.
            UsageError::HostFwd(e) => write!(f, "--{e}"),
        }
    }
}

impl std::error::Error for UsageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UsageError::Value(e) => Some(e),
            UsageError::HostFwd(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ValueError> for UsageError {
    fn from(e: ValueError) -> UsageError {
        UsageError::Value(e)
    }
}

/// `-S`'s or `--fd`'s descriptor number.
fn parse_fd(option: &'static str, text: &str) -> Result<RawFd, ValueError> {
    let max = RawFd::MAX as u64;
    value::parse_number(option, text, 0, max)
        .map(|fd| fd as RawFd)
        .map_err(|_| ValueError::new(option, text, Expected::Descriptor))
}

/// Largest batch: beyond this the rings only cost memory (measured in `benches/frames.rs`).
pub(crate) const MAX_BATCH: usize = 256;

/// Frames per socket syscall, 1..=[`MAX_BATCH`]: `--batch` or the `batch` key.
pub fn parse_batch(setting: &'static str, text: &str) -> Result<usize, ValueError> {
    value::parse_number(setting, text, 1, MAX_BATCH as u64).map(|n| n as usize)
}

/// An on/off switch in bhyve's boolean spellings: `--coalesce` or the `coalesce` key.
pub fn parse_switch(setting: &'static str, text: &str) -> Result<bool, ValueError> {
    value::parse_switch(setting, text)
}

/// A capture file (`--pcap` or the `pcap` key): any path but an empty one.
pub fn parse_pcap_path(setting: &'static str, text: &str) -> Result<String, ValueError> {
    if text.is_empty() {
        return Err(ValueError::new(setting, text, Expected::Path));
    }
    Ok(text.to_owned())
}

/// The capture cap in bytes (`--pcap-max` or the `pcap_max` key): at least the file header.
pub fn parse_pcap_max(setting: &'static str, text: &str) -> Result<u64, ValueError> {
    value::parse_number(
        setting,
        text,
        crate::pcap::FILE_HEADER_LEN as u64,
        crate::pcap::MAX_MAX_BYTES,
    )
}

/// The pollers this system has, the C helper's loop first.
pub(crate) const POLLERS: &[&str] = if cfg!(target_os = "linux") {
    &["poll", "epoll", "io_uring"]
} else if cfg!(any(target_os = "freebsd", target_os = "macos")) {
    &["poll", "kqueue"]
} else {
    &["poll"]
};

/// A readiness backend this system has: `--poller` or the `poller` key.
pub fn parse_poller(setting: &'static str, text: &str) -> Result<PollerKind, ValueError> {
    let name = value::parse_name(setting, text, POLLERS)?;
    PollerKind::parse(name).ok_or_else(|| ValueError::new(setting, text, Expected::OneOf(POLLERS)))
}

/// The control socket's path: `--api` or the `api` key. Not empty.
pub fn parse_api_path(setting: &'static str, text: &str) -> Result<std::path::PathBuf, ValueError> {
    if text.is_empty() {
        return Err(ValueError::new(setting, text, Expected::Path));
    }
    Ok(std::path::PathBuf::from(text))
}

/// The guest's MTU (`--mtu`), in the range bhyve's `mtui` takes.
fn parse_mtu(setting: &'static str, text: &str) -> Result<u32, ValueError> {
    let range = crate::config::MTU_RANGE;
    value::parse_number(setting, text, *range.start(), *range.end()).map(|n| n as u32)
}

/// Parse the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut socket = None;
    let mut libslirp = None;
    let mut poller = None;
    let mut batch = None;
    let mut coalesce = None;
    let mut exit_with_parent = false;
    let mut restrict = false;
    let mut pcap = None;
    let mut pcap_max = None;
    let mut api = None;
    let mut hostfwd: Option<Vec<HostFwdRule>> = None;
    let mut mtu = None;
    let mut api_request = None;
    let mut version = false;
    let mut capabilities = false;
    let mut args = args.into_iter().map(|a| {
        a.into_string()
            .map_err(|a| UsageError::NotUtf8(a.as_encoded_bytes().escape_ascii().to_string()))
    });
    let mut settings: Overrides = Vec::new();
    let mut set_socket = |s: Socket| match socket.replace(s) {
        None => Ok(()),
        Some(_) => Err(UsageError::TwoSockets),
    };
    while let Some(arg) = args.next() {
        let arg = arg?;
        // `--name=value` (as libvirt writes options) or `--name value`.
        let (arg, mut inline) = match arg.split_once('=') {
            Some((name, v)) if name.starts_with("--") => (name.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = |name: &'static str| match inline.take() {
            Some(v) => Ok(v),
            None => args.next().unwrap_or(Err(UsageError::MissingValue(name))),
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => version = true,
            "--print-capabilities" => capabilities = true,
            "-S" => set_socket(Socket::Bhyve(parse_fd("-S", &value("-S")?)?))?,
            s if s.starts_with("-S") => set_socket(Socket::Bhyve(parse_fd("-S", &s[2..])?))?,
            "--fd" => set_socket(Socket::Frames(parse_fd("--fd", &value("--fd")?)?))?,
            "--libslirp" => {
                let path = value("--libslirp")?;
                // dlopen("") would hand back the helper's own binary.
                if path.is_empty() {
                    return Err(ValueError::new("--libslirp", &path, Expected::Path).into());
                }
                libslirp = Some(path);
            }
            "--poller" => {
                poller = Some(parse_poller("--poller", &value("--poller")?)?);
            }
            "--batch" => batch = Some(parse_batch("--batch", &value("--batch")?)?),
            "--coalesce" => coalesce = Some(parse_switch("--coalesce", &value("--coalesce")?)?),
            "--exit-with-parent" => exit_with_parent = true,
            "--restrict" => restrict = true,
            "--hostfwd" => {
                let rules =
                    hostfwd::parse_rules(&value("--hostfwd")?).map_err(UsageError::HostFwd)?;
                hostfwd.get_or_insert_with(Vec::new).extend(rules);
            }
            "--mtu" => mtu = Some(parse_mtu("--mtu", &value("--mtu")?)?),
            "--pcap" => pcap = Some(parse_pcap_path("--pcap", &value("--pcap")?)?),
            "--pcap-max" => {
                pcap_max = Some(parse_pcap_max("--pcap-max", &value("--pcap-max")?)?);
            }
            "--api" => api = Some(parse_api_path("--api", &value("--api")?)?),
            request if api.is_some() && api_request.is_none() && !request.starts_with('-') => {
                api_request = Some(request.to_owned())
            }
            other => match settings::by_option(other) {
                Some(setting) => settings.push((setting.key, value(setting.option)?)),
                None => return Err(UsageError::Unexpected(other.to_owned())),
            },
        }
        if let Some(v) = inline {
            return Err(UsageError::Unexpected(format!("{arg}={v}")));
        }
    }
    if capabilities {
        return Ok(Command::Capabilities);
    }
    if version {
        return Ok(Command::Version { libslirp });
    }
    if let (Some(path), Some(request)) = (&api, api_request) {
        if socket.is_some() {
            return Err(UsageError::RequestWithSocket);
        }
        return Ok(Command::ApiRequest {
            path: path.clone(),
            request,
        });
    }
    let socket = socket.ok_or(UsageError::MissingSocket)?;
    Ok(Command::Run(Options {
        socket,
        libslirp,
        poller,
        batch,
        coalesce,
        exit_with_parent,
        restrict,
        settings,
        pcap,
        pcap_max,
        api,
        hostfwd,
        mtu,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn network_options_in_both_forms() {
        let Ok(Command::Run(o)) = parse(args(&[
            "-S",
            "3",
            "--net=192.168.77.0/24",
            "--ipv6",
            "on",
            "--batch=8",
            "--dnssearch=a.example;b.example",
        ])) else {
            panic!("refused");
        };
        assert_eq!(o.batch, Some(8));
        assert_eq!(
            o.settings,
            vec![
                ("net", "192.168.77.0/24".to_owned()),
                ("ipv6", "on".to_owned()),
                ("dnssearch", "a.example;b.example".to_owned()),
            ]
        );
        for (bad, want) in [
            (&["-S", "3", "--net"][..], "--net: missing value"),
            (&["-S", "3", "--nett=1"], "unexpected argument '--nett'"),
            (
                &["-S", "3", "--exit-with-parent=yes"],
                "unexpected argument '--exit-with-parent=yes'",
            ),
        ] {
            assert_eq!(parse(args(bad)).unwrap_err().to_string(), want, "{bad:?}");
        }
    }

    #[test]
    fn accepts_the_c_helpers_forms() {
        let expect = Command::Run(Options {
            socket: Socket::Bhyve(3),
            libslirp: None,
            poller: None,
            batch: None,
            coalesce: None,
            exit_with_parent: false,
            restrict: false,
            settings: Vec::new(),
            pcap: None,
            pcap_max: None,
            api: None,
            hostfwd: None,
            mtu: None,
        });
        assert_eq!(parse(args(&["-S", "3"])), Ok(expect.clone()));
        assert_eq!(parse(args(&["-S3"])), Ok(expect));
        match parse(args(&["-S", "3", "--exit-with-parent"])) {
            Ok(Command::Run(o)) => assert!(o.exit_with_parent),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(args(&["--help"])), Ok(Command::Help));
        assert_eq!(
            parse(args(&["-V"])),
            Ok(Command::Version { libslirp: None })
        );
        assert_eq!(
            parse(args(&["--libslirp", "/x.so", "--version"])),
            Ok(Command::Version {
                libslirp: Some("/x.so".into())
            })
        );
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
        assert_eq!(empty.to_string(), "--libslirp: '' is not a path");
    }

    /// Exact text of each mistake; the key path of the same mistakes is checked in `main`'s
    /// caller (`tests/lifecycle.rs`) and `config::value`.
    #[test]
    fn every_usage_error_names_its_option_and_the_valid_values() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "-S: missing (the socket to bhyve; --fd for libvirt)"),
            (&["-S"], "-S: missing value"),
            (&["-S", "x"], "-S: 'x' is not a descriptor number"),
            (&["-S-1"], "-S: '-1' is not a descriptor number"),
            (&["-X"], "unexpected argument '-X'"),
            (&["-S", "3", "--batch"], "--batch: missing value"),
            (
                &["-S", "3", "--batch", "0"],
                "--batch: '0' is not a number from 1 to 256",
            ),
            (
                &["-S", "3", "--coalesce", "maybe"],
                "--coalesce: 'maybe' is not a boolean (use on/off, true/false, yes/no or 1/0)",
            ),
            (
                &["-S", "3", "--libslirp", ""],
                "--libslirp: '' is not a path",
            ),
            (&["-S", "3", "--pcap", ""], "--pcap: '' is not a path"),
            (&["-S", "3", "--pcap"], "--pcap: missing value"),
            (
                &["-S", "3", "--pcap-max", "23"],
                "--pcap-max: '23' is not a number from 24 to 9223372036854775807",
            ),
            (
                &["-S", "3", "--pcap-max", "1G"],
                "--pcap-max: '1G' is not a number from 24 to 9223372036854775807",
            ),
            (&["-S", "3", "--api"], "--api: missing value"),
            (&["-S", "3", "--api", ""], "--api: '' is not a path"),
            (
                &["-S", "3", "--api", "/s", "{}"],
                "a request after --api <path> sends it to a running helper; it takes no -S",
            ),
            (&["{}"], "unexpected argument '{}'"),
        ];
        for (list, want) in cases {
            let got = parse(args(list)).unwrap_err();
            assert_eq!(got.to_string(), *want, "{list:?}");
        }
        #[cfg(target_os = "linux")]
        assert_eq!(
            parse(args(&["-S", "3", "--poller", "kqueue"]))
                .unwrap_err()
                .to_string(),
            "--poller: 'kqueue' is not available here (use poll, epoll or io_uring)"
        );
        use std::os::unix::ffi::OsStrExt;
        let raw = std::ffi::OsStr::from_bytes(b"a\xff").to_owned();
        assert_eq!(
            parse(vec![raw]).unwrap_err().to_string(),
            "argument 'a\\xff' is not UTF-8"
        );
    }

    #[test]
    fn a_bad_value_keeps_its_cause() {
        let e = parse(args(&["-S", "3", "--batch", "x"])).unwrap_err();
        let source = std::error::Error::source(&e).expect("a source");
        let value = source.downcast_ref::<ValueError>().expect("a ValueError");
        assert_eq!((value.setting, value.value.as_str()), ("--batch", "x"));
    }

    #[test]
    fn pcap_options() {
        match parse(args(&[
            "-S",
            "3",
            "--pcap",
            "/tmp/a b.pcap",
            "--pcap-max",
            "24",
        ])) {
            Ok(Command::Run(o)) => {
                assert_eq!(o.pcap.as_deref(), Some("/tmp/a b.pcap"));
                assert_eq!(o.pcap_max, Some(24));
            }
            other => panic!("{other:?}"),
        }
        for bad in ["0", "-1", "", "9223372036854775808", "1e9", " 100"] {
            assert!(
                parse(args(&["-S", "3", "--pcap-max", bad])).is_err(),
                "{bad}"
            );
        }
    }

    /// The `--fd` path's forwards and MTU: `--hostfwd` takes the key's grammar and repeats,
    /// `--mtu` the `mtui` range; a mistake names the option.
    #[test]
    fn hostfwd_and_mtu_options() {
        match parse(args(&[
            "--fd=7",
            "--hostfwd=tcp:127.0.0.1:8080-:80;udp::5353-:53",
            "--hostfwd",
            "tcp:[::1]:8022-[]:22",
            "--mtu=65520",
        ])) {
            Ok(Command::Run(o)) => {
                let rules = o.hostfwd.expect("rules");
                assert_eq!(rules.len(), 3);
                assert_eq!(rules[0].host_port, 8080);
                assert_eq!(rules[2].guest_port, 22);
                assert_eq!(o.mtu, Some(65520));
            }
            other => panic!("{other:?}"),
        }
        for (bad, want) in [
            (
                &["-S", "3", "--mtu", "65521"][..],
                "--mtu: '65521' is not a number from 68 to 65520",
            ),
            (
                &["-S", "3", "--hostfwd", "tcp:127.0.0.1:80"],
                "--hostfwd: rule 1 'tcp:127.0.0.1:80': ",
            ),
        ] {
            let e = parse(args(bad)).unwrap_err().to_string();
            assert!(e.starts_with(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn api_path_then_request_is_a_client() {
        assert_eq!(
            parse(args(&["--api", "/run/vm0.sock", r#"{"execute":"stats"}"#])),
            Ok(Command::ApiRequest {
                path: "/run/vm0.sock".into(),
                request: r#"{"execute":"stats"}"#.into()
            })
        );
        match parse(args(&["-S", "3", "--api", "/run/vm0.sock"])) {
            Ok(Command::Run(o)) => assert_eq!(o.api, Some("/run/vm0.sock".into())),
            other => panic!("{other:?}"),
        }
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

    #[test]
    fn libvirts_invocation() {
        // As `qemuSlirpStart` writes it.
        match parse(args(&["--fd=7", "--exit-with-parent"])) {
            Ok(Command::Run(o)) => {
                assert_eq!(o.socket, Socket::Frames(7));
                assert!(o.exit_with_parent);
            }
            other => panic!("{other:?}"),
        }
        match parse(args(&[
            "--fd",
            "7",
            "--net=10.0.5.0/24",
            "--batch=8",
            "--open",
        ])) {
            Ok(Command::Run(o)) => {
                assert_eq!(o.socket, Socket::Frames(7));
                assert_eq!(o.batch, Some(8));
                assert!(o
                    .settings
                    .iter()
                    .any(|(k, v)| *k == "net" && v == "10.0.5.0/24"));
            }
            Ok(other) => panic!("{other:?}"),
            // `--open` is not an option of main's network keys: then only `--net` is checked.
            Err(e) => assert_eq!(e.to_string(), "unexpected argument '--open'"),
        }
        assert_eq!(
            parse(args(&["--print-capabilities"])),
            Ok(Command::Capabilities)
        );
    }

    #[test]
    fn libvirt_mistakes_name_the_option() {
        let cases: &[(&[&str], &str)] = &[
            (&["--fd=x"], "--fd: 'x' is not a descriptor number"),
            (&["--fd"], "--fd: missing value"),
            (
                &["--fd=3", "-S", "4"],
                "-S, --fd: give one socket, once (-S for bhyve, --fd for libvirt)",
            ),
            (
                &["--fd=3", "--exit-with-parent=yes"],
                "unexpected argument '--exit-with-parent=yes'",
            ),
            (
                &["--fd=3", "--dbus-id=slirp-52:54:00:12:34:56"],
                "unexpected argument '--dbus-id'",
            ),
            (&["--fd=3", "--migrate"], "unexpected argument '--migrate'"),
        ];
        for (list, want) in cases {
            let got = parse(args(list)).unwrap_err();
            assert_eq!(got.to_string(), *want, "{list:?}");
        }
    }

    #[test]
    fn capabilities_are_json_libvirt_reads() {
        let text = capabilities_json();
        assert!(text.ends_with("}\n"), "{text}");
        // libvirt's enum (qemu_slirp.c): anything else is warned about and ignored; the D-Bus
        // and migration features must never be claimed.
        for name in CAPABILITIES {
            assert!(
                ["ipv4", "ipv6", "restrict", "exit-with-parent"].contains(name),
                "{name}"
            );
            assert!(text.contains(&format!("\"{name}\"")), "{text}");
        }
        for never in ["dbus-address", "dbus-p2p", "migrate", "tftp"] {
            assert!(!text.contains(never), "{text}");
        }
        for name in ["ipv4", "ipv6", "restrict"] {
            assert!(CAPABILITIES.contains(&name), "{name}");
        }
    }
}
