//! The descriptor budget of libslirp's sockets, and the backoff of a listener that cannot
//! accept (issue #16, item 1).
//!
//! Every guest flow libslirp forwards is a host socket: one per guest TCP connection, one per
//! guest UDP source port (kept 240 s after its last datagram), one per ICMP echo to the
//! outside. Unbounded, a guest fills the descriptor table, and then every `accept()` of a
//! forward fails with EMFILE while the connection stays queued: the listener stays readable
//! and the loop spins at 100 % CPU with the forward dead.
//!
//! Two rules, applied above the poller so that every backend gets them:
//! - **Budget.** Guest frames that could open a new flow (TCP SYN, UDP other than DHCP and
//!   DHCPv6, ICMP or ICMPv6 echo request; IPv4 and IPv6 alike, see [`opens_flow`]) are
//!   dropped and counted while libslirp holds `budget` sockets or more.
//!   `budget = limit - max(limit / 4, 64)` for the soft RLIMIT_NOFILE `limit`: the rest is
//!   kept for connections accepted on forwards and the helper's own descriptors.
//! - **Backoff.** A listening socket reported readable in consecutive iterations while the
//!   process cannot get a descriptor has its read interest masked for 8 ms, doubling up to
//!   1 s per failure; the first successful probe ends the backoff.
//!
//! How libslirp's sockets are counted: a socket counts from the first `add_poll` (or
//! `register_poll_fd`) of its descriptor until `unregister_poll_fd`, which libslirp calls
//! before closing every TCP, UDP and ICMP socket. A socket libslirp creates inside
//! `slirp_input` is seen only at the next fill, so every frame passed since the fill counts
//! as one more socket until then: the budget is never overshot by a batch, and the per-frame
//! cost is one addition and one comparison unless the budget is nearly used.
//!
//! Owns: the per-descriptor bookkeeping above and its counters. Must never: allocate per
//! frame, or hide readiness from libslirp except a backed-off listener's POLLIN.

use crate::poller::Readiness;
use crate::stats::BudgetCounters;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::{icmp, ipv4, ipv6, protocol, tcp, udp};
use std::os::fd::RawFd;

/// Descriptors kept out of the guest's reach: a quarter of the limit, at least this many.
pub(crate) const MIN_RESERVE: u64 = 64;
/// First backoff period of a listener that cannot accept; doubles per failure.
const BACKOFF_FIRST_MS: i64 = 8;
/// Longest backoff period: a forward comes back within about a second of a descriptor
/// becoming free.
const BACKOFF_MAX_MS: i64 = 1000;
/// Limits above this (RLIM_INFINITY) are taken as this: the table is dense by descriptor.
const LIMIT_CAP: u64 = 1 << 20;

/// The budget of libslirp's sockets for a soft descriptor limit.
pub(crate) fn budget_for_limit(limit: u64) -> usize {
    let limit = limit.min(LIMIT_CAP);
    let reserve = (limit / 4).max(MIN_RESERVE);
    usize::try_from(limit.saturating_sub(reserve)).unwrap_or(0)
}

