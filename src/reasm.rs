//! Reassembly of guest IPv4 and IPv6 fragments, in front of libslirp.
//!
//! Owns: every guest frame whose IPv4 header claims to be a fragment (MF set or a non-zero
//! offset), or whose IPv6 extension headers lead to a fragment header, from the moment it is
//! read until its datagram is whole (then handed on as one frame) or dropped. Must never: let a frame that claims to be a fragment reach libslirp,
//! allocate after construction, hold more fragment data than its byte bound, or panic on any
//! input.
//!
//! Why it exists (design note 10): Debian's libslirp 4.7.0 dies with SIGBUS in `ip_reass` on a
//! single guest frame (a last fragment that arrives before the rest of its datagram), even in
//! restricted mode, and every libslirp keeps incomplete trains for 30 s with no memory bound.
//! libslirp's `ip_input` only reassembles when `ip_off & ~IP_DF` is non-zero; the frames this
//! module hands on have MF and the offset clear, so `ip_reass` is never reached. IPv6:
//! libslirp's `ip6_input` (4.7.0 to master) drops every packet whose next header is not TCP,
//! UDP or ICMPv6, so every guest IPv6 fragment was lost; here they are reassembled in the same
//! store, under the same bounds and drop rules, and counted in the same counters (the IPv6
//! choices are listed last).
//!
//! Choices, and why:
//! - **What passes untouched**: everything that does not claim to be a fragment, malformed or
//!   not (libslirp validates those itself and drops the bad ones before its fragment code).
//!   802.1Q/802.1ad tagged frames pass untouched too: libslirp's `slirp_input` switches on the
//!   ethertype at byte 12 and ignores 0x8100/0x88a8, so they never reach `ip_input`.
//!   A header that claims to be a fragment is either reassembled or dropped: one that fails
//!   validation (version, header length, total length, checksum) is dropped as malformed.
//! - **Key**: (source, destination, protocol, identification), as RFC 791.
//! - **Storage**: one arena of `max_bytes` split in 1 KiB pages, allocated once. A datagram's
//!   payload is written at its own offset into pages of its page table (64 entries cover the
//!   65515 bytes an IPv4 datagram can carry), with one bit per 8-byte unit (fragment offsets
//!   count in 8-byte units) recording what arrived. Held memory is counted in whole pages, so
//!   a flood of tiny fragments is bounded like a flood of big ones.
//! - **Overlaps** (RFC 5722, written for IPv6, applied here): a fragment that overlaps data
//!   already held drops the whole datagram, and later fragments of it are dropped too until it
//!   would have timed out. The exception is an exact resend: a fragment whose every unit was
//!   already received with the same bytes is ignored (counted as a duplicate). Fragments that
//!   disagree on where the datagram ends (two different last fragments, data past the last
//!   fragment's end) drop the datagram the same way.
//! - **Options**: the reassembled header is 20 bytes, the first fragment's options dropped.
//!   libslirp strips IP options itself (`ip_stripoptions`) before using a datagram, and a fixed
//!   header makes "header + payload ≤ 65535" a property of the payload alone: at most 65515
//!   bytes, checked on every fragment.
//! - **Bounds**: when a new datagram needs a slot and all `max_datagrams` are taken, or a
//!   fragment needs pages and the arena is used up, the oldest incomplete datagram is evicted
//!   (counted). Reassembly on this link completes within microseconds (a guest kernel emits a
//!   datagram's fragments back to back), so the oldest train is almost always junk, and a
//!   guest filling the table cannot lock its own later datagrams out, as "drop the new
//!   fragment" would until the junk expired.
//! - **Time**: a datagram may wait `max_age_ms` from its first fragment. `expire` is cheap
//!   when nothing is held; the event loop calls it once per iteration and lowers its wait to
//!   the next expiry.
//! - **IPv6** (RFC 8200 4.5): a frame claims a fragment when the bounded walk over its
//!   extension headers reaches a fragment header; the walk stops there (what follows is data).
//!   Key: source, destination, identification (and the family, so the two never mix). The
//!   reassembled packet keeps the first fragment's fixed header and the extension headers
//!   before its fragment header (at most [`MAX_UNFRAGMENTABLE_EXTENSIONS`] bytes, kept inline
//!   per datagram), with the fragment header's next header moved into the header before it
//!   and the payload length set; its payload length may not pass 65535. Atomic fragments
//!   (offset 0, M clear; RFC 6946) are handed on at once without their fragment header. A
//!   first fragment whose data starts with another fragment header is malformed. libslirp
//!   still answers a reassembled packet longer than its MTU with Packet Too Big and drops it
//!   (`ip6_input`): see docs/design.md.

use crate::stats::ReasmCounters;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::ipv4::{self, Ipv4Header, Ipv4Repr};
use crate::wire::ipv6::{self, Ipv6Header, Ipv6HeaderMut};
use crate::wire::protocol;

/// Largest payload of a reassembled IPv4 datagram (its header is option-less: 20 bytes).
pub const MAX_PAYLOAD: usize = ipv4::MAX_DATAGRAM - ipv4::HEADER_LEN;
/// Largest IPv6 payload length (no jumbograms here): extension headers kept before the
/// fragment header plus the reassembled fragmentable part.
pub const MAX_PAYLOAD_V6: usize = u16::MAX as usize;
/// Extension-header bytes an IPv6 fragment may carry before its fragment header (the part
/// RFC 8200 calls unfragmentable, less the fixed header); longer is dropped as malformed.
/// libslirp 4.7's `ip6_input` dispatches on the fixed header's next header alone, so it
/// drops every packet with any extension header; what is kept is only what RFC 8200 says a
/// reassembled packet carries. 64 bytes hold a hop-by-hop, a routing and a destination
/// header of the common sizes.
pub const MAX_UNFRAGMENTABLE_EXTENSIONS: usize = 64;
const V6_HEAD: usize = ipv6::HEADER_LEN + MAX_UNFRAGMENTABLE_EXTENSIONS;
/// Arena page: big enough that a datagram of MTU-sized fragments fills its pages, small
/// enough that a one-fragment junk train costs 1 KiB.
const PAGE: usize = 1024;
/// Fragment offsets count in 8-byte units; one bit per unit in a page's map.
const UNIT: usize = ipv4::FRAGMENT_UNIT;
const PAGE_UNITS: usize = PAGE / UNIT;
const PAGE_MAP_WORDS: usize = PAGE_UNITS / 64;
/// Pages that cover the largest payload of either family.
const PAGES_PER_DATAGRAM: usize = MAX_PAYLOAD_V6.div_ceil(PAGE);
const NO_PAGE: u32 = u32::MAX;

/// How much reassembly may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasmLimits {
    /// Datagrams in reassembly at once, including dropped ones remembered so that their late
    /// fragments are dropped too.
    pub max_datagrams: usize,
    /// Fragment data held, in bytes (counted in whole 1 KiB pages). Raised to 64 KiB when
    /// lower, so that the largest datagram always fits.
    pub max_bytes: usize,
    /// How long a datagram may wait for its missing fragments, from its first one.
    pub max_age_ms: i64,
}

impl Default for ReasmLimits {
    /// 64 datagrams, 1 MiB, 10 s. A guest on this virtual link delivers a datagram's fragments
    /// back to back, so only a handful are ever in flight: 64 covers bursts from many sockets
    /// at once, and 1 MiB holds 16 datagrams of the largest size (NFS over UDP with 32 KiB
    /// blocks: 32 at once) while keeping what a hostile or broken guest can pin small.
    /// 10 s is far beyond any reordering here (a fragment that is not there after
    /// microseconds was dropped), and shorter than RFC 791's and libslirp's 30 s because on
    /// this link the extra wait only keeps junk.
    fn default() -> ReasmLimits {
        ReasmLimits {
            max_datagrams: 64,
            max_bytes: 1 << 20,
            max_age_ms: 10_000,
        }
    }
}

/// Why a fragment was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The header claims a fragment but fails validation (version, header length, total
    /// length, checksum).
    Malformed,
    /// No payload.
    ZeroLength,
    /// Not the last fragment, and its length is not a multiple of 8.
    Unaligned,
    /// Its data would end past the 65535 bytes an IPv4 datagram can have (IPv6: past a
    /// payload length of 65535, counting the extension headers before its fragment header).
    TooLong,
    /// It overlaps data already held with different bytes: the datagram is dropped.
    Overlap,
    /// It disagrees with the datagram's end (two different last fragments, data past the
    /// end): the datagram is dropped.
    Inconsistent,
    /// Its datagram was dropped earlier (overlap, inconsistency) and has not timed out yet.
    Discarded,
    /// An exact resend of data already held: ignored.
    Duplicate,
    /// No room even after evicting every other datagram (only with tiny limits).
    NoRoom,
}

