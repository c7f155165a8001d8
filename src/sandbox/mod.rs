//! Privileges and confinement, entered after every file the helper needs is open (design
//! note 7): as root, become `nobody`; then
//! - FreeBSD: Capsicum when restricted, as the C helper does (open mode must create outbound
//!   sockets by address and read resolv.conf, which capability mode forbids);
//! - Linux: `no_new_privs`, Landlock (no file at all when restricted; only reading
//!   `/etc/resolv.conf` in open mode) and a seccomp allowlist (restricted: no new sockets,
//!   no connect/bind/listen, no open, no exec; open: outbound IPv4/IPv6 sockets too).
//!   With the control socket (`api`), both modes also get what `add_hostfwd` needs: IPv4/IPv6
//!   sockets, `bind` and `listen`; Landlock is unchanged (no file is opened for it).

#[cfg(target_os = "linux")]
mod landlock;
#[cfg(target_os = "linux")]
pub mod seccomp;

use std::ffi::CString;
use std::fmt;

/// Why confinement failed: the helper refuses to run unconfined.
#[derive(Debug)]
pub enum SandboxError {
    /// The `nobody` user does not exist.
    NoNobody,
    /// A system call failed.
    Call { what: &'static str, err: nix::Error },
    /// The Linux sandbox could not be entered.
    Confine {
        what: &'static str,
        err: std::io::Error,
    },
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SandboxError::NoNobody => write!(
                f,
                "cannot drop root privileges: user 'nobody' does not exist"
            ),
            SandboxError::Call { what, err } => write!(f, "cannot drop privileges: {what}: {err}"),
            SandboxError::Confine { what, err } => {
                write!(f, "cannot enter the sandbox: {what}: {err}")
            }
        }
    }
}

impl std::error::Error for SandboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SandboxError::NoNobody => None,
            SandboxError::Call { err, .. } => Some(err),
            SandboxError::Confine { err, .. } => Some(err),
        }
    }
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivilegeDrop {
    /// Not root: nothing to drop.
    NotRoot,
    /// Now `nobody`.
    Dropped,
    /// Root without the capabilities to change user (Linux): libvirt starts its slirp helper
    /// as uid 0 with every capability cleared, bounding set included (`virCommandClearCaps`).
    /// Such a process can change nothing about itself; it stays uid 0, without capabilities,
    /// and the Linux sandbox (`confine`) is what confines it, as it does every helper.
    NoCapability,
}

/// When running as root, switch to `nobody` (supplementary groups, then gid, then uid).
pub fn drop_privileges() -> Result<PrivilegeDrop, SandboxError> {
    use nix::unistd::{geteuid, initgroups, setgid, setuid, User};
    if !geteuid().is_root() {
        return Ok(PrivilegeDrop::NotRoot);
    }
    let call = |what| move |err| SandboxError::Call { what, err };
    let user = User::from_name("nobody")
        .map_err(call("getpwnam(nobody)"))?
        .ok_or(SandboxError::NoNobody)?;
    let name = CString::new(user.name.as_str()).map_err(|_| SandboxError::NoNobody)?;
    #[cfg(target_os = "linux")]
    match initgroups(&name, user.gid) {
        // Refused before anything changed: no CAP_SETGID (see `PrivilegeDrop::NoCapability`).
        Err(nix::Error::EPERM) => return Ok(PrivilegeDrop::NoCapability),
        other => other.map_err(call("initgroups"))?,
    }
    #[cfg(all(not(target_os = "linux"), not(target_os = "macos")))]
    initgroups(&name, user.gid).map_err(call("initgroups"))?;
    #[cfg(target_os = "macos")]
    let _ = (&name, initgroups);
    setgid(user.gid).map_err(call("setgid"))?;
    setuid(user.uid).map_err(call("setuid"))?;
    Ok(PrivilegeDrop::Dropped)
}

/// System calls the sandbox refused so far: the seccomp filter's count on Linux. Capsicum
/// refuses with ECAPMODE and nothing counts those, so 0 elsewhere.
#[cfg(target_os = "linux")]
pub fn refused() -> u32 {
    seccomp::refused()
}

/// See the Linux version: nothing counts Capsicum's refusals.
#[cfg(not(target_os = "linux"))]
pub fn refused() -> u32 {
    0
}

/// Files open mode reads after set-up: libslirp's DNS proxy re-reads the resolver list.
#[cfg(target_os = "linux")]
const OPEN_MODE_READS: &[&str] = &["/etc/resolv.conf"];

/// Enter the platform's sandbox (see the module comment); `api`: the control socket is on;
/// `uring`: the loop waits in `io_uring_enter` (the io_uring engine is in use, Linux).
pub fn confine(restricted: bool, api: bool, uring: bool) -> Result<(), SandboxError> {
    #[cfg(target_os = "freebsd")]
    if restricted {
        // SAFETY: cap_enter takes no arguments; afterwards only descriptor-relative calls work,
        // which is all the loop and a restricted libslirp use.
        if unsafe { libc::cap_enter() } != 0 {
            return Err(SandboxError::Call {
                what: "cap_enter",
                err: nix::Error::last(),
            });
        }
    }
    #[cfg(target_os = "linux")]
    {
        let confine = |what| move |err| SandboxError::Confine { what, err };
        // The C library reads the time zone lazily (syslog timestamps): do it while files open.
        crate::sys::load_time_zone();
        crate::sys::set_no_new_privs().map_err(confine("no_new_privs"))?;
        let readable = if restricted { &[][..] } else { OPEN_MODE_READS };
        match landlock::restrict_to(readable).map_err(confine("landlock"))? {
            landlock::Outcome::Enforced => {}
            landlock::Outcome::Unavailable => crate::diag::warn(
                "Landlock is not available: file access is confined by seccomp only",
            ),
        }
        let mode = if restricted {
            seccomp::Mode::Restricted
        } else {
            seccomp::Mode::Open
        };
        seccomp::enter(mode, api, uring).map_err(confine("seccomp"))?;
    }
    // Capsicum has no room for binding by address: `api` changes nothing there (the control
    // socket refuses `add_hostfwd` in restricted mode instead).
    #[cfg(not(target_os = "linux"))]
    let _ = (api, uring);
    #[cfg(not(any(target_os = "freebsd", target_os = "linux")))]
    let _ = restricted;
    Ok(())
}
