//! Counters of the data path, dumped as one `key=value` line on SIGUSR1 (SIGINFO on the BSDs)
//! and at exit. Never logged per packet.

use std::fmt::Write;

/// Frames from the guest (frontend → helper).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxCounters {
    /// Frames accepted (handed to the reassembler, which passes all but fragments on to
    /// libslirp).
    pub frames: u64,
    pub bytes: u64,
    /// Read syscalls on the frontend socket (including the one that found it empty).
    pub syscalls: u64,
    /// Reads that returned at least one message.
    pub batches: u64,
    /// Dropped: shorter than an Ethernet header.
    pub runt: u64,
    /// Dropped: longer than the frame limit (or cut short by the kernel: MSG_TRUNC).
    pub oversize: u64,
    /// Dropped: zero-length records (the peer is alive; not EOF).
    pub empty: u64,
}

/// Frames to the guest (helper → frontend).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxCounters {
    pub frames: u64,
    pub bytes: u64,
    /// Send syscalls on the frontend socket.
    pub syscalls: u64,
    /// Sends that moved at least one whole frame.
    pub batches: u64,
    /// Dropped: above what the frontend accepts (mtui + 14, or 2048) and not split: not IP,
    /// IPv4 with DF or options, IPv6 with extension headers (`frames::fragment`).
    pub oversize: u64,
    /// libslirp packets above what the frontend accepts, split into IP fragments.
    pub fragmented: u64,
    /// Dropped: the frontend's receive buffer was full (EAGAIN/ENOBUFS), as bhyve drops too.
    pub full: u64,
    /// Sends that returned EAGAIN/ENOBUFS.
    pub eagain: u64,
    /// Dropped: any other send error.
    pub errors: u64,
}

/// The loop itself.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoopCounters {
    pub iterations: u64,
    /// Waits ended by libslirp's notify (the wakeup pipe).
    pub wakeups: u64,
    /// libslirp's reports of guest misbehaviour.
    pub guest_errors: u64,
    /// Waits after which libslirp's socket walk was skipped: a persistent poller reported
    /// nothing for its sockets (`event_loop::iterate`). Printed with the poller's counters.
    pub poll_walks_skipped: u64,
}

/// Reassembly of guest IPv4 and IPv6 fragments (`crate::reasm`): what came in, what became
/// whole datagrams, and why the rest was dropped. One set for both families.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReasmCounters {
    /// Frames whose IPv4 header claims to be a fragment (MF set or a non-zero offset), or whose
    /// IPv6 extension headers lead to a fragment header.
    pub fragments: u64,
    /// Datagrams reassembled and handed to libslirp as one frame (IPv6 atomic fragments too).
    pub completed: u64,
    /// Incomplete datagrams dropped at the age limit.
    pub expired: u64,
    /// Incomplete datagrams dropped, oldest first, to make room (datagram or byte bound).
    pub evicted: u64,
    /// Dropped: the header claims a fragment but fails validation.
    pub malformed: u64,
    /// Dropped: a fragment without payload.
    pub zero_length: u64,
    /// Dropped: not the last fragment, length not a multiple of 8.
    pub unaligned: u64,
    /// Dropped: data past the 65535 bytes of an IPv4 datagram (IPv6: past a payload length of
    /// 65535).
    pub too_long: u64,
    /// Datagrams dropped: a fragment overlapped held data with different bytes.
    pub overlap: u64,
    /// Datagrams dropped: fragments disagreed on where the datagram ends.
    pub inconsistent: u64,
    /// Dropped: a late fragment of a datagram dropped earlier.
    pub discarded: u64,
    /// Ignored: exact resends of held data.
    pub duplicates: u64,
    /// Dropped: no room even after evicting every other datagram.
    pub no_room: u64,
    /// Fragment data held now, in bytes (whole 1 KiB pages).
    pub held_bytes: u64,
    /// Most fragment data ever held at once.
    pub held_bytes_high_water: u64,
}

/// libslirp's descriptors against the flow budget (`crate::flow_budget`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BudgetCounters {
    /// Dropped: guest frames that could have opened a new flow while libslirp held its
    /// budget of sockets.
    pub flows_refused: u64,
    /// Times a listener was found readable with no descriptor free and its read interest
    /// was masked for a while (its `accept()` would fail with EMFILE and spin the loop).
    pub accept_backoffs: u64,
    /// Dropped: guest ICMPv6 echo requests to outside addresses, which libslirp before 4.8
    /// drops with a CRITICAL log line each (`crate::echo6`).
    pub echo6_unserved: u64,
}

/// ` flow_budget=… slirp_sockets=… flows_refused=… accept_backoffs=… echo6_unserved=…`, each
/// with a leading
/// space, to append to [`line`].
pub(crate) fn budget_fields(budget: usize, held: usize, c: &BudgetCounters) -> String {
    format!(
        " flow_budget={budget} slirp_sockets={held} flows_refused={} accept_backoffs={} \
         echo6_unserved={}",
        c.flows_refused, c.accept_backoffs, c.echo6_unserved
    )
}

/// Guest TCP segments merged before libslirp (`crate::coalesce`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceCounters {
    /// Segments that went into a merge of two or more.
    pub segments: u64,
    /// Merged frames handed to libslirp.
    pub frames: u64,
}

