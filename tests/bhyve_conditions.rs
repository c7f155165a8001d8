//! The helper as bhyve really starts it, and as careless callers do (issue 16): stderr on
//! `/dev/null` (diagnostics go to syslog, a stand-in socket here, never to bhyve's socket),
//! `-S` naming a standard descriptor, a peer that half-closes or is signalled during the
//! config, a socket of the wrong type, a datagram peer that goes away, a vmname that is not
//! UTF-8.
//!
//! Network rule: socketpairs, and UDP/TCP on 127.0.0.1 only.

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

/// A helper started as bhyve does: stderr on /dev/null, syslog at `syslog`.
fn under_bhyve(config: Option<Vec<u8>>, syslog: &SyslogStandIn) -> Bhyve {
    Bhyve::spawn(Spawn {
        config,
        env: vec![syslog.env()],
        stderr_null: true,
        ..Spawn::default()
    })
}

/// No record bhyve received is a log line (every one must be an Ethernet frame).
fn assert_no_log_records(records: &[Vec<u8>]) {
    for rec in records {
        let text = String::from_utf8_lossy(rec);
        assert!(
            !text.contains("bhyve-slirp-helper"),
            "bhyve received a log line as a frame: {text:?}"
        );
    }
}

#[test]
fn configuration_error_goes_to_syslog_not_to_bhyve() {
    let syslog = SyslogStandIn::new();
    let config = ConfigBuilder::bhyve().string("open", "maybe").encode();
    let mut bhyve = under_bhyve(Some(config), &syslog);
    assert_eq!(bhyve.expect_exit(STEP), 4);
    let records = bhyve.records(Duration::from_millis(300));
    assert_no_log_records(&records);
    assert!(records.is_empty(), "bhyve received {records:?}");
    let line = syslog
        .wait_for("configuration: open: 'maybe' is not a boolean", STEP)
        .unwrap_or_else(|| panic!("no syslog line; got {:?}", syslog.lines()));
    // RFC 3164: <facility daemon (3) * 8 + err (3)>, the tag with the pid.
    assert!(
        line.starts_with(&format!("<27>bhyve-slirp-helper[{}]: ", bhyve.pid())),
        "{line}"
    );
}

#[test]
fn stats_and_exit_lines_go_to_syslog_not_to_bhyve() {
    let syslog = SyslogStandIn::new();
    let mut bhyve = under_bhyve(Some(restricted_config()), &syslog);
    assert!(bhyve.resolve(HOST_IP, STEP).is_some(), "no ARP answer");
    bhyve.signal(libc::SIGUSR1);
    assert!(
        syslog.wait_for("rx_runt=", STEP).is_some(),
        "no stats line in syslog: {:?}",
        syslog.lines()
    );
    bhyve.signal(libc::SIGUSR1);
    thread::sleep(Duration::from_millis(200));
    assert_no_log_records(&bhyve.records(Duration::from_millis(300)));
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0);
    assert!(
        syslog
            .wait_for("bhyve closed the connection", STEP)
            .is_some(),
        "no exit line in syslog: {:?}",
        syslog.lines()
    );
}

#[test]
fn usage_error_with_stderr_on_dev_null_reaches_syslog() {
    let syslog = SyslogStandIn::new();
    let (key, value) = syslog.env();
    let mut cmd = Command::new(HELPER);
    cmd.args(["-S", "999"])
        .env(key, value)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: close(2) is async-signal-safe; fd 999 is unused by the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(999);
            Ok(())
        });
    }
    let status = cmd.status().expect("run the helper");
    assert_eq!(status.code(), Some(1));
    assert!(
        syslog
            .wait_for("-S: '999' is not an open descriptor", STEP)
            .is_some(),
        "{:?}",
        syslog.lines()
    );
}

#[test]
fn socket_on_stderr_leaves_dev_null_behind_and_logs_to_syslog() {
    let syslog = SyslogStandIn::new();
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(restricted_config()),
        env: vec![syslog.env()],
        socket_fd: Some(2),
        ..Spawn::default()
    });
    assert!(bhyve.resolve(HOST_IP, STEP).is_some(), "no ARP answer");
    let fd2 = std::fs::read_link(format!("/proc/{}/fd/2", bhyve.pid())).unwrap();
    assert_eq!(fd2, std::path::Path::new("/dev/null"));
    bhyve.signal(libc::SIGUSR1);
    assert!(
        syslog.wait_for("rx_runt=", STEP).is_some(),
        "no stats line in syslog: {:?}",
        syslog.lines()
    );
    assert_no_log_records(&bhyve.records(Duration::from_millis(300)));
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0);
}

