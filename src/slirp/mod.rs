//! libslirp: the dlopen'd API table, the `#[repr(C)]` structs, the callback trampolines and a
//! safe handle.
//!
//! Owns: every call into libslirp and every call back out of it. Re-entrancy rule (design
//! note 4): libslirp calls `send_packet` from inside `slirp_input` and `slirp_pollfds_poll`, and
//! `add_poll` from inside `slirp_pollfds_fill`. The state those callbacks touch (the host, `H`)
//! lives behind a stable raw pointer; the loop reaches it only through [`Stack::host`], a
//! `&mut self` borrow, so no reference to it can be alive while libslirp runs.
//! A panic in a callback is caught at the boundary, never unwound into C.

pub mod api;
pub mod ffi;
pub mod timers;

use api::SlirpApi;
use ffi::*;
use nix::sys::socket::{SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage};
use std::ffi::CString;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use timers::{TimerTarget, Timers};

use crate::config::{HostFwdRule, Network, Proto};
use crate::poller::{Readiness, Slot};

/// What the helper provides to libslirp. Each method runs inside a libslirp call.
pub trait SlirpHost {
    /// A frame for the guest. Returns its length, or a negative value on error.
    fn send_packet(&mut self, frame: &[u8]) -> isize;
    /// libslirp reports guest misbehaviour.
    fn guest_error(&mut self, msg: &str);
    /// `slirp_pollfds_fill`: watch `fd` for `events`; the slot libslirp keeps (`None`: the
    /// fd cannot be watched).
    fn add_poll(&mut self, fd: RawFd, events: Readiness) -> Option<Slot>;
    /// `slirp_pollfds_poll`: readiness of a slot `add_poll` returned.
    fn get_revents(&mut self, slot: Slot) -> Readiness;
    /// Hint: libslirp opened `fd`.
    fn register_poll_fd(&mut self, fd: RawFd);
    /// Hint: libslirp is about to close `fd`.
    fn unregister_poll_fd(&mut self, fd: RawFd);
    /// Wake the loop: a socket buffer has room again.
    fn notify(&mut self);
    /// libslirp's timers.
    fn timers(&mut self) -> &mut Timers;
}

/// What varies per VM.
#[derive(Debug, Clone, Copy)]
pub struct StackConfig<'a> {
    /// `restricted = !open`: no outbound connections, DHCP without router and DNS.
    pub restricted: bool,
    /// Guest MTU: `if_mru`, and `if_mtu` unless IPv6 is on ([`if_mtu`]); the C helper left
    /// `if_mru` at 1500, which capped the TCP MSS at 1460 whatever the MTU.
    pub mtu: usize,
    /// Addresses, DHCP and DNS options, IPv6: checked against the loaded libslirp here.
    pub network: &'a Network,
}

/// libslirp accepts `if_mtu`/`if_mru` of 0 or 68..=65521 (`slirp_new`).
pub(crate) const MTU_RANGE: std::ops::RangeInclusive<usize> = 68..=65521;

/// libslirp's `if_mtu` when IPv6 is on: the largest MTU the helper offers.
pub const IPV6_IF_MTU: usize = 65520;

/// The `if_mtu` libslirp is given for a guest MTU of `mtu`. IPv4 only: the guest MTU, as the C
/// helper. With IPv6 on: [`IPV6_IF_MTU`] (or the guest MTU when larger), because libslirp's
/// `ip6_input` (4.7 to 4.9, `ip6_input.c:50`) refuses every IPv6 packet longer than `if_mtu`
/// with a Packet Too Big, which would make coalesced guest segments and reassembled guest
/// datagrams impossible. `if_mru` stays the guest MTU, so the MSS libslirp offers and uses
/// (`tcp_mss`: MIN(if_mtu, if_mru) - 40/60) does not change; what libslirp no longer
/// fragments at the guest MTU (`ip_output.c`), the TX ring does (`frames::fragment`).
pub fn if_mtu(mtu: usize, ipv6: bool) -> usize {
    if ipv6 {
        mtu.max(IPV6_IF_MTU)
    } else {
        mtu
    }
}

static CALLBACK_PANICKED: AtomicBool = AtomicBool::new(false);

