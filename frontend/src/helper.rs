//! The helper process, started exactly as bhyve starts it (`net_backend_slirp.c`): a
//! SOCK_SEQPACKET | SOCK_NONBLOCK socketpair, the helper's end inherited as `-S <fd>`, then
//! the configuration as one libnv nvlist with bhyve's keys in bhyve's order.
//!
//! Owns: the config message, the child process and its lifetime (stopped by pid, never by
//! name), and the helper's stderr, forwarded to ours line by line. Must never: start the
//! helper anywhere but in the host namespace (it reaches the host's 127.0.0.1), or keep the
//! helper's end of the socket open in this process.

use super::os;
use slirp_helper::config::nvlist::{encode, ByteOrder, Nvlist, Value};
use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The settings bhyve's device config node would hold for `-s N,virtio-net,slirp,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperConfig {
    pub mtu: u32,
    pub open: bool,
    /// bhyve grammar, `;`-separated.
    pub hostfwd: Option<String>,
    pub vmname: String,
    /// Any other keys, `(key, value)`, in order, as `-s …,slirp,KEY=VALUE` would add them.
    pub keys: Vec<(String, String)>,
}

/// The nvlist bhyve sends: the device node's pairs in insertion order (`device`, `backend`,
/// then the options: every value a STRING, a bare `open` is `"true"`), `vmname` appended, and
/// `mtui` (NUMBER) as newer bhyve adds it.
pub fn config_message(cfg: &HelperConfig) -> Vec<u8> {
    let s = |v: &str| Value::String(v.as_bytes().to_vec());
    let mut nv = Nvlist::new();
    nv.push("device", s("virtio-net"));
    nv.push("backend", s("slirp"));
    nv.push("mtu", s(&cfg.mtu.to_string()));
    if cfg.open {
        nv.push("open", s("true"));
    }
    if let Some(rules) = &cfg.hostfwd {
        nv.push("hostfwd", s(rules));
    }
    for (key, value) in &cfg.keys {
        nv.push(key.as_str(), s(value));
    }
    nv.push("vmname", s(&cfg.vmname));
    nv.push("mtui", Value::Number(cfg.mtu as u64));
    encode(&nv, ByteOrder::Little)
}

/// The helper next to this program's executable (`target/<profile>/` in a build tree, like
/// `/usr/libexec` holds both under bhyve).
pub fn default_path() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| io::Error::new(e.kind(), format!("locating this program: {e}")))?;
    Ok(exe.with_file_name("bhyve-slirp-helper"))
}

/// A running helper and our end of its socket.
pub struct Helper {
    child: Child,
    /// The thread forwarding the helper's stderr; joined once the helper is reaped, so that
    /// everything the helper said is out before the frontend says why it stopped.
    log: Option<JoinHandle<()>>,
}

/// What ends the helper's exit line, `<why it ended>; rx_frames=… …` (the helper's `main`).
const COUNTERS: &str = "; rx_frames=";
/// The ends of a helper run that are no news: the frontend hung up, or a signal stopped it.
const NORMAL_ENDS: [&str; 2] = ["bhyve closed the connection", "terminated by signal"];
/// The helper's start-up line, `bhyve-slirp-helper: bhyve-slirp-helper V with libslirp V (path)`:
/// no news either on every run.
const STARTUP: &str = "bhyve-slirp-helper: bhyve-slirp-helper ";

/// What of one helper stderr line reaches the user. The counters at exit are ~1000
/// characters on every run: only shown with `-v` (`exit_counters`), as is the start-up line
/// with the versions. Without it, a normal end is not shown at all and an error keeps its message without the counters. The counters
/// line the helper prints on SIGUSR1 starts with `rx_frames=` and always goes through: the
/// user asked for it.
pub fn shown_line(line: &str, exit_counters: bool) -> Option<&str> {
    if exit_counters {
        return Some(line);
    }
    if line.starts_with(STARTUP) && line.contains(" with libslirp ") {
        return None;
    }
    match line.find(COUNTERS) {
        Some(at) if NORMAL_ENDS.iter().any(|end| line[..at].ends_with(end)) => None,
        Some(at) => Some(&line[..at]),
        None => Some(line),
    }
}

/// Copy the helper's stderr to ours through [`shown_line`] until the helper's end closes.
fn forward_log(from: ChildStderr, exit_counters: bool) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("helper-log".into())
        .spawn(move || {
            let mut from = io::BufReader::new(from);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match from.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&raw);
                let line = text.trim_end_matches('\n');
                if let Some(shown) = shown_line(line, exit_counters) {
                    // Nowhere to report a failed write to our own stderr.
                    let _ = writeln!(io::stderr().lock(), "{shown}");
                }
            }
        })
}

