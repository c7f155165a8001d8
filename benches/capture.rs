//! What packet capture (`pcap=`) costs per frame, on the two paths it touches: the TX ring
//! (frames recorded as they go out whole) and the record itself (copy into the capture buffer,
//! a real-time stamp, and the buffer's share of one `write` per iteration).
//! Capture off is one never-taken branch per frame; compare "tx ring/off" with the same
//! benchmark of the tree before capture existed (`frames` bench, "tx ring/64", with a saved
//! criterion baseline: `perf/results/capture-bench-2026-12-02.md`).
//! One iteration = 256 frames. The capture file is a regular file in the temp directory,
//! started afresh (untimed) every 64 iterations so that it stays small.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use slirp_helper::frames::{FrameLimit, FrameRx, FrameTx};
use slirp_helper::pcap::{self, Capture};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

const FRAMES: usize = 256;
/// Iterations between fresh capture files (64 × 256 full frames ≈ 25 MB).
const REOPEN_EVERY: u64 = 64;

fn pair() -> (UnixDatagram, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

fn capture_path() -> String {
    std::env::temp_dir()
        .join(format!("capture-bench-{}.pcap", std::process::id()))
        .to_str()
        .unwrap()
        .to_owned()
}

fn open(limit: FrameLimit) -> Capture {
    Capture::open(&capture_path(), pcap::DEFAULT_MAX_BYTES, limit).unwrap()
}

fn bench(c: &mut Criterion) {
    let limit = FrameLimit::from_mtui(Some(1500));
    let frame = vec![0x5a; limit.max_frame()];

    // The TX ring as in `benches/frames.rs` ("tx ring/64"), capture off and on.
    let mut group = c.benchmark_group("tx ring");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for on in [false, true] {
        let (helper, peer) = pair();
        let mut tx = FrameTx::new(helper.as_fd(), limit, 64);
        let mut sink = FrameRx::new(peer.as_fd(), limit, 64);
        let name = if on { "capture on" } else { "capture off" };
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for i in 0..iters {
                    if on && i % REOPEN_EVERY == 0 {
                        tx.capture = Some(open(limit));
                    }
                    let start = Instant::now();
                    for i in 0..FRAMES {
                        tx.queue(&frame);
                        if i % 64 == 63 {
                            sink.drain(|_| {}).unwrap();
                        }
                    }
                    tx.flush();
                    sink.drain(|_| {}).unwrap();
                    // The loop writes the capture buffer once per iteration.
                    if let Some(capture) = &mut tx.capture {
                        capture.flush();
                    }
                    took += start.elapsed();
                }
                took
            })
        });
        assert_eq!(tx.counters.full, 0, "the bench must not drop frames");
        if let Some(capture) = &tx.capture {
            assert!(!capture.counters.stopped && capture.counters.frames > 0);
        }
    }
    group.finish();

    // The record alone: what capture adds to each guest frame on the way in (and to each
    // frame out), for the smallest and the largest frame at MTU 1500.
    let mut group = c.benchmark_group("capture record");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for len in [60usize, 1514] {
        let frame = vec![0xa5; len];
        let mut capture = open(limit);
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for i in 0..iters {
                    if i % REOPEN_EVERY == 0 {
                        capture = open(limit);
                    }
                    let start = Instant::now();
                    for _ in 0..FRAMES {
                        capture.record(&frame);
                    }
                    capture.flush();
                    took += start.elapsed();
                }
                took
            })
        });
        assert!(!capture.counters.stopped);
    }
    group.finish();
    let _ = std::fs::remove_file(capture_path());
}

criterion_group!(benches, bench);
criterion_main!(benches);