/// What to do with a guest frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Not a fragment: hand the frame on as it is.
    Pass(&'a [u8]),
    /// The last missing fragment: the whole datagram as one frame (the first fragment's
    /// Ethernet header, a 20-byte IPv4 header with MF and offset clear; or the first
    /// fragment's IPv6 header and extension headers without the fragment header). Also an
    /// IPv6 atomic fragment (offset 0, M clear; RFC 6946) without its fragment header.
    Complete(&'a [u8]),
    /// Kept until its datagram is whole.
    Held,
    /// Dropped (and counted).
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// The identity of a datagram: RFC 791's (source, destination, protocol, identification)
/// for IPv4, RFC 8200's (source, destination, identification) for IPv6 (protocol 0). IPv4
/// addresses fill the first 4 bytes; the family keeps the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    family: Family,
    src: [u8; 16],
    dst: [u8; 16],
    protocol: u8,
    id: u32,
}

impl Key {
    fn v4(src: [u8; 4], dst: [u8; 4], protocol: u8, id: u16) -> Key {
        let mut key = Key {
            family: Family::V4,
            src: [0; 16],
            dst: [0; 16],
            protocol,
            id: u32::from(id),
        };
        key.src[..4].copy_from_slice(&src);
        key.dst[..4].copy_from_slice(&dst);
        key
    }
}

/// What an IPv6 reassembled packet keeps of its first fragment: the fixed header and the
/// extension headers before the fragment header, and where to write the fragment header's
/// next-header value.
#[derive(Debug, Clone, Copy)]
struct Ipv6Head {
    bytes: [u8; V6_HEAD],
    len: usize,
    /// The extension header before the fragment header (its offset in the IPv6 payload), or
    /// `None` when the fragment header follows the fixed header.
    before_fragment: Option<usize>,
    /// The fragment header's next header: the first header of the fragmentable part.
    next_header: u8,
}

/// What a reassembled header is made from.
#[derive(Debug, Clone, Copy)]
enum FirstHeader {
    V4(Ipv4Repr),
    V6(Ipv6Head),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrainState {
    Free,
    /// Collecting fragments.
    Collecting,
    /// Dropped: its pages are free; the key stays until it times out so that late fragments
    /// are dropped too (RFC 5722).
    Discarding,
}

/// One datagram in reassembly.
#[derive(Debug, Clone)]
struct Train {
    state: TrainState,
    key: Key,
    /// When its first fragment arrived.
    created_ms: i64,
    /// Creation order, for "evict the oldest".
    seq: u64,
    /// Arena page of each 1 KiB of payload, or NO_PAGE.
    pages: [u32; PAGES_PER_DATAGRAM],
    pages_held: usize,
    /// 8-byte units received (overlaps are refused, so this counts each unit once).
    units_received: usize,
    /// Largest end of any fragment so far.
    max_end: usize,
    /// Payload length, known once the last fragment (MF clear) arrived; 0 before.
    total: usize,
    /// Largest payload the datagram may reach: MAX_PAYLOAD for IPv4; for IPv6, 65535 less
    /// the first fragment's extension headers once it arrived.
    max_payload: usize,
    /// From the first fragment (offset 0): its Ethernet header, and what the reassembled
    /// header keeps of its header.
    eth: [u8; ethernet::HEADER_LEN],
    first: FirstHeader,
}

impl Train {
    const FREE: Train = Train {
        state: TrainState::Free,
        key: Key {
            family: Family::V4,
            src: [0; 16],
            dst: [0; 16],
            protocol: 0,
            id: 0,
        },
        created_ms: 0,
        seq: 0,
        pages: [NO_PAGE; PAGES_PER_DATAGRAM],
        pages_held: 0,
        units_received: 0,
        max_end: 0,
        total: 0,
        max_payload: MAX_PAYLOAD,
        eth: [0; ethernet::HEADER_LEN],
        first: FirstHeader::V4(Ipv4Repr {
            tos: 0,
            id: 0,
            ttl: 0,
            protocol: 0,
            src: [0; 4],
            dst: [0; 4],
        }),
    };
}

/// What a fragment carries of the header its datagram's reassembled header is made from.
enum FragmentHeader<'a> {
    V4(Ipv4Repr),
    V6 {
        /// The fixed header and the extension headers before the fragment header
        /// (at most `V6_HEAD` bytes).
        unfragmentable: &'a [u8],
        before_fragment: Option<usize>,
        next_header: u8,
    },
}

/// A frame whose header claims a fragment and passed validation.
struct Fragment<'a> {
    key: Key,
    /// Payload offset in bytes.
    offset: usize,
    more: bool,
    payload: &'a [u8],
    /// Its Ethernet header.
    eth: &'a [u8],
    header: FragmentHeader<'a>,
    /// Largest end of the datagram this fragment allows (see `Train::max_payload`).
    max_payload: usize,
}

enum Class<'a> {
    NotFragment,
    Malformed,
    Fragment(Fragment<'a>),
}

fn classify(frame: &[u8]) -> Class<'_> {
    // Too short to carry the flags field: libslirp drops it (shorter than an IPv4 header).
    let Ok(eth) = EthernetFrame::parse(frame) else {
        return Class::NotFragment;
    };
    if eth.ethertype() == ethernet::ETHERTYPE_IPV6 {
        return classify_v6(&eth);
    }
    if eth.ethertype() != ethernet::ETHERTYPE_IPV4 || !ipv4::claims_fragment(eth.payload()) {
        return Class::NotFragment;
    }
    // From here the header claims a fragment: reassembled or dropped, never passed on.
    // The frame may be longer than the datagram (Ethernet padding), never shorter.
    let Ok(ip) = Ipv4Header::parse(eth.payload()) else {
        return Class::Malformed;
    };
    if !ip.checksum_valid() {
        return Class::Malformed;
    }
    Class::Fragment(Fragment {
        key: Key::v4(ip.src(), ip.dst(), ip.protocol(), ip.id()),
        offset: ip.fragment_offset(),
        more: ip.more_fragments(),
        payload: ip.payload(),
        eth: eth.header(),
        header: FragmentHeader::V4(ip.repr()),
        max_payload: MAX_PAYLOAD,
    })
}

/// An IPv6 frame claims a fragment when the walk over its extension headers reaches a
/// fragment header. The walk stops there: what follows is a fragment of the rest, data and
/// not headers unless the offset is 0. A frame whose walk fails before it reaches a fragment
/// header passes (libslirp's `ip6_input` drops every packet whose fixed header's next header
/// is not TCP, UDP or ICMPv6, which covers all of those); one whose walk fails *at* a
/// fragment header, or whose payload length is beyond the frame while its first header is
/// one, is malformed.
fn classify_v6<'a>(eth: &EthernetFrame<'a>) -> Class<'a> {
    let Ok((first, _)) = ipv6::dispatch(eth.payload()) else {
        return Class::NotFragment;
    };
    let ip = match Ipv6Header::parse(eth.payload()) {
        Ok(ip) => ip,
        Err(_) if first == protocol::IPV6_FRAGMENT => return Class::Malformed,
        Err(_) => return Class::NotFragment,
    };
    let mut walk = ip.extensions();
    let mut before_fragment = None;
    while let Some(step) = walk.next() {
        let Ok(extension) = step else {
            return if walk.next_header() == protocol::IPV6_FRAGMENT {
                Class::Malformed
            } else {
                Class::NotFragment
            };
        };
        let Some(fragment) = extension.fragment() else {
            before_fragment = Some(extension.offset);
            continue;
        };
        // Too many headers to keep; or a first fragment whose fragmentable part starts with
        // another fragment header (nested fragmentation): its reassembled packet would claim
        // to be a fragment again, which nothing may hand libslirp. Only the offset-0
        // fragment's next header counts (RFC 8200 4.5), so only it is checked.
        if extension.offset > MAX_UNFRAGMENTABLE_EXTENSIONS
            || (fragment.fragment_offset() == 0
                && fragment.next_header() == protocol::IPV6_FRAGMENT)
        {
            return Class::Malformed;
        }
        let unfragmentable = ip.headers_before(&extension);
        return Class::Fragment(Fragment {
            key: Key {
                family: Family::V6,
                src: ip.src(),
                dst: ip.dst(),
                protocol: 0,
                id: fragment.id(),
            },
            offset: fragment.fragment_offset(),
            more: fragment.more_fragments(),
            payload: ip.after(&extension),
            eth: eth.header(),
            header: FragmentHeader::V6 {
                unfragmentable,
                before_fragment,
                next_header: fragment.next_header(),
            },
            max_payload: MAX_PAYLOAD_V6 - extension.offset,
        });
    }
    Class::NotFragment
}

/// Writes an IPv6 packet's headers into `out` (the Ethernet header, then `unfragmentable`
/// with the fragment header's next header moved into the header before it and the payload
/// length set for `data_len` bytes after them); their length. The caller checked that the
/// payload length fits 16 bits and `out` holds headers and data.
fn emit_v6_headers(
    out: &mut [u8],
    eth: &[u8],
    unfragmentable: &[u8],
    before_fragment: Option<usize>,
    next_header: u8,
    data_len: usize,
) -> usize {
    let eth_len = ethernet::HEADER_LEN;
    let headers = eth_len + unfragmentable.len();
    out[..eth_len].copy_from_slice(eth);
    out[eth_len..headers].copy_from_slice(unfragmentable);
    // The bytes were a parsed IPv6 header and `before_fragment` an offset of its walk: the
    // view and the write cannot fail.
    if let Ok(mut ip) = Ipv6HeaderMut::new(&mut out[eth_len..headers]) {
        let payload_len = unfragmentable.len() - ipv6::HEADER_LEN + data_len;
        ip.set_payload_len(payload_len as u16);
        let _ = ip.set_next_header_of(before_fragment, next_header);
    }
    headers
}