/// Whether a callback panicked (and the panic was stopped at the C boundary). The loop checks
/// this after each libslirp call and ends the process: the host state may be inconsistent.
pub fn callback_panicked() -> bool {
    CALLBACK_PANICKED.load(Ordering::Relaxed)
}

/// Run `f` on the host behind `opaque`, catching any panic.
///
/// # Safety
/// `opaque` must be the `*mut H` that [`Stack::new`] gave libslirp, and no other reference to
/// the host may be alive (guaranteed by `Stack`'s `&mut self` methods).
unsafe fn with_host<H: SlirpHost, R>(
    opaque: *mut c_void,
    neutral: R,
    f: impl FnOnce(&mut H) -> R,
) -> R {
    // SAFETY: per this function's contract, `opaque` is a live, unaliased `*mut H`.
    let host = unsafe { &mut *(opaque as *mut H) };
    match catch_unwind(AssertUnwindSafe(|| f(host))) {
        Ok(r) => r,
        Err(_) => {
            CALLBACK_PANICKED.store(true, Ordering::Relaxed);
            neutral
        }
    }
}

unsafe extern "C" fn cb_send_packet<H: SlirpHost>(
    buf: *const c_void,
    len: usize,
    opaque: *mut c_void,
) -> isize {
    if buf.is_null() {
        return -1;
    }
    // SAFETY: libslirp passes a buffer of `len` readable bytes, valid for this call.
    let frame = unsafe { std::slice::from_raw_parts(buf as *const u8, len) };
    // SAFETY: `opaque` is our host pointer (see `with_host`).
    unsafe { with_host::<H, _>(opaque, -1, |h| h.send_packet(frame)) }
}

unsafe extern "C" fn cb_guest_error<H: SlirpHost>(msg: *const c_char, opaque: *mut c_void) {
    if msg.is_null() {
        return;
    }
    // SAFETY: libslirp passes a NUL-terminated message valid for this call.
    let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
    // SAFETY: `opaque` is our host pointer.
    unsafe { with_host::<H, _>(opaque, (), |h| h.guest_error(&msg)) }
}

unsafe extern "C" fn cb_clock_get_ns(_opaque: *mut c_void) -> i64 {
    crate::sys::monotonic_ns()
}

unsafe extern "C" fn cb_timer_new<H: SlirpHost>(
    cb: SlirpTimerCb,
    cb_opaque: *mut c_void,
    opaque: *mut c_void,
) -> *mut c_void {
    let target = TimerTarget::Callback { cb, cb_opaque };
    // SAFETY: `opaque` is our host pointer.
    unsafe { with_host::<H, _>(opaque, std::ptr::null_mut(), |h| h.timers().create(target)) }
}

unsafe extern "C" fn cb_timer_new_opaque<H: SlirpHost>(
    id: SlirpTimerId,
    cb_opaque: *mut c_void,
    opaque: *mut c_void,
) -> *mut c_void {
    let target = TimerTarget::Opaque { id, cb_opaque };
    // SAFETY: `opaque` is our host pointer.
    unsafe { with_host::<H, _>(opaque, std::ptr::null_mut(), |h| h.timers().create(target)) }
}

unsafe extern "C" fn cb_timer_free<H: SlirpHost>(timer: *mut c_void, opaque: *mut c_void) {
    // SAFETY: `opaque` is our host pointer.
    unsafe { with_host::<H, _>(opaque, (), |h| h.timers().free(timer)) }
}

unsafe extern "C" fn cb_timer_mod<H: SlirpHost>(
    timer: *mut c_void,
    expire_ms: i64,
    opaque: *mut c_void,
) {
    // SAFETY: `opaque` is our host pointer.
    unsafe { with_host::<H, _>(opaque, (), |h| h.timers().arm(timer, expire_ms)) }
}

unsafe extern "C" fn cb_register_poll_fd<H: SlirpHost>(fd: c_int, opaque: *mut c_void) {
    // SAFETY: `opaque` is our host pointer.
    unsafe { with_host::<H, _>(opaque, (), |h| h.register_poll_fd(fd)) }
}

unsafe extern "C" fn cb_unregister_poll_fd<H: SlirpHost>(fd: c_int, opaque: *mut c_void) {
    // SAFETY: `opaque` is our host pointer.
    unsafe { with_host::<H, _>(opaque, (), |h| h.unregister_poll_fd(fd)) }
}

