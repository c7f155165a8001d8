//! `slirp-loadgen`: the compiled load of the end-to-end benchmarks (`perf/run.sh`): 1-byte TCP
//! request/response with RTT percentiles, and N idle TCP connections held open through the
//! helper. iperf3 covers bulk and small-datagram load; this covers what it cannot.
//!
//! Owns: its sockets and nothing else. Must never: run without a time bound (every command
//! ends by itself after `--secs`), or connect anywhere but the address it is given.
#![cfg(target_os = "linux")]

mod hold;
mod rr;

use std::ffi::OsString;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

pub const USAGE: &str = "\
usage: slirp-loadgen COMMAND --secs S [options]

Load for perf/run.sh. Every command ends by itself after S seconds (1..3600); rr-client
measures S seconds after its connect and warm-up.

commands:
  rr-server   --listen ADDR:PORT     echo every byte back, one thread per connection
                                     (IPv4 or IPv6: [ADDR]:PORT)
  rr-client   --connect ADDR:PORT    1-byte round trips on one TCP_NODELAY connection for
              [--warmup-ms MS]       MS milliseconds (default 200, not counted), then S
                                     seconds measured; prints 'rr transactions=.. secs=..
                                     per_sec=.. p50_us=.. p99_us=..'; exit status 1 when no
                                     round trip completed in the measured seconds
  hold-server --listen ADDR:PORT     accept connections and keep them open, never reading
                                     (hold-server and hold: IPv4 only)
  hold N      --connect ADDR:PORT    open N idle connections (at most 256 connecting at once,
              [--connect-secs C]     for at most C seconds, default 60), print
                                     'hold requested=.. held=.. failed=.. secs=..', keep them
                                     open until S seconds after the start
";

/// What to run, with its parameters checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    RrServer {
        listen: SocketAddr,
    },
    RrClient {
        connect: SocketAddr,
        warmup: Duration,
    },
    HoldServer {
        listen: SocketAddrV4,
    },
    Hold {
        n: usize,
        connect: SocketAddrV4,
        connect_limit: Duration,
    },
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// `--secs`: how long the process lives; for `rr-client`, how long it measures (after
    /// its connect and warm-up).
    pub lifetime: Duration,
}

/// The commands, as typed.
const COMMANDS: [&str; 4] = ["rr-server", "rr-client", "hold-server", "hold"];

/// Largest N for `hold`: beyond the benchmark's 10000 with room, below any sane fd limit.
const MAX_HOLD: usize = 100_000;
const MAX_SECS: u64 = 3600;

fn number<T: std::str::FromStr>(opt: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{opt} {text:?}: not a number"))
}

/// Parse argv (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Invocation>, String> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.into_string().map_err(|a| format!("not UTF-8: {a:?}")))
        .collect::<Result<_, _>>()?;
    let Some(cmd) = args.first() else {
        return Err("no command".into());
    };
    if cmd == "-h" || cmd == "--help" {
        return Ok(None);
    }
    if !COMMANDS.contains(&cmd.as_str()) {
        return Err(format!(
            "unknown command {cmd:?}: one of {}",
            COMMANDS.join(", ")
        ));
    }
    let mut rest = &args[1..];
    let mut n = None;
    if cmd == "hold" {
        let text = rest.first().ok_or("hold needs N")?;
        let count: usize = number("hold", text)?;
        if !(1..=MAX_HOLD).contains(&count) {
            return Err(format!("hold {count}: 1..{MAX_HOLD}"));
        }
        n = Some(count);
        rest = &rest[1..];
    }
    let (mut addr, mut secs, mut warmup_ms, mut connect_secs) = (None, None, 200u64, 60u64);
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs an argument"))?;
        match flag.as_str() {
            "--listen" | "--connect" => {
                let a: SocketAddr = value.parse().map_err(|_| {
                    format!("{flag} {value:?}: not an ADDR:PORT (IPv6 as [ADDR]:PORT)")
                })?;
                addr = Some((flag.as_str(), a));
            }
            "--secs" => secs = Some(number::<u64>(flag, value)?),
            "--warmup-ms" => warmup_ms = number(flag, value)?,
            "--connect-secs" => connect_secs = number(flag, value)?,
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    let secs = secs.ok_or("--secs is required: every command is bounded in time")?;
    if !(1..=MAX_SECS).contains(&secs) {
        return Err(format!("--secs {secs}: 1..{MAX_SECS}"));
    }
    let want = if cmd.ends_with("server") {
        "--listen"
    } else {
        "--connect"
    };
    let addr = match addr {
        Some((flag, a)) if flag == want => a,
        _ => return Err(format!("{cmd} needs {want} ADDR:PORT")),
    };
    // The hold commands speak IPv4 only (their sockets are built by hand for the backlog and
    // non-blocking connects); RR works over either family.
    let v4 = |a: SocketAddr| match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(format!("{cmd} {want} {a}: IPv4 only")),
    };
    let command = match cmd.as_str() {
        "rr-server" => Command::RrServer { listen: addr },
        "rr-client" => Command::RrClient {
            connect: addr,
            warmup: Duration::from_millis(warmup_ms),
        },
        "hold-server" => Command::HoldServer { listen: v4(addr)? },
        "hold" => Command::Hold {
            n: n.unwrap_or(1),
            connect: v4(addr)?,
            connect_limit: Duration::from_secs(connect_secs.min(secs)),
        },
        other => unreachable!("{other:?} is checked against COMMANDS above"),
    };
    Ok(Some(Invocation {
        command,
        lifetime: Duration::from_secs(secs),
    }))
}

