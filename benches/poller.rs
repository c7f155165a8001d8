//! One loop iteration of each readiness backend, as the event loop drives it around libslirp:
//! `begin_fill`, `add` for every socket, `wait(0)` (the diff is submitted inside it), then
//! `revents` for every index unless the poller says none can be non-zero (the event loop then
//! has libslirp skip that walk; the poll backend always walks, as the C helper). N registered
//! descriptors (both ends of N/2 socketpairs, nothing readable: idle connections), N = 4, 64,
//! 1000, 10 000, for `poll` (the C helper's loop: the whole array goes to the kernel every
//! time), the persistent `epoll` (only the difference does) and `io_uring` (the difference as
//! POLL_ADD/POLL_REMOVE requests in the enter that waits).
//!
//! Two workloads:
//! - `steady`: every fill asks for the same events (IN|HUP, an idle libslirp TCP socket);
//! - `churn1pct`: each iteration 1% of the descriptors (at least one) change their mask,
//!   toggling PRI, which a socketpair never reports, so readiness stays the same and only the
//!   cost of submitting changes is added.
//!
//! Measured in CPU time of the benchmarking thread (user + system, `CLOCK_THREAD_CPUTIME_ID`),
//! not wall time: on a shared 2-core machine a 1-4 ms poll(2) over 10 000 descriptors is
//! preempted by other tenants in most iterations and a short epoll iteration is not, which made
//! the wall-clock ratio swing between 9 and 54 from one run to the next. The loop never blocks
//! (`wait(0)`), so on a core of its own wall time equals this CPU time.
//!
//! At the end, prints a table of medians with the poll/epoll and io_uring/epoll ratios per N (from criterion's
//! `estimates.json`). `cargo bench --bench poller` (two to three minutes).

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, BenchmarkId, Criterion};
use slirp_helper::poller::{Poller, PollerKind, Readiness, Slot};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

const SIZES: [usize; 4] = [4, 64, 1000, 10_000];
const KINDS: [PollerKind; 3] = [PollerKind::Poll, PollerKind::Epoll, PollerKind::IoUring];
const WORKLOADS: [Workload; 2] = [Workload::Steady, Workload::Churn];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Steady,
    Churn,
}

impl Workload {
    fn group(self) -> &'static str {
        match self {
            Workload::Steady => "poller_iteration_steady",
            Workload::Churn => "poller_iteration_churn1pct",
        }
    }
}

/// What libslirp asks for an established, idle TCP socket.
const IDLE_MASK: Readiness = Readiness::IN.union(Readiness::HUP);

/// A poller with `n` registered socketpair ends and the masks libslirp would ask for.
struct Fixture {
    poller: Poller,
    fds: Vec<RawFd>,
    masks: Vec<Readiness>,
    idx: Vec<Slot>,
    /// Next descriptor whose mask changes (churn workload).
    cursor: usize,
    /// Masks changed so far (none when a filter left the churn benchmark out).
    churned: u64,
    _pairs: Vec<(UnixStream, UnixStream)>,
    _wakeup: (OwnedFd, OwnedFd),
    _frontend: (UnixDatagram, UnixDatagram),
}

impl Fixture {
    fn new(kind: PollerKind, n: usize) -> Fixture {
        let wakeup = nix::unistd::pipe().expect("pipe");
        let frontend = UnixDatagram::pair().expect("socketpair");
        let poller =
            Poller::new(kind, wakeup.0.as_fd(), frontend.0.as_fd()).expect("create the poller");
        let pairs: Vec<_> = (0..n.div_ceil(2))
            .map(|_| UnixStream::pair().expect("socketpair (descriptor limit?)"))
            .collect();
        let fds: Vec<RawFd> = pairs
            .iter()
            .flat_map(|(a, b)| [a.as_raw_fd(), b.as_raw_fd()])
            .take(n)
            .collect();
        let mut f = Fixture {
            poller,
            masks: vec![IDLE_MASK; n],
            idx: vec![Slot::new(0); n],
            fds,
            cursor: 0,
            churned: 0,
            _pairs: pairs,
            _wakeup: wakeup,
            _frontend: frontend,
        };
        // The first fill registers everything (epoll): not part of the steady state.
        f.iteration();
        f
    }