unsafe extern "C" fn cb_notify<H: SlirpHost>(opaque: *mut c_void) {
    // SAFETY: `opaque` is our host pointer.
    unsafe { with_host::<H, _>(opaque, (), |h| h.notify()) }
}

unsafe extern "C" fn cb_init_completed(_slirp: *mut Slirp, _opaque: *mut c_void) {}

/// libslirp's `SLIRP_POLL_*` bit for each of the poller's readiness bits. The only place that
/// knows both: the poller speaks its own type, libslirp its ints. RDHUP has no libslirp bit
/// (only the frontend socket is watched for it).
const SLIRP_POLL_BITS: [(Readiness, c_int); 5] = [
    (Readiness::IN, SLIRP_POLL_IN),
    (Readiness::OUT, SLIRP_POLL_OUT),
    (Readiness::PRI, SLIRP_POLL_PRI),
    (Readiness::ERR, SLIRP_POLL_ERR),
    (Readiness::HUP, SLIRP_POLL_HUP),
];

/// libslirp's `events` as the poller's readiness (unknown bits ignored).
pub(crate) fn readiness_from_slirp(events: c_int) -> Readiness {
    SLIRP_POLL_BITS
        .iter()
        .filter(|(_, bit)| events & bit != 0)
        .fold(Readiness::EMPTY, |out, (r, _)| out | *r)
}

/// The poller's readiness as libslirp's `revents`.
pub(crate) fn readiness_to_slirp(readiness: Readiness) -> c_int {
    SLIRP_POLL_BITS
        .iter()
        .filter(|(r, _)| readiness.contains(*r))
        .fold(0, |out, (_, bit)| out | bit)
}

unsafe extern "C" fn cb_add_poll<H: SlirpHost>(
    fd: c_int,
    events: c_int,
    opaque: *mut c_void,
) -> c_int {
    let events = readiness_from_slirp(events);
    // libslirp's convention: the index it stores, -1 when the fd is not watched.
    let index = |slot: Option<Slot>| slot.and_then(|s| c_int::try_from(s.index()).ok());
    // SAFETY: `opaque` is our host pointer.
    unsafe { with_host::<H, _>(opaque, -1, |h| index(h.add_poll(fd, events)).unwrap_or(-1)) }
}

unsafe extern "C" fn cb_get_revents<H: SlirpHost>(idx: c_int, opaque: *mut c_void) -> c_int {
    // A negative index is one `add_poll` refused: nothing to report.
    let Some(slot) = Slot::from_index(i64::from(idx)) else {
        return 0;
    };
    // SAFETY: `opaque` is our host pointer.
    unsafe { with_host::<H, _>(opaque, 0, |h| readiness_to_slirp(h.get_revents(slot))) }
}

fn in_addr(addr: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from(addr).to_be(),
    }
}

fn in6_addr(addr: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: addr.octets(),
    }
}

/// What `SlirpConfig` points to. libslirp copies the strings in `slirp_new` but keeps the
/// outbound addresses' pointers, so all of it lives as long as the instance.
struct ConfigData {
    hostname: Option<CString>,
    domain_name: Option<CString>,
    dns_search: Vec<CString>,
    /// `dns_search`'s pointers, NULL-terminated.
    dns_search_ptrs: Vec<*const c_char>,
    outbound: Option<Box<libc::sockaddr_in>>,
    outbound6: Option<Box<libc::sockaddr_in6>>,
}

impl ConfigData {
    fn new(network: &Network) -> ConfigData {
        // The names were checked (letters, digits, '-', '.'), so they hold no NUL.
        let c = |s: &String| CString::new(s.as_str()).ok();
        let dns_search: Vec<CString> = network.dns_search.iter().filter_map(c).collect();
        let mut dns_search_ptrs: Vec<*const c_char> =
            dns_search.iter().map(|s| s.as_ptr()).collect();
        dns_search_ptrs.push(std::ptr::null());
        ConfigData {
            hostname: network.hostname.as_ref().and_then(c),
            domain_name: network.domain_name.as_ref().and_then(c),
            dns_search,
            dns_search_ptrs,
            outbound: network.outbound.map(|a| {
                let sin: SockaddrIn = SocketAddrV4::new(a, 0).into();
                Box::new(*sin.as_ref())
            }),
            outbound6: network.outbound6.map(|a| {
                let sin6: SockaddrIn6 = SocketAddrV6::new(a, 0, 0, 0).into();
                Box::new(*sin6.as_ref())
            }),
        }
    }
}

