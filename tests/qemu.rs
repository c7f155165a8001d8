//! A real hypervisor drives the helper (#14): QEMU's `-netdev socket,fd=N` with a virtio-net
//! Linux guest (Debian's kernel, a busybox initramfs), the helper on the other end of a
//! SOCK_DGRAM socketpair, started as bhyve would (`-S`, nvlist first on QEMU's end), as a
//! process QEMU parents (`--exit-with-parent`), and as libvirt does (`--print-capabilities`,
//! then `--fd=N` daemonized with a locked pidfile).
//!
//! Root (CI): QEMU, the kernel and busybox come from scripts/setup.sh. KVM only when it boots a
//! guest here, else TCG. Traffic: the guest's one NIC is the helper; the helper reaches only
//! 127.0.0.1 services started here. No timing is asserted except the issue's "exits within
//! 1 s" bounds on the helper's lifetime.
// QEMU with a Linux guest, /proc, Linux capabilities: a Linux host's test.
#![cfg(target_os = "linux")]

mod common;
mod qemu_common;

use common::skip::skip;
use common::{free_tcp_port, ConfigBuilder, HELPER};
use qemu_common::{kit, shell_quote, Guest, Kit, Launch, Nic};

use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// 16 MiB each way, as the issue asks.
const BULK: usize = 16 << 20;
/// Bound of one guest command (a 16 MiB transfer under TCG takes a few seconds here).
const COMMAND: Duration = Duration::from_secs(90);
/// The bound on the helper outliving QEMU.
const EXIT_LIMIT: Duration = Duration::from_secs(1);
/// The guest's service behind the forward.
const GUEST_PORT: u16 = 8080;

fn kit_or_skip(test: &str) -> Option<&'static Kit> {
    if !nix::unistd::Uid::effective().is_root() {
        // Not for QEMU itself: the helper drops to `nobody` only as root, which is the path
        // the other end-to-end tests and CI run.
        skip(test, "needs root (CI runs the QEMU tests as root)");
        return None;
    }
    match kit() {
        Ok(kit) => Some(kit),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

/// A SOCK_DGRAM socketpair, as libvirt's `qemuSlirpOpen` makes: (QEMU's end, the helper's).
fn dgram_pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair")
}

/// Where a helper's stderr goes (read on failure).
fn helper_log(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("{name}-helper.log"))
}

/// The helper as the test's child; its stderr (in `log`) is printed if the test fails, and it
/// is killed (this pid only) when the test ends.
struct Helper {
    child: Child,
    log: PathBuf,
}

impl Helper {
    fn start(args: &[String], end: OwnedFd, log: &Path) -> Helper {
        Helper {
            child: spawn_helper(args, end, log),
            log: log.to_owned(),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- helper's stderr ({}) ----\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// The helper as the test's child on `end` (`-S` or `--fd` per `args`), stderr to `log`.
fn spawn_helper(args: &[String], end: OwnedFd, log: &Path) -> Child {
    let fd = end.as_raw_fd();
    let mut cmd = Command::new(HELPER);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("helper log"));
    // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe and clears
    // CLOEXEC on the helper's end only.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn the helper");
    drop(end);
    child
}

/// bhyve's nvlist, sent on QEMU's end before QEMU starts: the helper reads it first.
fn send_config(qemu_end: &OwnedFd, config: &[u8]) {
    nix::sys::socket::send(qemu_end.as_raw_fd(), config, MsgFlags::empty())
        .expect("send the config on QEMU's end");
}

/// A host service on 127.0.0.1 that reads `len` bytes and answers their SHA-256 (hex); one
/// connection, bounded.
fn sink_service(len: usize) -> (u16, std::thread::JoinHandle<Result<String, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + COMMAND;
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("no connection".to_string());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(COMMAND)).unwrap();
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < len {
            let want = buf.len().min(len - got);
            match conn.read(&mut buf[..want]) {
                Ok(0) => return Err(format!("EOF after {got} of {len} bytes")),
                Ok(n) => {
                    hash.update(&buf[..n]);
                    got += n;
                }
                Err(e) => return Err(format!("after {got} bytes: {e}")),
            }
        }
        Ok(hex(&hash.finalize()))
    });
    (port, handle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first 64 hex digits of `sha256sum`'s output.
fn guest_sum(output: &str) -> String {
    output
        .split_whitespace()
        .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no sha256sum in {output:?}"))
        .to_owned()
}

/// `len` pseudo-random bytes.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    common::pattern(len, seed)
}