/// bhyve's end half-closes after `sent` bytes of a config: exit 1 at once, saying so.
fn assert_half_close_exits_1(sent: Option<&[u8]>) {
    let mut bhyve = Bhyve::spawn(Spawn::default());
    if let Some(bytes) = sent {
        bhyve.send_frame(bytes).unwrap();
    }
    bhyve.shutdown_write();
    let t0 = Instant::now();
    // The config timeout is 30 s: a helper still waiting after 10 s spins until then.
    assert_eq!(bhyve.expect_exit(Duration::from_secs(10)), 1);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(
        bhyve
            .stderr()
            .contains("bhyve hung up before the configuration was complete"),
        "{}",
        bhyve.stderr()
    );
}

#[test]
fn half_close_before_any_config_exits_1_at_once() {
    assert_half_close_exits_1(None);
}

#[test]
fn half_close_after_part_of_the_config_exits_1_at_once() {
    let config = restricted_config();
    assert_half_close_exits_1(Some(&config[..30]));
}

fn assert_signal_during_config_wait_exits_0(sig: i32) {
    let mut bhyve = Bhyve::spawn(Spawn::default());
    // Let it reach the config wait (handlers installed, socket adopted).
    thread::sleep(Duration::from_millis(300));
    bhyve.signal(sig);
    assert_eq!(bhyve.expect_exit(Duration::from_secs(10)), 0);
    assert!(
        bhyve.stderr().contains("terminated by signal"),
        "{}",
        bhyve.stderr()
    );
}

#[test]
fn sigterm_while_waiting_for_the_config_exits_0() {
    assert_signal_during_config_wait_exits_0(libc::SIGTERM);
}

#[test]
fn sigint_while_waiting_for_the_config_exits_0() {
    assert_signal_during_config_wait_exits_0(libc::SIGINT);
}

fn pair(kind: SockType) -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        kind,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair")
}

#[test]
fn stream_socket_is_refused() {
    // No config: the helper refuses the socket before reading a byte, so a send would race
    // with its exit (EPIPE or ECONNRESET, seen in about one run of three).
    let mut bhyve = Bhyve::spawn(Spawn {
        config: None,
        sockets: Some(pair(SockType::Stream)),
        ..Spawn::default()
    });
    assert_eq!(bhyve.expect_exit(STEP), 1);
    let stderr = bhyve.stderr();
    assert!(
        stderr.contains(
            "is a SOCK_STREAM socket, which does not keep frame boundaries \
             (use SOCK_SEQPACKET, as bhyve does, or SOCK_DGRAM)\n"
        ),
        "{stderr}"
    );
}

/// With the peer gone, a connection to the forward makes libslirp send to the guest (ARP, SYN):
/// the send (or the error it leaves on the socket) shows the peer is gone, and the helper ends.
fn assert_exits_0_once_datagram_peer_is_gone(sockets: (OwnedFd, OwnedFd)) {
    let port = free_tcp_port();
    let config = ConfigBuilder::bhyve()
        .hostfwd(&format!("tcp:127.0.0.1:{port}-:80"))
        .encode();
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(config),
        sockets: Some(sockets),
        ..Spawn::default()
    });
    assert!(
        bhyve.resolve(HOST_IP, STEP).is_some(),
        "no ARP answer over SOCK_DGRAM; stderr:\n{}",
        bhyve.stderr()
    );
    bhyve.hang_up();
    let deadline = Instant::now() + STEP;
    let mut attempts = 0;
    while bhyve.is_running() && Instant::now() < deadline && attempts < 20 {
        attempts += 1;
        let _conn = std::net::TcpStream::connect(("127.0.0.1", port));
        if bhyve.wait_exit(Duration::from_secs(1)).is_some() {
            break;
        }
    }
    assert_eq!(bhyve.expect_exit(Duration::from_secs(1)), 0);
    assert!(
        bhyve.stderr().contains("bhyve closed the connection"),
        "{}",
        bhyve.stderr()
    );
}

#[test]
fn unix_datagram_peer_gone_exits_0() {
    assert_exits_0_once_datagram_peer_is_gone(pair(SockType::Datagram));
}

#[test]
fn udp_peer_gone_exits_0() {
    let ours = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let theirs = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    ours.connect(theirs.local_addr().unwrap()).unwrap();
    theirs.connect(ours.local_addr().unwrap()).unwrap();
    ours.set_nonblocking(true).unwrap();
    assert_exits_0_once_datagram_peer_is_gone((OwnedFd::from(ours), OwnedFd::from(theirs)));
}

#[test]
fn vmname_that_is_not_utf8_starts_with_an_escaped_title() {
    let config = ConfigBuilder::bhyve().vmname_bytes(b"vm\xff\xfe1").encode();
    let mut bhyve = Bhyve::start(&config);
    assert!(
        bhyve.resolve(HOST_IP, STEP).is_some(),
        "no ARP answer; stderr:\n{}",
        bhyve.stderr()
    );
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", bhyve.pid())).unwrap();
    assert_eq!(comm.trim_end(), "vm\\xff\\xfe1");
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0);
}
