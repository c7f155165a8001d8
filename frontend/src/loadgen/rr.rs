//! 1-byte TCP request/response: the server echoes, the client measures each round trip.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long a round trip may stall before the client gives up (a lost helper, not a slow one).
const STALL: Duration = Duration::from_secs(5);
/// Most RTT samples kept (4 bytes each): beyond ~1 M round trips/s for 60 s.
const MAX_SAMPLES: usize = 64 << 20;
/// Concurrent connections the server serves; the benchmark needs one.
const MAX_CONNECTIONS: usize = 64;

/// Echo every byte back until the peer closes; the process ends after `lifetime`.
pub fn serve(listen: SocketAddr, lifetime: Duration) -> io::Result<()> {
    let listener = TcpListener::bind(listen)
        .map_err(|e| io::Error::new(e.kind(), format!("bind {listen}: {e}")))?;
    std::thread::spawn(move || {
        let live = std::sync::Arc::new(());
        for stream in listener.incoming().flatten() {
            // The Arc's count is the number of live connection threads (plus this one).
            if std::sync::Arc::strong_count(&live) > MAX_CONNECTIONS {
                continue;
            }
            let token = live.clone();
            std::thread::spawn(move || {
                let _ = echo(stream);
                drop(token);
            });
        }
    });
    std::thread::sleep(lifetime);
    Ok(())
}

fn echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = [0u8; 256];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// What the client measured after the warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct RrReport {
    pub transactions: u64,
    pub secs: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl std::fmt::Display for RrReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rr transactions={} secs={:.3} per_sec={:.0} p50_us={:.1} p99_us={:.1} max_us={:.1}",
            self.transactions,
            self.secs,
            self.transactions as f64 / self.secs.max(1e-9),
            self.p50_us,
            self.p99_us,
            self.max_us
        )
    }
}

/// The `q`-quantile (0..=1) of sorted nanosecond samples, in microseconds.
fn quantile_us(sorted_ns: &[u32], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_ns.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted_ns[idx]) / 1000.0
}

/// Round trips on one connection: `warmup` not counted, then `measured` counted. The process
/// lives for the connect plus both: the warm-up comes on top of what the user asked to
/// measure (an earlier version cut a second off `measured` as a margin for the connect and
/// the exit, so `--secs 1` measured nothing; the callers' own time limits hold the margin).
pub fn client(connect: SocketAddr, warmup: Duration, measured: Duration) -> io::Result<RrReport> {
    let mut stream = TcpStream::connect_timeout(&connect, STALL)
        .map_err(|e| io::Error::new(e.kind(), format!("connect {connect}: {e}")))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(STALL))?;
    let measure_from = Instant::now() + warmup;
    let end = measure_from + measured;
    let mut samples: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut buf = [0u8; 1];
    let mut now = Instant::now();
    let mut first = None;
    while now < end && samples.len() < MAX_SAMPLES {
        let t0 = now;
        stream.write_all(b"x")?;
        stream
            .read_exact(&mut buf)
            .map_err(|e| io::Error::new(e.kind(), format!("waiting for the echo: {e}")))?;
        now = Instant::now();
        if t0 >= measure_from {
            first.get_or_insert(t0);
            let ns = (now - t0).as_nanos().min(u128::from(u32::MAX)) as u32;
            samples.push(ns);
        }
    }
    let secs = first.map_or(0.0, |f| (now - f).as_secs_f64());
    samples.sort_unstable();
    Ok(RrReport {
        transactions: samples.len() as u64,
        secs,
        p50_us: quantile_us(&samples, 0.50),
        p99_us: quantile_us(&samples, 0.99),
        max_us: quantile_us(&samples, 1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_sorted_samples() {
        let s: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile_us(&s, 0.5), 51.0);
        assert_eq!(quantile_us(&s, 0.99), 99.0);
        assert_eq!(quantile_us(&s, 1.0), 100.0);
        assert_eq!(quantile_us(&[], 0.5), 0.0);
    }

    /// A round trip over `bind`'s loopback: the server's `serve` and the client as the
    /// benchmark runs them.
    fn round_trips_over(bind: &str) {
        let listener = TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let _ = echo(s);
        });
        let r = client(addr, Duration::from_millis(10), Duration::from_millis(200)).unwrap();
        assert!(r.transactions > 0, "{r}");
        assert!(
            r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us,
            "{r}"
        );
    }

    #[test]
    fn client_and_server_over_loopback() {
        round_trips_over("127.0.0.1:0");
    }

    /// perf/run.sh's IPv6 configs measure RR to [fec0::2] with the server on [::1].
    #[test]
    fn client_and_server_over_ipv6_loopback() {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        }
        round_trips_over("[::1]:0");
    }
}
