//! The default job (no command): bring the guest up by DHCP in open mode (still no default
//! route), ping the helper, reach a host service on 127.0.0.1 through 10.0.2.2, forward a
//! host port into the guest, run a short iperf3 both ways, and print a summary. With
//! `--ipv6` the same over IPv6: the SLAAC address, ping fec0::2, a host service on [::1]
//! through fec0::2, a forward from [::1] into the guest (guest address `[]`), iperf3 -6.
//!
//! Owns: the host-side listener and the iperf3 servers it starts (stopped by pid). Every
//! client runs under `timeout`, every loop is bounded in count and time, all traffic stays
//! on 127.0.0.0/8 or inside the namespace.

use super::guest::{HOST_ADDR, HOST_ADDR6};
use super::options::Options;
use super::session::{exit_code, Backend, Failure, Session};
use super::supervise::{stop_child, Supervisor};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The guest-side port the hostfwd rule targets.
const GUEST_PORT: u16 = 8080;
/// The guest-side port of the IPv6 rule.
const GUEST_PORT6: u16 = 8081;
const STEP_LIMIT: Duration = Duration::from_secs(20);
const IPERF_SECS: &str = "3";

/// One line of the summary.
struct Step {
    name: &'static str,
    result: Result<String, String>,
}

/// A free TCP port on 127.0.0.1 (bound and released: another process could take it before
/// the helper binds it; the hostfwd step then fails with a clear message).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The same on [::1].
fn free_port6() -> io::Result<u16> {
    Ok(TcpListener::bind("[::1]:0")?.local_addr()?.port())
}

pub fn run(mut opts: Options, sup: Supervisor) -> u8 {
    let hport = match free_port() {
        Ok(p) => p,
        Err(e) => return super::report(Err(Failure::setup("choosing a port", e)), None),
    };
    // Open mode reaches the host's 127.0.0.1 through 10.0.2.2; without a default route the
    // guest still reaches nothing beyond 10.0.2.0/24.
    opts.open = true;
    opts.dhcp = true;
    let hport6 = match free_port6() {
        Ok(p) => p,
        Err(e) => return super::report(Err(Failure::setup("choosing a port on [::1]", e)), None),
    };
    let mut rule = format!("tcp:127.0.0.1:{hport}-:{GUEST_PORT}");
    if opts.ipv6 {
        // `[]`: libslirp connects to the address the guest's NDP showed it.
        rule.push_str(&format!(";tcp:[::1]:{hport6}-[]:{GUEST_PORT6}"));
    }
    opts.hostfwd = Some(match opts.hostfwd.take() {
        Some(user) => format!("{user};{rule}"),
        None => rule,
    });
    let listener = match HostService::start("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => return super::report(Err(Failure::setup("host service", e)), None),
    };
    let listener6 = if opts.ipv6 {
        match HostService::start("[::1]:0") {
            Ok(l) => Some(l),
            Err(e) => return super::report(Err(Failure::setup("host service on [::1]", e)), None),
        }
    } else {
        None
    };
    let session = match Session::start(&opts, sup, Backend::Helper) {
        Ok(s) => s,
        Err(f) => return super::report(Err(f), None),
    };
    let mut steps = Vec::new();
    let outcome = (|| -> Result<(), Failure> {
        let lease = session.lease.clone().unwrap_or_default();
        steps.push(Step {
            name: "DHCP lease",
            result: Ok(lease.to_string()),
        });
        steps.push(Step {
            name: "ping 10.0.2.2",
            result: ping(&session, HOST_ADDR)?,
        });
        steps.push(Step {
            name: "host service via 10.0.2.2",
            result: host_service(&session, HOST_ADDR, listener.port)?,
        });
        steps.push(Step {
            name: "hostfwd into the guest",
            result: hostfwd(&session, "127.0.0.1", hport, GUEST_PORT)?,
        });
        steps.push(Step {
            name: "iperf3 guest->host",
            result: iperf(&session, false, false)?,
        });
        steps.push(Step {
            name: "iperf3 host->guest",
            result: iperf(&session, true, false)?,
        });
        if let Some(l6) = &listener6 {
            steps.push(Step {
                name: "SLAAC address",
                result: session.slaac.clone().ok_or_else(|| "none".to_string()),
            });
            steps.push(Step {
                name: "ping fec0::2",
                result: ping(&session, HOST_ADDR6)?,
            });
            steps.push(Step {
                name: "host service via fec0::2",
                result: host_service(&session, HOST_ADDR6, l6.port)?,
            });
            steps.push(Step {
                name: "IPv6 hostfwd into the guest",
                result: hostfwd(&session, "::1", hport6, GUEST_PORT6)?,
            });
            steps.push(Step {
                name: "iperf3 -6 guest->host",
                result: iperf(&session, false, true)?,
            });
            steps.push(Step {
                name: "iperf3 -6 host->guest",
                result: iperf(&session, true, true)?,
            });
        }
        Ok(())
    })();
    listener.stop();
    if let Some(l6) = listener6 {
        l6.stop();
    }
    let teardown = session.finish();
    println!(
        "slirp-frontend default job (mtu {}, open mode, no default route):",
        opts.mtu
    );
    let mut failed = 0;
    for step in &steps {
        match &step.result {
            Ok(msg) => println!("  {:<28} OK    {msg}", step.name),
            Err(msg) => {
                failed += 1;
                println!("  {:<28} FAIL  {msg}", step.name)
            }
        }
    }
    if let Some(p) = &teardown.pump {
        println!("  pump: {}", p.counters);
    }
    let code = super::report(outcome.map(|_| 0), Some(&teardown));
    if code == 0 && failed > 0 {
        1
    } else {
        code
    }
}

