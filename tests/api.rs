//! The control socket (`--api PATH`, `api=PATH`, issue 13) with the real helper and the real
//! libslirp: the socket file's life, slirp4netns's request shapes, forwards added, used,
//! listed and removed while a guest (smoltcp, over bhyve's socketpair) runs, `stats`,
//! `connections`, `version`, and every abuse case with its exact reply.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const GPORT: u16 = 2222;
const GPORT_UDP: u16 = 5353;

/// A fresh directory for one test's socket (short: sun_path holds 108 bytes), removed with
/// what is left in it when the test is done.
struct SocketPath {
    dir: PathBuf,
    path: PathBuf,
}

impl std::ops::Deref for SocketPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for SocketPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn socket_path(test: &str) -> SocketPath {
    let dir = std::env::temp_dir().join(format!("bsh-api-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    SocketPath {
        path: dir.join("api.sock"),
        dir,
    }
}

fn spawn(config: Vec<u8>, path: &Path) -> Bhyve {
    spawn_with(config, path, &[])
}

fn spawn_with(config: Vec<u8>, path: &Path, extra: &[&str]) -> Bhyve {
    let mut args = vec!["--api".to_string(), path.to_str().unwrap().to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    Bhyve::spawn(Spawn {
        config: Some(config),
        args,
        ..Spawn::default()
    })
}

/// Waits (bounded) for the helper to serve on `path`.
fn wait_for_socket(path: &Path, bhyve: &Bhyve) {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        if UnixStream::connect(path).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no control socket at {}; stderr:\n{}",
        path.display(),
        bhyve.stderr()
    );
}

fn wait_gone(path: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::fs::symlink_metadata(path).is_err() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// One client connection: requests one per line, replies one per line.
struct Client {
    reader: BufReader<UnixStream>,
    stream: UnixStream,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).expect("connect to the control socket");
        stream.set_read_timeout(Some(STEP)).unwrap();
        stream.set_write_timeout(Some(STEP)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write a request");
    }

    fn reply_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a reply");
        line
    }

    fn request(&mut self, request: &str) -> Value {
        self.send_raw(format!("{request}\n").as_bytes());
        let line = self.reply_line();
        assert!(line.ends_with('\n'), "reply to {request}: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
    }

    /// The connection is closed by the helper (EOF, or a reset after unread input).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn add_request(proto: &str, host_port: u16, guest_port: u16) -> String {
    format!(
        r#"{{"execute":"add_hostfwd","arguments":{{"proto":"{proto}","host_addr":"127.0.0.1","host_port":{host_port},"guest_addr":"10.0.2.15","guest_port":{guest_port}}}}}"#
    )
}

fn start_guest(config: ConfigBuilder, path: &Path) -> Guest {
    start_guest_with(config, path, &[])
}

fn start_guest_with(config: ConfigBuilder, path: &Path, extra: &[&str]) -> Guest {
    let mut guest = Guest::new(spawn_with(config.encode(), path, extra));
    guest.set_static();
    assert!(
        guest.ping(HOST_IP, STEP),
        "no ping reply; stderr:\n{}",
        guest.bhyve.stderr()
    );
    wait_for_socket(path, &guest.bhyve);
    guest
}

fn connect_within(addr: SocketAddrV4, timeout: Duration) -> TcpStream {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)) {
            Ok(s) => return s,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
}

#[test]
fn socket_file_is_0600_and_removed_on_hangup_sigterm_and_fatal_error() {
    // Hangup.
    let path = socket_path("life-hup");
    let mut bhyve = spawn(restricted_config(), &path);
    wait_for_socket(&path, &bhyve);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Owned by the user who started the helper (it drops to `nobody` only afterwards).
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0);
    assert!(wait_gone(&path, STEP), "socket left after hangup");

    // SIGTERM.
    let path = socket_path("life-term");
    let mut bhyve = spawn(restricted_config(), &path);
    wait_for_socket(&path, &bhyve);
    bhyve.signal(libc::SIGTERM);
    assert_eq!(bhyve.expect_exit(STEP), 0);
    assert!(wait_gone(&path, STEP), "socket left after SIGTERM");

    // A fatal error after the socket exists: the config's forward cannot bind.
    let path = socket_path("life-fatal");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = ConfigBuilder::bhyve()
        .hostfwd(&format!("tcp:127.0.0.1:{port}-:80"))
        .encode();
    let mut bhyve = spawn(config, &path);
    assert_eq!(bhyve.expect_exit(STEP), 1);
    assert!(
        bhyve.stderr().contains("cannot install it"),
        "{}",
        bhyve.stderr()
    );
    assert!(wait_gone(&path, STEP), "socket left after a fatal error");

    // SIGKILL: nothing in the helper runs, the file goes all the same.
    let path = socket_path("life-kill");
    let mut bhyve = spawn(restricted_config(), &path);
    wait_for_socket(&path, &bhyve);
    bhyve.signal(libc::SIGKILL);
    bhyve.wait_exit(STEP);
    assert!(wait_gone(&path, STEP), "socket left after SIGKILL");
}