/// DHCP through the helper, then the lease checked and 10.0.2.2 pinged.
fn lease_and_ping(guest: &mut Guest) {
    lease_and_ping_in(guest, "10.0.2");
}

/// As [`lease_and_ping`] on the /24 network `prefix` (`10.0.5` for `--net=10.0.5.0/24`): the
/// lease is .15, the host .2.
fn lease_and_ping_in(guest: &mut Guest, prefix: &str) {
    guest.must(
        "udhcpc -i eth0 -s /etc/udhcpc.script -n -q -t 5 -T 2 >/dev/null 2>&1",
        COMMAND,
    );
    let addr = guest.must("ip -4 addr show eth0", COMMAND);
    assert!(
        addr.contains(&format!("{prefix}.15/24")),
        "no lease: {addr}"
    );
    let ping = guest.must(&format!("ping -c 2 -W 5 {prefix}.2"), COMMAND);
    assert!(ping.contains("2 packets received"), "{ping}");
}

/// The guest's SLAAC address in the /64 `prefix` (`fd00:5::`) from libslirp's router
/// advertisements: EUI-64 of its MAC, within about 10 s; then it pings the host's `prefix`2.
fn slaac_and_ping(guest: &mut Guest, prefix: &str) {
    let want = format!("{prefix}5054:ff:fe12:3456/64");
    let addr = guest.must(
        &format!(
            "i=0; while [ $i -lt 40 ] && ! ip -6 addr show dev eth0 | grep -q '{want}'; do \
             sleep 0.25; i=$((i+1)); done; ip -6 addr show dev eth0"
        ),
        COMMAND,
    );
    assert!(addr.contains(&want), "no SLAAC address {want}: {addr}");
    // Reachability, not loss: under TCG one of the echoes may go unanswered in time (seen
    // once in CI: 1 of 2).
    let ping = guest.must(&format!("ping -6 -c 3 -W 5 {prefix}2"), COMMAND);
    assert!(ping.contains(&format!("bytes from {prefix}2")), "{ping}");
}

/// The guest's link has `mtu`, and its largest ping that fits one frame (IPv4 header 20 +
/// ICMP header 8: one `mtu`-byte packet, no fragments) goes to 10.0.2.2 and back.
fn ping_one_frame(guest: &mut Guest, mtu: u32) {
    let link = guest.must("ip link show eth0", COMMAND);
    assert!(link.contains(&format!("mtu {mtu}")), "{link}");
    let size = mtu - 28;
    let ping = guest.must(&format!("ping -c 2 -W 5 -s {size} 10.0.2.2"), COMMAND);
    assert!(
        ping.contains("2 packets received") && ping.contains(&format!("{} bytes from", size + 8)),
        "{ping}"
    );
}

/// Have the guest listen on `GUEST_PORT` (one connection, into `file`), and wait until the
/// kernel shows the socket listening.
fn guest_listen(guest: &mut Guest, file: &str) {
    guest.must(&format!("nc -l -p {GUEST_PORT} > {file} &"), COMMAND);
    // 1F90 is 8080, state 0A is LISTEN; busybox nc listens on IPv6's any address (dual
    // stack), so the socket shows in tcp6. A subshell: `exit` must not end the console shell.
    guest.must(
        "(i=0; until grep -q ':1F90 0*:0000 0A' /proc/net/tcp /proc/net/tcp6; do \
         i=$((i+1)); [ $i -gt 400 ] && exit 1; usleep 50000; done)",
        COMMAND,
    );
}

