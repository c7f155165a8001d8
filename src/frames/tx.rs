//! Helper → guest: the TX ring. libslirp's `send_packet` copies each frame into the next
//! preallocated slot; the ring goes out with one `sendmmsg` when it fills, when `FLUSH_BYTES`
//! (32 KiB) of work were done since the last flush (frames queued, guest bytes handed to
//! libslirp), and at the end of every loop iteration. When the frontend cannot take more (EAGAIN/ENOBUFS) the frames stay
//! queued and the loop watches for writability; what does not fit in the ring is dropped and
//! counted, as bhyve itself drops (TCP retransmits). The loop never blocks on the frontend.
//! With a batch of 1 this is the C helper's one `send` per frame.

use super::fragment::Fragmenter;
use super::mmsg::{self, GatherList};
use super::{FrameLimit, FLUSH_BYTES};
use crate::diag;
use crate::pcap::Capture;
use crate::stats::TxCounters;
use std::io;
use std::os::fd::BorrowedFd;

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
const SEND_FLAGS: libc::c_int = libc::MSG_EOR | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
const SEND_FLAGS: libc::c_int = libc::MSG_EOR | libc::MSG_DONTWAIT;

/// The ring over the frontend socket, which it borrows for `'fd` (`main` owns it).
pub struct FrameTx<'fd> {
    fd: BorrowedFd<'fd>,
    limit: FrameLimit,
    slot: usize,
    /// `capacity` slots of `slot` bytes, allocated once.
    bufs: Vec<u8>,
    /// Length of the frame in each slot.
    lens: Vec<usize>,
    /// First queued slot and number of queued frames.
    head: usize,
    queued: usize,
    /// Bytes of the head frame already sent: FreeBSD's SEQPACKET can take part of a record
    /// on a non-blocking send, and the record must be finished before another may start.
    head_sent: usize,
    /// The `sendmmsg` headers, pointed at the queued frames for each send.
    out: GatherList,
    /// False after `sendmmsg` turned out to be unavailable (or for a batch of 1).
    batched: bool,
    /// Bytes queued and guest bytes handed to libslirp since the last flush.
    work_since_flush: usize,
    /// The peer is gone (EPIPE/ECONNRESET/ENOTCONN/ECONNREFUSED): the loop ends.
    peer_gone: bool,
    /// Frames (from the head) handed to the io_uring engine's ring, which sends them in its
    /// next enter, until their outcome comes back: their slots are not written meanwhile.
    in_ring: usize,
    /// The frontend refused a ring batch (EAGAIN): the queue goes by `sendmmsg` until it
    /// empties again, so that a stuck frontend is waited for (the loop watches for
    /// writability while frames are pending) instead of being retried in every enter.
    #[cfg(target_os = "linux")]
    ring_stalled: bool,
    /// Identification of the next IPv6 packet split into fragments.
    ipv6_id: u32,
    /// `pcap=`: frames are recorded as they go out whole (and, through the loop, as guest
    /// frames come in), so the ring that knows when a frame really left holds the file.
    pub capture: Option<Capture>,
    pub counters: TxCounters,
}