/// How much of a byte range is already held.
enum Coverage {
    Nothing,
    Everything,
    Part,
}

/// Reassembles guest IPv4 and IPv6 fragments within [`ReasmLimits`], both families in one
/// store; see the module comment.
pub struct Reassembler {
    limits: ReasmLimits,
    trains: Vec<Train>,
    /// Trains not `Free`.
    active: usize,
    next_seq: u64,
    /// `pages × PAGE` bytes of fragment data.
    arena: Vec<u8>,
    /// Per arena page: which 8-byte units hold data.
    unit_maps: Vec<[u64; PAGE_MAP_WORDS]>,
    /// Arena pages not in use.
    free_pages: Vec<u32>,
    /// The reassembled frame handed out by `Complete`.
    out: Vec<u8>,
    pub counters: ReasmCounters,
}

impl Reassembler {
    /// Every buffer is allocated here, once: nothing is allocated per frame. (Large zeroed
    /// allocations are mapped lazily: pages cost memory only once fragments touch them.)
    pub fn new(limits: ReasmLimits) -> Reassembler {
        let limits = ReasmLimits {
            max_datagrams: limits.max_datagrams.max(1),
            max_bytes: limits.max_bytes.max(PAGES_PER_DATAGRAM * PAGE),
            max_age_ms: limits.max_age_ms.max(0),
        };
        let pages = limits.max_bytes / PAGE;
        Reassembler {
            limits,
            trains: vec![Train::FREE; limits.max_datagrams],
            active: 0,
            next_seq: 0,
            arena: vec![0; pages * PAGE],
            unit_maps: vec![[0; PAGE_MAP_WORDS]; pages],
            free_pages: (0..pages as u32).rev().collect(),
            out: vec![0; ethernet::HEADER_LEN + ipv6::HEADER_LEN + MAX_PAYLOAD_V6],
            counters: ReasmCounters::default(),
        }
    }

    /// The limits in force (after raising `max_bytes` to one largest datagram).
    pub fn limits(&self) -> ReasmLimits {
        self.limits
    }

    /// Datagrams in reassembly (including dropped ones still remembered).
    pub fn datagrams(&self) -> usize {
        self.active
    }

    /// Bytes of fragment data held now (whole pages).
    pub fn held_bytes(&self) -> usize {
        (self.unit_maps.len() - self.free_pages.len()) * PAGE
    }

    /// One frame from the guest, read at `now_ms` (any monotonic clock in ms, the one given
    /// to `expire`).
    pub fn push<'a>(&'a mut self, frame: &'a [u8], now_ms: i64) -> Verdict<'a> {
        let frag = match classify(frame) {
            Class::NotFragment => return Verdict::Pass(frame),
            Class::Malformed => {
                self.counters.fragments += 1;
                return self.drop_fragment(DropReason::Malformed);
            }
            Class::Fragment(frag) => frag,
        };
        self.counters.fragments += 1;
        if frag.offset == 0 && !frag.more {
            return self.pass_atomic(&frag);
        }
        let len = frag.payload.len();
        if len == 0 {
            return self.drop_fragment(DropReason::ZeroLength);
        }
        if frag.more && len % UNIT != 0 {
            return self.drop_fragment(DropReason::Unaligned);
        }
        let start = frag.offset;
        let end = start + len;
        if end > frag.max_payload {
            return self.drop_fragment(DropReason::TooLong);
        }

        let idx = match self.find(&frag.key) {
            Some(idx) => idx,
            None => self.start_train(frag.key, now_ms),
        };
        let train = &self.trains[idx];
        if train.state == TrainState::Discarding {
            return self.drop_fragment(DropReason::Discarded);
        }
        let ends_disagree = if frag.more {
            train.total != 0 && end > train.total
        } else {
            (train.total != 0 && train.total != end) || train.max_end > end
        };
        // IPv6 only (an IPv4 datagram's room is fixed): the first fragment's extension
        // headers leave less room than this fragment or those already held need.
        let beyond_room =
            end > train.max_payload || (start == 0 && train.max_end > frag.max_payload);
        if ends_disagree || beyond_room {
            self.discard(idx);
            return self.drop_fragment(DropReason::Inconsistent);
        }
        match self.coverage(idx, start, end) {
            Coverage::Nothing => {}
            Coverage::Everything if self.holds_same_bytes(idx, start, frag.payload) => {
                return self.drop_fragment(DropReason::Duplicate);
            }
            Coverage::Everything | Coverage::Part => {
                self.discard(idx);
                return self.drop_fragment(DropReason::Overlap);
            }
        }
        if !self.reserve_pages(idx, start, end) {
            self.release(idx);
            return self.drop_fragment(DropReason::NoRoom);
        }
        self.store(idx, &frag);

        let train = &self.trains[idx];
        if train.total != 0 && train.units_received == train.total.div_ceil(UNIT) {
            let len = self.assemble(idx);
            self.release(idx);
            self.counters.completed += 1;
            return Verdict::Complete(&self.out[..len]);
        }
        Verdict::Held
    }