/// Host → guest through the forward on `port`: `data` sent, then the guest's SHA-256 checked.
fn send_through_forward(guest: &mut Guest, port: u16, data: &[u8], file: &str) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to the forward");
    conn.set_write_timeout(Some(COMMAND)).unwrap();
    conn.write_all(data).expect("write through the forward");
    conn.shutdown(Shutdown::Write).unwrap();
    // The guest's nc ends on EOF; wait for it, then hash what it wrote.
    guest.must("wait", COMMAND);
    let sum = guest_sum(&guest.must(&format!("sha256sum {file}"), COMMAND));
    assert_eq!(sum, hex(&Sha256::digest(data)), "host→guest bytes differ");
}

/// Guest → host: `len` random bytes made in the guest, sent to a service on the host's
/// 127.0.0.1 through 10.0.2.2, SHA-256 compared.
fn upload_to_host(guest: &mut Guest, len: usize) {
    let (port, service) = sink_service(len);
    guest.must(
        &format!("head -c {len} /dev/urandom > /tmp/up && sync"),
        COMMAND,
    );
    let sum = guest_sum(&guest.must("sha256sum /tmp/up", COMMAND));
    guest.must(&format!("nc 10.0.2.2 {port} < /tmp/up"), COMMAND);
    let host = service.join().unwrap().expect("the host service");
    assert_eq!(host, sum, "guest→host bytes differ");
}

fn assert_gone(pid: i32, what: &str, log: &Path) {
    assert!(
        common::process::gone_within(pid, EXIT_LIMIT),
        "{what}: the helper (pid {pid}) still runs 1 s after QEMU exited; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// bhyve's way over QEMU: `-S`, the nvlist sent first on QEMU's end, open mode with a forward.
/// DHCP, ping 10.0.2.2, 16 MiB each way SHA-256 checked (guest → a host service on 127.0.0.1
/// through 10.0.2.2; host → the guest through the forward).
#[test]
fn qemu_guest_dhcp_ping_tcp_both_ways_and_a_forward() {
    let Some(kit) = kit_or_skip("qemu_guest_dhcp_ping_tcp_both_ways_and_a_forward") else {
        return;
    };
    let (qemu_end, helper_end) = dgram_pair();
    let fwd = free_tcp_port();
    send_config(
        &qemu_end,
        &ConfigBuilder::bhyve()
            .open()
            .mtui(1500)
            .hostfwd(&format!("tcp:127.0.0.1:{fwd}-:{GUEST_PORT}"))
            .encode(),
    );
    let log = helper_log("bulk");
    let _helper = Helper::start(
        &["-S".into(), helper_end.as_raw_fd().to_string()],
        helper_end,
        &log,
    );
    let mut guest = Guest::boot(
        kit,
        "bulk",
        Nic::Socket {
            fd: qemu_end,
            host_mtu: None,
        },
    );
    lease_and_ping(&mut guest);
    upload_to_host(&mut guest, BULK);
    guest_listen(&mut guest, "/tmp/down");
    send_through_forward(&mut guest, fwd, &payload(BULK, 14), "/tmp/down");
    assert!(guest.poweroff(COMMAND).is_some(), "QEMU did not exit");
}

/// Restricted (bhyve's default): the lease and 10.0.2.2 answer, the forward works, but the
/// guest cannot connect out, not even to the host's 127.0.0.1 through 10.0.2.2.
#[test]
fn qemu_restricted_guest_cannot_connect_out() {
    let Some(kit) = kit_or_skip("qemu_restricted_guest_cannot_connect_out") else {
        return;
    };
    let (qemu_end, helper_end) = dgram_pair();
    let fwd = free_tcp_port();
    send_config(
        &qemu_end,
        &ConfigBuilder::bhyve()
            .hostfwd(&format!("tcp:127.0.0.1:{fwd}-:{GUEST_PORT}"))
            .encode(),
    );
    let log = helper_log("restricted");
    let _helper = Helper::start(
        &["-S".into(), helper_end.as_raw_fd().to_string()],
        helper_end,
        &log,
    );
    let mut guest = Guest::boot(
        kit,
        "restricted",
        Nic::Socket {
            fd: qemu_end,
            host_mtu: None,
        },
    );
    lease_and_ping(&mut guest);
    assert_refused_outbound(&mut guest);
    guest_listen(&mut guest, "/tmp/in");
    send_through_forward(&mut guest, fwd, &payload(64 << 10, 3), "/tmp/in");
}

/// A host service on 127.0.0.1 the guest tries through 10.0.2.2: refused, and never reached.
fn assert_refused_outbound(guest: &mut Guest) {
    assert_refused_outbound_via(guest, "10.0.2.2");
}

/// A host service on 127.0.0.1 receives what the guest sends to `host` (open mode).
fn assert_reaches_host_via(guest: &mut Guest, host: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    // Bounded: the guest's nc gives up after 5 s, the accept after 20.
    let accepted = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut got = String::new();
                    let _ = std::io::Read::read_to_string(&mut conn, &mut got);
                    return got;
                }
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return format!("no connection: {e}"),
            }
        }
    });
    let sent = guest.run(&format!("echo hello | nc -w 5 {host} {port}"), COMMAND);
    assert!(
        sent.is_ok(),
        "the guest could not reach the host service: {sent:?}"
    );
    assert_eq!(accepted.join().unwrap().trim(), "hello");
}