/// Whether libslirp would open a new host socket for this guest frame if it starts a flow
/// it does not know yet: a TCP SYN (without ACK), a UDP datagram other than DHCP or DHCPv6
/// (libslirp answers those itself, `bootp_input` and `dhcpv6_input`), an ICMP or ICMPv6
/// echo request. IPv6 like IPv4, from libslirp's `ip6_input`, `udp6_input` and
/// `icmp6_input`: neighbour discovery (RS, RA, NS, NA, redirect) goes to `ndp_input`, which
/// answers from no socket, so it never counts; an ICMPv6 echo request to an address other
/// than the host's opens no socket in 4.7 (it logs "external icmpv6 not supported yet")
/// but does from 4.8 on (`icmp6_send`, then a UDP socket), so it counts: the helper loads
/// whichever libslirp is installed. DHCP/DHCPv6 and TFTP are answered without a socket only
/// when sent to the host's (or the DHCP broadcast/multicast) address, which the budget does
/// not know: a DHCP-port datagram elsewhere opens a socket uncounted until the next fill,
/// and TFTP counts though it opens none. libslirp keys UDP on the guest's source
/// address and port and the helper cannot see which ones it holds, so at the budget every
/// such datagram is refused, those of existing UDP flows too. Frames libslirp drops before
/// its protocol handlers (not IPv4 or IPv6, a malformed IPv4 header, not version 6): false.
///
/// It must answer true for every frame libslirp could open a socket for, or the budget
/// leaks; a true for a frame libslirp then drops costs only a count. So it checks no more
/// than libslirp does: the IP header as `ip_input`/`ip6_input` check it (`wire`'s `dispatch`),
/// then the one transport field, read where libslirp reads it without its length checks
/// (libslirp's `udp_input` acts on a UDP length field below 8, or on a header lying in the
/// Ethernet padding).
pub(crate) fn opens_flow(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::parse(frame) else {
        return false;
    };
    let (dispatch, bootp_port, echo_request) = match eth.ethertype() {
        ethernet::ETHERTYPE_IPV4 => (
            ipv4::dispatch(eth.payload()),
            udp::BOOTP_SERVER_PORT,
            (protocol::ICMP, icmp::V4_ECHO_REQUEST),
        ),
        ethernet::ETHERTYPE_IPV6 => (
            ipv6::dispatch(eth.payload()),
            udp::DHCPV6_SERVER_PORT,
            (protocol::ICMPV6, icmp::V6_ECHO_REQUEST),
        ),
        _ => return false,
    };
    let Ok((proto, upper)) = dispatch else {
        return false;
    };
    match proto {
        protocol::TCP => tcp::claimed_flags(upper)
            .is_some_and(|f| f & (tcp::flags::SYN | tcp::flags::ACK) == tcp::flags::SYN),
        protocol::UDP => udp::claimed_dst_port(upper).is_some_and(|port| port != bootp_port),
        p if p == echo_request.0 => icmp::claimed_type(upper) == Some(echo_request.1),
        _ => false,
    }
}

/// Is this descriptor a listening socket? Asked once per socket, and only of one reported
/// readable in consecutive iterations.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Listening {
    #[default]
    Unknown,
    Yes,
    No,
}

#[derive(Debug, Default, Clone, Copy)]
struct FdState {
    /// libslirp holds a socket with this number (counted in `FlowBudget::held`).
    held: bool,
    listening: Listening,
    /// Last iteration whose answer to libslirp had POLLIN for this descriptor.
    readable_in: u32,
    /// Consecutive iterations with POLLIN, ending at `readable_in`.
    readable_streak: u32,
    /// Probes in a row that found no descriptor free.
    failures: u32,
    /// Read interest masked until then (monotonic ms).
    masked_until_ms: i64,
}

/// See the module comment.
#[derive(Debug)]
pub struct FlowBudget {
    budget: usize,
    /// Dense by descriptor number; grown at a new high-water mark only.
    fds: Vec<FdState>,
    /// Sockets libslirp holds (entries with `held`).
    held: usize,
    /// Frames handed to libslirp since the last fill, each a socket it may have opened.
    passed_since_fill: usize,
    iteration: u32,
    now_ms: i64,
    next_unmask_ms: Option<i64>,
    pub counters: BudgetCounters,
}

