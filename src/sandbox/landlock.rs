//! Landlock (Linux ≥ 5.13): the file-system half of the Linux sandbox. seccomp cannot see
//! paths, so open mode, which must read `/etc/resolv.conf` for the DNS proxy, is limited here
//! to reading exactly that file; restricted mode may touch no file at all.
//! Without Landlock (older kernel, or disabled) this is skipped and said once.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;
const ACCESS_FS_READ_FILE: u64 = 1 << 2;

/// Every file-system access right of a Landlock ABI version (so all of them are denied
/// unless a rule allows them).
fn handled_fs(abi: i64) -> u64 {
    let mut rights = (1u64 << 13) - 1; // ABI 1: EXECUTE … MAKE_SYM
    if abi >= 2 {
        rights |= 1 << 13; // REFER
    }
    if abi >= 3 {
        rights |= 1 << 14; // TRUNCATE
    }
    if abi >= 5 {
        rights |= 1 << 15; // IOCTL_DEV
    }
    rights
}

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Enforced,
    /// The kernel has no Landlock (ENOSYS/EOPNOTSUPP): only seccomp confines the helper.
    Unavailable,
}

/// Deny all file access except reading each of `readable` (missing files are skipped).
/// Needs `no_new_privs` first.
pub(crate) fn restrict_to(readable: &[&str]) -> io::Result<Outcome> {
    // SAFETY: the version query takes no pointers.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if abi < 1 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(Outcome::Unavailable),
            _ => Err(e),
        };
    }
    let attr = RulesetAttr {
        handled_access_fs: handled_fs(abi),
    };
    // SAFETY: `attr` is a valid ruleset attribute of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    for path in readable {
        let Ok(cpath) = CString::new(*path) else {
            continue;
        };
        // SAFETY: a NUL-terminated path; O_PATH opens no file contents.
        let file = unsafe { libc::open(cpath.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if file < 0 {
            continue;
        }
        // SAFETY: `open` just returned this descriptor.
        let file = unsafe { OwnedFd::from_raw_fd(file) };
        let rule = PathBeneathAttr {
            allowed_access: ACCESS_FS_READ_FILE,
            parent_fd: file.as_raw_fd(),
        };
        // SAFETY: `rule` is a valid path-beneath attribute for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset.as_raw_fd(),
                RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: a ruleset descriptor and no flags.
    let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Outcome::Enforced)
}