fn assert_refused_outbound_via(guest: &mut Guest, host: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let tried = guest.run(&format!("echo hello | nc -w 5 {host} {port}"), COMMAND);
    assert!(
        matches!(&tried, Err(f) if f.status.is_some_and(|s| s != 0)),
        "outbound connection not refused: {tried:?}"
    );
    assert!(
        listener.accept().is_err(),
        "the host service was reached from a restricted guest"
    );
}

/// `--exit-with-parent` with QEMU as the helper's parent (started by the shell that then
/// becomes QEMU): the helper ends within 1 s of QEMU's exit, clean or SIGKILL, although on a
/// SOCK_DGRAM socket nothing tells it that QEMU's end is gone.
fn exit_with_parent(name: &str, kill: bool) {
    let Some(kit) = kit_or_skip(name) else {
        return;
    };
    let (qemu_end, helper_end) = dgram_pair();
    send_config(
        &qemu_end,
        &ConfigBuilder::bhyve().open().mtui(1500).encode(),
    );
    let log = helper_log(name);
    let pidfile = log.with_extension("pid");
    let _ = std::fs::remove_file(&pidfile);
    let before = format!(
        "{} -S 3 --exit-with-parent 4<&- </dev/null 2>{} &\necho $! > {}",
        shell_quote(HELPER),
        shell_quote(&log.to_string_lossy()),
        shell_quote(&pidfile.to_string_lossy()),
    );
    let mut guest = Guest::boot_after(
        kit,
        name,
        Nic::Socket {
            fd: qemu_end,
            host_mtu: None,
        },
        Launch {
            before: Some((&before, helper_end)),
        },
    );
    let helper: i32 = std::fs::read_to_string(&pidfile)
        .expect("the helper's pid")
        .trim()
        .parse()
        .expect("a pid");
    assert_eq!(
        parent_of(helper),
        Some(guest.pid()),
        "the helper's parent is not QEMU"
    );
    lease_and_ping(&mut guest);
    if kill {
        guest.kill();
    } else {
        assert!(guest.poweroff(COMMAND).is_some(), "QEMU did not power off");
    }
    assert_gone(helper, name, &log);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said.contains("terminated by signal"), "{said}");
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn qemu_exits_cleanly_and_the_helper_follows() {
    exit_with_parent("qemu_exits_cleanly_and_the_helper_follows", false);
}

