//! `slirp-frontend` command line.
//!
//! Owns: turning argv into [`Options`], with every check that needs no system state (MTU
//! range, option arguments). Must never touch the system.

use std::ffi::OsString;
use std::path::PathBuf;

/// Smallest MTU the helper accepts (libslirp: `if_mtu` 68..65521).
pub const MIN_MTU: u32 = 68;
/// Largest MTU: libslirp's `if_mtu` limit minus one, and what bhyve allows.
pub const MAX_MTU: u32 = 65520;
/// Smallest MTU DHCP works at: libslirp's DHCP replies are 576-byte IP datagrams (a 312-byte
/// options field, the least RFC 2131 lets a client assume), so below it the guest never gets
/// a lease and the user only sees udhcpc retrying.
pub const MIN_DHCP_MTU: u32 = 576;

/// The frontend's socket buffers. Linux's default (wmem_default, ~208 KiB) holds three
/// 64 KiB frames: at MTU 65520 the pump then drops most guest frames while the helper is
/// still busy (measured: 8.8 of 40 Gbit/s offered went through with a counting sink).
pub const DEFAULT_SOCKBUF: usize = 4 << 20;

pub const USAGE: &str = "\
usage: slirp-frontend [options] [-- CMD [ARG...]]

Plays bhyve's role on Linux: a tap device in a network namespace is the guest, pumped into a
bhyve-slirp-helper spawned exactly as bhyve does. With CMD, runs it inside the namespace and
exits with its status; without, runs the default job (DHCP, host service, hostfwd, iperf3).

options:
  --netns NAME          use the existing namespace /run/netns/NAME (default: create one)
  --tap NAME            tap device name inside the namespace (default tap0)
  --mtu N               guest MTU, 68..65520 (default 1500); 576 or more for DHCP
                        (--dhcp, and the default job, which uses it)
  --open                open mode (the helper's default is restricted)
  --hostfwd RULES       bhyve grammar, e.g. 'tcp:127.0.0.1:8080-:80;udp::5353-:53' (repeatable)
  --vmname NAME         vmname sent to the helper (default slirpfe-<pid>)
  --set KEY=VALUE       any other key of the device node, exactly as bhyve's
                        -s ...,slirp,KEY=VALUE sends it (repeatable)
  --ipv6                IPv6 for the guest: the helper's ipv6 key on; the default job
                        adds its IPv6 steps
  --dhcp                configure the guest by DHCP (busybox udhcpc) instead of 10.0.2.15/24;
                        needs --mtu 576 or more (DHCP does not work below)
  --default-route       add a default route via 10.0.2.2 (never added otherwise)
  --helper PATH         helper binary (default: bhyve-slirp-helper next to this program)
  --helper-arg ARG      extra argument for the helper (repeatable)
  --sockbuf BYTES       SO_SNDBUF/SO_RCVBUF of the frontend's socket end (default 4 MiB;
                        0 keeps the kernel default, as bhyve does)
  --pump-bench [SECS]   measure the tap<->socket pump alone, the helper replaced by a sink
  -v, --verbose         say what is being done, and print the helper's counters line
                        when it exits (SIGUSR1 to the helper prints it at any time)
  -h, --help            this text
";

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// An existing named namespace to use; `None`: create `slirpfe-<pid>` and remove it at exit.
    pub netns: Option<String>,
    pub tap: String,
    pub mtu: u32,
    pub open: bool,
    /// Rules in bhyve's grammar, joined with `;` as bhyve's config node holds them.
    pub hostfwd: Option<String>,
    pub vmname: Option<String>,
    /// `--set KEY=VALUE` (and `--ipv6`'s `ipv6=on`), in order.
    pub keys: Vec<(String, String)>,
    /// `--ipv6`: the guest has IPv6 through the helper.
    pub ipv6: bool,
    pub dhcp: bool,
    pub default_route: bool,
    pub helper: Option<PathBuf>,
    pub helper_args: Vec<OsString>,
    /// SO_SNDBUF/SO_RCVBUF for the frontend's end; 0: the kernel default (bhyve's choice).
    pub sockbuf: usize,
    /// `Some(seconds)`: run the pump benchmark instead of a guest.
    pub pump_bench: Option<u32>,
    pub verbose: bool,
    /// The command to run in the namespace; empty: the default job.
    pub command: Vec<OsString>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            netns: None,
            tap: "tap0".to_string(),
            mtu: 1500,
            open: false,
            hostfwd: None,
            vmname: None,
            keys: Vec::new(),
            ipv6: false,
            dhcp: false,
            default_route: false,
            helper: None,
            helper_args: Vec::new(),
            sockbuf: DEFAULT_SOCKBUF,
            pump_bench: None,
            verbose: false,
            command: Vec::new(),
        }
    }
}