impl FlowBudget {
    /// For the soft descriptor limit `limit`.
    pub fn new(limit: u64) -> FlowBudget {
        FlowBudget {
            budget: budget_for_limit(limit),
            fds: Vec::new(),
            held: 0,
            passed_since_fill: 0,
            iteration: 0,
            now_ms: 0,
            next_unmask_ms: None,
            counters: BudgetCounters::default(),
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Sockets libslirp holds, as far as its callbacks have shown them.
    pub fn held(&self) -> usize {
        self.held
    }

    /// When the earliest backed-off listener must be watched again: the loop's wait must
    /// not outlast it.
    pub(crate) fn next_unmask_ms(&self) -> Option<i64> {
        self.next_unmask_ms
    }

    /// Before `slirp_pollfds_fill`.
    pub fn begin_fill(&mut self, now_ms: i64) {
        self.iteration = self.iteration.wrapping_add(1);
        self.now_ms = now_ms;
        self.passed_since_fill = 0;
        self.next_unmask_ms = None;
    }

    fn state(&mut self, fd: RawFd) -> Option<&mut FdState> {
        let i = usize::try_from(fd).ok()?;
        if i >= self.fds.len() {
            self.grow(i);
        }
        self.fds.get_mut(i)
    }

    #[cold]
    fn grow(&mut self, i: usize) {
        self.fds.resize(i + 1, FdState::default());
    }

    /// libslirp holds a socket numbered `fd` (first sight since its last close: a new one).
    fn hold(&mut self, fd: RawFd) -> Option<&mut FdState> {
        let st = self.state(fd)?;
        let new = !st.held;
        if new {
            *st = FdState {
                held: true,
                ..FdState::default()
            };
        }
        self.held += usize::from(new);
        self.fds.get_mut(fd as usize)
    }

    /// `add_poll`: the events to ask the poller for (a backed-off listener loses POLLIN).
    pub fn add(&mut self, fd: RawFd, events: Readiness) -> Readiness {
        let now = self.now_ms;
        let Some(st) = self.hold(fd) else {
            return events;
        };
        if st.masked_until_ms <= now {
            return events;
        }
        let until = st.masked_until_ms;
        self.next_unmask_ms = Some(self.next_unmask_ms.map_or(until, |t| t.min(until)));
        events & !Readiness::IN
    }

    /// `get_revents` answered `revents` for `fd`: a listener readable again while no
    /// descriptor is free is backed off.
    pub fn answered(&mut self, fd: RawFd, revents: Readiness) {
        if !revents.contains(Readiness::IN) {
            return;
        }
        let (iteration, now) = (self.iteration, self.now_ms);
        let Some(st) = usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)) else {
            return;
        };
        if st.readable_in == iteration {
            return;
        }
        st.readable_streak = if st.readable_in == iteration.wrapping_sub(1) {
            st.readable_streak + 1
        } else {
            1
        };
        st.readable_in = iteration;
        // One readable iteration is normal; a second in a row is where a failing accept
        // starts to spin (a listener already backing off is probed at once).
        if st.readable_streak < 2 && st.failures == 0 {
            return;
        }
        if st.listening == Listening::Unknown {
            st.listening = if crate::sys::is_listening(fd) {
                Listening::Yes
            } else {
                Listening::No
            };
        }
        if st.listening == Listening::No {
            return;
        }
        // The listener itself is the descriptor to duplicate: libslirp holds it open while it
        // asks about it.
        if crate::sys::descriptors_exhausted(fd) {
            st.failures = st.failures.saturating_add(1);
            let shift = (st.failures - 1).min(10);
            let period = (BACKOFF_FIRST_MS << shift).min(BACKOFF_MAX_MS);
            st.masked_until_ms = now.saturating_add(period);
            self.counters.accept_backoffs += 1;
        } else {
            st.failures = 0;
        }
    }

    /// `register_poll_fd`: libslirp opened `fd`.
    pub fn opened(&mut self, fd: RawFd) {
        self.hold(fd);
    }

