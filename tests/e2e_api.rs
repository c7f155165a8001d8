//! End to end: the control socket while a kernel guest (behind `slirp-frontend`, in its own
//! namespace) moves traffic. Forwards added at run time (port 0), used over TCP and UDP,
//! listed and removed; the removed port closes while the connection already open through it
//! finishes intact (SHA-256 checked). Root only (skipped otherwise).

mod e2e_common;
use e2e_common::*;
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GUEST_TCP: u16 = 8080;
const GUEST_UDP: u16 = 5353;
/// Bytes of the long transfer, half before the removal and half after.
const LEN: usize = 4 << 20;
const SEED: u64 = 13;

#[test]
fn guest_role() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        run_role(&role, api_role);
    }
}

/// In the guest: every TCP connection on 8080 is read to EOF and answered `LEN SHA` (so the
/// host knows what arrived); UDP on 5353 is echoed with `guest:`; both until `quit` by UDP or
/// 60 s.
fn api_role(words: &[&str]) -> io::Result<()> {
    if words != ["api-serve"] {
        return Err(io::Error::other(format!("unknown role {words:?}")));
    }
    let tcp = TcpListener::bind(("0.0.0.0", GUEST_TCP))?;
    tcp.set_nonblocking(true)?;
    let udp = UdpSocket::bind(("0.0.0.0", GUEST_UDP))?;
    udp.set_read_timeout(Some(Duration::from_millis(10)))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 2048];
    let mut served = 0;
    while Instant::now() < deadline {
        if let Ok((c, _)) = tcp.accept() {
            c.set_nonblocking(false)?;
            c.set_read_timeout(Some(Duration::from_secs(30)))?;
            std::thread::spawn(move || {
                if let Ok((len, sha)) = recv_hash(&c, 64 << 20) {
                    let _ = (&c).write_all(format!("{len} {sha}").as_bytes());
                    let _ = c.shutdown(Shutdown::Write);
                }
            });
            served += 1;
        }
        if let Ok((n, from)) = udp.recv_from(&mut buf) {
            if &buf[..n] == b"quit" {
                break;
            }
            let mut reply = b"guest:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            udp.send_to(&reply, from)?;
        }
    }
    println!("TCP_SERVED={served}");
    Ok(())
}

struct Api {
    reader: BufReader<UnixStream>,
    stream: UnixStream,
}

impl Api {
    fn connect(path: &Path, limit: Duration) -> Api {
        let deadline = Instant::now() + limit;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => panic!("{}: {e}", path.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Api {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    fn request(&mut self, request: Value) -> Value {
        let mut line = request.to_string();
        line.push('\n');
        self.stream.write_all(line.as_bytes()).unwrap();
        let mut reply = String::new();
        self.reader.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
    }

    fn add(&mut self, proto: &str, guest_port: u16) -> (u64, u16) {
        let reply = self.request(json!({"execute": "add_hostfwd", "arguments": {
            "proto": proto, "host_addr": "127.0.0.1", "host_port": 0, "guest_port": guest_port}}));
        let id = reply["return"]["id"].as_u64();
        let port = reply["return"]["host_port"].as_u64();
        match (id, port) {
            (Some(id), Some(port)) if port > 0 => (id, port as u16),
            _ => panic!("add_hostfwd {proto}: {reply}"),
        }
    }
}

/// A connection through the forward that reached the guest's server: a short exchange
/// answered by the guest (libslirp accepts on the host before the guest listens, then
/// closes: retried, bounded).
fn guest_answers(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = (&c).write_all(b"probe");
            let _ = c.shutdown(Shutdown::Write);
            let mut reply = String::new();
            let _ = (&c).read_to_string(&mut reply);
            if reply.starts_with("5 ") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn api_path() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bsh-e2e-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("api.sock")
}

#[test]
fn forwards_added_used_and_removed_while_a_kernel_guest_runs() {
    let test = "forwards_added_used_and_removed_while_a_kernel_guest_runs";
    if !root_or_skip(test) {
        return;
    }
    let path = api_path();
    let mut cmd = frontend_with_role(
        &[
            "--open",
            "--helper-arg",
            "--api",
            "--helper-arg",
            path.to_str().unwrap(),
        ],
        "api-serve",
    );
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let mut api = Api::connect(&path, Duration::from_secs(20));
    let (tcp_id, tcp_port) = api.add("tcp", GUEST_TCP);
    let (udp_id, udp_port) = api.add("udp", GUEST_UDP);
    let listed = api.request(json!({"execute": "list_hostfwd"}));
    assert_eq!(listed["entries"], listed["return"]["entries"]);
    assert_eq!(
        listed["return"],
        json!({"entries": [
            {"id": tcp_id, "proto": "tcp", "host_addr": "127.0.0.1", "host_port": tcp_port,
             "guest_addr": "10.0.2.15", "guest_port": GUEST_TCP},
            {"id": udp_id, "proto": "udp", "host_addr": "127.0.0.1", "host_port": udp_port,
             "guest_addr": "10.0.2.15", "guest_port": GUEST_UDP},
        ]})
    );
    assert!(
        guest_answers(tcp_port, Duration::from_secs(30)),
        "the guest never answered through the new forward"
    );

    // The long connection: half, the forward removed, the other half.
    let long = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    long.set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut pattern = Pattern::new(SEED);
    let mut data = vec![0u8; LEN];
    pattern.fill(&mut data);
    (&long).write_all(&data[..LEN / 2]).unwrap();
    let conns = api.request(json!({"execute": "connections"}));
    assert!(
        conns["return"]["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "ESTABLISHED" && r["dst_port"] == GUEST_TCP),
        "{conns}"
    );
    assert_eq!(
        api.request(json!({"execute": "remove_hostfwd", "arguments": {"id": tcp_id}})),
        json!({"return": {}})
    );
    (&long).write_all(&data[LEN / 2..]).unwrap();
    long.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    (&long).read_to_string(&mut answer).unwrap();
    assert_eq!(answer, format!("{LEN} {}", expected_hash(SEED, LEN)));
    // The port is closed.
    let refused = TcpStream::connect(("127.0.0.1", tcp_port));
    assert!(refused.is_err(), "port {tcp_port} still accepts");

    // UDP through its forward, then removed: the port is free again.
    let reply = udp_ping_until_reply(
        (Ipv4Addr::LOCALHOST, udp_port).into(),
        Duration::from_secs(20),
    );
    assert_eq!(reply, b"guest:ping");
    assert_eq!(
        api.request(json!({"execute": "remove_hostfwd", "arguments": {"id": udp_id}})),
        json!({"return": {}})
    );
    UdpSocket::bind(("127.0.0.1", udp_port)).expect("the removed UDP port is free");
    assert_eq!(
        api.request(json!({"execute": "list_hostfwd"}))["return"],
        json!({"entries": []})
    );
    let stats = api.request(json!({"execute": "stats"}));
    assert_eq!(stats["return"]["sandbox_refused"], 0, "{stats}");
    drop(api);

    let out = wait_output(child, Duration::from_secs(90));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        field(&out, "TCP_SERVED").is_some_and(|n| n.parse::<u32>().unwrap() >= 2),
        "{}",
        text(&out)
    );
    // The helper is gone with the frontend, and so is its socket file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::symlink_metadata(&path).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "socket file left"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