#[test]
fn qemu_is_killed_and_the_helper_follows() {
    exit_with_parent("qemu_is_killed_and_the_helper_follows", true);
}

/// A launcher that starts the helper for QEMU without an nvlist (`--fd`) gives it the rest of
/// the configuration as options: `--mtu` (QEMU's `host_mtu`) and `--hostfwd` (repeated, the
/// key's grammar). The guest's largest one-frame ping at 9000 goes both ways and a forward
/// carries 1 MiB into the guest, SHA-256 checked.
#[test]
fn qemu_launcher_gives_mtu_and_forwards_as_options() {
    let Some(kit) = kit_or_skip("qemu_launcher_gives_mtu_and_forwards_as_options") else {
        return;
    };
    const MTU: u32 = 9000;
    let (qemu_end, helper_end) = dgram_pair();
    let fwd = free_tcp_port();
    let unused = free_tcp_port();
    let log = helper_log("launcher");
    let _helper = Helper::start(
        &[
            format!("--fd={}", helper_end.as_raw_fd()),
            format!("--mtu={MTU}"),
            format!("--hostfwd=tcp:127.0.0.1:{unused}-:9"),
            "--hostfwd".into(),
            format!("tcp:127.0.0.1:{fwd}-:{GUEST_PORT}"),
        ],
        helper_end,
        &log,
    );
    let mut guest = Guest::boot(
        kit,
        "launcher",
        Nic::Socket {
            fd: qemu_end,
            host_mtu: Some(MTU),
        },
    );
    lease_and_ping(&mut guest);
    ping_one_frame(&mut guest, MTU);
    guest_listen(&mut guest, "/tmp/in");
    send_through_forward(&mut guest, fwd, &payload(1 << 20, 9), "/tmp/in");
    assert!(guest.poweroff(COMMAND).is_some(), "QEMU did not power off");
}

/// Frames up to the MTU QEMU gives the guest (`host_mtu`), with `mtui` the same: the largest
/// ping that fits one frame goes both ways, and host → guest TCP arrives in frames far above
/// 1514 bytes (the MSS follows the MTU; the C helper's stays at 1460).
#[test]
fn qemu_guest_mtu_65520_large_pings_and_mss() {
    let Some(kit) = kit_or_skip("qemu_guest_mtu_65520_large_pings_and_mss") else {
        return;
    };
    const MTU: u32 = 65520;
    let (qemu_end, helper_end) = dgram_pair();
    let fwd = free_tcp_port();
    send_config(
        &qemu_end,
        &ConfigBuilder::bhyve()
            .open()
            .mtui(u64::from(MTU))
            .hostfwd(&format!("tcp:127.0.0.1:{fwd}-:{GUEST_PORT}"))
            .encode(),
    );
    let log = helper_log("mtu");
    let _helper = Helper::start(
        &["-S".into(), helper_end.as_raw_fd().to_string()],
        helper_end,
        &log,
    );
    let mut guest = Guest::boot(
        kit,
        "mtu",
        Nic::Socket {
            fd: qemu_end,
            host_mtu: Some(MTU),
        },
    );
    lease_and_ping(&mut guest);
    ping_one_frame(&mut guest, MTU);
    let stats =
        "cat /sys/class/net/eth0/statistics/rx_bytes /sys/class/net/eth0/statistics/rx_packets";
    let before = counters(&guest.must(stats, COMMAND));
    guest_listen(&mut guest, "/tmp/big");
    send_through_forward(&mut guest, fwd, &payload(4 << 20, 9), "/tmp/big");
    let after = counters(&guest.must(stats, COMMAND));
    let (bytes, packets) = (after.0 - before.0, after.1 - before.1);
    let average = bytes / packets.max(1);
    assert!(
        average > 4 * 1514,
        "host→guest frames average {average} bytes ({bytes} in {packets}): the MSS did not follow the MTU"
    );
}