    /// 1% of the masks (at least one) change.
    fn churn(&mut self) {
        let n = self.fds.len();
        for _ in 0..(n / 100).max(1) {
            self.masks[self.cursor] = self.masks[self.cursor].toggle(Readiness::PRI);
            self.cursor = (self.cursor + 1) % n;
            self.churned += 1;
        }
    }

    fn iteration(&mut self) -> Readiness {
        let p = &mut self.poller;
        p.begin_fill();
        for (i, &fd) in self.fds.iter().enumerate() {
            self.idx[i] = p.add(fd, self.masks[i]).expect("a valid fd");
        }
        p.wait(0).expect("wait");
        if !p.slirp_sockets_ready() {
            return Readiness::EMPTY;
        }
        self.idx
            .iter()
            .fold(Readiness::EMPTY, |acc, &i| acc | p.revents(i))
    }
}

/// CPU time (user + system) of the calling thread.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as wall time's are: its formatter prints them.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// Room for 10 000 registered descriptors: the soft limit up to the hard one.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    // rlim_t is unsigned on Linux and signed on FreeBSD.
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    #[allow(clippy::useless_conversion)]
    u64::try_from(limit).unwrap_or(0)
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let limit = raise_nofile();
    for workload in WORKLOADS {
        let mut group = c.benchmark_group(workload.group());
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(30);
        for n in SIZES {
            // Our descriptors plus stdio, the pipe and the frontend pair.
            if (n + 64) as u64 > limit {
                eprintln!("skipping N={n}: RLIMIT_NOFILE is {limit}");
                continue;
            }
            for kind in KINDS {
                let mut f = Fixture::new(kind, n);
                group.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |b, _| {
                    b.iter(|| {
                        if workload == Workload::Churn {
                            f.churn();
                        }
                        black_box(f.iteration())
                    })
                });
                if workload == Workload::Churn {
                    if let Some(counters) = f.poller.interest_counters() {
                        // The table must have turned mask changes into MODs, not re-adds.
                        assert!(
                            (counters.modifies > 0 || f.churned == 0) && counters.recoveries == 0
                        );
                    }
                }
            }
        }
        group.finish();
    }
}

/// Where criterion keeps its results (its own rule: CRITERION_HOME, else the target dir).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// The median point estimate (ns) of one benchmark's last run. A plain scan of
/// `estimates.json` (`"median":{..."point_estimate":X,...}`): no JSON parser for one number.
fn median_ns(group: &str, kind: PollerKind, n: usize) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(kind.name())
        .join(n.to_string())
        .join("new/estimates.json");
    let json = std::fs::read_to_string(path).ok()?;
    let median = &json[json.find("\"median\"")?..];
    let value = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

fn show(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Markdown table: median CPU time per iteration, per workload and N, poll/epoll and
/// io_uring/epoll.
fn print_table() {
    println!("\n| workload | N | poll | epoll | io_uring | poll/epoll | io_uring/epoll |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for workload in WORKLOADS {
        for n in SIZES {
            let poll = median_ns(workload.group(), PollerKind::Poll, n);
            let epoll = median_ns(workload.group(), PollerKind::Epoll, n);
            let uring = median_ns(workload.group(), PollerKind::IoUring, n);
            let cell = |v: Option<f64>| v.map_or("-".to_string(), show);
            let ratio = |a: Option<f64>| match (a, epoll) {
                (Some(a), Some(e)) if e > 0.0 => format!("{:.2}", a / e),
                _ => "-".to_string(),
            };
            let name = workload.group().trim_start_matches("poller_iteration_");
            println!(
                "| {name} | {n} | {} | {} | {} | {} | {} |",
                cell(poll),
                cell(epoll),
                cell(uring),
                ratio(poll),
                ratio(uring)
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    // `cargo test --benches` runs this binary in test mode: no measurements to show.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        print_table();
    }
}