/// Raise the soft RLIMIT_NOFILE to the hard limit: 10000 held connections need 10000 fds.
pub fn raise_nofile() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// Run one invocation; errors say what failed.
pub fn run(inv: Invocation) -> io::Result<()> {
    match inv.command {
        Command::RrServer { listen } => rr::serve(listen, inv.lifetime),
        Command::RrClient { connect, warmup } => {
            let report = rr::client(connect, warmup, inv.lifetime)?;
            if report.transactions == 0 {
                // A line of 0 RR/s would read as a result (perf/run.sh records the `rr` line);
                // it is a stalled path.
                return Err(io::Error::other(format!(
                    "no round trip to {connect} completed in the {} s measured",
                    inv.lifetime.as_secs()
                )));
            }
            println!("{report}");
            Ok(())
        }
        Command::HoldServer { listen } => hold::serve(listen, inv.lifetime),
        Command::Hold {
            n,
            connect,
            connect_limit,
        } => hold::hold(n, connect, connect_limit, inv.lifetime),
    }
}

/// The whole program.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let inv = match parse(args) {
        Ok(Some(inv)) => inv,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("slirp-loadgen: {e} (see slirp-loadgen --help)");
            return ExitCode::from(2);
        }
    };
    match run(inv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slirp-loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Option<Invocation>, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn hold_takes_count_address_and_bounds() {
        let inv = p(&["hold", "1000", "--connect", "10.0.2.2:5000", "--secs", "30"])
            .unwrap()
            .unwrap();
        assert_eq!(inv.lifetime, Duration::from_secs(30));
        assert_eq!(
            inv.command,
            Command::Hold {
                n: 1000,
                connect: "10.0.2.2:5000".parse().unwrap(),
                connect_limit: Duration::from_secs(30),
            }
        );
    }

    #[test]
    fn every_command_needs_secs_and_the_right_address() {
        assert!(p(&["rr-server", "--listen", "127.0.0.1:1"]).is_err());
        assert!(p(&["rr-server", "--connect", "127.0.0.1:1", "--secs", "1"]).is_err());
        assert!(p(&["rr-client", "--connect", "127.0.0.1:1", "--secs", "0"]).is_err());
        assert!(p(&["hold", "0", "--connect", "127.0.0.1:1", "--secs", "1"]).is_err());
        let unknown = p(&["flood", "--connect", "127.0.0.1:1", "--secs", "1"]).unwrap_err();
        assert!(
            unknown.starts_with("unknown command \"flood\""),
            "{unknown}"
        );
        let bare = p(&["bogus"]).unwrap_err();
        assert!(bare.starts_with("unknown command \"bogus\""), "{bare}");
        assert!(p(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn rr_takes_ipv6_and_hold_refuses_it() {
        let inv = p(&["rr-client", "--connect", "[fec0::2]:5201", "--secs", "3"])
            .unwrap()
            .unwrap();
        assert_eq!(
            inv.command,
            Command::RrClient {
                connect: "[fec0::2]:5201".parse().unwrap(),
                warmup: Duration::from_millis(200),
            }
        );
        let inv = p(&["rr-server", "--listen", "[::1]:5201", "--secs", "3"])
            .unwrap()
            .unwrap();
        assert_eq!(
            inv.command,
            Command::RrServer {
                listen: "[::1]:5201".parse().unwrap()
            }
        );
        // Without brackets the port cannot be told from the address.
        assert!(p(&["rr-client", "--connect", "fec0::2:5201", "--secs", "3"]).is_err());
        let hold = p(&["hold", "1", "--connect", "[fec0::2]:1", "--secs", "3"]).unwrap_err();
        assert!(hold.contains("IPv4 only"), "{hold}");
        assert!(p(&["hold-server", "--listen", "[::1]:1", "--secs", "3"]).is_err());
    }
}