fn counters(text: &str) -> (u64, u64) {
    let n: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(n.len() >= 2, "{text}");
    (n[n.len() - 2], n[n.len() - 1])
}

// ---------------------------------------------------------------------------------------------
// libvirt
// ---------------------------------------------------------------------------------------------

/// libvirt's `qemuSlirpNewForHelper`: run `--print-capabilities`, parse the JSON, read
/// `features`.
fn libvirt_capabilities() -> Vec<String> {
    let out = Command::new(HELPER)
        .arg("--print-capabilities")
        .output()
        .expect("run --print-capabilities");
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("capabilities are JSON");
    doc["features"]
        .as_array()
        .expect("a features array")
        .iter()
        .map(|f| f.as_str().expect("a string feature").to_owned())
        .collect()
}

/// libvirt's `virExec` with `virCommandDaemonize` and `virCommandSetPidFile`: fork; the child
/// calls setsid and forks again; the grandchild locks the pidfile (fcntl, kept open across
/// exec), writes its pid, tells the middle process, which exits, and execs the helper with
/// standard descriptors on /dev/null and only the socket and the pidfile inherited. Returns
/// when the middle process has exited, as `virCommandRun` does.
fn libvirt_daemonize(args: &[String], socket: RawFd, pidfile: &Path, env: &[(String, String)]) {
    use std::ffi::CString;
    let program = CString::new(HELPER).unwrap();
    let mut argv: Vec<CString> = vec![program.clone()];
    argv.extend(args.iter().map(|a| CString::new(a.as_str()).unwrap()));
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp: Vec<CString> = std::env::vars()
        .chain(env.iter().cloned())
        .map(|(k, v)| CString::new(format!("{k}={v}")).unwrap())
        .collect();
    envp.push(CString::new("PATH=/usr/sbin:/usr/bin:/sbin:/bin").unwrap());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let pidfile_c = CString::new(pidfile.to_string_lossy().as_bytes()).unwrap();
    let devnull = CString::new("/dev/null").unwrap();
    let mut sync = [0 as libc::c_int; 2];
    // SAFETY: pipe writes two descriptors into `sync`.
    assert_eq!(unsafe { libc::pipe(sync.as_mut_ptr()) }, 0);
    // SAFETY: the children call only async-signal-safe functions (setsid, fork, open, fcntl,
    // write, read, dup2, close, execve, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: as above; this is the forked child, which ends in execve or _exit.
        unsafe {
            if libc::setsid() < 0 {
                libc::_exit(120);
            }
            let grandchild = libc::fork();
            if grandchild < 0 {
                libc::_exit(121);
            }
            if grandchild > 0 {
                let mut c = 0u8;
                let n = libc::read(sync[0], (&mut c as *mut u8).cast(), 1);
                // libvirt's middle process exits at once; on a loaded machine it may be
                // scheduled late, after the helper armed its parent-death signal. Linger
                // 100 ms so that this test always takes that path (a helper following this
                // process would end with it).
                libc::usleep(100_000);
                libc::_exit(if n == 1 { 0 } else { 122 });
            }
            let fd = libc::open(pidfile_c.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644);
            if fd < 0 {
                libc::_exit(123);
            }
            let lock = libc::flock {
                l_type: libc::F_WRLCK as libc::c_short,
                l_whence: libc::SEEK_SET as libc::c_short,
                l_start: 0,
                l_len: 1,
                l_pid: 0,
            };
            if libc::fcntl(fd, libc::F_SETLK, &lock) < 0 {
                libc::_exit(124);
            }
            let mut digits = [0u8; 16];
            let mut n = libc::getpid() as u32;
            let mut len = 0;
            let mut tmp = [0u8; 16];
            loop {
                tmp[len] = b'0' + (n % 10) as u8;
                len += 1;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for i in 0..len {
                digits[i] = tmp[len - 1 - i];
            }
            digits[len] = b'\n';
            if libc::ftruncate(fd, 0) < 0
                || libc::write(fd, digits.as_ptr().cast(), len + 1) != (len + 1) as isize
            {
                libc::_exit(125);
            }
            // virCommandClearCaps: uid 0 with no capabilities, and none to regain at exec
            // (libvirt's capng_clear and capng_apply over the bounding set too).
            let mut cap = 0;
            while libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) >= 0 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                    libc::_exit(127);
                }
                cap += 1;
            }
            #[repr(C)]
            struct CapHeader {
                version: u32,
                pid: libc::c_int,
            }
            #[repr(C)]
            struct CapData {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            // _LINUX_CAPABILITY_VERSION_3: two data words.
            let mut header = CapHeader {
                version: 0x2008_0522,
                pid: 0,
            };
            let data = [
                CapData {
                    effective: 0,
                    permitted: 0,
                    inheritable: 0,
                },
                CapData {
                    effective: 0,
                    permitted: 0,
                    inheritable: 0,
                },
            ];
            if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) < 0 {
                libc::_exit(127);
            }
            let null = libc::open(devnull.as_ptr(), libc::O_RDWR);
            for std_fd in 0..3 {
                libc::dup2(null, std_fd);
            }
            libc::close(null);
            // Only the socket and the pidfile stay (virCommandMassClose keeps the passed
            // descriptors and closes the rest; the sync pipe closes here).
            let flags = libc::fcntl(socket, libc::F_GETFD);
            libc::fcntl(socket, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            let c = b'1';
            libc::write(sync[1], (&c as *const u8).cast(), 1);
            libc::close(sync[0]);
            libc::close(sync[1]);
            libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            libc::_exit(126);
        }
    }
    // SAFETY: closing our copies of the pipe; waitpid on the child just forked.
    unsafe {
        libc::close(sync[0]);
        libc::close(sync[1]);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "daemonizing failed: status {status:#x}"
        );
    }
}