#[test]
fn a_stale_socket_is_replaced_and_anything_else_is_refused() {
    let path = socket_path("stale");
    drop(UnixListener::bind(&path).unwrap()); // the file stays, nobody accepts
    let mut bhyve = spawn(restricted_config(), &path);
    wait_for_socket(&path, &bhyve);
    let mut c = Client::connect(&path);
    assert_eq!(
        c.request(r#"{"execute":"list_hostfwd"}"#)["return"]["entries"],
        json!([])
    );
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0);

    let path = socket_path("regular");
    std::fs::write(&path, b"keep me").unwrap();
    let mut bhyve = spawn(restricted_config(), &path);
    assert_eq!(bhyve.expect_exit(STEP), 1);
    let want = format!(
        "api: {} exists and is not a socket; refusing to replace it",
        path.display()
    );
    assert!(bhyve.stderr().contains(&want), "{}", bhyve.stderr());
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");

    let path = socket_path("live");
    let _live = UnixListener::bind(&path).unwrap();
    let mut bhyve = spawn(restricted_config(), &path);
    assert_eq!(bhyve.expect_exit(STEP), 1);
    let want = format!(
        "api: {} is in use (a process accepts connections on it)",
        path.display()
    );
    assert!(bhyve.stderr().contains(&want), "{}", bhyve.stderr());
    assert!(
        std::fs::symlink_metadata(&path).is_ok(),
        "a live socket was removed"
    );

    // A live socket whose backlog is full (its owner stuck): refused at once, no hang.
    let path = socket_path("full-backlog");
    let full = {
        use nix::sys::socket::{
            bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
        };
        let s = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(s.as_raw_fd(), &UnixAddr::new(&*path).unwrap()).unwrap();
        listen(&s, Backlog::new(0).unwrap()).unwrap();
        s
    };
    let mut queued = Vec::new();
    for _ in 0..4 {
        let c = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let _ = nix::sys::socket::connect(
            c.as_raw_fd(),
            &nix::sys::socket::UnixAddr::new(&*path).unwrap(),
        );
        queued.push(c);
    }
    let mut bhyve = spawn(restricted_config(), &path);
    assert_eq!(bhyve.expect_exit(STEP), 1);
    assert!(
        bhyve
            .stderr()
            .contains("is in use (a process accepts connections on it)"),
        "{}",
        bhyve.stderr()
    );
    drop((full, queued));

    // Bad values, named: an empty key, a path too long for a UNIX socket, no such directory.
    let mut bhyve = Bhyve::start(&ConfigBuilder::bhyve().string("api", "").encode());
    assert_eq!(bhyve.expect_exit(STEP), 1);
    assert!(
        bhyve
            .stderr()
            .contains("configuration: api: '' is not a path"),
        "{}",
        bhyve.stderr()
    );
    let long = format!("/tmp/{}", "x".repeat(120));
    let mut bhyve = spawn(restricted_config(), Path::new(&long));
    assert_eq!(bhyve.expect_exit(STEP), 1);
    assert!(
        bhyve.stderr().contains(&format!("api: {long}: bind: ")),
        "{}",
        bhyve.stderr()
    );
    let missing = path.with_file_name("no-such-dir").join("api.sock");
    let mut bhyve = spawn(restricted_config(), &missing);
    assert_eq!(bhyve.expect_exit(STEP), 1);
    assert!(
        bhyve.stderr().contains(&format!(
            "api: {}: bind: No such file or directory",
            missing.display()
        )),
        "{}",
        bhyve.stderr()
    );

    // The key works as the option does.
    let path = socket_path("key");
    let config = ConfigBuilder::bhyve()
        .string("api", path.to_str().unwrap())
        .encode();
    let mut bhyve = Bhyve::start(&config);
    wait_for_socket(&path, &bhyve);
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0);
}

