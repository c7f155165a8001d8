//! The Linux sandbox (Landlock + seccomp): after entry, what the mode forbids fails (with a
//! log line for seccomp refusals) and what the loop needs still works. Each probe runs in a
//! fresh process (this test binary re-run with a role), since entering is irreversible.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::net::UnixStream;
use std::process::Command;

const ROLE: &str = "SANDBOX_TEST_ROLE";
/// Set: the role runs as under bhyve, stderr on /dev/null and diagnostics to this syslog socket.
const SYSLOG: &str = "SLIRP_HELPER_SYSLOG_SOCKET";

/// What a probe saw: "ok" or the errno name.
fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => match e.raw_os_error() {
            Some(libc::EPERM) => "EPERM".into(),
            Some(libc::EACCES) => "EACCES".into(),
            _ => format!("{e}"),
        },
    }
}

fn probe(name: &str, pair: &mut (UnixStream, UnixStream)) -> String {
    match name {
        // execve itself (a spawn would fail earlier, at clone: refused quietly).
        "exec" => {
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            // SAFETY: a NUL-terminated path and a NULL-terminated argv; returns only on failure.
            unsafe { libc::execv(c"/bin/true".as_ptr(), argv.as_ptr()) };
            outcome::<()>(Err(std::io::Error::last_os_error()))
        }
        "spawn" => outcome(Command::new("/bin/true").status()),
        "passwd" => outcome(std::fs::File::open("/etc/passwd")),
        "resolv" => outcome(std::fs::read("/etc/resolv.conf")),
        "inet-socket" => outcome(std::net::UdpSocket::bind("127.0.0.1:0")),
        // What the control socket's add_hostfwd makes libslirp do: socket, bind, listen.
        "tcp-listen" => outcome(std::net::TcpListener::bind("127.0.0.1:0")),
        // An outbound connection (nobody listens on port 1: allowed means refused by TCP).
        "tcp-connect" => outcome(std::net::TcpStream::connect("127.0.0.1:1")),
        "unix-socket" => outcome(UnixStream::connect("/dev/log").or_else(
            |e| match e.raw_os_error() {
                // Refused by the filter before the path is even looked at.
                Some(libc::EPERM) => Err(e),
                // Allowed to try: the socket was created (a missing /dev/log is not the point).
                _ => Ok(UnixStream::pair()?.0),
            },
        )),
        "existing-fds" => {
            // The loop's own work: I/O on descriptors made before entry.
            let (a, b) = pair;
            outcome((|| {
                a.write_all(b"ping")?;
                let mut buf = [0u8; 4];
                b.read_exact(&mut buf)?;
                Ok(buf)
            })())
        }
        // What the stats line reports as `sandbox_refused`.
        "refused" => slirp_helper::sandbox::refused().to_string(),
        other => panic!("unknown probe {other}"),
    }
}

#[test]
fn role_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let (mode, probes) = role.split_once(':').unwrap();
    // Descriptors the probes need are made before entry, as the helper's are.
    let mut pair = UnixStream::pair().unwrap();
    if std::env::var_os(SYSLOG).is_some() {
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        // SAFETY: dup2 onto descriptor 2; `null` stays open for the call.
        assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), 2) }, 2);
        slirp_helper::diag::init();
    }
    slirp_helper::sandbox::confine(mode.starts_with("restricted"), mode.ends_with("+api"))
        .expect("entering the sandbox");
    let results: Vec<String> = probes
        .split(',')
        .map(|p| format!("{p}={}", probe(p, &mut pair)))
        .collect();
    println!("RESULTS {}", results.join(" "));
    std::process::exit(0);
}

/// Run `probes` in a sandboxed child: `probe=outcome` pairs and the child's stderr.
fn run(mode: &str, probes: &str) -> (String, String) {
    run_with(mode, probes, &[])
}

