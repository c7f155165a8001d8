//! Counters of the data path, dumped as one `key=value` line on SIGUSR1 (SIGINFO on the BSDs)
//! and at exit. Never logged per packet.

use std::fmt::Write;

/// Frames from the guest (frontend → helper).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxCounters {
    /// Frames handed to libslirp.
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
    /// Dropped: above what the frontend accepts (mtui + 14, or 2048).
    pub oversize: u64,
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
}

/// One line: `rx_frames=… rx_bytes=… … iterations=…`.
pub fn line(rx: &RxCounters, tx: &TxCounters, lp: &LoopCounters) -> String {
    let mut s = String::with_capacity(256);
    let fields: [(&str, u64); 22] = [
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
}