    /// Drop every datagram whose first fragment arrived `max_age_ms` or more before `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        if self.active == 0 {
            return;
        }
        for idx in 0..self.trains.len() {
            let train = &self.trains[idx];
            if train.state != TrainState::Free
                && now_ms.saturating_sub(train.created_ms) >= self.limits.max_age_ms
            {
                if train.state == TrainState::Collecting {
                    self.counters.expired += 1;
                }
                self.release(idx);
            }
        }
    }

    /// When `expire` next has work, in the clock of `push`; `None` when nothing is held.
    pub fn next_expiry_ms(&self) -> Option<i64> {
        if self.active == 0 {
            return None;
        }
        self.trains
            .iter()
            .filter(|t| t.state != TrainState::Free)
            .map(|t| t.created_ms.saturating_add(self.limits.max_age_ms))
            .min()
    }

    fn drop_fragment(&mut self, reason: DropReason) -> Verdict<'static> {
        let c = &mut self.counters;
        match reason {
            DropReason::Malformed => c.malformed += 1,
            DropReason::ZeroLength => c.zero_length += 1,
            DropReason::Unaligned => c.unaligned += 1,
            DropReason::TooLong => c.too_long += 1,
            DropReason::Overlap => c.overlap += 1,
            DropReason::Inconsistent => c.inconsistent += 1,
            DropReason::Discarded => c.discarded += 1,
            DropReason::Duplicate => c.duplicates += 1,
            DropReason::NoRoom => c.no_room += 1,
        }
        Verdict::Dropped(reason)
    }

    fn find(&self, key: &Key) -> Option<usize> {
        if self.active == 0 {
            return None;
        }
        self.trains
            .iter()
            .position(|t| t.state != TrainState::Free && t.key == *key)
    }

    /// The oldest train other than `except`; with `holding_pages`, only one that holds pages.
    fn oldest(&self, except: Option<usize>, holding_pages: bool) -> Option<usize> {
        self.trains
            .iter()
            .enumerate()
            .filter(|&(i, t)| {
                t.state != TrainState::Free
                    && Some(i) != except
                    && (!holding_pages || t.pages_held > 0)
            })
            .min_by_key(|(_, t)| t.seq)
            .map(|(i, _)| i)
    }

    fn evict(&mut self, idx: usize) {
        if self.trains[idx].state == TrainState::Collecting {
            self.counters.evicted += 1;
        }
        self.release(idx);
    }

    fn start_train(&mut self, key: Key, now_ms: i64) -> usize {
        let idx = match self.trains.iter().position(|t| t.state == TrainState::Free) {
            Some(idx) => idx,
            None => {
                // Full: every slot is taken, so there is an oldest.
                let idx = self.oldest(None, false).unwrap_or(0);
                self.evict(idx);
                idx
            }
        };
        let train = &mut self.trains[idx];
        train.state = TrainState::Collecting;
        train.key = key;
        train.created_ms = now_ms;
        train.seq = self.next_seq;
        train.units_received = 0;
        train.max_end = 0;
        train.total = 0;
        train.max_payload = match key.family {
            Family::V4 => MAX_PAYLOAD,
            Family::V6 => MAX_PAYLOAD_V6,
        };
        self.next_seq += 1;
        self.active += 1;
        idx
    }

    /// Give the train's pages back to the arena.
    fn free_pages_of(&mut self, idx: usize) {
        let train = &mut self.trains[idx];
        if train.pages_held > 0 {
            for page in train.pages.iter_mut().filter(|p| **p != NO_PAGE) {
                self.free_pages.push(*page);
                *page = NO_PAGE;
            }
            train.pages_held = 0;
        }
        self.counters.held_bytes = self.held_bytes() as u64;
    }

    /// Forget the train.
    fn release(&mut self, idx: usize) {
        self.free_pages_of(idx);
        if self.trains[idx].state != TrainState::Free {
            self.trains[idx].state = TrainState::Free;
            self.active -= 1;
        }
    }

    /// Drop the datagram, keep its key until it times out (RFC 5722).
    fn discard(&mut self, idx: usize) {
        self.free_pages_of(idx);
        self.trains[idx].state = TrainState::Discarding;
    }

    fn unit_is_set(&self, idx: usize, unit: usize) -> bool {
        let page = self.trains[idx].pages[unit / PAGE_UNITS];
        if page == NO_PAGE {
            return false;
        }
        let bit = unit % PAGE_UNITS;
        self.unit_maps[page as usize][bit / 64] & (1 << (bit % 64)) != 0
    }

    /// Units of `start..end` already received. `end` ≤ MAX_PAYLOAD.
    fn coverage(&self, idx: usize, start: usize, end: usize) -> Coverage {
        let units = start / UNIT..end.div_ceil(UNIT);
        let wanted = units.len();
        let set = units.filter(|&u| self.unit_is_set(idx, u)).count();
        match set {
            0 => Coverage::Nothing,
            n if n == wanted => Coverage::Everything,
            _ => Coverage::Part,
        }
    }

    /// Whether the held bytes at `start` equal `bytes` (every unit there is received).
    fn holds_same_bytes(&self, idx: usize, start: usize, bytes: &[u8]) -> bool {
        let mut at = start;
        for chunk in ByPage::new(start, bytes.len()) {
            let page = self.trains[idx].pages[chunk.page] as usize;
            let base = page * PAGE + chunk.within;
            if self.arena[base..base + chunk.len] != bytes[at - start..at - start + chunk.len] {
                return false;
            }
            at += chunk.len;
        }
        true
    }

    /// Pages for `start..end`, evicting the oldest other datagrams when the arena is used
    /// up. False when there is no room even then.
    fn reserve_pages(&mut self, idx: usize, start: usize, end: usize) -> bool {
        for slot in start / PAGE..end.div_ceil(PAGE) {
            if self.trains[idx].pages[slot] != NO_PAGE {
                continue;
            }
            let page = loop {
                if let Some(page) = self.free_pages.pop() {
                    break page;
                }
                match self.oldest(Some(idx), true) {
                    Some(victim) => self.evict(victim),
                    None => return false,
                }
            };
            self.unit_maps[page as usize] = [0; PAGE_MAP_WORDS];
            let train = &mut self.trains[idx];
            train.pages[slot] = page;
            train.pages_held += 1;
        }
        let held = self.held_bytes() as u64;
        self.counters.held_bytes = held;
        self.counters.held_bytes_high_water = self.counters.held_bytes_high_water.max(held);
        true
    }

    /// Copy the fragment in and mark its units (its pages are reserved).
    fn store(&mut self, idx: usize, frag: &Fragment<'_>) {
        let start = frag.offset;
        let end = start + frag.payload.len();
        let mut at = start;
        for chunk in ByPage::new(start, frag.payload.len()) {
            let page = self.trains[idx].pages[chunk.page] as usize;
            let base = page * PAGE + chunk.within;
            self.arena[base..base + chunk.len]
                .copy_from_slice(&frag.payload[at - start..at - start + chunk.len]);
            at += chunk.len;
        }
        let units = start / UNIT..end.div_ceil(UNIT);
        let count = units.len();
        for unit in units {
            let page = self.trains[idx].pages[unit / PAGE_UNITS] as usize;
            let bit = unit % PAGE_UNITS;
            self.unit_maps[page][bit / 64] |= 1 << (bit % 64);
        }
        let train = &mut self.trains[idx];
        train.units_received += count;
        train.max_end = train.max_end.max(end);
        if !frag.more {
            train.total = end;
        }
        if start == 0 {
            train.eth.copy_from_slice(frag.eth);
            train.max_payload = frag.max_payload;
            train.first = match frag.header {
                FragmentHeader::V4(ip) => FirstHeader::V4(ip),
                FragmentHeader::V6 {
                    unfragmentable,
                    before_fragment,
                    next_header,
                } => {
                    let mut head = Ipv6Head {
                        bytes: [0; V6_HEAD],
                        len: unfragmentable.len(),
                        before_fragment,
                        next_header,
                    };
                    head.bytes[..unfragmentable.len()].copy_from_slice(unfragmentable);
                    FirstHeader::V6(head)
                }
            };
        }
    }

    /// An IPv6 atomic fragment (RFC 6946): handed on at once without its fragment header,
    /// never touching the datagrams in reassembly.
    fn pass_atomic(&mut self, frag: &Fragment<'_>) -> Verdict<'_> {
        let FragmentHeader::V6 {
            unfragmentable,
            before_fragment,
            next_header,
        } = frag.header
        else {
            // IPv4 offset 0 with MF clear does not claim a fragment: not classified as one.
            return self.drop_fragment(DropReason::Malformed);
        };
        let len = frag.payload.len();
        let headers = emit_v6_headers(
            &mut self.out,
            frag.eth,
            unfragmentable,
            before_fragment,
            next_header,
            len,
        );
        self.out[headers..headers + len].copy_from_slice(frag.payload);
        self.counters.completed += 1;
        Verdict::Complete(&self.out[..headers + len])
    }

    /// Write the whole datagram as a frame into `out`; its length.
    fn assemble(&mut self, idx: usize) -> usize {
        let train = &self.trains[idx];
        let total = train.total;
        let headers = match &train.first {
            FirstHeader::V4(repr) => {
                let headers = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
                self.out[..ethernet::HEADER_LEN].copy_from_slice(&train.eth);
                // A range of exactly HEADER_LEN bytes: the conversion cannot fail.
                if let Ok(ip) = (&mut self.out[ethernet::HEADER_LEN..headers]).try_into() {
                    // total ≤ MAX_PAYLOAD: checked on every fragment.
                    repr.emit(ip, (ipv4::HEADER_LEN + total) as u16);
                }
                headers
            }
            // total ≤ max_payload = 65535 less the extension headers: checked on every
            // fragment and when the first one arrived.
            FirstHeader::V6(head) => emit_v6_headers(
                &mut self.out,
                &train.eth,
                &head.bytes[..head.len],
                head.before_fragment,
                head.next_header,
                total,
            ),
        };
        let frame_len = headers + total;
        let mut at = headers;
        for chunk in ByPage::new(0, total) {
            let page = train.pages[chunk.page] as usize;
            let base = page * PAGE;
            self.out[at..at + chunk.len].copy_from_slice(&self.arena[base..base + chunk.len]);
            at += chunk.len;
        }
        frame_len
    }
}

/// A byte range of a datagram split at page boundaries.
struct ByPage {
    at: usize,
    end: usize,
}

struct PageChunk {
    /// Page-table slot.
    page: usize,
    /// Offset within the page.
    within: usize,
    len: usize,
}

impl ByPage {
    fn new(start: usize, len: usize) -> ByPage {
        ByPage {
            at: start,
            end: start + len,
        }
    }
}

impl Iterator for ByPage {
    type Item = PageChunk;

    fn next(&mut self) -> Option<PageChunk> {
        if self.at >= self.end {
            return None;
        }
        let within = self.at % PAGE;
        let len = (PAGE - within).min(self.end - self.at);
        let chunk = PageChunk {
            page: self.at / PAGE,
            within,
            len,
        };
        self.at += len;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::internet_checksum;

    // The tests build and check frames byte by byte, independently of `wire`.
    const ETHER_HDR: usize = 14;
    const IPV4_HDR: usize = 20;
    const MAX_DATAGRAM: usize = 65535;
    const MF: u16 = 0x2000;

    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const GW_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

    use crate::test_rng::Rng;

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// One fragment frame: `data` at byte `offset` of datagram `id`, with `options` bytes of
    /// IP options (a multiple of 4).
    fn fragment(id: u16, offset: usize, more: bool, data: &[u8], options: usize) -> Vec<u8> {
        let hlen = IPV4_HDR + options;
        let mut f = GW_MAC.to_vec();
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0u8; hlen];
        ip[0] = 0x40 | (hlen / 4) as u8;
        ip[1] = 0x10;
        ip[2..4].copy_from_slice(&((hlen + data.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        let flags = (offset / 8) as u16 | if more { MF } else { 0 };
        ip[6..8].copy_from_slice(&flags.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 2, 15]);
        ip[16..20].copy_from_slice(&[10, 0, 2, 2]);
        for (i, b) in ip[IPV4_HDR..].iter_mut().enumerate() {
            *b = if i == 0 { 1 } else { 0 }; // NOPs and EOLs
        }
        let sum = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(data);
        f
    }

    /// `data` cut into fragments of `size` bytes (a multiple of 8).
    fn train(id: u16, data: &[u8], size: usize) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let end = (at + size).min(data.len());
            frames.push(fragment(id, at, end < data.len(), &data[at..end], 0));
            at = end;
        }
        frames
    }

