//! Frames/s through the RX and TX rings over a socketpair, batch 1 (the C helper's one frame
//! per syscall) vs 8, 32 and 64: the measurement behind `DEFAULT_BATCH`.
//! One iteration = 256 frames of 1514 bytes through the ring. The other end is a batch-64 ring
//! (as the frontend's `recvmmsg`/`sendmmsg` pump), so the measured side's batch is what varies.
//! Single-threaded, this shows the syscall saving only; the larger win end to end is fewer
//! wakeups of the frontend (see `perf/`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use slirp_helper::frames::{FrameLimit, FrameRx, FrameTx};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;

const FRAMES: usize = 256;
const BATCHES: [usize; 4] = [1, 8, 32, 64];

fn pair() -> (UnixDatagram, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

fn bench(c: &mut Criterion) {
    let limit = FrameLimit::from_mtui(Some(1500));
    let frame = vec![0x5a; limit.max_frame()];

    let mut group = c.benchmark_group("tx ring");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for batch in BATCHES {
        let (helper, peer) = pair();
        let mut tx = FrameTx::new(helper.as_fd(), limit, batch);
        let mut sink = FrameRx::new(peer.as_fd(), limit, 64);
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| {
                for i in 0..FRAMES {
                    tx.queue(&frame);
                    // Keep the peer's queue short, as a frontend reading steadily does.
                    if i % 64 == 63 {
                        sink.drain(|_| {}).unwrap();
                    }
                }
                tx.flush();
                sink.drain(|_| {}).unwrap();
            })
        });
        assert_eq!(tx.counters.full, 0, "the bench must not drop frames");
    }
    group.finish();

    let mut group = c.benchmark_group("rx ring");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for batch in BATCHES {
        let (helper, peer) = pair();
        let mut rx = FrameRx::new(helper.as_fd(), limit, batch);
        let mut source = FrameTx::new(peer.as_fd(), limit, 64);
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| {
                let mut got = 0;
                while got < FRAMES {
                    // The peer writes 64 frames ahead, as a batching frontend does.
                    for _ in 0..64 {
                        source.queue(&frame);
                    }
                    source.flush();
                    while rx.drain(|f| got += usize::from(!f.is_empty())).is_ok()
                        && source.has_pending()
                    {
                        source.flush();
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