impl<'fd> FrameTx<'fd> {
    /// A ring of `batch` slots (at least 1).
    pub fn new(fd: BorrowedFd<'fd>, limit: FrameLimit, batch: usize) -> FrameTx<'fd> {
        let capacity = batch.max(1);
        let slot = limit.max_frame();
        FrameTx {
            fd,
            limit,
            slot,
            bufs: vec![0; slot * capacity],
            lens: vec![0; capacity],
            head: 0,
            queued: 0,
            head_sent: 0,
            out: GatherList::new(capacity),
            batched: capacity > 1,
            work_since_flush: 0,
            peer_gone: false,
            in_ring: 0,
            #[cfg(target_os = "linux")]
            ring_stalled: false,
            ipv6_id: 1,
            capture: None,
            counters: TxCounters::default(),
        }
    }

    fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Whether frames are waiting for the socket to become writable.
    pub fn has_pending(&self) -> bool {
        self.queued > self.in_ring
    }

    pub fn peer_gone(&self) -> bool {
        self.peer_gone
    }

    /// Queue one frame for the frontend (libslirp's `send_packet`); it goes out with the next
    /// flush. Always reports the whole frame as taken: a drop is the network's business, and
    /// a short or negative answer makes libslirp log per packet.
    pub fn queue(&mut self, frame: &[u8]) -> isize {
        let taken = frame.len() as isize;
        if self.peer_gone {
            self.counters.errors += 1;
            return taken;
        }
        if frame.len() > self.limit.max_frame() {
            self.queue_fragments(frame);
            return taken;
        }
        let Some(index) = self.reserve() else {
            return taken;
        };
        let start = index * self.slot;
        self.bufs[start..start + frame.len()].copy_from_slice(frame);
        self.commit(index, frame.len());
        taken
    }

    /// A frame longer than the guest's link (libslirp's `if_mtu` is above the guest MTU when
    /// IPv6 is on): its IP fragments, each written straight into a slot. A packet that cannot
    /// be split is dropped (`tx_oversize`); fragments that find the ring full after a flush
    /// are dropped (`tx_full`), as the guest would lose the datagram anyway.
    fn queue_fragments(&mut self, frame: &[u8]) {
        let mut fragments = match Fragmenter::new(frame, self.limit.max_frame(), self.ipv6_id) {
            Ok(fragments) => fragments,
            Err(_) => {
                self.counters.oversize += 1;
                return;
            }
        };
        self.ipv6_id = self.ipv6_id.wrapping_add(1);
        self.counters.fragmented += 1;
        while fragments.remaining() > 0 {
            let Some(index) = self.reserve() else {
                self.counters.full += fragments.remaining() as u64 - 1;
                return;
            };
            let start = index * self.slot;
            let len = fragments
                .write_next(&mut self.bufs[start..start + self.slot])
                .expect("a fragment remains");
            self.commit(index, len);
        }
    }

    /// The next free slot, flushing when the ring is full; `None` (counted in `tx_full`) when
    /// it is still full.
    fn reserve(&mut self) -> Option<usize> {
        if self.queued == self.capacity() {
            self.flush();
            if self.queued == self.capacity() {
                self.counters.full += 1;
                return None;
            }
        }
        Some((self.head + self.queued) % self.capacity())
    }

    /// Slot `index` (from [`FrameTx::reserve`]) now holds a frame of `len` bytes.
    fn commit(&mut self, index: usize, len: usize) {
        self.lens[index] = len;
        self.queued += 1;
        self.work_since_flush += len;
        if self.queued == self.capacity() || self.work_since_flush >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Frame `i` of the queue (0 = head), minus what of the head is already sent.
    fn queued_bytes(&self, i: usize) -> &[u8] {
        queued_frame(
            &self.bufs,
            &self.lens,
            self.slot,
            self.head,
            self.head_sent,
            i,
        )
    }

    /// Retire `bytes` sent of the head frame; true when the whole frame is gone.
    fn retire(&mut self, bytes: usize) -> bool {
        let index = self.head;
        if self.head_sent + bytes < self.lens[index] {
            self.head_sent += bytes;
            return false;
        }
        self.counters.frames += 1;
        self.counters.bytes += self.lens[index] as u64;
        if let Some(capture) = &mut self.capture {
            let start = index * self.slot;
            capture.record(&self.bufs[start..start + self.lens[index]]);
        }
        self.head = (self.head + 1) % self.capacity();
        self.queued -= 1;
        self.head_sent = 0;
        true
    }

    /// One syscall: how many frames fully went out, or the error.
    fn send_some(&mut self) -> io::Result<usize> {
        self.counters.syscalls += 1;
        if !self.batched || self.queued == 1 {
            let n = mmsg::send_one(self.fd, self.queued_bytes(0), SEND_FLAGS)?;
            return Ok(usize::from(self.retire(n)));
        }
        let count = self.queued;
        let (bufs, lens, slot, head, head_sent) =
            (&self.bufs, &self.lens, self.slot, self.head, self.head_sent);
        let frames = (0..count).map(|i| queued_frame(bufs, lens, slot, head, head_sent, i));
        let sent = self.out.send(self.fd, frames, SEND_FLAGS)?;
        let mut whole = 0;
        for i in 0..sent {
            if !self.retire(self.out.sent_len(i)) {
                break;
            }
            whole += 1;
        }
        Ok(whole)
    }

    /// A guest frame of `len` bytes went to libslirp: once `FLUSH_BYTES` of work were done, what
    /// it answered (ACKs, mostly) goes out instead of waiting for the rest of the batch.
    pub(crate) fn note_input(&mut self, len: usize) {
        self.work_since_flush += len;
        if self.queued > 0 && self.work_since_flush >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Send what is queued, as far as the frontend takes it. True when the ring is empty.
    pub fn flush(&mut self) -> bool {
        self.work_since_flush = 0;
        if self.in_ring > 0 {
            // In the ring's hands until its outcome (never the case within an iteration:
            // the outcome comes with the wait that starts it).
            return false;
        }
        while self.queued > 0 && !self.peer_gone {
            let before = self.queued;
            match self.send_some() {
                Ok(_) if self.queued < before => {
                    self.counters.batches += 1;
                }
                // Part of the head frame went (FreeBSD): the socket is full for now.
                Ok(_) => break,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                        self.counters.eagain += 1;
                        break;
                    }
                    Some(errno) if peer_gone(errno) => {
                        self.peer_gone = true;
                        self.drop_queue();
                    }
                    _ if self.batched && mmsg::unsupported(&e) => {
                        diag::warn(&format!(
                            "sendmmsg unavailable ({e}): sending one frame per send"
                        ));
                        self.batched = false;
                    }
                    _ => {
                        // Anything else (EMSGSIZE…) is about the head frame: drop it, go on.
                        self.counters.errors += 1;
                        self.head_sent = 0;
                        self.head = (self.head + 1) % self.capacity();
                        self.queued -= 1;
                    }
                },
            }
        }
        self.queued == 0
    }

    /// The end of an iteration: with the io_uring engine, the queue goes as linked SENDs in
    /// the ring's next enter, the one that waits (no system call of its own); otherwise, or
    /// while the frontend is stalled, `flush`.
    #[cfg(target_os = "linux")]
    pub(crate) fn flush_through(&mut self, poller: &mut crate::poller::Poller) {
        if self.ring_stalled
            || self.queued == 0
            || self.in_ring > 0
            || self.peer_gone
            || self.head_sent != 0
            || !poller.sends_frames()
        {
            if self.flush() {
                self.ring_stalled = false;
            }
            return;
        }
        self.work_since_flush = 0;
        let count = self.queued;
        let (bufs, lens, slot, head) = (&self.bufs, &self.lens, self.slot, self.head);
        let frames = (0..count).map(|i| queued_frame(bufs, lens, slot, head, 0, i));
        #[allow(unsafe_code)]
        // SAFETY: the frames are the queued slots of `bufs`, a heap block that never moves
        // or shrinks. `in_ring` is set to the number handed over at once, and until
        // `ring_outcome` clears it nothing writes them: `queue` writes only past the queued
        // frames, `flush` refuses to run, and the loop takes the outcome right after the
        // wait whose enter sends them. The poller is dropped before this ring (a field of
        // `Host` declared earlier), so an unsent batch is never read after the slots go.
        let pushed = unsafe { poller.push_frame_sends(frames, count) };
        if pushed == 0 {
            self.flush();
        } else {
            self.in_ring = pushed;
        }
    }

    /// How the batch handed to the ring fared: the frames that went are retired, the rest
    /// stay queued (a stalled frontend), or go (the peer is gone, or the frame was refused).
    #[cfg(target_os = "linux")]
    pub(crate) fn ring_outcome(&mut self, outcome: crate::poller::uring::SendOutcome) {
        let handed = std::mem::take(&mut self.in_ring);
        let sent = outcome.sent.min(handed).min(self.queued);
        for _ in 0..sent {
            self.retire(self.lens[self.head]);
        }
        if sent > 0 {
            self.counters.batches += 1;
        }
        match outcome.error {
            None => {}
            Some(libc::EAGAIN)
            | Some(libc::ENOBUFS)
            | Some(libc::EINTR)
            | Some(libc::ECANCELED) => {
                self.counters.eagain += 1;
                self.ring_stalled = true;
            }
            Some(errno) if peer_gone(errno) => {
                self.peer_gone = true;
                self.drop_queue();
            }
            Some(_) if self.queued > 0 => {
                // About the failed frame alone (EMSGSIZE…): drop it, go on.
                self.counters.errors += 1;
                self.head = (self.head + 1) % self.capacity();
                self.queued -= 1;
            }
            Some(_) => {}
        }
    }

    fn drop_queue(&mut self) {
        self.counters.errors += self.queued as u64;
        self.queued = 0;
        self.head_sent = 0;
    }
}

/// Whether a send's `errno` says the frontend is gone. ECONNREFUSED: a SOCK_DGRAM peer
/// (QEMU's `-netdev socket`) is gone; a connected datagram socket has no other hangup to report.
fn peer_gone(errno: i32) -> bool {
    matches!(
        errno,
        libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNREFUSED
    )
}

/// Frame `i` of a ring queue starting at slot `head` (0 = head), minus the `head_sent` bytes
/// of the head already sent. Free of `FrameTx` so that a send can borrow the frames and the
/// headers at once.
fn queued_frame<'a>(
    bufs: &'a [u8],
    lens: &[usize],
    slot: usize,
    head: usize,
    head_sent: usize,
    i: usize,
) -> &'a [u8] {
    let index = (head + i) % lens.len();
    let start = index * slot;
    let skip = if i == 0 { head_sent } else { 0 };
    &bufs[start + skip..start + lens[index]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    fn pair() -> (UnixDatagram, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Datagrams waiting at `peer`, read and counted.
    fn received(peer: &UnixDatagram) -> usize {
        let mut buf = vec![0u8; 70_000];
        std::iter::from_fn(|| peer.recv(&mut buf).ok()).count()
    }

    #[test]
    fn frames_wait_for_flush_bytes_of_work_then_go_in_one_batch() {
        let (helper, peer) = pair();
        let mut tx = FrameTx::new(helper.as_fd(), FrameLimit::from_mtui(Some(65520)), 64);
        let frame = vec![0x5a; 20_000];
        tx.queue(&frame);
        assert!(tx.has_pending(), "20 000 bytes are below FLUSH_BYTES");
        assert_eq!(received(&peer), 0);
        tx.queue(&frame);
        assert!(!tx.has_pending(), "40 000 bytes queued: the ring goes out");
        assert_eq!(received(&peer), 2);
        assert_eq!((tx.counters.frames, tx.counters.syscalls), (2, 1));
    }

    #[test]
    fn answers_go_out_once_flush_bytes_of_guest_input_were_handed_over() {
        let (helper, peer) = pair();
        let mut tx = FrameTx::new(helper.as_fd(), FrameLimit::from_mtui(Some(1500)), 64);
        tx.queue(&[0x11; 60]);
        tx.note_input(FLUSH_BYTES / 2);
        assert!(tx.has_pending());
        assert_eq!(received(&peer), 0);
        tx.note_input(FLUSH_BYTES / 2);
        assert!(
            !tx.has_pending(),
            "an ACK waits for at most FLUSH_BYTES of guest input"
        );
        assert_eq!(received(&peer), 1);
        // Nothing queued: guest input alone sends nothing.
        tx.note_input(FLUSH_BYTES * 4);
        assert_eq!(tx.counters.syscalls, 1);
    }

    #[test]
    fn a_frame_over_the_limit_goes_out_as_ip_fragments_and_a_non_ip_one_is_dropped() {
        let (helper, peer) = pair();
        let mut tx = FrameTx::new(helper.as_fd(), FrameLimit::from_mtui(Some(1500)), 64);
        // A 4000-byte IPv4 datagram (DF clear): 1480 + 1480 + 1020 bytes of payload.
        let mut frame = vec![0u8; 14 + 4000];
        frame[12..14].copy_from_slice(&crate::wire::ethernet::ETHERTYPE_IPV4.to_be_bytes());
        crate::wire::Ipv4Repr {
            ttl: 64,
            protocol: crate::wire::protocol::UDP,
            ..Default::default()
        }
        .emit((&mut frame[14..34]).try_into().unwrap(), 4000);
        assert_eq!(tx.queue(&frame), frame.len() as isize);
        frame[12..14].copy_from_slice(&[0x88, 0xb5]);
        tx.queue(&frame);
        tx.flush();
        let mut buf = vec![0u8; 70_000];
        let lens: Vec<usize> = std::iter::from_fn(|| peer.recv(&mut buf).ok()).collect();
        assert_eq!(lens, [1514, 1514, 14 + 20 + 1020]);
        assert_eq!((tx.counters.fragmented, tx.counters.oversize), (1, 1));
        assert_eq!(tx.counters.frames, 3);
    }

    #[test]
    fn a_ring_of_one_sends_every_frame_at_once() {
        let (helper, peer) = pair();
        let mut tx = FrameTx::new(helper.as_fd(), FrameLimit::from_mtui(Some(1500)), 1);
        for _ in 0..3 {
            tx.queue(&[0x22; 100]);
            assert!(!tx.has_pending());
        }
        assert_eq!(received(&peer), 3);
    }

    #[test]
    fn a_refused_datagram_send_means_the_peer_is_gone() {
        // A UDP socket connected to a port nobody holds (127.0.0.1 only): the kernel's ICMP
        // "port unreachable" comes back as ECONNREFUSED on a later send. Without treating it
        // as a hangup the helper lives on as an orphan holding its forwards.
        let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let helper = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        helper.connect(gone.local_addr().unwrap()).unwrap();
        drop(gone);
        helper.set_nonblocking(true).unwrap();
        let mut tx = FrameTx::new(helper.as_fd(), FrameLimit::from_mtui(Some(1500)), 1);
        for _ in 0..50 {
            tx.queue(&[0x33; 60]);
            if tx.peer_gone() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(tx.peer_gone(), "errors counted: {}", tx.counters.errors);
    }
}