/// What `parse` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Box<Options>),
    Help,
}

/// A command line that cannot be run: the reason, printed as one line that points to `--help`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn utf8(opt: &str, value: OsString) -> Result<String, UsageError> {
    value
        .into_string()
        .map_err(|v| UsageError(format!("{opt}: not valid UTF-8: {v:?}")))
}

/// Interface names are at most 15 bytes (IFNAMSIZ - 1) and may not contain '/' or spaces.
fn check_ifname(name: &str) -> Result<(), UsageError> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(UsageError(format!(
            "--tap {name:?}: an interface name is 1..15 bytes without '/' or spaces"
        )));
    }
    Ok(())
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, UsageError> {
    let mut o = Options::default();
    let mut args = args.into_iter().peekable();
    let mut rules: Vec<String> = Vec::new();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.to_str() else {
            return Err(UsageError(format!("unexpected argument {arg:?}")));
        };
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| UsageError(format!("{name} needs an argument")))
        };
        match flag {
            "--" => {
                o.command = args.by_ref().collect();
                if o.command.is_empty() {
                    return Err(UsageError("'--' must be followed by a command".into()));
                }
                break;
            }
            "-h" | "--help" => return Ok(Parsed::Help),
            "-v" | "--verbose" => o.verbose = true,
            "--open" => o.open = true,
            "--dhcp" => o.dhcp = true,
            "--default-route" => o.default_route = true,
            "--netns" => {
                let name = utf8(flag, value(flag)?)?;
                if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
                    return Err(UsageError(format!(
                        "--netns {name:?}: not a namespace name"
                    )));
                }
                o.netns = Some(name);
            }
            "--tap" => {
                let name = utf8(flag, value(flag)?)?;
                check_ifname(&name)?;
                o.tap = name;
            }
            "--mtu" => {
                let text = utf8(flag, value(flag)?)?;
                let mtu: u32 = text
                    .parse()
                    .map_err(|_| UsageError(format!("--mtu {text:?}: not a number")))?;
                if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                    return Err(UsageError(format!(
                        "--mtu {mtu}: must be {MIN_MTU}..{MAX_MTU}"
                    )));
                }
                o.mtu = mtu;
            }
            "--sockbuf" => {
                let text = utf8(flag, value(flag)?)?;
                o.sockbuf = text
                    .parse()
                    .map_err(|_| UsageError(format!("--sockbuf {text:?}: not a number")))?;
            }
            "--hostfwd" => rules.push(utf8(flag, value(flag)?)?),
            "--vmname" => o.vmname = Some(utf8(flag, value(flag)?)?),
            "--set" => {
                let pair = utf8(flag, value(flag)?)?;
                match pair.split_once('=') {
                    Some((key, v)) if !key.is_empty() => o.keys.push((key.into(), v.into())),
                    _ => return Err(UsageError(format!("--set {pair:?}: expected KEY=VALUE"))),
                }
            }
            "--ipv6" => {
                o.ipv6 = true;
                o.keys.push(("ipv6".into(), "on".into()));
            }
            "--helper" => o.helper = Some(PathBuf::from(value(flag)?)),
            "--helper-arg" => o.helper_args.push(value(flag)?),
            "--pump-bench" => {
                let secs = match args.peek().and_then(|a| a.to_str()) {
                    Some(s) if s.parse::<u32>().is_ok() => {
                        let secs = s.parse::<u32>().unwrap_or(3);
                        args.next();
                        secs
                    }
                    _ => 3,
                };
                if !(1..=60).contains(&secs) {
                    return Err(UsageError(format!("--pump-bench {secs}: 1..60 seconds")));
                }
                o.pump_bench = Some(secs);
            }
            other => return Err(UsageError(format!("unknown option {other:?}"))),
        }
    }
    if !rules.is_empty() {
        o.hostfwd = Some(rules.join(";"));
    }
    if o.pump_bench.is_some() && !o.command.is_empty() {
        return Err(UsageError("--pump-bench takes no command".into()));
    }
    // The default job (no command, no benchmark) always takes a DHCP lease.
    let default_job = o.command.is_empty() && o.pump_bench.is_none();
    if (o.dhcp || default_job) && o.mtu < MIN_DHCP_MTU {
        let what = if o.dhcp {
            "--dhcp"
        } else {
            "the default job (DHCP)"
        };
        return Err(UsageError(format!(
            "{what} needs --mtu {MIN_DHCP_MTU} or more (DHCP cannot work at --mtu {}: its \
             replies are {MIN_DHCP_MTU}-byte datagrams)",
            o.mtu
        )));
    }
    Ok(Parsed::Run(Box::new(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, UsageError> {
        match parse(args.iter().map(OsString::from))? {
            Parsed::Run(o) => Ok(*o),
            Parsed::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults_and_command() {
        let o = run(&["--open", "--", "ip", "addr"]).unwrap();
        assert!(o.open);
        assert_eq!(o.mtu, 1500);
        assert_eq!(o.tap, "tap0");
        assert_eq!(
            o.command,
            vec![OsString::from("ip"), OsString::from("addr")]
        );
    }

    #[test]
    fn hostfwd_rules_join_with_semicolons() {
        let o = run(&["--hostfwd", "tcp::1-:2", "--hostfwd", "udp::3-:4"]).unwrap();
        assert_eq!(o.hostfwd.as_deref(), Some("tcp::1-:2;udp::3-:4"));
    }

    #[test]
    fn set_passes_keys_through_in_order() {
        let o = run(&[
            "--set",
            "net=192.168.77.0/24",
            "--ipv6",
            "--set",
            "dnssearch=a;b",
        ])
        .unwrap();
        assert!(o.ipv6);
        assert_eq!(
            o.keys,
            vec![
                ("net".to_owned(), "192.168.77.0/24".to_owned()),
                ("ipv6".to_owned(), "on".to_owned()),
                ("dnssearch".to_owned(), "a;b".to_owned()),
            ]
        );
        // An empty value is bhyve's too (`-s …,slirp,key=`).
        assert_eq!(
            run(&["--set", "k="]).unwrap().keys,
            vec![("k".to_owned(), String::new())]
        );
        assert!(run(&["--set", "=v"]).is_err());
        assert!(run(&["--set", "novalue"]).is_err());
    }

    #[test]
    fn mtu_range_is_checked() {
        assert!(run(&["--mtu", "65520"]).is_ok());
        assert!(run(&["--mtu", "68", "--", "true"]).is_ok());
        assert!(run(&["--mtu", "65521"]).is_err());
        assert!(run(&["--mtu", "67"]).is_err());
        assert!(run(&["--mtu"]).is_err());
    }

    #[test]
    fn dhcp_needs_576_in_either_order() {
        assert!(run(&["--dhcp", "--mtu", "576"]).is_ok());
        assert!(run(&["--mtu", "68", "--", "true"]).is_ok());
        assert!(run(&["--mtu", "68", "--pump-bench"]).is_ok());
        let job = run(&["--mtu", "68"]).unwrap_err();
        assert!(
            job.0.starts_with("the default job (DHCP) needs --mtu 576"),
            "{job}"
        );
        let e = run(&["--mtu", "575", "--dhcp"]).unwrap_err();
        assert!(e.0.contains("--dhcp needs --mtu 576"), "{e}");
        assert!(run(&["--dhcp", "--mtu", "500"]).is_err());
    }

    #[test]
    fn pump_bench_takes_optional_seconds() {
        assert_eq!(run(&["--pump-bench"]).unwrap().pump_bench, Some(3));
        assert_eq!(run(&["--pump-bench", "5"]).unwrap().pump_bench, Some(5));
        assert!(run(&["--pump-bench", "--", "true"]).is_err());
    }
}