    /// Checks a reassembled frame: headers as documented, payload equal to `data`.
    fn check_complete(frame: &[u8], id: u16, data: &[u8]) {
        assert_eq!(frame.len(), ETHER_HDR + IPV4_HDR + data.len());
        assert_eq!(&frame[..6], &GW_MAC);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        let ip = &frame[ETHER_HDR..ETHER_HDR + IPV4_HDR];
        assert_eq!(ip[0], 0x45);
        assert_eq!(ip[1], 0x10, "TOS of the first fragment");
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            IPV4_HDR + data.len()
        );
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), id);
        assert_eq!(&ip[6..8], &[0, 0], "MF and offset clear");
        assert_eq!(ip[9], 17);
        assert_eq!(internet_checksum(ip), 0, "header checksum");
        assert!(frame[ETHER_HDR + IPV4_HDR..] == *data, "payload differs");
    }

    /// Pushes `frames` in order; the completed frame, checking that only the last completes.
    fn push_all(r: &mut Reassembler, frames: &[Vec<u8>], now: i64) -> Option<Vec<u8>> {
        let mut done = None;
        for (i, f) in frames.iter().enumerate() {
            match r.push(f, now) {
                Verdict::Complete(out) => {
                    assert_eq!(i, frames.len() - 1, "completed early");
                    done = Some(out.to_vec());
                }
                Verdict::Held => {}
                other => panic!("fragment {i}: {other:?}"),
            }
        }
        done
    }

    fn reassembler() -> Reassembler {
        Reassembler::new(ReasmLimits::default())
    }

    #[test]
    fn non_fragments_pass_untouched() {
        let mut r = reassembler();
        let whole = fragment(1, 0, false, &payload(100, 1), 0);
        let arp = [&[0xffu8; 6][..], &GUEST_MAC, &[0x08, 0x06], &[0; 28]].concat();
        let mut vlan = whole.clone();
        vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        let mut bad_sum_whole = whole.clone();
        bad_sum_whole[24] ^= 0xff;
        let mut df = whole.clone();
        df[20] = 0x40; // DF alone is not a fragment
        let sum = internet_checksum(&[&df[14..24], &[0, 0], &df[26..34]].concat());
        df[24..26].copy_from_slice(&sum.to_be_bytes());
        for f in [
            &whole,
            &arp,
            &vlan,
            &bad_sum_whole,
            &df,
            &whole[..20].to_vec(),
        ] {
            assert_eq!(r.push(f, 0), Verdict::Pass(f.as_slice()));
        }
        // A tagged fragment is left to libslirp, which ignores tagged frames.
        let mut tagged = fragment(2, 8, false, &payload(8, 1), 0);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        assert_eq!(r.push(&tagged, 0), Verdict::Pass(tagged.as_slice()));
        assert_eq!(r.counters.fragments, 0);
    }

    #[test]
    fn a_lone_last_fragment_is_held_then_expires() {
        let mut r = reassembler();
        let f = fragment(0x1234, 800, false, &payload(64, 2), 0);
        assert_eq!(r.push(&f, 1000), Verdict::Held);
        assert_eq!(r.datagrams(), 1);
        assert_eq!(r.held_bytes(), PAGE);
        assert_eq!(r.next_expiry_ms(), Some(11_000));
        r.expire(10_999);
        assert_eq!(r.datagrams(), 1);
        r.expire(11_000);
        assert_eq!(r.datagrams(), 0);
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.counters.expired, 1);
        assert_eq!(r.counters.held_bytes, 0);
        assert_eq!(r.counters.held_bytes_high_water, PAGE as u64);
        assert_eq!(r.next_expiry_ms(), None);
    }

    #[test]
    fn in_order_reversed_and_shuffled_trains_complete() {
        let mut r = reassembler();
        let mut rng = Rng(0x5eed);
        for (n, len) in [4000usize, 1481, 30_000, MAX_PAYLOAD, 9, 1480 * 3]
            .into_iter()
            .enumerate()
        {
            let data = payload(len, n as u8);
            let id = 100 + n as u16;
            // At least two fragments (one would be a whole datagram).
            let frames = train(id, &data, 1480.min(8 * ((len - 1) / 8)));
            let done = push_all(&mut r, &frames, 0).expect("in order");
            check_complete(&done, id, &data);

            let mut reversed = frames.clone();
            reversed.reverse();
            let done = push_all(&mut r, &reversed, 0).expect("reversed");
            check_complete(&done, id, &data);
            for round in 0..5 {
                let size = 8 * (1 + rng.below(((len - 1) / 8).min(300)));
                let mut shuffled = train(id, &data, size);
                rng.shuffle(&mut shuffled);
                let done = push_all(&mut r, &shuffled, 0)
                    .unwrap_or_else(|| panic!("shuffled {len} round {round}"));
                check_complete(&done, id, &data);
            }
            assert_eq!(r.datagrams(), 0);
            assert_eq!(r.held_bytes(), 0);
        }
        assert_eq!(r.counters.expired + r.counters.evicted, 0);
    }

    #[test]
    fn options_are_dropped_and_padding_ignored() {
        let mut r = reassembler();
        let data = payload(1000, 7);
        let first = fragment(9, 0, true, &data[..504], 8);
        let mut last = fragment(9, 504, false, &data[504..], 40);
        last.extend_from_slice(&[0xee; 30]); // Ethernet padding after the datagram
        assert_eq!(r.push(&last, 0), Verdict::Held);
        match r.push(&first, 0) {
            Verdict::Complete(f) => check_complete(f, 9, &data),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn identical_duplicates_are_ignored() {
        let mut r = reassembler();
        let data = payload(4000, 3);
        let frames = train(7, &data, 1480);
        assert_eq!(r.push(&frames[2], 0), Verdict::Held);
        assert_eq!(
            r.push(&frames[2], 0),
            Verdict::Dropped(DropReason::Duplicate)
        );
        assert_eq!(r.push(&frames[0], 0), Verdict::Held);
        assert_eq!(
            r.push(&frames[0], 0),
            Verdict::Dropped(DropReason::Duplicate)
        );
        // Same bytes, cut differently, all already held: a resend too.
        let again = fragment(7, 8, true, &data[8..1480], 0);
        assert_eq!(r.push(&again, 0), Verdict::Dropped(DropReason::Duplicate));
        match r.push(&frames[1], 0) {
            Verdict::Complete(f) => check_complete(f, 7, &data),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.counters.duplicates, 3);
        assert_eq!(r.counters.completed, 1);
    }

    #[test]
    fn overlaps_drop_the_datagram_and_its_late_fragments() {
        let mut r = reassembler();
        let data = payload(4000, 4);
        let frames = train(8, &data, 1480);
        assert_eq!(r.push(&frames[0], 0), Verdict::Held);
        // Partly over the first fragment.
        let over = fragment(8, 1472, true, &data[1472..1480 + 16], 0);
        assert_eq!(r.push(&over, 0), Verdict::Dropped(DropReason::Overlap));
        assert_eq!(r.held_bytes(), 0);
        for f in &frames[1..] {
            assert_eq!(r.push(f, 0), Verdict::Dropped(DropReason::Discarded));
        }
        // The key is remembered until the age limit, then a new datagram may use it.
        r.expire(10_000);
        assert_eq!(
            r.counters.expired, 0,
            "a dropped datagram is not counted again"
        );
        assert!(push_all(&mut r, &frames, 20_000).is_some());

        // Same range, different bytes.
        let mut r = reassembler();
        assert_eq!(r.push(&frames[1], 0), Verdict::Held);
        let mut changed = data[1480..2960].to_vec();
        changed[100] ^= 1;
        let forged = fragment(8, 1480, true, &changed, 0);
        assert_eq!(r.push(&forged, 0), Verdict::Dropped(DropReason::Overlap));
        assert_eq!(r.counters.overlap, 1);
    }

    #[test]
    fn disagreeing_ends_drop_the_datagram() {
        let data = payload(4000, 5);
        let frames = train(3, &data, 1480);
        // A second, different last fragment.
        let mut r = reassembler();
        assert_eq!(r.push(&frames[2], 0), Verdict::Held);
        let other_last = fragment(3, 2960, false, &data[2960..3992], 0);
        assert_eq!(
            r.push(&other_last, 0),
            Verdict::Dropped(DropReason::Inconsistent)
        );
        // Data past the last fragment's end.
        let mut r = reassembler();
        let last = fragment(3, 1480, false, &data[1480..2000], 0);
        assert_eq!(r.push(&last, 0), Verdict::Held);
        assert_eq!(
            r.push(&frames[1], 0),
            Verdict::Dropped(DropReason::Inconsistent)
        );
        // A last fragment ending before data already held.
        let mut r = reassembler();
        assert_eq!(r.push(&frames[1], 0), Verdict::Held);
        let short_last = fragment(3, 8, false, &data[8..1000], 0);
        assert_eq!(
            r.push(&short_last, 0),
            Verdict::Dropped(DropReason::Inconsistent)
        );
        assert_eq!(r.counters.inconsistent, 1);
    }

    #[test]
    fn gaps_never_complete_and_time_out() {
        let mut r = reassembler();
        let data = payload(6000, 6);
        let frames = train(5, &data, 1480);
        for (i, f) in frames.iter().enumerate() {
            if i != 2 {
                assert_eq!(r.push(f, 500), Verdict::Held);
            }
        }
        // 0..2960 and 4440..6000: pages 0-2 and 4-5.
        assert_eq!(r.held_bytes(), 5 * PAGE);
        r.expire(10_499);
        assert_eq!(r.datagrams(), 1);
        r.expire(10_500);
        assert_eq!(r.datagrams(), 0);
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.counters.expired, 1);
        // The missing piece alone now starts a new datagram.
        assert_eq!(r.push(&frames[2], 20_000), Verdict::Held);
    }

    #[test]
    fn bad_fragments_are_dropped() {
        let mut r = reassembler();
        let zero = fragment(1, 8, false, &[], 0);
        assert_eq!(r.push(&zero, 0), Verdict::Dropped(DropReason::ZeroLength));
        let unaligned = fragment(1, 0, true, &payload(100, 0), 0);
        assert_eq!(
            r.push(&unaligned, 0),
            Verdict::Dropped(DropReason::Unaligned)
        );
        // Ping of death: offset + length past 65535.
        let past = fragment(1, 65528, false, &payload(100, 0), 0);
        assert_eq!(r.push(&past, 0), Verdict::Dropped(DropReason::TooLong));
        // The largest offset with a payload that fits, then one byte more.
        let fits = fragment(2, MAX_PAYLOAD - 3, false, &[1, 2, 3], 0);
        assert_eq!(r.push(&fits, 0), Verdict::Held);
        let over = fragment(3, 65512, false, &[1, 2, 3, 4], 0);
        assert_eq!(r.push(&over, 0), Verdict::Dropped(DropReason::TooLong));

        // Headers that claim a fragment but are broken.
        let good = fragment(4, 8, false, &payload(16, 0), 0);
        let mut bad_sum = good.clone();
        bad_sum[30] ^= 1;
        let mut bad_version = good.clone();
        bad_version[14] = 0x65;
        let mut short_header = good.clone();
        short_header[14] = 0x44;
        let mut long_total = good.clone();
        long_total[17] += 1;
        long_total[24..26].copy_from_slice(&[0, 0]);
        let sum = internet_checksum(&long_total[14..34]);
        long_total[24..26].copy_from_slice(&sum.to_be_bytes());
        let mut header_past_frame = good.clone();
        header_past_frame[14] = 0x4f;
        let cut = good[..30].to_vec();
        for f in [
            bad_sum,
            bad_version,
            short_header,
            long_total,
            header_past_frame,
            cut,
        ] {
            assert_eq!(r.push(&f, 0), Verdict::Dropped(DropReason::Malformed));
        }
        assert_eq!(r.counters.malformed, 6);
        assert_eq!(r.counters.zero_length, 1);
        assert_eq!(r.counters.unaligned, 1);
        assert_eq!(r.counters.too_long, 2);
        assert_eq!(r.datagrams(), 1);
    }

    #[test]
    fn the_oldest_datagram_makes_room_for_a_new_one() {
        let limits = ReasmLimits {
            max_datagrams: 4,
            ..ReasmLimits::default()
        };
        let mut r = Reassembler::new(limits);
        let data = payload(3000, 9);
        for id in 0..4u16 {
            assert_eq!(
                r.push(&train(id, &data, 1480)[2], i64::from(id)),
                Verdict::Held
            );
        }
        assert_eq!(r.datagrams(), 4);
        // A fifth datagram evicts the oldest (id 0); the others still complete.
        let fifth = train(4, &data, 1480);
        assert_eq!(push_all(&mut r, &fifth, 10).map(|f| f.len()), Some(3034));
        assert_eq!(r.counters.evicted, 1);
        for id in 1..4u16 {
            let frames = train(id, &data, 1480);
            assert!(push_all(&mut r, &frames[..2], 10).is_some(), "id {id}");
        }
        // id 0 lost its last fragment.
        let frames = train(0, &data, 1480);
        assert_eq!(push_all(&mut r, &frames[..2], 10), None);
    }

    #[test]
    fn the_byte_bound_holds_and_evicts_the_oldest() {
        let limits = ReasmLimits {
            max_datagrams: 64,
            max_bytes: 128 * PAGE,
            max_age_ms: 10_000,
        };
        let mut r = Reassembler::new(limits);
        let data = payload(MAX_PAYLOAD, 1);
        // Three largest datagrams without their first fragment: the third needs the pages of
        // the first.
        for id in 0..3u16 {
            let frames = train(id, &data, 1480);
            for f in &frames[1..] {
                assert_eq!(r.push(f, 0), Verdict::Held);
                assert!(r.held_bytes() <= 128 * PAGE);
            }
        }
        assert_eq!(r.counters.evicted, 1);
        assert_eq!(r.counters.held_bytes_high_water, 128 * PAGE as u64);
        let frames = train(2, &data, 1480);
        let done = push_all(&mut r, &frames[..1], 0).expect("the newest completes");
        check_complete(&done, 2, &data);

        // Many tiny trains are bounded by pages, not by count.
        let mut r = Reassembler::new(ReasmLimits {
            max_datagrams: 1000,
            max_bytes: 64 * PAGE,
            max_age_ms: 10_000,
        });
        for id in 0..1000u16 {
            let f = fragment(id, 8 + 8 * usize::from(id), false, &[1; 8], 0);
            assert_eq!(r.push(&f, 0), Verdict::Held);
        }
        assert_eq!(r.held_bytes(), 64 * PAGE);
        assert_eq!(r.counters.evicted, 1000 - 64);
    }

    #[test]
    fn tiny_byte_limits_are_raised_to_one_largest_datagram() {
        let mut r = Reassembler::new(ReasmLimits {
            max_datagrams: 0,
            max_bytes: 0,
            max_age_ms: -5,
        });
        assert_eq!(r.limits().max_bytes, PAGES_PER_DATAGRAM * PAGE);
        assert_eq!(r.limits().max_datagrams, 1);
        let data = payload(MAX_PAYLOAD, 2);
        let mut frames = train(1, &data, 8 * 100);
        frames.reverse();
        let done = push_all(&mut r, &frames, 0).expect("complete");
        check_complete(&done, 1, &data);
    }

    /// Random mutations of valid trains: never a panic, the bounds always hold, and every
    /// completed frame is a well-formed whole datagram.
    #[test]
    fn fuzz_random_mutations() {
        let limits = ReasmLimits {
            max_datagrams: 8,
            max_bytes: 96 * PAGE,
            max_age_ms: 50,
        };
        let mut r = Reassembler::new(limits);
        let mut rng = Rng(0x0bad_5eed);
        let mut pool: Vec<Vec<u8>> = Vec::new();
        for iteration in 0..200_000u32 {
            if pool.is_empty() {
                let max = if rng.below(10) == 0 {
                    MAX_PAYLOAD
                } else {
                    6000
                };
                let len = 1 + rng.below(max);
                let id = rng.below(64) as u16;
                let size = 8 * (1 + rng.below(200));
                pool = train(id, &payload(len, rng.next() as u8), size);
                rng.shuffle(&mut pool);
            }
            let mut f = pool.pop().unwrap_or_default();
            match rng.below(16) {
                0 => {
                    // Flip some bytes of the headers.
                    for _ in 0..1 + rng.below(3) {
                        let i = rng.below(f.len().min(ETHER_HDR + 24));
                        if i < f.len() {
                            f[i] ^= 1 << rng.below(8);
                        }
                    }
                }
                // Rewrite flags/offset and fix the checksum: a valid-looking liar.
                1 if f.len() >= ETHER_HDR + IPV4_HDR => {
                    let v = rng.next() as u16;
                    f[20..22].copy_from_slice(&v.to_be_bytes());
                    f[24..26].copy_from_slice(&[0, 0]);
                    let hlen = usize::from(f[14] & 0xf) * 4;
                    let end = (ETHER_HDR + hlen).min(f.len());
                    let sum = internet_checksum(&f[ETHER_HDR..end]);
                    f[24..26].copy_from_slice(&sum.to_be_bytes());
                }
                2 => f.truncate(rng.below(f.len() + 1)),
                3 => pool.push(f.clone()), // a resend later
                // Shorten the total length (down to an empty payload), checksum fixed.
                4 if f.len() >= ETHER_HDR + IPV4_HDR => {
                    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
                    let shorter = (IPV4_HDR + rng.below(total.max(IPV4_HDR) - 19)) as u16;
                    f[16..18].copy_from_slice(&shorter.to_be_bytes());
                    f[24..26].copy_from_slice(&[0, 0]);
                    let sum = internet_checksum(&f[ETHER_HDR..ETHER_HDR + IPV4_HDR]);
                    f[24..26].copy_from_slice(&sum.to_be_bytes());
                }
                5 => {
                    // The same fragment again later, with other bytes.
                    let mut forged = f.clone();
                    if let Some(b) = forged.last_mut() {
                        *b ^= 0x55;
                    }
                    pool.insert(rng.below(pool.len() + 1), forged);
                }
                _ => {}
            }
            let now = i64::from(iteration / 16);
            match r.push(&f, now) {
                Verdict::Complete(out) => {
                    assert!(out.len() <= ETHER_HDR + MAX_DATAGRAM);
                    let ip = &out[ETHER_HDR..];
                    assert_eq!(ip[0], 0x45);
                    assert_eq!(&ip[6..8], &[0, 0]);
                    assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
                    assert_eq!(internet_checksum(&ip[..IPV4_HDR]), 0);
                }
                Verdict::Pass(p) => {
                    assert_eq!(p, f.as_slice());
                    let claims_fragment = p.len() >= 22
                        && p[12..14] == [8, 0]
                        && u16::from_be_bytes([p[20], p[21]]) & 0x3fff != 0;
                    assert!(!claims_fragment, "a fragment passed");
                }
                Verdict::Held | Verdict::Dropped(_) => {}
            }
            r.expire(now);
            assert!(r.held_bytes() <= r.limits().max_bytes);
            assert!(r.datagrams() <= r.limits().max_datagrams);
            assert_eq!(r.counters.held_bytes, r.held_bytes() as u64);
        }
        assert!(r.counters.completed > 100, "{:?}", r.counters);
        let c = r.counters;
        for (what, n) in [
            ("malformed", c.malformed),
            ("zero_length", c.zero_length),
            ("unaligned", c.unaligned),
            ("overlap", c.overlap),
            ("inconsistent", c.inconsistent),
            ("duplicates", c.duplicates),
            ("expired", c.expired),
            ("evicted", c.evicted),
        ] {
            assert!(n > 10, "{what} never happened: {c:?}");
        }
        r.expire(i64::MAX);
        assert_eq!(r.datagrams(), 0);
        assert_eq!(r.held_bytes(), 0);
    }

    // IPv6, built byte by byte too (RFC 8200: fixed header 40 bytes, fragment header 8).
    const IPV6_HDR: usize = 40;
    const SRC6: [u8; 16] = [
        0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56,
    ];
    const DST6: [u8; 16] = [0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// An IPv6 frame: fixed header (traffic class 0xb8, flow label 0x12345, hop limit 64),
    /// then `headers` (kind, bytes; each one's next-header byte is set here), then `data`;
    /// the last header's next header is `upper`.
    fn packet6(headers: &[(u8, Vec<u8>)], upper: u8, data: &[u8]) -> Vec<u8> {
        let mut f = GW_MAC.to_vec();
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[0x86, 0xdd]);
        let ext_len: usize = headers.iter().map(|(_, b)| b.len()).sum();
        f.extend_from_slice(&[0x6b, 0x81, 0x23, 0x45]);
        f.extend_from_slice(&((ext_len + data.len()) as u16).to_be_bytes());
        f.push(headers.first().map_or(upper, |(k, _)| *k));
        f.push(64);
        f.extend_from_slice(&SRC6);
        f.extend_from_slice(&DST6);
        for (i, (_, bytes)) in headers.iter().enumerate() {
            let mut bytes = bytes.clone();
            bytes[0] = headers.get(i + 1).map_or(upper, |(k, _)| *k);
            f.extend_from_slice(&bytes);
        }
        f.extend_from_slice(data);
        f
    }

    fn frag_header(offset: usize, more: bool, id: u32) -> (u8, Vec<u8>) {
        let mut h = vec![0, 0];
        h.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        (44, h)
    }

    /// Destination options of `len` bytes (a multiple of 8), PadN filled.
    fn dest_opts(len: usize) -> (u8, Vec<u8>) {
        let mut h = vec![0, (len / 8 - 1) as u8, 1, (len - 4) as u8];
        h.resize(len, 0);
        (60, h)
    }

    /// One IPv6 fragment of a UDP datagram, with `before` headers ahead of its fragment
    /// header.
    fn fragment6(
        id: u32,
        offset: usize,
        more: bool,
        data: &[u8],
        before: &[(u8, Vec<u8>)],
    ) -> Vec<u8> {
        let mut headers = before.to_vec();
        headers.push(frag_header(offset, more, id));
        packet6(&headers, 17, data)
    }

    fn train6(id: u32, data: &[u8], size: usize) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let end = (at + size).min(data.len());
            frames.push(fragment6(id, at, end < data.len(), &data[at..end], &[]));
            at = end;
        }
        frames
    }

    /// A reassembled IPv6 frame: `before` headers kept, their last next header UDP, no
    /// fragment header, payload length right, `data` after them.
    fn check_complete6(frame: &[u8], before: &[(u8, Vec<u8>)], data: &[u8]) {
        let expected = packet6(before, 17, data);
        assert_eq!(frame.len(), expected.len());
        assert!(frame == expected.as_slice(), "reassembled frame differs");
    }

    #[test]
    fn ipv6_trains_complete_in_any_order() {
        let mut r = reassembler();
        let mut rng = Rng(0x6666);
        for (n, len) in [30_000usize, 1453, MAX_PAYLOAD_V6, 9, 1448 * 3]
            .into_iter()
            .enumerate()
        {
            let data = payload(len, n as u8);
            let id = 0x8000_0000 + n as u32;
            let frames = train6(id, &data, 1448.min(8 * ((len - 1) / 8)));
            let done = push_all(&mut r, &frames, 0).expect("in order");
            check_complete6(&done, &[], &data);
            let mut shuffled = train6(id, &data, 8 * (1 + rng.below(((len - 1) / 8).min(300))));
            rng.shuffle(&mut shuffled);
            let done = push_all(&mut r, &shuffled, 0).expect("shuffled");
            check_complete6(&done, &[], &data);
            assert_eq!(r.datagrams(), 0);
            assert_eq!(r.held_bytes(), 0);
        }
        assert_eq!(r.counters.completed, 10);
    }

    #[test]
    fn ipv6_headers_before_the_fragment_header_are_kept_from_the_first_fragment() {
        let mut r = reassembler();
        let data = payload(3000, 3);
        let opts = [dest_opts(16)];
        // Later fragments may carry other unfragmentable headers: the first one's count.
        let last = fragment6(7, 1496, false, &data[1496..], &[]);
        let first = fragment6(7, 0, true, &data[..1496], &opts);
        assert_eq!(r.push(&last, 0), Verdict::Held);
        match r.push(&first, 0) {
            Verdict::Complete(f) => check_complete6(f, &opts, &data),
            other => panic!("{other:?}"),
        }
        // Padding after the packet is not data.
        let mut padded = fragment6(8, 0, true, &data[..8], &[]);
        padded.extend_from_slice(&[0xee; 20]);
        assert_eq!(r.push(&padded, 0), Verdict::Held);
        match r.push(&fragment6(8, 8, false, &data[8..16], &[]), 0) {
            Verdict::Complete(f) => check_complete6(f, &[], &data[..16]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipv6_atomic_fragments_pass_without_the_fragment_header_and_leave_trains_alone() {
        let mut r = reassembler();
        let data = payload(2000, 4);
        assert_eq!(
            r.push(&fragment6(5, 0, true, &data[..1000], &[]), 0),
            Verdict::Held
        );
        let atomic = fragment6(5, 0, false, b"whole", &[dest_opts(8)]);
        match r.push(&atomic, 0) {
            Verdict::Complete(f) => check_complete6(f, &[dest_opts(8)], b"whole"),
            other => panic!("{other:?}"),
        }
        match r.push(&fragment6(5, 1000, false, &data[1000..], &[]), 0) {
            Verdict::Complete(f) => check_complete6(f, &[], &data),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.counters.fragments, 3);
        assert_eq!(r.counters.completed, 2);
    }

    #[test]
    fn ipv6_overlaps_duplicates_and_disagreeing_ends() {
        let mut r = reassembler();
        let data = payload(4000, 5);
        let a = fragment6(1, 0, true, &data[..2000], &[]);
        assert_eq!(r.push(&a, 0), Verdict::Held);
        assert_eq!(r.push(&a, 0), Verdict::Dropped(DropReason::Duplicate));
        // Overlaps the held bytes 1992..2000 with the same bytes: still an overlap (RFC 5722).
        let b = fragment6(1, 1992, false, &data[1992..], &[]);
        assert_eq!(r.push(&b, 0), Verdict::Dropped(DropReason::Overlap));
        assert_eq!(r.held_bytes(), 0);
        let c = fragment6(1, 2000, false, &data[2000..], &[]);
        assert_eq!(r.push(&c, 0), Verdict::Dropped(DropReason::Discarded));
        r.expire(10_000);
        assert_eq!(r.datagrams(), 0);

        assert_eq!(
            r.push(&fragment6(2, 800, false, &data[..8], &[]), 0),
            Verdict::Held
        );
        assert_eq!(
            r.push(&fragment6(2, 1600, false, &data[..8], &[]), 0),
            Verdict::Dropped(DropReason::Inconsistent)
        );
        assert_eq!(r.counters.overlap, 1);
        assert_eq!(r.counters.duplicates, 1);
        assert_eq!(r.counters.discarded, 1);
        assert_eq!(r.counters.inconsistent, 1);
    }

    #[test]
    fn ipv6_payload_past_65535_is_refused() {
        let mut r = reassembler();
        // Offset 65528 + 8 bytes ends at 65536.
        let f = fragment6(3, 65528, false, &[0; 8], &[]);
        assert_eq!(r.push(&f, 0), Verdict::Dropped(DropReason::TooLong));
        // Ends at 65535 exactly: fine without extension headers ...
        assert_eq!(
            r.push(&fragment6(3, 65528, false, &[0; 7], &[]), 0),
            Verdict::Held
        );
        // ... but a first fragment with 8 bytes of them leaves room for 65527 only.
        assert_eq!(
            r.push(&fragment6(3, 0, true, &[0; 8], &[dest_opts(8)]), 0),
            Verdict::Dropped(DropReason::Inconsistent)
        );
        // And its own data past that room is too long.
        let f = fragment6(4, 65520, false, &[0; 8], &[dest_opts(8)]);
        assert_eq!(r.push(&f, 0), Verdict::Dropped(DropReason::TooLong));
        assert_eq!(
            r.push(&fragment6(4, 0, true, &[0; 8], &[dest_opts(16)]), 0),
            Verdict::Held
        );
        assert_eq!(
            r.push(&fragment6(4, 65512, false, &[0; 8], &[]), 0),
            Verdict::Dropped(DropReason::Inconsistent)
        );
        assert_eq!(r.counters.too_long, 2);
    }

    #[test]
    fn ipv6_bad_fragments_are_dropped_and_non_fragments_pass() {
        let mut r = reassembler();
        // Claims a fragment, bad: truncated fragment header, payload length past the
        // frame, too many bytes of headers before the fragment header, zero length,
        // unaligned.
        let mut truncated = packet6(&[], 44, &[17, 0, 0]);
        truncated.truncate(ETHER_HDR + IPV6_HDR + 3);
        let mut beyond = fragment6(1, 8, true, &[0; 8], &[]);
        beyond.truncate(beyond.len() - 1);
        let long_head = fragment6(1, 8, true, &[0; 8], &[dest_opts(72)]);
        let chain: Vec<_> = (0..8).map(|_| dest_opts(8)).collect();
        let deep = fragment6(1, 8, true, &[0; 8], &chain);
        // A first fragment whose fragmentable part starts with a fragment header.
        let nested = packet6(&[frag_header(0, true, 1)], 44, &[0; 16]);
        for f in [&truncated, &beyond, &long_head, &deep, &nested] {
            assert_eq!(r.push(f, 0), Verdict::Dropped(DropReason::Malformed));
        }
        assert_eq!(
            r.push(&fragment6(1, 8, true, &[], &[]), 0),
            Verdict::Dropped(DropReason::ZeroLength)
        );
        assert_eq!(
            r.push(&fragment6(1, 8, true, &[0; 12], &[]), 0),
            Verdict::Dropped(DropReason::Unaligned)
        );
        // 64 bytes of headers before the fragment header are kept.
        assert_eq!(
            r.push(&fragment6(1, 8, true, &[0; 8], &[dest_opts(64)]), 0),
            Verdict::Held
        );
        // A later fragment's next header is not looked at (RFC 8200 4.5).
        let later = packet6(&[frag_header(16, true, 1)], 44, &[0; 16]);
        assert_eq!(r.push(&later, 0), Verdict::Held);
        assert_eq!(r.counters.fragments, 9);

        // Do not claim a fragment: pass untouched whatever libslirp will make of them.
        let plain = packet6(&[], 17, b"datagram");
        let chain_no_fragment = packet6(
            &[dest_opts(8), (43, vec![0, 0, 0, 0, 0, 0, 0, 0])],
            17,
            b"x",
        );
        let mut broken_chain = packet6(&[dest_opts(16)], 17, b"");
        let cut = broken_chain.len() - 4;
        broken_chain.truncate(cut);
        broken_chain[18..20].copy_from_slice(&12u16.to_be_bytes());
        let hop_late = packet6(
            &[dest_opts(8), (0, vec![0; 8]), frag_header(8, true, 1)],
            17,
            &[0; 8],
        );
        let mut short = plain.clone();
        short.truncate(ETHER_HDR + 39);
        let mut bad_len = plain.clone();
        bad_len[18..20].copy_from_slice(&100u16.to_be_bytes());
        for f in [
            &plain,
            &chain_no_fragment,
            &broken_chain,
            &hop_late,
            &short,
            &bad_len,
        ] {
            assert_eq!(r.push(f, 0), Verdict::Pass(f.as_slice()));
        }
        assert_eq!(r.counters.fragments, 9);
    }

    #[test]
    fn ipv4_and_ipv6_share_the_bounds_and_never_mix() {
        let limits = ReasmLimits {
            max_datagrams: 4,
            ..ReasmLimits::default()
        };
        let mut r = Reassembler::new(limits);
        let data = payload(3000, 6);
        // Same id, same "first bytes" of the addresses: two datagrams.
        assert_eq!(
            r.push(&fragment(9, 0, true, &data[..1480], 0), 0),
            Verdict::Held
        );
        assert_eq!(
            r.push(&fragment6(9, 0, true, &data[..1480], &[]), 0),
            Verdict::Held
        );
        assert_eq!(r.datagrams(), 2);
        match r.push(&fragment6(9, 1480, false, &data[1480..], &[]), 0) {
            Verdict::Complete(f) => check_complete6(f, &[], &data),
            other => panic!("{other:?}"),
        }
        match r.push(&fragment(9, 1480, false, &data[1480..], 0), 0) {
            Verdict::Complete(f) => check_complete(f, 9, &data),
            other => panic!("{other:?}"),
        }
        // A flood of lone IPv6 fragments: the datagram bound holds, the oldest go first,
        // an IPv4 train among them included.
        assert_eq!(
            r.push(&fragment(1, 8, true, &data[..8], 0), 0),
            Verdict::Held
        );
        for id in 0..100u32 {
            assert_eq!(
                r.push(&fragment6(id, 8, true, &data[..8], &[]), 1),
                Verdict::Held
            );
            assert!(r.datagrams() <= 4);
            assert!(r.held_bytes() <= r.limits().max_bytes);
        }
        assert_eq!(r.counters.evicted, 97);
    }

    #[test]
    fn fuzz_random_ipv6_mutations() {
        let limits = ReasmLimits {
            max_datagrams: 8,
            max_bytes: 96 * PAGE,
            max_age_ms: 50,
        };
        let mut r = Reassembler::new(limits);
        let mut rng = Rng(0x0006_5eed);
        let mut pool: Vec<Vec<u8>> = Vec::new();
        for iteration in 0..100_000u32 {
            if pool.is_empty() {
                let max = if rng.below(10) == 0 {
                    MAX_PAYLOAD_V6
                } else {
                    6000
                };
                let len = 1 + rng.below(max);
                let id = rng.below(64) as u32;
                let size = 8 * (1 + rng.below(200));
                pool = if rng.below(4) == 0 {
                    train(
                        id as u16,
                        &payload(len.min(MAX_PAYLOAD), rng.next() as u8),
                        size,
                    )
                } else {
                    train6(id, &payload(len, rng.next() as u8), size)
                };
                rng.shuffle(&mut pool);
            }
            let mut f = pool.pop().unwrap_or_default();
            match rng.below(12) {
                // Flip bits of the headers, fragment header included.
                0 => {
                    for _ in 0..1 + rng.below(3) {
                        let i = rng.below(f.len().min(ETHER_HDR + IPV6_HDR + 8));
                        if i < f.len() {
                            f[i] ^= 1 << rng.below(8);
                        }
                    }
                }
                // A random fragment field: offset and M.
                1 if f.len() >= ETHER_HDR + IPV6_HDR + 8 && f[12..14] == [0x86, 0xdd] => {
                    let v = rng.next() as u16;
                    f[ETHER_HDR + IPV6_HDR + 2..ETHER_HDR + IPV6_HDR + 4]
                        .copy_from_slice(&v.to_be_bytes());
                }
                2 => f.truncate(rng.below(f.len() + 1)),
                3 => pool.push(f.clone()),
                4 => {
                    let mut forged = f.clone();
                    if let Some(b) = forged.last_mut() {
                        *b ^= 0x55;
                    }
                    pool.insert(rng.below(pool.len() + 1), forged);
                }
                _ => {}
            }
            let now = i64::from(iteration / 16);
            match r.push(&f, now) {
                Verdict::Complete(out) if out[12..14] == [0x86, 0xdd] => {
                    let ip = &out[ETHER_HDR..];
                    assert_eq!(ip[0] >> 4, 6);
                    assert_eq!(
                        usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                        ip.len() - IPV6_HDR
                    );
                }
                Verdict::Complete(out) => assert_eq!(out[ETHER_HDR], 0x45),
                Verdict::Pass(p) => assert_eq!(p, f.as_slice()),
                Verdict::Held | Verdict::Dropped(_) => {}
            }
            r.expire(now);
            assert!(r.held_bytes() <= r.limits().max_bytes);
            assert!(r.datagrams() <= r.limits().max_datagrams);
        }
        let c = r.counters;
        assert!(c.completed > 100, "{c:?}");
        for (what, n) in [
            ("malformed", c.malformed),
            ("overlap", c.overlap),
            ("inconsistent", c.inconsistent),
            ("duplicates", c.duplicates),
            ("too_long", c.too_long),
            ("evicted", c.evicted),
        ] {
            assert!(n > 10, "{what} never happened: {c:?}");
        }
        // Evictions come first with 8 slots; a few trains still reach the age limit.
        assert!(c.expired > 0, "{c:?}");
        r.expire(i64::MAX);
        assert_eq!(r.held_bytes(), 0);
    }
}