/// libvirt's `virPidFileForceCleanupPath`: the helper is killed only if its pidfile lock is
/// still held; returns the pid it read, or `None` when the lock was free (then libvirt would
/// have deleted the pidfile and left the helper running).
fn libvirt_stop(pidfile: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let file = std::fs::OpenOptions::new().write(true).open(pidfile).ok()?;
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    };
    // SAFETY: fcntl on a descriptor we own with a flock struct that lives across the call.
    let free = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } == 0;
    if free {
        return None;
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).ok()?;
    Some(pid)
}

/// The helper as libvirt runs it: capabilities parsed as JSON, then `--fd=N` (no nvlist;
/// `--exit-with-parent` because it was offered), daemonized with a locked pidfile, its
/// standard descriptors on /dev/null (diagnostics to syslog) and every capability cleared
/// (it stays uid 0, confined by seccomp and Landlock). The guest gets its lease and
/// pings the host of the network libvirt passes (`--net=10.0.5.0/24`: 10.0.5.2); the helper
/// is open, as libvirt (which never passes `--restrict`) expects: the guest reaches a host
/// service through the host address. Stopping the VM
/// as libvirt does (the pidfile lock still held, SIGTERM) ends the helper within 1 s.
#[test]
fn libvirt_starts_the_helper_for_a_qemu_guest() {
    let Some(kit) = kit_or_skip("libvirt_starts_the_helper_for_a_qemu_guest") else {
        return;
    };
    let features = libvirt_capabilities();
    assert!(features.iter().any(|f| f == "ipv4"), "{features:?}");
    assert!(features.iter().any(|f| f == "restrict"), "{features:?}");
    for never in ["dbus-address", "dbus-p2p", "migrate", "tftp"] {
        assert!(!features.iter().any(|f| f == never), "{features:?}");
    }
    let (qemu_end, helper_end) = dgram_pair();
    let syslog = common::SyslogStandIn::new();
    let pidfile = helper_log("libvirt").with_extension("pid");
    let _ = std::fs::remove_file(&pidfile);
    // As qemuSlirpStart writes a guest `<ip address='10.0.5.15' prefix='24'/>` and, since
    // `ipv6` is offered, `<ip family='ipv6' address='fd00:5::15' prefix='64'/>`: the guest's
    // address and prefix length, whose host bits the helper clears as QEMU's `net=` does.
    assert!(features.iter().any(|f| f == "ipv6"), "{features:?}");
    let mut args = vec![
        format!("--fd={}", helper_end.as_raw_fd()),
        "--net=10.0.5.15/24".to_string(),
        "--net6=fd00:5::15/64".to_string(),
    ];
    if features.iter().any(|f| f == "exit-with-parent") {
        args.push("--exit-with-parent".into());
    }
    libvirt_daemonize(&args, helper_end.as_raw_fd(), &pidfile, &[syslog.env()]);
    drop(helper_end);
    let started = syslog.wait_for(" with libslirp ", common::STEP);
    assert!(
        started.is_some(),
        "no start-up line in syslog: {:?}",
        syslog.lines()
    );
    let helper: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        syslog
            .wait_for("started by a daemonizing parent", common::STEP)
            .is_some(),
        "{:?}",
        syslog.lines()
    );
    // On failure, what the helper said (its diagnostics go to syslog: no stderr).
    struct ShowSyslog<'a>(&'a common::SyslogStandIn);
    impl Drop for ShowSyslog<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("helper's syslog lines: {:#?}", self.0.lines());
            }
        }
    }
    let _show = ShowSyslog(&syslog);
    // Without capabilities it cannot become nobody; it says so and is confined all the same.
    assert!(
        syslog
            .wait_for("staying root without capabilities", common::STEP)
            .is_some(),
        "{:?}",
        syslog.lines()
    );
    let status = std::fs::read_to_string(format!("/proc/{helper}/status")).unwrap();
    assert!(
        status.contains("\nSeccomp:\t2\n") && status.contains("\nNoNewPrivs:\t1\n"),
        "the helper is not confined:\n{status}"
    );
    let mut guest = Guest::boot(
        kit,
        "libvirt",
        Nic::Socket {
            fd: qemu_end,
            host_mtu: None,
        },
    );
    lease_and_ping_in(&mut guest, "10.0.5");
    assert_reaches_host_via(&mut guest, "10.0.5.2");
    slaac_and_ping(&mut guest, "fd00:5::");
    // The daemonizing parent exited long ago: the helper is still serving.
    assert!(!common::process::gone_within(helper, Duration::ZERO));
    assert!(guest.poweroff(COMMAND).is_some(), "QEMU did not power off");
    let stopped = libvirt_stop(&pidfile);
    assert_eq!(
        stopped,
        Some(helper),
        "the pidfile lock was not held: libvirt would leave the helper running"
    );
    assert!(
        common::process::gone_within(helper, EXIT_LIMIT),
        "the helper still runs 1 s after libvirt's SIGTERM; syslog: {:?}",
        syslog.lines()
    );
    assert!(
        syslog
            .wait_for("terminated by signal", common::STEP)
            .is_some(),
        "{:?}",
        syslog.lines()
    );
}

/// libvirt passes `--dbus-*` only when offered, and they are not: should one come, it ends the
/// helper with status 1 naming the option.
#[test]
fn libvirt_options_the_helper_does_not_have_exit_1_naming_them() {
    for (option, named) in [
        ("--dbus-id=slirp-52:54:00:12:34:56", "--dbus-id"),
        ("--dbus-address=unix:path=/run/x", "--dbus-address"),
        ("--dbus-incoming", "--dbus-incoming"),
    ] {
        let run = common::run_helper(&["--fd=3", option], common::STEP);
        assert_eq!(run.code(), Some(1), "{option}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("unexpected argument '{named}'")),
            "{option}: {}",
            run.stderr
        );
    }
}