/// ` coalesced_segments=… coalesced_frames=…`, each with a leading space, to append to [`line`].
pub(crate) fn coalesce_fields(c: &CoalesceCounters) -> String {
    format!(
        " coalesced_segments={} coalesced_frames={}",
        c.segments, c.frames
    )
}

/// ` pcap_frames=… pcap_bytes=… pcap_stopped=0|1`, each with a leading space, to append to
/// [`line`]; only when capture is on.
pub(crate) fn capture_fields(c: &crate::pcap::CaptureCounters) -> String {
    format!(
        " pcap_frames={} pcap_bytes={} pcap_stopped={}",
        c.frames,
        c.bytes,
        u8::from(c.stopped)
    )
}

/// ` frag_in=… frag_completed=… …`: the reassembly fields, each with a leading space, to
/// append to [`line`].
pub(crate) fn reasm_fields(c: &ReasmCounters) -> String {
    let mut s = String::with_capacity(256);
    let fields: [(&str, u64); 15] = [
        ("frag_in", c.fragments),
        ("frag_completed", c.completed),
        ("frag_expired", c.expired),
        ("frag_evicted", c.evicted),
        ("frag_malformed", c.malformed),
        ("frag_zero_length", c.zero_length),
        ("frag_unaligned", c.unaligned),
        ("frag_too_long", c.too_long),
        ("frag_overlap", c.overlap),
        ("frag_inconsistent", c.inconsistent),
        ("frag_discarded", c.discarded),
        ("frag_duplicate", c.duplicates),
        ("frag_no_room", c.no_room),
        ("frag_held_bytes", c.held_bytes),
        ("frag_held_high_water", c.held_bytes_high_water),
    ];
    for (key, value) in fields {
        let _ = write!(s, " {key}={value}");
    }
    s
}

/// One line: `rx_frames=… rx_bytes=… … iterations=…`.
pub fn line(rx: &RxCounters, tx: &TxCounters, lp: &LoopCounters) -> String {
    let mut s = String::with_capacity(256);
    let fields: [(&str, u64); 23] = [
        ("rx_frames", rx.frames),
        ("rx_bytes", rx.bytes),
        ("rx_syscalls", rx.syscalls),
        ("rx_batches", rx.batches),
        ("rx_runt", rx.runt),
        ("rx_oversize", rx.oversize),
        ("rx_empty", rx.empty),
        ("tx_frames", tx.frames),
        ("tx_bytes", tx.bytes),
        ("tx_syscalls", tx.syscalls),
        ("tx_batches", tx.batches),
        ("tx_oversize", tx.oversize),
        ("tx_fragmented", tx.fragmented),
        ("tx_full", tx.full),
        ("tx_eagain", tx.eagain),
        ("tx_errors", tx.errors),
        ("iterations", lp.iterations),
        ("wakeups", lp.wakeups),
        ("guest_errors", lp.guest_errors),
        ("rx_avg_frame", rx.bytes.checked_div(rx.frames).unwrap_or(0)),
        ("tx_avg_frame", tx.bytes.checked_div(tx.frames).unwrap_or(0)),
        (
            "rx_avg_batch",
            rx.frames.checked_div(rx.batches).unwrap_or(0),
        ),
        (
            "tx_avg_batch",
            tx.frames.checked_div(tx.batches).unwrap_or(0),
        ),
    ];
    for (i, (key, value)) in fields.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(s, "{sep}{key}={value}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_is_space_separated_key_values() {
        let rx = RxCounters {
            frames: 2,
            bytes: 120,
            runt: 1,
            ..Default::default()
        };
        let tx = TxCounters {
            oversize: 3,
            ..Default::default()
        };
        let l = line(&rx, &tx, &LoopCounters::default());
        assert!(l.starts_with("rx_frames=2 rx_bytes=120 "), "{l}");
        assert!(l.contains(" rx_runt=1 "), "{l}");
        assert!(l.contains(" tx_oversize=3 "), "{l}");
        assert!(l.contains(" rx_avg_frame=60 "), "{l}");
        assert!(!l.contains('\n'));
    }

    #[test]
    fn reasm_fields_append_to_the_line() {
        let c = ReasmCounters {
            fragments: 5,
            held_bytes_high_water: 2048,
            ..Default::default()
        };
        let f = reasm_fields(&c);
        assert!(f.starts_with(" frag_in=5 frag_completed=0 "), "{f}");
        assert!(f.ends_with(" frag_held_high_water=2048"), "{f}");
    }

    #[test]
    fn budget_fields_append_to_the_line() {
        let c = BudgetCounters {
            flows_refused: 7,
            accept_backoffs: 2,
            echo6_unserved: 3,
        };
        assert_eq!(
            budget_fields(3072, 12, &c),
            " flow_budget=3072 slirp_sockets=12 flows_refused=7 accept_backoffs=2 \
             echo6_unserved=3"
        );
    }

    #[test]
    fn capture_fields_append_to_the_line() {
        let c = crate::pcap::CaptureCounters {
            frames: 3,
            bytes: 180,
            stopped: true,
        };
        assert_eq!(
            capture_fields(&c),
            " pcap_frames=3 pcap_bytes=180 pcap_stopped=1"
        );
    }

    #[test]
    fn coalesce_fields_append_to_the_line() {
        let c = CoalesceCounters {
            segments: 44,
            frames: 1,
        };
        assert_eq!(
            coalesce_fields(&c),
            " coalesced_segments=44 coalesced_frames=1"
        );
    }
}