/// Run a command in the guest and capture its stdout; Err(message) on a non-zero status.
fn guest_output(s: &Session, what: &str, args: &[&str]) -> Result<Result<String, String>, Failure> {
    let mut cmd = s.command("timeout");
    cmd.arg("15").args(args).stdin(Stdio::null());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::setup(&format!("starting {what}"), e))?;
    // The outputs here are small (well under a pipe buffer): read them after the exit.
    let status = s.wait(&mut child, what, Some(STEP_LIMIT))?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() {
        Ok(Ok(out))
    } else {
        Ok(Err(format!(
            "{what} exited {}: {}",
            exit_code(status),
            err.trim().replace('\n', "; ")
        )))
    }
}

fn ping(s: &Session, addr: &str) -> Result<Result<String, String>, Failure> {
    let out = guest_output(s, "ping", &["busybox", "ping", "-c", "3", "-W", "2", addr])?;
    Ok(out.map(|o| {
        o.lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("")
            .trim()
            .to_string()
    }))
}

fn host_service(s: &Session, via: &str, port: u16) -> Result<Result<String, String>, Failure> {
    let script = format!("printf hello-from-guest | busybox nc {via} {port}");
    let out = guest_output(s, "nc to the host", &["sh", "-c", &script])?;
    Ok(out.and_then(|o| {
        if o.trim() == "echo:hello-from-guest" {
            let host = if via == HOST_ADDR {
                "127.0.0.1"
            } else {
                "[::1]"
            };
            Ok(format!("{host}:{port} answered {:?}", o.trim()))
        } else {
            Err(format!("unexpected answer {o:?}"))
        }
    }))
}