fn run_with(mode: &str, probes: &str, env: &[(&str, &str)]) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .envs(env.iter().copied())
        .args([
            "role_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, format!("{mode}:{probes}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{mode}: child failed\n{stdout}\n{stderr}"
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULTS "))
        .unwrap_or_else(|| panic!("no results\n{stdout}\n{stderr}"))
        .to_string();
    (line, stderr)
}

#[test]
fn restricted_mode_forbids_exec_files_and_new_sockets() {
    let (results, stderr) = run(
        "restricted",
        "exec,passwd,resolv,inet-socket,unix-socket,existing-fds",
    );
    assert_eq!(
        results,
        "exec=EPERM passwd=EPERM resolv=EPERM inet-socket=EPERM unix-socket=EPERM existing-fds=ok"
    );
    // The refusal is said, naming the call (59 = execve on x86_64).
    assert!(stderr.contains("sandbox: refused system call"), "{stderr}");
    #[cfg(target_arch = "x86_64")]
    assert!(stderr.contains("refused system call 59 "), "{stderr}");
}

#[test]
fn refusals_are_counted_for_the_stats_line() {
    let (results, stderr) = run("restricted", "refused,exec,refused,exec,refused");
    assert_eq!(
        results, "refused=0 exec=EPERM refused=1 exec=EPERM refused=2",
        "{stderr}"
    );
}

#[test]
fn open_mode_allows_outbound_sockets_and_resolv_conf_only() {
    let (results, stderr) = run(
        "open",
        "exec,spawn,passwd,inet-socket,unix-socket,existing-fds",
    );
    // /etc/passwd: seccomp lets openat through in open mode, Landlock refuses the path.
    let landlock = std::path::Path::new("/sys/kernel/security/landlock").exists()
        || results.contains("passwd=EACCES");
    let passwd = if landlock { "EACCES" } else { "ok" };
    assert_eq!(
        results,
        format!(
            "exec=EPERM spawn=EPERM passwd={passwd} inet-socket=ok unix-socket=EPERM \
             existing-fds=ok"
        ),
        "{stderr}"
    );
    if std::path::Path::new("/etc/resolv.conf").exists() {
        let (results, stderr) = run("open", "resolv");
        assert_eq!(results, "resolv=ok", "{stderr}");
    }
}

/// The control socket (`api`) widens each mode by what `add_hostfwd` needs (IPv4/IPv6
/// sockets, bind, listen) and nothing else: no outbound connection in restricted mode, no
/// UNIX socket, no file, no exec.
#[test]
fn api_widens_each_mode_by_bind_and_listen_only() {
    let (results, stderr) = run(
        "restricted+api",
        "exec,passwd,tcp-listen,inet-socket,tcp-connect,unix-socket,existing-fds",
    );
    assert_eq!(
        results,
        "exec=EPERM passwd=EPERM tcp-listen=ok inet-socket=ok tcp-connect=EPERM \
         unix-socket=EPERM existing-fds=ok",
        "{stderr}"
    );
    let (results, stderr) = run("restricted", "tcp-listen");
    assert_eq!(results, "tcp-listen=EPERM", "{stderr}");
    // Open mode had bind (outbound sockets bind too) but not listen.
    let (results, stderr) = run("open", "tcp-listen");
    assert_eq!(results, "tcp-listen=EPERM", "{stderr}");
    let (results, stderr) = run("open+api", "exec,tcp-listen,unix-socket,existing-fds");
    assert_eq!(
        results, "exec=EPERM tcp-listen=ok unix-socket=EPERM existing-fds=ok",
        "{stderr}"
    );
}

#[test]
fn refusals_reach_syslog_when_stderr_is_dev_null() {
    let path = std::env::temp_dir().join(format!("slirp-sandbox-syslog-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let syslog = UnixDatagram::bind(&path).unwrap();
    syslog
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let (results, stderr) = run_with("restricted", "exec", &[(SYSLOG, path.to_str().unwrap())]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(results, "exec=EPERM");
    assert!(stderr.is_empty(), "{stderr}");
    let mut buf = [0u8; 512];
    let n = syslog.recv(&mut buf).expect("a line on the syslog socket");
    let line = String::from_utf8_lossy(&buf[..n]);
    // <daemon (3) * 8 + warning (4)>, tag and pid, the refusal.
    assert!(line.starts_with("<28>bhyve-slirp-helper["), "{line}");
    assert!(line.contains("]: sandbox: refused system call"), "{line}");
}
