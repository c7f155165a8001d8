//! Frame I/O on the frontend socket: one raw Ethernet frame per SOCK_SEQPACKET record.
//!
//! Owns: the frame limit, reading guest frames (dropping runts, oversize and empty records)
//! and sending libslirp's frames with `MSG_EOR` without ever blocking the loop.
//! Both directions go through preallocated rings of whole-frame slots, moved with
//! `recvmmsg`/`sendmmsg`; a batch of 1 is the C helper's one frame per syscall.

#[deny(unsafe_code)]
pub mod fragment;
mod mmsg;
#[deny(unsafe_code)]
mod rx;
#[deny(unsafe_code)]
mod tx;

pub use mmsg::{FrameBatch, Received};
pub use rx::{FrameRx, RxStatus};
pub use tx::FrameTx;

/// Bytes of an Ethernet header (no FCS on this socket): the one `wire` defines.
pub const ETHER_HDR: usize = crate::wire::ethernet::HEADER_LEN;
/// An 802.1Q tag a guest may add on top of its MTU.
pub(crate) const VLAN_TAG: usize = 4;
/// Frames per batch unless told otherwise (`--batch`, `batch=`): see `benches/frames.rs`.
pub const DEFAULT_BATCH: usize = 64;

/// Work after which frames queued for the guest go out without waiting for the end of the
/// iteration or a full ring: bytes queued, plus guest bytes handed to libslirp since the last
/// flush. At MTU 1500 about 22 frames still go in one `sendmmsg`; at MTU 65520 each
/// frame goes at once, as does the ACK of each large guest frame. libslirp's TCP windows are
/// only 128 KiB (two or three 64 KiB segments), so a frame that waits for its neighbours to be
/// copied, or an ACK that waits for the rest of a batch to be processed, stalls the sender
/// (measured at MTU 65520: +15-20 % guest→host).
pub(crate) const FLUSH_BYTES: usize = 32 * 1024;

/// Largest frame the older bhyve accepts, and the limit when `mtui` is absent.
pub(crate) const LEGACY_FRAME_LIMIT: usize = 2048;

/// The largest frame either side may send: guest MTU + 14, or 2048 when bhyve sent no `mtui`
/// (older bhyve asserts that it never receives more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimit {
    max_frame: usize,
}

impl FrameLimit {
    pub fn from_mtui(mtui: Option<u32>) -> FrameLimit {
        let max_frame = match mtui {
            Some(mtu) => mtu as usize + ETHER_HDR,
            None => LEGACY_FRAME_LIMIT,
        };
        FrameLimit { max_frame }
    }

    /// Largest frame in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The IP MTU libslirp is given (`if_mtu` and `if_mru`): its frames are MTU + 14 at most,
    /// so they always fit the limit.
    pub fn mtu(&self) -> usize {
        self.max_frame - ETHER_HDR
    }

    /// Size of one receive buffer: a whole frame with a VLAN tag, rounded up to a cache line,
    /// plus one byte so that a frame longer than that is seen as truncated, not as a fit.
    pub(crate) fn rx_slot(&self) -> usize {
        (self.max_frame + VLAN_TAG).div_ceil(64) * 64 + 1
    }

    /// Largest guest frame accepted (a VLAN tag on top of the MTU is allowed).
    pub(crate) fn max_rx_frame(&self) -> usize {
        self.max_frame + VLAN_TAG
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_follows_mtui_or_the_legacy_2048() {
        let legacy = FrameLimit::from_mtui(None);
        assert_eq!(legacy.max_frame(), 2048);
        assert_eq!(legacy.mtu(), 2034);
        let std = FrameLimit::from_mtui(Some(1500));
        assert_eq!(std.max_frame(), 1514);
        assert_eq!(std.mtu(), 1500);
        assert!(std.rx_slot() > std.max_rx_frame());
        let jumbo = FrameLimit::from_mtui(Some(65520));
        assert_eq!(jumbo.max_frame(), 65534);
    }
}