/// A connection to `host_ip:hport` (a hostfwd rule) reaches a listener on the guest's
/// `guest_port` (busybox nc listens on both families).
fn hostfwd(
    s: &Session,
    host_ip: &str,
    hport: u16,
    guest_port: u16,
) -> Result<Result<String, String>, Failure> {
    let script = format!("echo hello-from-guest-listener | busybox nc -l -p {guest_port}");
    let mut cmd = s.command("timeout");
    cmd.args(["15", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut guest = cmd
        .spawn()
        .map_err(|e| Failure::setup("starting the guest listener", e))?;
    // libslirp accepts on the host first and then connects into the guest: until the guest
    // listens, the host connection is closed at once. Retry (bounded) until the answer comes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::from("no attempt");
    let mut answer = None;
    while Instant::now() < deadline && answer.is_none() {
        match exchange((host_ip, hport), b"hello-from-host\n") {
            Ok(reply) if reply.trim() == "hello-from-guest-listener" => answer = Some(reply),
            Ok(reply) => last = format!("answer {reply:?}"),
            Err(e) => last = e.to_string(),
        }
        if answer.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let status = s.wait(
        &mut guest,
        "the guest listener",
        Some(Duration::from_secs(5)),
    );
    let mut heard = String::new();
    if let Some(mut o) = guest.stdout.take() {
        let _ = o.read_to_string(&mut heard);
    }
    status?;
    Ok(match answer {
        Some(_) if heard.trim() == "hello-from-host" => Ok(format!(
            "{host_ip} port {hport} -> guest :{guest_port}, both directions"
        )),
        Some(_) => Err(format!("the guest heard {heard:?}")),
        None => Err(format!("{host_ip} port {hport}: {last}")),
    })
}

/// Connect, send `msg`, half-close, read the answer to EOF (bounded by timeouts).
fn exchange(addr: (&str, u16), msg: &[u8]) -> io::Result<String> {
    let sa = std::net::SocketAddr::new(addr.0.parse().map_err(io::Error::other)?, addr.1);
    let mut c = TcpStream::connect_timeout(&sa, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    c.set_write_timeout(Some(Duration::from_secs(3)))?;
    c.write_all(msg)?;
    c.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    c.take(1 << 16).read_to_string(&mut reply)?;
    Ok(reply)
}

/// iperf3 server on the host's 127.0.0.1 (or [::1] with `v6`; one test, then it exits),
/// client in the guest.
fn iperf(s: &Session, reverse: bool, v6: bool) -> Result<Result<String, String>, Failure> {
    let port = if v6 { free_port6() } else { free_port() }
        .map_err(|e| Failure::setup("choosing a port", e))?;
    let (bind, via) = if v6 {
        ("::1", HOST_ADDR6)
    } else {
        ("127.0.0.1", HOST_ADDR)
    };
    let mut server = Command::new("timeout")
        .args([
            "25",
            "iperf3",
            "-s",
            "-1",
            "-B",
            bind,
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Failure::setup("starting iperf3 -s", e))?;
    let listening = wait_listening(port, v6, Duration::from_secs(5));
    let mut args = vec!["iperf3", "-c", via, "-p"];
    let port_s = port.to_string();
    args.extend([port_s.as_str(), "-t", IPERF_SECS, "-J"]);
    if reverse {
        args.push("-R");
    }
    let result = if listening {
        guest_output(s, "iperf3 -c", &args)
    } else {
        Ok(Err(format!(
            "iperf3 -s did not listen on {bind} port {port}"
        )))
    };
    stop_child(&mut server);
    Ok(result?.and_then(|json| {
        received_bps(&json)
            .map(|bps| format!("{:.2} Gbit/s", bps / 1e9))
            .ok_or_else(|| "no sum_received in iperf3's JSON".to_string())
    }))
}

/// Whether 127.0.0.1:port (or [::1]:port) is in LISTEN state (from /proc/net/tcp or tcp6),
/// polled up to `limit`.
fn wait_listening(port: u16, v6: bool, limit: Duration) -> bool {
    let (table, needle) = if v6 {
        (
            "/proc/net/tcp6",
            format!(
                "00000000000000000000000001000000:{port:04X} {:032}:0000 0A",
                0
            ),
        )
    } else {
        (
            "/proc/net/tcp",
            format!("0100007F:{port:04X} 00000000:0000 0A"),
        )
    };
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::fs::read_to_string(table).is_ok_and(|t| t.contains(&needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `end.sum_received.bits_per_second` from iperf3 -J output, without a JSON library.
pub fn received_bps(json: &str) -> Option<f64> {
    let at = json.find("\"sum_received\"")?;
    let rest = &json[at..];
    let key = "\"bits_per_second\":";
    let start = rest.find(key)? + key.len();
    let num: String = rest[start..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        .collect();
    num.parse().ok()
}

/// A tiny service on `bind` (127.0.0.1:0 or [::1]:0): reads a request to EOF (at most 64 KiB), answers
/// `echo:` + request, closes. One thread per connection; all bounded by timeouts.
struct HostService {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl HostService {
    fn start(bind: &str) -> io::Result<HostService> {
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        std::thread::spawn(move || {
                            let _ = serve(conn);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(HostService { port, stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn serve(mut conn: TcpStream) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::new();
    (&mut conn).take(1 << 16).read_to_end(&mut req)?;
    conn.write_all(b"echo:")?;
    conn.write_all(&req)?;
    conn.shutdown(Shutdown::Write)
}

#[cfg(test)]
mod tests {
    #[test]
    fn iperf_json_rate_is_found() {
        let json = r#"{"end":{"sum_sent":{"bits_per_second":5.0e9},
            "sum_received":{"seconds":3,"bytes":1,"bits_per_second":4123456789.5,"x":1}}}"#;
        assert_eq!(super::received_bps(json), Some(4123456789.5));
        assert_eq!(super::received_bps("{}"), None);
    }
}