/// One libslirp instance and the host its callbacks reach.
pub struct Stack<H: SlirpHost> {
    api: SlirpApi,
    slirp: NonNull<Slirp>,
    /// From `Box::into_raw`: stable for libslirp's lifetime, freed after `slirp_cleanup`.
    host: NonNull<H>,
    /// libslirp keeps a pointer to the callback table, so it lives as long as the instance.
    _callbacks: Box<SlirpCb>,
    /// Timers due this iteration; kept to avoid an allocation per iteration.
    due: Vec<TimerTarget>,
    _config_data: ConfigData,
}

impl<H: SlirpHost> Stack<H> {
    /// `slirp_new` with the helper's fixed network and `config`.
    pub fn new(api: SlirpApi, config: StackConfig, host: H) -> io::Result<Stack<H>> {
        if !MTU_RANGE.contains(&config.mtu) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "MTU {} outside libslirp's range {}..={}",
                    config.mtu,
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                ),
            ));
        }
        let network = config.network;
        // The caller has checked the network against this version (`Network::check_libslirp`);
        // a field the version does not read would be ignored.
        let loaded = api.version_number();
        let data = ConfigData::new(network);
        // SAFETY: all-zero is a valid SlirpConfig (null pointers, false, 0) before we fill it.
        let mut cfg: SlirpConfig = unsafe { std::mem::zeroed() };
        // Never a version this libslirp does not read (slirp_new refuses it). Without
        // slirp_handle_timer it cannot be 4, whatever the version string says.
        cfg.version = match api.handle_timer {
            Some(_) => loaded.config_version(),
            None => loaded.config_version().min(3),
        };
        cfg.restricted = config.restricted as c_int;
        cfg.in_enabled = true;
        cfg.vnetwork = in_addr(network.net.addr);
        cfg.vnetmask = in_addr(network.net.mask());
        cfg.vhost = in_addr(network.host);
        cfg.vdhcp_start = in_addr(network.dhcp_start);
        cfg.vnameserver = in_addr(network.dns);
        cfg.if_mtu = if_mtu(config.mtu, network.ipv6.is_some());
        cfg.if_mru = config.mtu;
        cfg.enable_emu = false;
        cfg.disable_host_loopback = !network.host_loopback;
        if let Some(v6) = &network.ipv6 {
            cfg.in6_enabled = true;
            cfg.vprefix_addr6 = in6_addr(v6.net6.addr);
            cfg.vprefix_len = v6.net6.len;
            cfg.vhost6 = in6_addr(v6.host6);
            cfg.vnameserver6 = in6_addr(v6.dns6);
        }
        if let Some(name) = &data.hostname {
            cfg.vhostname = name.as_ptr();
        }
        if let Some(name) = &data.domain_name {
            cfg.vdomainname = name.as_ptr();
        }
        if !data.dns_search.is_empty() {
            cfg.vdnssearch = data.dns_search_ptrs.as_ptr();
        }
        if let Some(sin) = &data.outbound {
            cfg.outbound_addr = &**sin;
        }
        if let Some(sin6) = &data.outbound6 {
            cfg.outbound_addr6 = &**sin6;
        }
        cfg.disable_dns = !network.dns_proxy;
        cfg.disable_dhcp = !network.dhcp;

        let callbacks = Box::new(SlirpCb {
            send_packet: Some(cb_send_packet::<H>),
            guest_error: Some(cb_guest_error::<H>),
            clock_get_ns: Some(cb_clock_get_ns),
            timer_new: Some(cb_timer_new::<H>),
            timer_free: Some(cb_timer_free::<H>),
            timer_mod: Some(cb_timer_mod::<H>),
            register_poll_fd: Some(cb_register_poll_fd::<H>),
            unregister_poll_fd: Some(cb_unregister_poll_fd::<H>),
            notify: Some(cb_notify::<H>),
            init_completed: Some(cb_init_completed),
            timer_new_opaque: Some(cb_timer_new_opaque::<H>),
            register_poll_socket: None,
            unregister_poll_socket: None,
        });
        let host = NonNull::from(Box::leak(Box::new(host)));
        // SAFETY: cfg and callbacks are valid for cfg.version; the callback table, the host and
        // the config's data outlive the instance (all freed only after slirp_cleanup in Drop).
        let raw = unsafe { (api.new)(&cfg, &*callbacks, host.as_ptr() as *mut c_void) };
        let Some(slirp) = NonNull::new(raw) else {
            // SAFETY: libslirp refused the config and holds no pointer to the host.
            drop(unsafe { Box::from_raw(host.as_ptr()) });
            return Err(io::Error::other("slirp_new failed"));
        };
        Ok(Stack {
            api,
            slirp,
            host,
            _callbacks: callbacks,
            due: Vec::new(),
            _config_data: data,
        })
    }

    /// The host, for the loop's own work between libslirp calls. The `&mut self` borrow
    /// guarantees no libslirp call (and so no callback) runs while the reference is alive.
    pub fn host(&mut self) -> &mut H {
        // SAFETY: the host is alive until Drop, and `&mut self` excludes every other access,
        // callbacks included (they only run inside the other `&mut self` methods).
        unsafe { self.host.as_mut() }
    }

    /// libslirp's version string.
    pub fn version(&self) -> String {
        self.api.version()
    }

    /// `slirp_pollfds_fill`: libslirp calls `add_poll` for each of its sockets and lowers
    /// `timeout_ms`.
    pub(crate) fn pollfds_fill(&mut self, timeout_ms: &mut u32) {
        // SAFETY: the instance is alive; the host pointer is the one libslirp was given.
        unsafe {
            (self.api.pollfds_fill)(
                self.slirp.as_ptr(),
                timeout_ms,
                cb_add_poll::<H>,
                self.host.as_ptr() as *mut c_void,
            )
        };
    }

    /// `slirp_pollfds_poll`: timers, then `get_revents` for each socket `add_poll` saw.
    pub(crate) fn pollfds_poll(&mut self, select_error: bool) {
        // SAFETY: as in pollfds_fill.
        unsafe {
            (self.api.pollfds_poll)(
                self.slirp.as_ptr(),
                select_error as c_int,
                cb_get_revents::<H>,
                self.host.as_ptr() as *mut c_void,
            )
        };
    }

    /// `slirp_input`: one frame from the guest. `frame` must not live inside the host.
    pub fn input(&mut self, frame: &[u8]) {
        // Frames are bounded by the RX slot (< 2^31), so the length fits in an int.
        let len = c_int::try_from(frame.len()).unwrap_or(c_int::MAX);
        // SAFETY: the instance is alive and `frame` is readable for `len` bytes.
        unsafe { (self.api.input)(self.slirp.as_ptr(), frame.as_ptr(), len) };
    }

    /// Fire every timer due at `now_ms`.
    pub(crate) fn run_due_timers(&mut self, now_ms: i64) {
        let mut due = std::mem::take(&mut self.due);
        self.host().timers().take_due(now_ms, &mut due);
        for target in due.drain(..) {
            match target {
                // Only version 4 creates these, and it is passed only with slirp_handle_timer.
                TimerTarget::Opaque { id, cb_opaque } => {
                    if let Some(handle_timer) = self.api.handle_timer {
                        // SAFETY: id and cb_opaque are what libslirp gave timer_new_opaque.
                        unsafe { handle_timer(self.slirp.as_ptr(), id, cb_opaque) }
                    }
                }
                // SAFETY: cb and cb_opaque are what libslirp gave timer_new.
                TimerTarget::Callback { cb, cb_opaque } => unsafe { cb(cb_opaque) },
            }
        }
        self.due = due;
    }

    /// Install one hostfwd rule (`slirp_add_hostxfwd`): libslirp binds the host socket now.
    /// An IPv6 host address listens for IPv6 only, so an IPv4 rule may share its port.
    /// Returns the port it is bound to: the rule's, or the one the kernel chose for port 0
    /// (0 if that could not be read).
    pub fn add_hostfwd(&mut self, rule: &HostFwdRule) -> io::Result<u16> {
        let host = SockaddrStorage::from(SocketAddr::new(rule.host_addr, rule.host_port));
        let guest = SockaddrStorage::from(SocketAddr::new(rule.guest_addr, rule.guest_port));
        // libslirp keeps the socket to itself (and tells us nothing of a TCP listener), but
        // `tcpx_listen`/`udpx_listen` open exactly one socket for a forward, and socket(2)
        // takes the lowest free descriptor: the one free now, in this thread.
        let lowest_free = crate::sys::lowest_free_fd();
        // SAFETY: both are valid sockaddr_in or sockaddr_in6 of the given lengths.
        let rc = unsafe {
            (self.api.add_hostxfwd)(
                self.slirp.as_ptr(),
                host.as_ptr(),
                host.len(),
                guest.as_ptr(),
                guest.len(),
                hostfwd_flags(rule),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if rule.host_port != 0 {
            return Ok(rule.host_port);
        }
        // Checked, not assumed: the descriptor must be bound to the rule's address. The
        // forward is installed either way; 0 says its port could not be read.
        let bound = lowest_free
            .and_then(|fd| nix::sys::socket::getsockname::<SockaddrStorage>(fd).ok())
            .and_then(|a| match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(v4), _) => Some(SocketAddr::from(SocketAddrV4::from(*v4))),
                (_, Some(v6)) => Some(SocketAddr::from(SocketAddrV6::from(*v6))),
                _ => None,
            })
            .filter(|a| a.ip() == rule.host_addr && a.port() != 0);
        Ok(bound.map_or(0, |a| a.port()))
    }

    /// Remove the forward bound to `rule`'s host address and port (`slirp_remove_hostxfwd`):
    /// its listener closes; connections it accepted live on.
    pub fn remove_hostfwd(&mut self, rule: &HostFwdRule) -> io::Result<()> {
        let host = SockaddrStorage::from(SocketAddr::new(rule.host_addr, rule.host_port));
        // SAFETY: a valid sockaddr_in or sockaddr_in6 of the given length for this call.
        let rc = unsafe {
            (self.api.remove_hostxfwd)(
                self.slirp.as_ptr(),
                host.as_ptr(),
                host.len(),
                hostfwd_flags(rule),
            )
        };
        if rc != 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "libslirp has no forward bound there",
            ));
        }
        Ok(())
    }

    /// `slirp_connection_info`: libslirp's table of its sockets, as text.
    pub fn connection_info(&mut self) -> String {
        // SAFETY: the instance is alive; the call only reads libslirp's socket lists.
        let text = unsafe { (self.api.connection_info)(self.slirp.as_ptr()) };
        if text.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated (a GString's buffer), ours until freed below.
        let out = unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: allocated by GLib for the caller; freed once, with GLib's allocator.
        unsafe { (self.api.g_free)(text.cast()) };
        out
    }
}

