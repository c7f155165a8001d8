//! `#[repr(C)]` mirror of `libslirp.h` up to `SlirpConfig.version = 4` (libslirp >= 4.7.0); an
//! older libslirp reads only the fields of the version it is given.
//!
//! Layouts are checked against `../shared/docs/bhyve-protocol.md` section 5 in the tests below.
//! C `bool` is `_Bool`, which Rust's `bool` matches.

use std::ffi::{c_char, c_int, c_void};

/// Opaque libslirp instance.
#[repr(C)]
pub struct Slirp {
    _private: [u8; 0],
}

pub(crate) const SLIRP_POLL_IN: c_int = 1 << 0;
pub(crate) const SLIRP_POLL_OUT: c_int = 1 << 1;
pub(crate) const SLIRP_POLL_PRI: c_int = 1 << 2;
pub(crate) const SLIRP_POLL_ERR: c_int = 1 << 3;
pub(crate) const SLIRP_POLL_HUP: c_int = 1 << 4;

pub(crate) const SLIRP_HOSTFWD_UDP: c_int = 1;

/// `SLIRP_HOSTFWD_V6ONLY`: an IPv6 wildcard forward takes IPv6 only (IPV6_V6ONLY).
pub(crate) const SLIRP_HOSTFWD_V6ONLY: c_int = 2;

/// `SlirpTimerId`: a C enum, int-sized.
pub type SlirpTimerId = c_int;

pub type SlirpWriteCb =
    unsafe extern "C" fn(buf: *const c_void, len: usize, opaque: *mut c_void) -> isize;
pub type SlirpTimerCb = unsafe extern "C" fn(opaque: *mut c_void);
pub type SlirpAddPollCb =
    unsafe extern "C" fn(fd: c_int, events: c_int, opaque: *mut c_void) -> c_int;
pub type SlirpGetREventsCb = unsafe extern "C" fn(idx: c_int, opaque: *mut c_void) -> c_int;

#[repr(C)]
pub struct SlirpConfig {
    pub version: u32,
    pub restricted: c_int,
    pub in_enabled: bool,
    pub vnetwork: libc::in_addr,
    pub vnetmask: libc::in_addr,
    pub vhost: libc::in_addr,
    pub in6_enabled: bool,
    pub vprefix_addr6: libc::in6_addr,
    pub vprefix_len: u8,
    pub vhost6: libc::in6_addr,
    pub vhostname: *const c_char,
    pub tftp_server_name: *const c_char,
    pub tftp_path: *const c_char,
    pub bootfile: *const c_char,
    pub vdhcp_start: libc::in_addr,
    pub vnameserver: libc::in_addr,
    pub vnameserver6: libc::in6_addr,
    pub vdnssearch: *const *const c_char,
    pub vdomainname: *const c_char,
    pub if_mtu: usize,
    pub if_mru: usize,
    pub disable_host_loopback: bool,
    pub enable_emu: bool,
    // version 2
    pub outbound_addr: *const libc::sockaddr_in,
    pub outbound_addr6: *const libc::sockaddr_in6,
    // version 3
    pub disable_dns: bool,
    // version 4
    pub disable_dhcp: bool,
}

/// Callback table. The two version-6 slots are kept (and left empty) so that a newer libslirp
/// reading past the version-4 part finds NULLs, not our neighbouring memory.
#[repr(C)]
pub struct SlirpCb {
    pub send_packet: Option<SlirpWriteCb>,
    pub guest_error: Option<unsafe extern "C" fn(msg: *const c_char, opaque: *mut c_void)>,
    pub clock_get_ns: Option<unsafe extern "C" fn(opaque: *mut c_void) -> i64>,
    pub timer_new: Option<
        unsafe extern "C" fn(
            cb: SlirpTimerCb,
            cb_opaque: *mut c_void,
            opaque: *mut c_void,
        ) -> *mut c_void,
    >,
    pub timer_free: Option<unsafe extern "C" fn(timer: *mut c_void, opaque: *mut c_void)>,
    pub timer_mod:
        Option<unsafe extern "C" fn(timer: *mut c_void, expire_time: i64, opaque: *mut c_void)>,
    pub register_poll_fd: Option<unsafe extern "C" fn(fd: c_int, opaque: *mut c_void)>,
    pub unregister_poll_fd: Option<unsafe extern "C" fn(fd: c_int, opaque: *mut c_void)>,
    pub notify: Option<unsafe extern "C" fn(opaque: *mut c_void)>,
    // version 4
    pub init_completed: Option<unsafe extern "C" fn(slirp: *mut Slirp, opaque: *mut c_void)>,
    pub timer_new_opaque: Option<
        unsafe extern "C" fn(
            id: SlirpTimerId,
            cb_opaque: *mut c_void,
            opaque: *mut c_void,
        ) -> *mut c_void,
    >,
    // version 6 (libslirp 4.9): unused with version 4, kept NULL.
    pub register_poll_socket: Option<unsafe extern "C" fn(fd: c_int, opaque: *mut c_void)>,
    pub unregister_poll_socket: Option<unsafe extern "C" fn(fd: c_int, opaque: *mut c_void)>,
}

