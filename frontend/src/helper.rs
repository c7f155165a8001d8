//! The helper process, started exactly as bhyve starts it (`net_backend_slirp.c`): a
//! SOCK_SEQPACKET | SOCK_NONBLOCK socketpair, the helper's end inherited as `-S <fd>`, then
//! the configuration as one libnv nvlist with bhyve's keys in bhyve's order.
//!
//! Owns: the config message, the child process and its lifetime (stopped by pid, never by
//! name). Must never: start the helper anywhere but in the host namespace (it reaches the
//! host's 127.0.0.1), or keep the helper's end of the socket open in this process.

use super::os;
use slirp_helper::config::nvlist::{encode, ByteOrder, Nvlist, Value};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The settings bhyve's device config node would hold for `-s N,virtio-net,slirp,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperConfig {
    pub mtu: u32,
    pub open: bool,
    /// bhyve grammar, `;`-separated.
    pub hostfwd: Option<String>,
    pub vmname: String,
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
}

/// Start `path -S <fd> [extra...]` with the config sent, returning the helper and the
/// frontend's end of the socket (non-blocking, CLOEXEC).
pub fn spawn(path: &Path, extra: &[OsString], cfg: &HelperConfig) -> io::Result<(Helper, OwnedFd)> {
    let (ours, theirs) =
        os::seqpacket_pair().map_err(|e| io::Error::new(e.kind(), format!("socketpair: {e}")))?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(path);
    cmd.arg("-S").arg(fd.to_string()).args(extra);
    os::child_inherits(&mut cmd, theirs.as_fd());
    let child = cmd.spawn().map_err(|e| {
        io::Error::new(e.kind(), format!("starting helper {}: {e}", path.display()))
    })?;
    // bhyve's spawn closes bhyve's copy of the helper's end: the helper must be its only owner
    // so that either side sees the other's exit as a hangup.
    drop(theirs);
    let helper = Helper { child };
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
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.child.wait()
    }

    /// The exit status if the helper has already exited (reaps it).
    pub fn try_status(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Only reached on error paths: never leave a helper behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
        };
        let nv = decode(&config_message(&cfg), 0).unwrap();
        let names: Vec<&[u8]> = nv.pairs().iter().map(|(n, _)| n.as_slice()).collect();
        let expected: [&[u8]; 7] = [
            b"device", b"backend", b"mtu", b"open", b"hostfwd", b"vmname", b"mtui",
        ];
        assert_eq!(names, expected);
        assert_eq!(nv.pairs()[2].1, Value::String(b"1500".to_vec()));
        assert_eq!(nv.pairs()[6].1, Value::Number(1500));
    }

    #[test]
    fn restricted_config_has_no_open_key() {
        let cfg = HelperConfig {
            mtu: 9000,
            open: false,
            hostfwd: None,
            vmname: "x".into(),
        };
        let nv = decode(&config_message(&cfg), 0).unwrap();
        let names: Vec<&[u8]> = nv.pairs().iter().map(|(n, _)| n.as_slice()).collect();
        let expected: [&[u8]; 5] = [b"device", b"backend", b"mtu", b"vmname", b"mtui"];
        assert_eq!(names, expected);
    }
}