/// Add, use (TCP and UDP), list, remove; the removed port closes, the connection opened
/// through it finishes intact. In restricted and open mode (the Linux sandbox widened for
/// `add_hostfwd` only).
fn forwards_while_the_guest_runs(open: bool, extra: &[&str]) {
    let name = match (open, extra.is_empty()) {
        (true, _) => "fwd-open",
        (false, true) => "fwd-restricted",
        (false, false) => "fwd-poll",
    };
    let path = socket_path(name);
    let config_port = free_tcp_port();
    let mut config = ConfigBuilder::bhyve().hostfwd(&format!("tcp:127.0.0.1:{config_port}-:7"));
    if open {
        config = config.open();
    }
    let mut guest = start_guest_with(config, &path, extra);
    let mut api = Client::connect(&path);

    // Port 0: the reply says which port the kernel chose.
    let added = api.request(&add_request("tcp", 0, GPORT));
    let tcp_port = added["return"]["host_port"]
        .as_u64()
        .unwrap_or_else(|| panic!("{added}")) as u16;
    assert_eq!(added, json!({"return": {"id": 2, "host_port": tcp_port}}));
    assert_ne!(tcp_port, 0);
    let udp_port = free_udp_port();
    assert_eq!(
        api.request(&add_request("udp", udp_port, GPORT_UDP)),
        json!({"return": {"id": 3}})
    );
    let listed = api.request(r#"{"execute":"list_hostfwd"}"#);
    // slirp4netns's bare `entries`, and the same under `return`.
    assert_eq!(listed["entries"], listed["return"]["entries"]);
    assert_eq!(
        listed["return"],
        json!({"entries": [
            {"id": 1, "proto": "tcp", "host_addr": "127.0.0.1", "host_port": config_port,
             "guest_addr": "10.0.2.15", "guest_port": 7},
            {"id": 2, "proto": "tcp", "host_addr": "127.0.0.1", "host_port": tcp_port,
             "guest_addr": "10.0.2.15", "guest_port": GPORT},
            {"id": 3, "proto": "udp", "host_addr": "127.0.0.1", "host_port": udp_port,
             "guest_addr": "10.0.2.15", "guest_port": GPORT_UDP},
        ]})
    );

    // TCP through the new forward; half the data before the removal, half after.
    let listen = guest.tcp_listen(GPORT);
    let to_guest = pattern(128 * 1024, 11);
    let addr = SocketAddrV4::new([127, 0, 0, 1].into(), tcp_port);
    let (first, second) = to_guest.split_at(64 * 1024);
    let (first, second) = (first.to_vec(), second.to_vec());
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let host = thread::spawn(move || {
        let mut s = connect_within(addr, STEP);
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(&first).expect("host write");
        go_rx.recv_timeout(Duration::from_secs(60)).expect("go");
        s.write_all(&second).expect("host write after the removal");
        s.shutdown(std::net::Shutdown::Write).unwrap();
    });
    assert!(
        guest.tcp_wait_established(listen, Duration::from_secs(30)),
        "forwarded connection never reached the guest; stderr:\n{}",
        guest.bhyve.stderr()
    );
    // `connections` shows it (libslirp's source is the host side for an incoming one).
    let conns = api.request(r#"{"execute":"connections"}"#);
    let rows = conns["return"]["connections"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["proto"] == "tcp"
            && r["state"] == "ESTABLISHED"
            && r["dst_addr"] == "10.0.2.15"
            && r["dst_port"] == GPORT),
        "{conns}"
    );
    assert!(
        rows.iter()
            .any(|r| r["state"] == "HOST_FORWARD" && r["src_port"] == tcp_port),
        "{conns}"
    );

    assert_eq!(
        api.request(r#"{"execute":"remove_hostfwd","arguments":{"id":2}}"#),
        json!({"return": {}})
    );
    go_tx.send(()).unwrap();
    let got = guest.tcp_exchange(listen, &[], to_guest.len(), Duration::from_secs(90));
    host.join().expect("host thread");
    assert_eq!(got.len(), to_guest.len());
    assert_eq!(Sha256::digest(&got), Sha256::digest(&to_guest));
    // The port is closed: nobody accepts any more.
    let refused = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2));
    assert!(refused.is_err(), "port {tcp_port} still accepts");

    // UDP through its forward, then removed.
    let sock = guest.udp_bind(GPORT_UDP);
    let host_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = Instant::now() + STEP;
    let mut received = false;
    while Instant::now() < deadline && !received {
        host_udp
            .send_to(b"api-udp", ("127.0.0.1", udp_port))
            .unwrap();
        if let Some((data, _)) = guest.udp_recv(sock, Duration::from_millis(500)) {
            assert_eq!(data, b"api-udp");
            received = true;
        }
    }
    assert!(received, "datagram never reached the guest");
    assert_eq!(
        api.request(r#"{"execute":"remove_hostfwd","arguments":{"id":3}}"#),
        json!({"return": {}})
    );
    // The host port is free again: we can bind it.
    UdpSocket::bind(("127.0.0.1", udp_port)).expect("the removed UDP port is free");
    let listed = api.request(r#"{"execute":"list_hostfwd"}"#);
    assert_eq!(listed["return"]["entries"].as_array().unwrap().len(), 1);

    let stats = guest.bhyve.stats_now(STEP).expect("stats line");
    assert_eq!(
        stats.get("sandbox_refused"),
        Some(&0),
        "{}",
        guest.bhyve.stderr()
    );
}

#[test]
fn forwards_added_used_listed_and_removed_restricted() {
    forwards_while_the_guest_runs(false, &[]);
}

#[test]
fn forwards_added_used_listed_and_removed_open() {
    forwards_while_the_guest_runs(true, &[]);
}

/// The C helper's loop (`poll(2)` over a list rebuilt every iteration) serves the control
/// socket's descriptors as well as the persistent backend.
#[test]
fn forwards_added_used_listed_and_removed_with_the_poll_backend() {
    forwards_while_the_guest_runs(false, &["--poller", "poll", "--batch", "1"]);
}

#[test]
fn stats_matches_the_sigusr1_line_and_version_names_both() {
    let path = socket_path("stats");
    let mut guest = start_guest(ConfigBuilder::bhyve(), &path);
    let mut api = Client::connect(&path);
    // The client is connected (and registered) before both readings.
    let version = api.request(r#"{"execute":"version"}"#);
    assert_eq!(version["return"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["return"]["name"], "bhyve-slirp-helper");
    assert!(
        version["return"]["libslirp"]
            .as_str()
            .is_some_and(|v| v.starts_with('4')),
        "{version}"
    );
    let line = guest.bhyve.stats_now(STEP).expect("a stats line");
    let json = api.request(r#"{"execute":"stats"}"#);
    let object = json["return"].as_object().expect("an object");
    let mut keys: Vec<&String> = object.keys().collect();
    let mut line_keys: Vec<&String> = line.keys().collect();
    keys.sort();
    line_keys.sort();
    // `poller=epoll` is no number: the line parser leaves it out; JSON has it as a string.
    keys.retain(|k| k.as_str() != "poller");
    assert_eq!(keys, line_keys);
    assert_eq!(object["poller"], "epoll");
    // The guest is idle between the two readings: its counters are the same.
    for key in [
        "rx_frames",
        "rx_bytes",
        "tx_frames",
        "tx_bytes",
        "frag_in",
        "guest_errors",
    ] {
        assert_eq!(object[key].as_u64(), line.get(key).copied(), "{key}");
    }
    assert!(object["iterations"].as_u64().unwrap() >= line["iterations"]);
    assert_eq!(
        object["api_requests"].as_u64(),
        Some(line["api_requests"] + 1)
    );
    drop(guest);
}

#[test]
fn abuse_gets_exact_replies_and_leaves_the_helper_unchanged() {
    let path = socket_path("abuse");
    let config_port = free_tcp_port();
    let mut guest = start_guest(
        ConfigBuilder::bhyve().hostfwd(&format!("tcp:127.0.0.1:{config_port}-:7")),
        &path,
    );
    let pid = guest.bhyve.pid();
    // Baseline with one client connected, as during the cases.
    let mut api = Client::connect(&path);
    let list = r#"{"execute":"list_hostfwd"}"#;
    let before = api.request(list);
    let fds = fd_count(pid);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let cases: Vec<(String, Value)> = vec![
        (
            "{not json".into(),
            json!({"error": {"desc": "bad request: cannot parse JSON: key must be a string at line 1 column 2"}}),
        ),
        (
            r#"{"execute":"reboot"}"#.into(),
            json!({"error": {"desc": "bad request: unknown execute 'reboot' (known: add_hostfwd, list_hostfwd, remove_hostfwd, stats, connections, version)"}}),
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":"80","guest_port":80}}"#.into(),
            json!({"error": {"desc": "bad request: add_hostfwd: bad arguments.host_port: must be an integer from 0 to 65535, not a string"}}),
        ),
        (
            add_request("tcp", config_port, 7),
            json!({"error": {"desc": format!("bad request: add_hostfwd: tcp 127.0.0.1:{config_port} is already forwarded (id 1)")}}),
        ),
        (
            add_request("tcp", taken_port, 7),
            json!({"error": {"desc": format!("bad request: add_hostfwd: slirp_add_hostfwd failed: tcp 127.0.0.1:{taken_port}: Address already in use (os error 98)")}}),
        ),
        (
            r#"{"execute":"remove_hostfwd","arguments":{"id":99}}"#.into(),
            json!({"error": {"desc": "bad request: remove_hostfwd: bad arguments.id: no forward has id 99"}}),
        ),
    ];
    for (request, want) in &cases {
        assert_eq!(&api.request(request), want, "{request}");
    }
    assert_eq!(api.request(list), before);

    // A line over 64 KiB: an error, then the connection closes.
    let mut long = Client::connect(&path);
    long.send_raw(&vec![b' '; 64 * 1024 + 10]);
    let line = long.reply_line();
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap(),
        json!({"error": {"desc": "bad request: request line longer than 65536 bytes; closing the connection"}})
    );
    assert!(long.closed());
    drop(long);

    // Eight clients at once; the ninth is refused and counted. The eight never read or
    // write: frames keep flowing.
    let idle: Vec<UnixStream> = (0..7)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    assert!(guest.ping(HOST_IP, STEP), "an idle client stalled the loop");
    let mut ninth = Client::connect(&path);
    assert_eq!(
        serde_json::from_str::<Value>(&ninth.reply_line()).unwrap(),
        json!({"error": {"desc": "too many clients: 8 are connected"}})
    );
    assert!(ninth.closed());
    // A client that sends requests and never reads its replies stalls nothing either. It
    // connects once the helper has seen the idle ones go.
    drop(idle);
    let deadline = Instant::now() + STEP;
    while api.request(r#"{"execute":"stats"}"#)["return"]["api_clients"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the idle clients were never closed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let mut deaf = UnixStream::connect(&path).unwrap();
    deaf.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stats_req = b"{\"execute\":\"connections\"}\n";
    for _ in 0..20_000 {
        if deaf.write_all(stats_req).is_err() {
            break;
        }
    }
    assert!(
        guest.ping(HOST_IP, STEP),
        "a client that never reads stalled the loop"
    );
    let stats = api.request(r#"{"execute":"stats"}"#);
    assert_eq!(stats["return"]["api_clients_refused"], 1, "{stats}");
    drop(deaf);
    assert_eq!(api.request(list), before);
    // Descriptors back to the baseline once the clients are gone.
    let deadline = Instant::now() + STEP;
    while fd_count(pid) != fds && Instant::now() < deadline {
        assert!(guest.ping(HOST_IP, STEP));
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fd_count(pid), fds, "descriptors after the abuse");
}

/// slirp4netns's clients unchanged: one object without a newline, then either a half-close
/// (rootlesskit) or a wait for the reply (`echo -n … | nc -U`); the reply comes and the
/// connection closes, as slirp4netns's does.
#[test]
fn slirp4netns_request_shapes_work_unchanged() {
    let path = socket_path("compat");
    let mut guest = start_guest(ConfigBuilder::bhyve(), &path);
    let port = free_tcp_port();
    // As rootlesskit's Go client: write, CloseWrite, read all.
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    write!(
        s,
        r#"{{"execute": "add_hostfwd", "arguments": {{"proto": "tcp", "host_addr": "127.0.0.1", "host_port": {port}, "guest_port": 80}}}}"#
    )
    .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&reply).unwrap(),
        json!({"return": {"id": 1}})
    );
    // As `echo -n '…' | nc -U`: no newline, no half-close; the helper closes after the reply.
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(br#"{"execute": "list_hostfwd"}"#).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let v: Value = serde_json::from_str(&reply).unwrap();
    // As slirp4netns answers it: `entries` at the top (and under `return` too).
    assert_eq!(
        v["entries"],
        json!([{"id": 1, "proto": "tcp", "host_addr": "127.0.0.1",
            "host_port": port, "guest_addr": "10.0.2.15", "guest_port": 80}])
    );
    assert_eq!(v["return"]["entries"], v["entries"]);
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(br#"{"execute": "remove_hostfwd", "arguments": {"id": 1}}"#)
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&reply).unwrap(),
        json!({"return": {}})
    );

    // The same through nc -U, when this system has an nc that speaks UNIX sockets.
    let nc = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{{\"execute\": \"list_hostfwd\"}}' | timeout 10 nc -U {}",
            path.display()
        ))
        .output();
    match nc {
        Ok(out) if out.status.success() => {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v, json!({"entries": [], "return": {"entries": []}}));
        }
        _ => common::skip::skip(
            "slirp4netns_request_shapes_work_unchanged",
            "no nc with -U here: the nc -U part did not run",
        ),
    }
    assert!(guest.ping(HOST_IP, STEP));
}

/// The one-line client for shells without `nc -U` or `socat`: `bhyve-slirp-helper --api PATH
/// REQUEST` prints the reply; exit 0 on success, 1 on an error reply or no helper.
#[test]
fn the_helper_is_its_own_one_line_client() {
    let path = socket_path("client");
    let mut guest = start_guest(ConfigBuilder::bhyve(), &path);
    let run = |request: &str| {
        std::process::Command::new(HELPER)
            .args(["--api", path.to_str().unwrap(), request])
            .output()
            .expect("run the client")
    };
    let out = run(r#"{"execute":"list_hostfwd"}"#);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"entries\":[],\"return\":{\"entries\":[]}}\n"
    );
    let out = run("{\"execute\":\"version\"}\n{\"execute\":\"nope\"}");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("{\"return\":{"), "{text}");
    assert!(
        lines[1].starts_with("{\"error\":{\"desc\":\"bad request: unknown execute 'nope'"),
        "{text}"
    );
    assert!(guest.ping(HOST_IP, STEP));
    guest.bhyve.hang_up();
    assert_eq!(guest.bhyve.expect_exit(STEP), 0);
    let out = run(r#"{"execute":"stats"}"#);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(path.to_str().unwrap()),
        "{out:?}"
    );
}

/// No descriptor left for a client: the listener is not watched for a while (the loop does
/// not spin on a listener it cannot accept from), counted; it serves again once clients go.
#[test]
fn a_full_descriptor_table_pauses_the_listener() {
    // The helper's own descriptors, with the control socket and one client.
    let path = socket_path("emfile-base");
    let mut bhyve = spawn(restricted_config(), &path);
    wait_for_socket(&path, &bhyve);
    let mut api = Client::connect(&path);
    api.request(r#"{"execute":"version"}"#);
    let base = fd_count(bhyve.pid());
    bhyve.hang_up();
    bhyve.expect_exit(STEP);

    // Room for the first client and two more, not for all eight.
    let limit = base as u64 + 2;
    let path = socket_path("emfile");
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(restricted_config()),
        args: vec!["--api".into(), path.to_str().unwrap().into()],
        nofile: Some(limit),
        ..Spawn::default()
    });
    wait_for_socket(&path, &bhyve);
    let pid = bhyve.pid();
    let mut api = Client::connect(&path);
    api.request(r#"{"execute":"version"}"#);
    // Connects succeed (the kernel queues them in the backlog) beyond what the helper can
    // accept.
    let others: Vec<UnixStream> = (0..6)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    let deadline = Instant::now() + STEP;
    let stats = loop {
        let stats = api.request(r#"{"execute":"stats"}"#);
        if stats["return"]["api_accept_pauses"].as_u64() > Some(0) {
            break stats;
        }
        assert!(Instant::now() < deadline, "fds {}: {stats}", fd_count(pid));
        thread::sleep(Duration::from_millis(20));
    };
    assert!(fd_count(pid) as u64 <= limit, "{stats}");
    // The loop still answers.
    assert_eq!(
        api.request(r#"{"execute":"version"}"#)["return"]["name"],
        "bhyve-slirp-helper"
    );
    drop(others);
    // Served again after the pause (libslirp's 1 s cap on the wait brings the loop round).
    let deadline = Instant::now() + STEP;
    loop {
        let mut c = Client::connect(&path);
        if c.request(r#"{"execute":"version"}"#)["return"]["name"] == "bhyve-slirp-helper" {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0);
}

/// One request on its own connection, as slirp4netns's clients send it (no newline; the
/// server replies and closes), half-closed after it when `half_close` (as rootlesskit does).
fn one_shot(path: &Path, request: &str, half_close: bool) -> Value {
    let mut s = UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{request} -> {reply:?}: {e}"))
}

/// slirp4netns itself, serving its API on `path` for a namespace this test made; no traffic
/// (its tap is left unconfigured: no address, no route). Killed by pid, namespace removed.
struct Slirp4netns {
    child: std::process::Child,
    netns: String,
}

impl Drop for Slirp4netns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
    }
}

fn slirp4netns(path: &Path) -> Result<Slirp4netns, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (a network namespace for slirp4netns)".into());
    }
    let netns = format!("bsh-api-compat-{}", std::process::id());
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .map_err(|e| format!("ip: {e}"))?;
    if !ok.success() {
        return Err("ip netns add failed".into());
    }
    let child = std::process::Command::new("slirp4netns")
        .args(["--api-socket", path.to_str().unwrap(), "--netns-type=path"])
        .arg(format!("/run/netns/{netns}"))
        .arg("tap0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &netns])
                .status();
            return Err(format!(
                "slirp4netns cannot be run ({e}); bash scripts/setup.sh"
            ));
        }
    };
    let s = Slirp4netns { child, netns };
    let deadline = Instant::now() + STEP;
    while UnixStream::connect(path).is_err() {
        if Instant::now() >= deadline {
            return Err("slirp4netns never served its API socket".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(s)
}

/// The same requests to slirp4netns and to the helper: every success reply is identical
/// (ports aside, each server binding its own), and every error of ours begins with
/// slirp4netns's text for it, so a script matching on either works with both.
#[test]
fn replies_match_slirp4netns_itself() {
    let test = "replies_match_slirp4netns_itself";
    let theirs_path = socket_path("s4n-theirs");
    let _slirp4netns = match slirp4netns(&theirs_path) {
        Ok(s) => s,
        Err(why) => return common::skip::skip(test, &why),
    };
    let ours_path = socket_path("s4n-ours");
    let mut guest = start_guest(ConfigBuilder::bhyve(), &ours_path);
    let ports = |n: usize| -> Vec<u16> { (0..n).map(|_| free_tcp_port()).collect() };
    let (theirs_ports, ours_ports) = (ports(2), ports(2));
    // `P0`, `P1`: each server's own ports.
    let requests = [
        r#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": P0, "guest_addr": "10.0.2.15", "guest_port": 80}}"#,
        r#"{"execute": "add_hostfwd", "arguments": {"proto": "udp", "host_addr": "127.0.0.1", "host_port": P1, "guest_addr": "10.0.2.15", "guest_port": 53}}"#,
        r#"{"execute": "list_hostfwd"}"#,
        r#"{"execute": "add_hostfwd", "arguments": {"proto": "sctp", "host_port": 1, "guest_port": 1}}"#,
        r#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "nowhere", "host_port": 1, "guest_port": 1}}"#,
        r#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": "80", "guest_port": 1}}"#,
        r#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 1}}"#,
        r#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 1, "guest_addr": "10.0.2.x", "guest_port": 1}}"#,
        r#"{"execute": "remove_hostfwd", "arguments": {"id": 99}}"#,
        r#"{"execute": "remove_hostfwd"}"#,
        r#"{"execute": "remove_hostfwd", "arguments": {"id": 1}}"#,
        r#"{"execute": "list_hostfwd"}"#,
        r#"{"execute": "reboot"}"#,
        r#"{"arguments": {}}"#,
        // Incomplete: slirp4netns answers what one read brought; the helper waits for the
        // rest, a newline or EOF, so this one is half-closed (below).
        r#"{"execute": "#,
    ];
    for template in requests {
        let half_close = !template.ends_with('}');
        let with = |p: &[u16]| {
            template
                .replace("P0", &p[0].to_string())
                .replace("P1", &p[1].to_string())
        };
        let theirs = one_shot(&theirs_path, &with(&theirs_ports), half_close);
        let ours = one_shot(&ours_path, &with(&ours_ports), half_close);
        // Ports back to placeholders on both sides.
        let norm = |v: &Value, p: &[u16]| {
            v.to_string()
                .replace(&format!(":{}", p[0]), ":\"P0\"")
                .replace(&format!(":{}", p[1]), ":\"P1\"")
        };
        let (theirs_n, ours_n) = (norm(&theirs, &theirs_ports), norm(&ours, &ours_ports));
        match (
            theirs["error"]["desc"].as_str(),
            ours["error"]["desc"].as_str(),
        ) {
            (Some(t), Some(o)) => {
                assert!(o.starts_with(t), "{template}:\n theirs {t}\n ours   {o}")
            }
            // Every member of theirs is in ours, equal (ours may say more: list_hostfwd
            // carries slirp4netns's bare `entries` and the `return` wrapper both).
            (None, None) => {
                let (t, o): (Value, Value) = (
                    serde_json::from_str(&theirs_n).unwrap(),
                    serde_json::from_str(&ours_n).unwrap(),
                );
                for (key, value) in t.as_object().unwrap() {
                    assert_eq!(
                        o.get(key),
                        Some(value),
                        "{template}:\n theirs {t}\n ours   {o}"
                    );
                }
            }
            _ => panic!("{template}:\n theirs {theirs_n}\n ours   {ours_n}"),
        }
    }
    assert!(guest.ping(HOST_IP, STEP));
}

/// A config rule with host port 0 is listed with the port the kernel chose, and that port
/// really is the forward (a connection to it is accepted).
#[test]
fn a_config_forward_on_port_0_is_listed_with_its_port() {
    let path = socket_path("config-port0");
    let mut guest = start_guest(
        ConfigBuilder::bhyve().hostfwd("tcp:127.0.0.1:0-:7;udp:127.0.0.1:0-:53"),
        &path,
    );
    let mut api = Client::connect(&path);
    let listed = api.request(r#"{"execute":"list_hostfwd"}"#);
    let entries = listed["return"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed}");
    let tcp_port = entries[0]["host_port"].as_u64().unwrap() as u16;
    let udp_port = entries[1]["host_port"].as_u64().unwrap() as u16;
    assert!(tcp_port != 0 && udp_port != 0, "{listed}");
    // libslirp accepts on the forward (then closes: nobody listens in the guest).
    TcpStream::connect(("127.0.0.1", tcp_port)).expect("the listed TCP port accepts");
    // The UDP port is taken by the forward.
    assert!(UdpSocket::bind(("127.0.0.1", udp_port)).is_err());
    assert!(guest.ping(HOST_IP, STEP));
}

/// Forwards to addresses where no guest is (the host's own 10.0.2.2, the DNS proxy's
/// 10.0.2.3, the broadcast address, an address outside the network): libslirp takes them;
/// a connection to one goes nowhere, and the helper serves on.
#[test]
fn forwards_to_odd_guest_addresses_harm_nothing() {
    let path = socket_path("odd-guest");
    let mut guest = start_guest(ConfigBuilder::bhyve(), &path);
    let mut api = Client::connect(&path);
    for addr in [
        "10.0.2.2",
        "10.0.2.3",
        "10.0.2.255",
        "192.0.2.1",
        "0.0.0.0",
        "127.0.0.1",
    ] {
        let reply = api.request(&format!(
            r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":0,"guest_addr":"{addr}","guest_port":80}}}}"#
        ));
        let port = reply["return"]["host_port"]
            .as_u64()
            .unwrap_or_else(|| panic!("{addr}: {reply}"));
        let c = TcpStream::connect(("127.0.0.1", port as u16));
        if let Ok(c) = c {
            c.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let _ = (&c).write_all(b"x");
            let _ = (&c).read(&mut [0u8; 16]);
        }
        assert!(
            guest.ping(HOST_IP, STEP),
            "after a connection to a forward to {addr}"
        );
    }
    assert_eq!(
        api.request(r#"{"execute":"list_hostfwd"}"#)["entries"]
            .as_array()
            .map(Vec::len),
        Some(6)
    );
}

/// IPv6 forwards through the control socket, beside an IPv6 rule from the config: each is
/// bound (V6ONLY) on the host's ::1, listed with its addresses, and removed again; a forward of
/// two families is refused.
#[test]
fn ipv6_forwards_are_added_listed_and_removed() {
    let path = socket_path("ipv6");
    let mut guest = start_guest(
        ConfigBuilder::bhyve()
            .string("ipv6", "on")
            .hostfwd("tcp:[::1]:0-[fec0::15]:7"),
        &path,
    );
    let mut api = Client::connect(&path);
    let added = api.request(
        r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":0,"guest_addr":"fec0::5054:ff:fe12:3456","guest_port":80}}"#,
    );
    let port = added["return"]["host_port"].as_u64().expect("a port") as u16;
    assert_ne!(port, 0, "{added}");
    // libslirp accepts on the forward (then closes: the guest has no IPv6 stack here).
    std::net::TcpStream::connect(("::1", port)).expect("the IPv6 forward accepts");
    // An empty guest address is the address the guest uses (libslirp learns it), for TCP;
    // refused for UDP, on which libslirp 4.7 crashes, as for the hostfwd key.
    let tcp = api.request(
        r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":0,"guest_port":22}}"#,
    );
    assert!(tcp["return"]["id"].as_u64().is_some(), "{tcp}");
    let udp = api.request(
        r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_addr":"::1","host_port":0,"guest_port":53}}"#,
    );
    assert!(
        udp["error"]["desc"]
            .as_str()
            .is_some_and(|d| d.contains("a UDP rule needs the guest's IPv6 address")),
        "{udp}"
    );
    let listed = api.request(r#"{"execute":"list_hostfwd"}"#);
    let entries = listed["return"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{listed}");
    assert_eq!(entries[0]["host_addr"], "::1", "{listed}");
    assert_eq!(entries[0]["guest_addr"], "fec0::15", "{listed}");
    assert_eq!(
        entries[1]["guest_addr"], "fec0::5054:ff:fe12:3456",
        "{listed}"
    );
    assert_eq!(entries[2]["guest_addr"], "::", "{listed}");
    let mixed = api.request(
        r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":1,"guest_addr":"10.0.2.15","guest_port":1}}"#,
    );
    assert_eq!(
        mixed["error"]["desc"],
        "bad request: add_hostfwd: bad arguments: host and guest addresses are of different families (write both as IPv4 or both in brackets)",
        "{mixed}"
    );
    let id = added["return"]["id"].as_u64().unwrap();
    let removed = api.request(&format!(
        r#"{{"execute":"remove_hostfwd","arguments":{{"id":{id}}}}}"#
    ));
    assert!(removed.get("error").is_none(), "{removed}");
    assert!(
        std::net::TcpStream::connect(("::1", port)).is_err(),
        "the removed forward still accepts"
    );
    assert!(guest.ping(HOST_IP, STEP));
}