    /// `unregister_poll_fd`: libslirp is about to close `fd`.
    pub fn closing(&mut self, fd: RawFd) {
        let Some(st) = usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)) else {
            return;
        };
        if st.held {
            *st = FdState::default();
            self.held -= 1;
        }
    }

    /// Whether to hand this guest frame to libslirp. Below the budget: one addition and one
    /// comparison.
    #[inline]
    pub(crate) fn admit(&mut self, frame: &[u8]) -> bool {
        if self.held + self.passed_since_fill < self.budget {
            self.passed_since_fill += 1;
            return true;
        }
        self.admit_at_budget(frame)
    }

    #[cold]
    fn admit_at_budget(&mut self, frame: &[u8]) -> bool {
        if opens_flow(frame) {
            self.counters.flows_refused += 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Frames are written byte by byte here, independently of `wire`. Total lengths are set:
    // libslirp's `ip_input` drops a header whose total length is below its own length.
    fn udp_frame(dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[23] = 17;
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn tcp_frame(flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[23] = 6;
        f[34 + 12] = 0x50;
        f[34 + 13] = flags;
        f
    }

    /// An IPv6 frame: `next` header, then `upper` (payload length set to its length).
    fn ipv6_frame(next: u8, upper: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&(upper.len() as u16).to_be_bytes());
        f[20] = next;
        f[21] = 64;
        f.extend_from_slice(upper);
        f
    }

    #[test]
    fn budget_keeps_a_quarter_or_64() {
        assert_eq!(budget_for_limit(4096), 3072);
        assert_eq!(budget_for_limit(1024), 768);
        assert_eq!(budget_for_limit(128), 64);
        assert_eq!(budget_for_limit(32), 0);
        assert_eq!(budget_for_limit(u64::MAX), 786_432);
    }

    #[test]
    fn flow_openers_are_syn_udp_and_echo() {
        assert!(opens_flow(&tcp_frame(0x02)));
        assert!(!opens_flow(&tcp_frame(0x12)), "SYN-ACK");
        assert!(!opens_flow(&tcp_frame(0x10)), "ACK");
        assert!(opens_flow(&udp_frame(53)));
        assert!(!opens_flow(&udp_frame(67)), "DHCP is answered by libslirp");
        let mut echo = udp_frame(0);
        echo[23] = 1;
        echo[34] = 8;
        assert!(opens_flow(&echo));
        echo[34] = 0;
        assert!(!opens_flow(&echo), "echo reply");
        assert!(!opens_flow(&[0u8; 10]), "runt");
        assert!(!opens_flow(&udp_frame(53)[..36]), "truncated");
        let mut arp = udp_frame(53);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!opens_flow(&arp));
    }

    #[test]
    fn ipv6_flow_openers_are_syn_udp_and_echo() {
        let mut tcp = [0u8; 20];
        tcp[12] = 0x50;
        tcp[13] = 0x02;
        assert!(opens_flow(&ipv6_frame(6, &tcp)), "SYN");
        tcp[13] = 0x12;
        assert!(!opens_flow(&ipv6_frame(6, &tcp)), "SYN-ACK");
        let mut udp = [0u8; 8];
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        udp[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert!(opens_flow(&ipv6_frame(17, &udp)));
        udp[2..4].copy_from_slice(&547u16.to_be_bytes());
        assert!(!opens_flow(&ipv6_frame(17, &udp)), "DHCPv6");
        assert!(opens_flow(&ipv6_frame(58, &[128, 0, 0, 0])), "echo request");
        assert!(!opens_flow(&ipv6_frame(58, &[129, 0, 0, 0])), "echo reply");
        assert!(!opens_flow(&ipv6_frame(58, &[8, 0, 0, 0])), "ICMPv4's type");
        assert!(
            !opens_flow(&ipv6_frame(1, &[128, 0, 0, 0])),
            "ICMPv6's type"
        );
        // Neighbour discovery (RS, RA, NS, NA, redirect) and MLD: libslirp answers or
        // ignores them without a socket.
        for kind in [133u8, 134, 135, 136, 137, 130, 143] {
            assert!(
                !opens_flow(&ipv6_frame(58, &[kind, 0, 0, 0])),
                "ICMPv6 {kind}"
            );
        }
        // Extension headers before the upper layer: `ip6_input` dispatches on the fixed
        // header's next header only, and drops these.
        let mut hop_by_hop = vec![6, 0, 1, 4, 0, 0, 0, 0];
        hop_by_hop.extend_from_slice(&tcp);
        assert!(
            !opens_flow(&ipv6_frame(0, &hop_by_hop)),
            "hop-by-hop, then TCP"
        );
        let mut v4 = ipv6_frame(17, &[0, 1, 0, 53, 0, 8, 0, 0]);
        v4[14] = 0x40;
        assert!(!opens_flow(&v4), "version 4 in an IPv6 frame");
        assert!(!opens_flow(&ipv6_frame(17, &[])[..14 + 39]), "truncated");
    }

    /// What libslirp acts on without checking lengths counts: a view that checks more than
    /// libslirp does would let these open sockets beyond the budget.
    #[test]
    fn fields_libslirp_reads_unchecked_count() {
        // `udp_input` acts on a UDP length field below 8 (it trims to it) ...
        let mut short_len = udp_frame(53);
        short_len[38..40].copy_from_slice(&0u16.to_be_bytes());
        assert!(opens_flow(&short_len));
        // ... and reads the UDP header where the IP header ends, total length or not: in
        // the Ethernet padding of a datagram that is all header.
        let mut in_padding = udp_frame(53);
        in_padding[16..18].copy_from_slice(&20u16.to_be_bytes());
        assert!(opens_flow(&in_padding));
        // IPv6: a payload length beyond the bytes is counted though `ip6_input` drops it
        // (4.3.1 on, "Drop bogus IPv6 messages"; it counts the Ethernet padding as bytes
        // and older versions do not check): counting more costs only a count.
        let mut tcp = [0u8; 20];
        tcp[12] = 0xf0; // 60-byte header, 20 bytes of it present
        tcp[13] = 0x02;
        let mut long = ipv6_frame(6, &tcp);
        long[18..20].copy_from_slice(&60u16.to_be_bytes());
        assert!(opens_flow(&long));
        let mut udp = ipv6_frame(17, &[0, 1, 0, 53, 0, 8, 0, 0]);
        udp[18..20].copy_from_slice(&0u16.to_be_bytes());
        assert!(opens_flow(&udp), "UDP header in the padding");
    }

    /// Headers libslirp's `ip_input` drops never reach a socket: not counted.
    #[test]
    fn malformed_ipv4_headers_are_not_openers() {
        let mut v6 = udp_frame(53);
        v6[14] = 0x65;
        assert!(!opens_flow(&v6), "version 6 in an IPv4 frame");
        let mut ihl4 = udp_frame(53);
        ihl4[14] = 0x44;
        assert!(!opens_flow(&ihl4), "IHL 4");
        let mut beyond = udp_frame(53);
        beyond[16..18].copy_from_slice(&29u16.to_be_bytes());
        assert!(!opens_flow(&beyond), "total length beyond the frame");
        let mut below = udp_frame(53);
        below[16..18].copy_from_slice(&19u16.to_be_bytes());
        assert!(!opens_flow(&below), "total length below the header");
    }

    #[test]
    fn frames_since_the_fill_count_until_the_next_fill() {
        let mut b = FlowBudget::new(64 + 4);
        assert_eq!(b.budget(), 4);
        b.begin_fill(0);
        b.add(10, Readiness::IN);
        b.add(11, Readiness::IN);
        assert_eq!(b.held(), 2);
        let udp = udp_frame(53);
        assert!(b.admit(&udp));
        assert!(b.admit(&udp));
        assert!(!b.admit(&udp), "2 held + 2 passed reach the budget of 4");
        assert!(b.admit(&tcp_frame(0x10)), "data of existing flows passes");
        assert_eq!(b.counters.flows_refused, 1);
        b.closing(10);
        b.begin_fill(1);
        b.add(11, Readiness::IN);
        assert_eq!(b.held(), 1);
        assert!(b.admit(&udp));
    }

    #[test]
    fn register_and_unregister_count_once_per_socket() {
        let mut b = FlowBudget::new(1024);
        b.begin_fill(0);
        b.opened(7);
        b.add(7, Readiness::OUT);
        b.add(7, Readiness::IN);
        assert_eq!(b.held(), 1);
        b.closing(7);
        b.closing(7);
        assert_eq!(b.held(), 0);
    }
}