/// Start `path -S <fd> [extra...]` with the config sent, returning the helper and the
/// frontend's end of the socket (non-blocking, CLOEXEC). `exit_counters`: let the helper's
/// counters at exit through to our stderr (see [`shown_line`]).
pub fn spawn(
    path: &Path,
    extra: &[OsString],
    cfg: &HelperConfig,
    exit_counters: bool,
) -> io::Result<(Helper, OwnedFd)> {
    let (ours, theirs) =
        os::seqpacket_pair().map_err(|e| io::Error::new(e.kind(), format!("socketpair: {e}")))?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(path);
    cmd.arg("-S").arg(fd.to_string()).args(extra);
    cmd.stderr(Stdio::piped());
    os::child_inherits(&mut cmd, theirs.as_fd());
    let mut child = cmd.spawn().map_err(|e| {
        io::Error::new(e.kind(), format!("starting helper {}: {e}", path.display()))
    })?;
    // bhyve's spawn closes bhyve's copy of the helper's end: the helper must be its only owner
    // so that either side sees the other's exit as a hangup.
    drop(theirs);
    let log = child
        .stderr
        .take()
        .map(|from| forward_log(from, exit_counters))
        .transpose();
    let mut helper = Helper { child, log: None };
    helper.log = log.map_err(|e| io::Error::new(e.kind(), format!("helper-log thread: {e}")))?;
    let msg = config_message(cfg);
    // One record, as nvlist_send's single write; the socket is empty, so it cannot block.
    let sent = nix::sys::socket::send(
        ours.as_raw_fd(),
        &msg,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    );
    match sent {
        Ok(n) if n == msg.len() => Ok((helper, ours)),
        Ok(n) => Err(io::Error::other(format!(
            "sending the config to the helper: {n} of {} bytes went",
            msg.len()
        ))),
        Err(e) => Err(os::errno(
            e,
            &format!("sending the config to the helper (pid {})", helper.pid()),
        )),
    }
}

/// "exited with status N" / "was killed by signal N".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!(
            "was killed by signal {sig} ({})",
            nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str())
                .unwrap_or("?")
        ),
        _ => format!("ended ({status})"),
    }
}

impl Helper {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `grace` for the helper to exit on its own (it does once its socket hangs
    /// up), then SIGKILL it by pid as bhyve does, and reap it.
    pub fn finish(mut self, grace: Duration) -> io::Result<ExitStatus> {
        let status = match self.wait_exit(grace)? {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                self.child.wait()?
            }
        };
        self.join_log();
        Ok(status)
    }

    /// The exit status if the helper exits within `limit` (reaped, and all it printed is
    /// out); `None` while it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.join_log();
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for the log thread: the helper is reaped, so its stderr is at EOF (it starts no
    /// processes that could hold the pipe open).
    fn join_log(&mut self) {
        if let Some(log) = self.log.take() {
            let _ = log.join();
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Only reached on error paths: never leave a helper behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.join_log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slirp_helper::config::nvlist::decode;

    #[test]
    fn config_has_bhyves_keys_in_bhyves_order() {
        let cfg = HelperConfig {
            mtu: 1500,
            open: true,
            hostfwd: Some("tcp::2222-:22".into()),
            vmname: "vm0".into(),
            keys: vec![("ipv6".into(), "on".into())],
        };
        let nv = decode(&config_message(&cfg), 0).unwrap();
        let names: Vec<&[u8]> = nv.pairs().iter().map(|(n, _)| n.as_slice()).collect();
        let expected: [&[u8]; 8] = [
            b"device", b"backend", b"mtu", b"open", b"hostfwd", b"ipv6", b"vmname", b"mtui",
        ];
        assert_eq!(names, expected);
        assert_eq!(nv.pairs()[2].1, Value::String(b"1500".to_vec()));
        assert_eq!(nv.pairs()[7].1, Value::Number(1500));
    }

    const EXIT: &str = "bhyve-slirp-helper: bhyve closed the connection; rx_frames=1 rx_bytes=60";

    #[test]
    fn exit_counters_only_with_verbose() {
        assert_eq!(shown_line(EXIT, true), Some(EXIT));
        assert_eq!(shown_line(EXIT, false), None);
        let signalled = "bhyve-slirp-helper: terminated by signal; rx_frames=0";
        assert_eq!(shown_line(signalled, false), None);
        let startup =
            "bhyve-slirp-helper: bhyve-slirp-helper 0.1.0 with libslirp 4.7.0 (libslirp.so.0)";
        assert_eq!(shown_line(startup, false), None);
        assert_eq!(shown_line(startup, true), Some(startup));
    }

    #[test]
    fn errors_keep_their_message_and_sigusr1_lines_go_through() {
        let fatal = "bhyve-slirp-helper: poll: Bad file descriptor; rx_frames=0 tx_frames=0";
        assert_eq!(
            shown_line(fatal, false),
            Some("bhyve-slirp-helper: poll: Bad file descriptor")
        );
        let asked = "bhyve-slirp-helper: rx_frames=5 rx_bytes=300";
        assert_eq!(shown_line(asked, false), Some(asked));
        let config = "bhyve-slirp-helper: configuration: mtu \"x\": not a number";
        assert_eq!(shown_line(config, false), Some(config));
    }

    #[test]
    fn restricted_config_has_no_open_key() {
        let cfg = HelperConfig {
            mtu: 9000,
            open: false,
            hostfwd: None,
            vmname: "x".into(),
            keys: Vec::new(),
        };
        let nv = decode(&config_message(&cfg), 0).unwrap();
        let names: Vec<&[u8]> = nv.pairs().iter().map(|(n, _)| n.as_slice()).collect();
        let expected: [&[u8]; 5] = [b"device", b"backend", b"mtu", b"vmname", b"mtui"];
        assert_eq!(names, expected);
    }
}
