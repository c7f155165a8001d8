//! End to end: the network keys (issue 12) with a kernel guest through slirp-frontend, each key
//! passed as bhyve would (`--set KEY=VALUE`): a custom network, the DHCP options, `dhcp=off`,
//! `hostloopback` and `outbound`. Root only (skipped otherwise).
//!
//! Traffic stays on 127.0.0.1, inside the frontend's namespace, and (outbound) inside a veth
//! pair to a namespace this test creates and removes; no namespace gets a default route.

mod e2e_common;
use e2e_common::*;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound of one frontend run (DHCP alone may take 15 s on a busy machine).
const RUN_LIMIT: Duration = Duration::from_secs(90);

#[test]
fn guest_role() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        run_role(&role, network_role);
    }
}

/// The roles of this file, run inside a namespace (the frontend's, or the outbound test's).
fn network_role(words: &[&str]) -> io::Result<()> {
    match words {
        // Connect (retrying a refusal up to `tries` times: the listener may not be up yet),
        // send `hello`, read the answer to EOF. Prints CONNECT=connected REPLY=… or
        // CONNECT=<error kind>.
        ["connect", to, tries] => {
            let to: SocketAddr = to.parse().map_err(io::Error::other)?;
            let tries: u32 = tries.parse().map_err(io::Error::other)?;
            match connect_retrying(to, tries) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    s.write_all(b"hello")?;
                    s.shutdown(Shutdown::Write)?;
                    let mut reply = Vec::new();
                    (&mut s).take(4096).read_to_end(&mut reply)?;
                    println!(
                        "CONNECT=connected REPLY={}",
                        String::from_utf8_lossy(&reply).replace(char::is_whitespace, "_")
                    );
                }
                Err(e) => println!("CONNECT={:?}", e.kind()),
            }
            Ok(())
        }
        // As `connect`, after a route to `to`'s address via `gw` on tap0: the frontend's
        // namespace otherwise reaches only the slirp network (and has no default route).
        ["connect-via", gw, to, tries] => {
            let addr: SocketAddr = to.parse().map_err(io::Error::other)?;
            let out = Command::new("ip")
                .args(["route", "add", &format!("{}/32", addr.ip()), "via", gw])
                .args(["dev", "tap0"])
                .output()?;
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "ip route add: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            network_role(&["connect", to, tries])
        }
        // Accept `n` connections on `addr` (for at most `secs`), answering each with the peer
        // address it came from; prints PEER=… for each.
        ["serve-peer", addr, n, secs] => {
            let n: usize = n.parse().map_err(io::Error::other)?;
            let secs: u64 = secs.parse().map_err(io::Error::other)?;
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            println!("LISTENING");
            io::stdout().flush()?;
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut served = 0;
            while served < n && Instant::now() < deadline {
                match l.accept() {
                    Ok((mut c, peer)) => {
                        c.set_nonblocking(false)?;
                        c.set_read_timeout(Some(Duration::from_secs(5)))?;
                        let mut req = Vec::new();
                        let _ = (&mut c).take(4096).read_to_end(&mut req);
                        let _ = c.write_all(format!("peer:{}", peer.ip()).as_bytes());
                        let _ = c.shutdown(Shutdown::Write);
                        println!("PEER={}", peer.ip());
                        io::stdout().flush()?;
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            Ok(())
        }
        other => Err(io::Error::other(format!("unknown role {other:?}"))),
    }
}

fn connect_retrying(to: SocketAddr, tries: u32) -> io::Result<TcpStream> {
    let mut left = tries.max(1);
    loop {
        match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && left > 1 => {
                left -= 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// The frontend with `args`, running this binary's `role` in the guest.
fn with_role(args: &[&str], role: &str) -> Command {
    let mut cmd = frontend(args);
    let me = std::env::current_exe().expect("test binary path");
    cmd.arg("--")
        .arg(me)
        .args(["guest_role", "--exact", "--nocapture", "--test-threads=1"])
        .arg("-q")
        .env(ROLE_ENV, role);
    cmd
}

/// The frontend's `DHCP lease:` line (empty when none).
fn lease_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| {
            l.split_once("DHCP lease: ")
                .map(|(_, lease)| lease.to_string())
        })
        .unwrap_or_default()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn custom_network_moves_the_lease_router_dns_and_host() {
    let test = "custom_network_moves_the_lease_router_dns_and_host";
    if !root_or_skip(test) {
        return;
    }
    let mut cmd = frontend(&[
        "--open",
        "--dhcp",
        "--set",
        "net=192.168.77.0/24",
        "--set",
        "host=192.168.77.1",
        "--set",
        "dhcpstart=192.168.77.50",
        "--set",
        "dns=192.168.77.53",
    ]);
    cmd.args([
        "--",
        "busybox",
        "ping",
        "-c",
        "3",
        "-W",
        "2",
        "192.168.77.1",
    ]);
    let out = run(cmd, RUN_LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lease_line(&out),
        "ip=192.168.77.50/24 router=192.168.77.1 dns=192.168.77.53",
        "{}",
        text(&out)
    );
    assert!(
        stdout(&out).contains("3 packets received"),
        "{}",
        text(&out)
    );
}

#[test]
fn dnssearch_and_domainname_arrive_in_the_lease() {
    let test = "dnssearch_and_domainname_arrive_in_the_lease";
    if !root_or_skip(test) {
        return;
    }
    let mut cmd = frontend(&[
        "--dhcp",
        "--set",
        "dnssearch=a.example;b.example",
        "--set",
        "domainname=corp.example",
    ]);
    cmd.args(["--", "true"]);
    let out = run(cmd, RUN_LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    // Restricted mode: no router or DNS server, but both names (libslirp sends them anyway).
    assert_eq!(
        lease_line(&out),
        "ip=10.0.2.15/24 router=(none) dns=(none) domain=corp.example \
         search=a.example b.example",
        "{}",
        text(&out)
    );
}

/// udhcpc (at most 3 tries, 1 s apart; its script does nothing) and then a ping to the host,
/// the guest keeping the frontend's static 10.0.2.15/24. Prints `udhcpc_rc=N` between.
const DHCP_THEN_PING: &str = "busybox udhcpc -f -q -n -t 3 -T 1 -A 1 -i tap0 -s /bin/true \
     >/dev/null 2>&1; echo udhcpc_rc=$?; busybox ping -c 2 -W 2 10.0.2.2";

#[test]
fn dhcp_off_gives_no_lease_but_a_static_address_works() {
    let test = "dhcp_off_gives_no_lease_but_a_static_address_works";
    if !root_or_skip(test) {
        return;
    }
    for (dhcp, want_rc) in [("on", "udhcpc_rc=0"), ("off", "udhcpc_rc=1")] {
        let mut cmd = frontend(&["--open", "--set", &format!("dhcp={dhcp}")]);
        cmd.args(["--", "sh", "-c", DHCP_THEN_PING]);
        let out = run(cmd, RUN_LIMIT);
        assert!(out.status.success(), "dhcp={dhcp}: {}", text(&out));
        assert!(
            stdout(&out).contains(want_rc),
            "dhcp={dhcp}: {}",
            text(&out)
        );
        assert!(
            stdout(&out).contains("2 packets received"),
            "dhcp={dhcp}: {}",
            text(&out)
        );
    }
}

#[test]
fn hostloopback_off_keeps_the_guest_off_the_hosts_loopback() {
    let test = "hostloopback_off_keeps_the_guest_off_the_hosts_loopback";
    if !root_or_skip(test) {
        return;
    }
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    // On 127.0.0.1 only; the guest reaches it as 10.0.2.2 when host loopback is on.
    let (port, _listener) = host_listener(2 * RUN_LIMIT, move |c| {
        seen.fetch_add(1, Ordering::SeqCst);
        echo(c);
    });
    let to = format!("10.0.2.2:{port}");

    let on = run(
        with_role(&["--open"], &format!("connect {to} 3")),
        RUN_LIMIT,
    );
    assert!(on.status.success(), "hostloopback on: {}", text(&on));
    assert_eq!(
        field(&on, "CONNECT").as_deref(),
        Some("connected"),
        "{}",
        text(&on)
    );
    assert_eq!(
        field(&on, "REPLY").as_deref(),
        Some("hello"),
        "{}",
        text(&on)
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    let off = run(
        with_role(
            &["--open", "--set", "hostloopback=off"],
            &format!("connect {to} 1"),
        ),
        RUN_LIMIT,
    );
    assert!(off.status.success(), "hostloopback off: {}", text(&off));
    // libslirp refuses to translate the host address (EPERM) and answers the SYN with ICMP
    // net unreachable: an answer, not a timeout.
    assert_eq!(
        field(&off, "CONNECT").as_deref(),
        Some("NetworkUnreachable"),
        "hostloopback off: {}",
        text(&off)
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the host listener saw the guest with hostloopback=off: {}",
        text(&off)
    );
}

/// A namespace this test made, with one end of a veth pair whose other end is in the root
/// namespace (where the helper runs). Removed (with both veth ends) on drop.
struct PeerNamespace {
    name: String,
}

impl PeerNamespace {
    fn create(name: &str, root_if: &str, root_addrs: &[&str], peer_addr: &str) -> PeerNamespace {
        ip(&["netns", "add", name]);
        let ns = PeerNamespace {
            name: name.to_string(),
        };
        let peer_if = format!("{root_if}p");
        ip(&[
            "link", "add", root_if, "type", "veth", "peer", "name", &peer_if, "netns", name,
        ]);
        for a in root_addrs {
            ip(&["addr", "add", a, "dev", root_if]);
        }
        ip(&["link", "set", root_if, "up"]);
        ip(&["-n", name, "addr", "add", peer_addr, "dev", &peer_if]);
        ip(&["-n", name, "link", "set", &peer_if, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    /// This binary in `role`, inside the namespace.
    fn role(&self, role: &str) -> Command {
        let me = std::env::current_exe().expect("test binary path");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(me)
            .args(["guest_role", "--exact", "--nocapture", "--test-threads=1"])
            .arg("-q")
            .env(ROLE_ENV, role);
        cmd
    }
}

impl Drop for PeerNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the root namespace's.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn outbound_sets_the_source_address_of_the_guests_connections() {
    let test = "outbound_sets_the_source_address_of_the_guests_connections";
    if !root_or_skip(test) {
        return;
    }
    // 172.30.N.0/24 (private, N from the pid so that parallel runs rarely meet): the root
    // side has .1 (its primary address, the kernel's choice of source) and .2 (outbound).
    let pid = std::process::id();
    let n = 16 + pid % 200;
    let (primary, outbound) = (format!("172.30.{n}.1"), format!("172.30.{n}.2"));
    let peer = format!("172.30.{n}.10");
    let ns = PeerNamespace::create(
        &format!("e2eout-{pid}"),
        &format!("e2eo{}", pid % 100_000),
        &[&format!("{primary}/24"), &format!("{outbound}/24")],
        &format!("{peer}/24"),
    );
    let port = 18_000 + (pid % 1000) as u16;
    let listen = format!("{peer}:{port}");
    let mut listener = ns.role(&format!(
        "serve-peer {listen} 2 {}",
        3 * RUN_LIMIT.as_secs()
    ));
    listener
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let listener = listener.spawn().expect("start the listener");

    let role = format!("connect-via 10.0.2.2 {listen} 10");
    // Without `outbound` the kernel picks the primary address: the control for the check below.
    let plain = run(with_role(&["--open"], &role), RUN_LIMIT);
    let pinned = run(
        with_role(&["--open", "--set", &format!("outbound={outbound}")], &role),
        RUN_LIMIT,
    );
    let served = wait_output(listener, Duration::from_secs(10));
    let all = format!(
        "without outbound: {}\nwith outbound: {}\nlistener: {}",
        text(&plain),
        text(&pinned),
        text(&served)
    );
    assert!(plain.status.success() && pinned.status.success(), "{all}");
    assert_eq!(
        field(&plain, "REPLY"),
        Some(format!("peer:{primary}")),
        "{all}"
    );
    assert_eq!(
        field(&pinned, "REPLY"),
        Some(format!("peer:{outbound}")),
        "{all}"
    );
    let peers: Vec<String> = stdout(&served)
        .lines()
        .filter_map(|l| l.strip_prefix("PEER=").map(str::to_string))
        .collect();
    assert_eq!(peers, [primary, outbound], "{all}");
    drop(ns);
}
