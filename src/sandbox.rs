//! Privileges and confinement, entered after every file the helper needs is open (design
//! note 7): as root, become `nobody`; on FreeBSD, enter Capsicum when restricted, as the C
//! helper does (open mode needs to create outbound sockets by address, which Capsicum forbids).

use std::ffi::CString;
use std::fmt;

/// Why confinement failed: the helper refuses to run unconfined.
#[derive(Debug)]
pub enum SandboxError {
    /// The `nobody` user does not exist.
    NoNobody,
    /// A system call failed.
    Call { what: &'static str, err: nix::Error },
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SandboxError::NoNobody => write!(
                f,
                "cannot drop root privileges: user 'nobody' does not exist"
            ),
            SandboxError::Call { what, err } => write!(f, "cannot drop privileges: {what}: {err}"),
        }
    }
}

impl std::error::Error for SandboxError {}

/// When running as root, switch to `nobody` (supplementary groups, then gid, then uid).
pub fn drop_privileges() -> Result<(), SandboxError> {
    use nix::unistd::{geteuid, initgroups, setgid, setuid, User};
    if !geteuid().is_root() {
        return Ok(());
    }
    let call = |what| move |err| SandboxError::Call { what, err };
    let user = User::from_name("nobody")
        .map_err(call("getpwnam(nobody)"))?
        .ok_or(SandboxError::NoNobody)?;
    let name = CString::new(user.name.as_str()).map_err(|_| SandboxError::NoNobody)?;
    #[cfg(not(target_os = "macos"))]
    initgroups(&name, user.gid).map_err(call("initgroups"))?;
    #[cfg(target_os = "macos")]
    let _ = (&name, initgroups);
    setgid(user.gid).map_err(call("setgid"))?;
    setuid(user.uid).map_err(call("setuid"))?;
    Ok(())
}

/// Enter the platform's capability sandbox when the guest is restricted.
pub fn confine(restricted: bool) -> Result<(), SandboxError> {
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
    #[cfg(not(target_os = "freebsd"))]
    let _ = restricted;
    Ok(())
}