pub type SlirpNewFn = unsafe extern "C" fn(
    cfg: *const SlirpConfig,
    cb: *const SlirpCb,
    opaque: *mut c_void,
) -> *mut Slirp;
pub type SlirpCleanupFn = unsafe extern "C" fn(slirp: *mut Slirp);
pub type SlirpInputFn = unsafe extern "C" fn(slirp: *mut Slirp, pkt: *const u8, len: c_int);
pub type SlirpPollfdsFillFn = unsafe extern "C" fn(
    slirp: *mut Slirp,
    timeout: *mut u32,
    add_poll: SlirpAddPollCb,
    opaque: *mut c_void,
);
pub type SlirpPollfdsPollFn = unsafe extern "C" fn(
    slirp: *mut Slirp,
    select_error: c_int,
    get_revents: SlirpGetREventsCb,
    opaque: *mut c_void,
);
pub type SlirpHandleTimerFn =
    unsafe extern "C" fn(slirp: *mut Slirp, id: SlirpTimerId, cb_opaque: *mut c_void);
pub type SlirpAddHostxfwdFn = unsafe extern "C" fn(
    slirp: *mut Slirp,
    haddr: *const libc::sockaddr,
    haddrlen: libc::socklen_t,
    gaddr: *const libc::sockaddr,
    gaddrlen: libc::socklen_t,
    flags: c_int,
) -> c_int;
pub type SlirpVersionStringFn = unsafe extern "C" fn() -> *const c_char;
pub type SlirpRemoveHostxfwdFn = unsafe extern "C" fn(
    slirp: *mut Slirp,
    haddr: *const libc::sockaddr,
    haddrlen: libc::socklen_t,
    flags: c_int,
) -> c_int;
/// Returns a string the caller frees with GLib's `g_free`.
pub type SlirpConnectionInfoFn = unsafe extern "C" fn(slirp: *mut Slirp) -> *mut c_char;
/// GLib's `g_free`, reached through libslirp's own dependency on GLib.
pub type GFreeFn = unsafe extern "C" fn(mem: *mut c_void);

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn slirp_config_matches_libslirp_h_lp64() {
        assert_eq!(offset_of!(SlirpConfig, version), 0);
        assert_eq!(offset_of!(SlirpConfig, restricted), 4);
        assert_eq!(offset_of!(SlirpConfig, in_enabled), 8);
        assert_eq!(offset_of!(SlirpConfig, vnetwork), 12);
        assert_eq!(offset_of!(SlirpConfig, vnetmask), 16);
        assert_eq!(offset_of!(SlirpConfig, vhost), 20);
        assert_eq!(offset_of!(SlirpConfig, in6_enabled), 24);
        assert_eq!(offset_of!(SlirpConfig, vprefix_addr6), 28);
        assert_eq!(offset_of!(SlirpConfig, vprefix_len), 44);
        assert_eq!(offset_of!(SlirpConfig, vhost6), 48);
        assert_eq!(offset_of!(SlirpConfig, vhostname), 64);
        assert_eq!(offset_of!(SlirpConfig, tftp_server_name), 72);
        assert_eq!(offset_of!(SlirpConfig, tftp_path), 80);
        assert_eq!(offset_of!(SlirpConfig, bootfile), 88);
        assert_eq!(offset_of!(SlirpConfig, vdhcp_start), 96);
        assert_eq!(offset_of!(SlirpConfig, vnameserver), 100);
        assert_eq!(offset_of!(SlirpConfig, vnameserver6), 104);
        assert_eq!(offset_of!(SlirpConfig, vdnssearch), 120);
        assert_eq!(offset_of!(SlirpConfig, vdomainname), 128);
        assert_eq!(offset_of!(SlirpConfig, if_mtu), 136);
        assert_eq!(offset_of!(SlirpConfig, if_mru), 144);
        assert_eq!(offset_of!(SlirpConfig, disable_host_loopback), 152);
        assert_eq!(offset_of!(SlirpConfig, enable_emu), 153);
        assert_eq!(offset_of!(SlirpConfig, outbound_addr), 160);
        assert_eq!(offset_of!(SlirpConfig, outbound_addr6), 168);
        assert_eq!(offset_of!(SlirpConfig, disable_dns), 176);
        assert_eq!(offset_of!(SlirpConfig, disable_dhcp), 177);
        assert_eq!(size_of::<SlirpConfig>(), 184);
        assert_eq!(size_of::<bool>(), 1);
    }

    #[test]
    fn slirp_cb_has_one_pointer_slot_per_callback() {
        assert_eq!(offset_of!(SlirpCb, send_packet), 0);
        assert_eq!(offset_of!(SlirpCb, guest_error), 8);
        assert_eq!(offset_of!(SlirpCb, clock_get_ns), 16);
        assert_eq!(offset_of!(SlirpCb, timer_new), 24);
        assert_eq!(offset_of!(SlirpCb, timer_free), 32);
        assert_eq!(offset_of!(SlirpCb, timer_mod), 40);
        assert_eq!(offset_of!(SlirpCb, register_poll_fd), 48);
        assert_eq!(offset_of!(SlirpCb, unregister_poll_fd), 56);
        assert_eq!(offset_of!(SlirpCb, notify), 64);
        assert_eq!(offset_of!(SlirpCb, init_completed), 72);
        assert_eq!(offset_of!(SlirpCb, timer_new_opaque), 80);
        assert_eq!(offset_of!(SlirpCb, register_poll_socket), 88);
        assert_eq!(offset_of!(SlirpCb, unregister_poll_socket), 96);
        assert_eq!(size_of::<SlirpCb>(), 104);
    }
}