fn hostfwd_flags(rule: &HostFwdRule) -> c_int {
    let proto = match rule.proto {
        Proto::Udp => SLIRP_HOSTFWD_UDP,
        Proto::Tcp => 0,
    };
    // An IPv6 host address takes IPv6 only, so an IPv4 rule may share the port.
    let v6only = if rule.host_addr.is_ipv6() {
        SLIRP_HOSTFWD_V6ONLY
    } else {
        0
    };
    proto | v6only
}

impl<H: SlirpHost> Drop for Stack<H> {
    fn drop(&mut self) {
        // SAFETY: the instance is alive; cleanup may still call back into the host, which is
        // freed only afterwards.
        unsafe { (self.api.cleanup)(self.slirp.as_ptr()) };
        // SAFETY: the pointer came from Box::leak in `new`, and libslirp no longer holds it.
        drop(unsafe { Box::from_raw(self.host.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_maps_to_libslirps_bits_one_for_one() {
        for (r, bit) in SLIRP_POLL_BITS {
            assert_eq!(readiness_to_slirp(r), bit);
            assert_eq!(readiness_from_slirp(bit), r);
        }
        let all = SLIRP_POLL_IN | SLIRP_POLL_OUT | SLIRP_POLL_PRI | SLIRP_POLL_ERR | SLIRP_POLL_HUP;
        assert_eq!(readiness_to_slirp(readiness_from_slirp(all)), all);
        // RDHUP is the poller's own (the frontend's); libslirp never sees it.
        assert_eq!(
            readiness_to_slirp(Readiness::RDHUP | Readiness::IN),
            SLIRP_POLL_IN
        );
        assert_eq!(readiness_from_slirp(1 << 12), Readiness::EMPTY);
    }
}
