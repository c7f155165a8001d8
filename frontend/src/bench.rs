//! `--pump-bench`: the pump alone, the helper replaced by a sink/source on the socket, so we
//! know the frontend is not what limits a measurement of the helper.
//!
//! guest→helper: a UDP blaster inside the namespace sends MTU-sized datagrams to 10.0.2.2
//! (a static neighbour entry stands in for ARP); the pump moves them to the socket; a sink
//! thread counts them. helper→guest: a source thread sends prebuilt MTU-sized UDP frames for
//! 10.0.2.15 into the socket as fast as it takes them; the pump writes them to the tap; a
//! UDP receiver inside the namespace counts what the guest's kernel delivered.
//! Owns: nothing that outlives the run; every loop is bounded by the time given.

use super::guest::{GUEST_ADDR, HOST_ADDR};
use super::options::Options;
use super::session::{Backend, Failure, Session};
use super::supervise::Supervisor;
use super::{os, pump};
use slirp_helper::frames::FrameBatch;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// libslirp's MAC for 10.0.2.2 (52:55:0a:00:02:02): the guest addresses frames to it.
const HOST_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
const DISCARD_PORT: u16 = 9;

/// One direction's result.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub frames: u64,
    pub bytes: u64,
    pub secs: f64,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} frames/s, {:.2} Gbit/s ({} frames in {:.2} s)",
            self.frames as f64 / self.secs,
            self.bytes as f64 * 8.0 / self.secs / 1e9,
            self.frames,
            self.secs
        )
    }
}

pub fn run(opts: &Options, sup: Supervisor, secs: u32) -> u8 {
    let mut opts = opts.clone();
    opts.dhcp = false;
    opts.default_route = false;
    let (ours, theirs) = match os::seqpacket_pair() {
        Ok(pair) => pair,
        Err(e) => return super::report(Err(Failure::setup("socketpair", e)), None),
    };
    // The sink stands in for a helper that enlarges its buffers too.
    if opts.sockbuf > 0 {
        if let Err(e) = slirp_helper::sys::set_socket_buffers(theirs.as_fd(), opts.sockbuf) {
            return super::report(Err(Failure::setup("socket buffers", e)), None);
        }
    }
    let session = match Session::start(&opts, sup, Backend::Socket(ours)) {
        Ok(s) => s,
        Err(f) => return super::report(Err(f), None),
    };
    let result = measure(&session, &opts, theirs, Duration::from_secs(secs.into()));
    let teardown = session.finish();
    match result {
        Ok((g2h, h2g, delivered)) => {
            println!("pump-bench mtu {}:", opts.mtu);
            println!("  guest->helper (tap read, sendmmsg): {g2h}");
            println!("  helper->guest (recvmmsg, tap write): {h2g}");
            println!("  helper->guest delivered to a guest UDP socket: {delivered}");
            if let Some(p) = &teardown.pump {
                println!("  pump counters: {}", p.counters);
            }
            0
        }
        Err(e) => super::report(Err(Failure::setup("pump bench", e)), Some(&teardown)),
    }
}

fn measure(
    s: &Session,
    opts: &Options,
    sock: OwnedFd,
    time: Duration,
) -> io::Result<(Rate, Rate, Rate)> {
    let mac = HOST_MAC.map(|b| format!("{b:02x}")).join(":");
    s.netns.ip(&[
        "neigh",
        "replace",
        HOST_ADDR,
        "lladdr",
        &mac,
        "dev",
        &s.tap,
        "nud",
        "permanent",
    ])?;
    let slot = pump::slot_size(opts.mtu);
    let payload = opts.mtu as usize - 28;

    // guest → helper.
    let stop = Arc::new(AtomicBool::new(false));
    let sink = {
        let stop = stop.clone();
        let sock = sock.try_clone()?;
        std::thread::spawn(move || sink(sock, slot, &stop))
    };
    let sent = in_netns(s, move || blast(payload, time))?;
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (frames, bytes) = sink
        .join()
        .map_err(|_| io::Error::other("sink panicked"))??;
    let g2h = Rate {
        frames,
        bytes,
        secs: sent.as_secs_f64(),
    };

    // helper → guest.
    let tap_mac = tap_mac(s)?;
    let frame = udp_frame(tap_mac, payload);
    let received = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (received, ready, stop) = (received.clone(), ready.clone(), stop.clone());
        let ns = s.netns.open()?;
        std::thread::spawn(move || -> io::Result<()> {
            os::enter_netns(&ns)?;
            let udp = UdpSocket::bind((GUEST_ADDR, DISCARD_PORT))?;
            udp.set_read_timeout(Some(Duration::from_millis(50)))?;
            ready.store(true, Ordering::Release);
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if udp.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    };
    let t0 = Instant::now();
    while !ready.load(Ordering::Acquire) && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (sent_frames, elapsed) = source(&sock, &frame, time)?;
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    receiver
        .join()
        .map_err(|_| io::Error::other("receiver panicked"))??;
    let h2g = Rate {
        frames: sent_frames,
        bytes: sent_frames * frame.len() as u64,
        secs: elapsed.as_secs_f64(),
    };
    let delivered_frames = received.load(Ordering::Relaxed);
    let delivered = Rate {
        frames: delivered_frames,
        bytes: delivered_frames * frame.len() as u64,
        secs: elapsed.as_secs_f64(),
    };
    Ok((g2h, h2g, delivered))
}

/// Run `f` on a thread that has entered the session's namespace.
fn in_netns<T: Send + 'static>(
    s: &Session,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ns = s.netns.open()?;
    std::thread::spawn(move || -> io::Result<T> {
        os::enter_netns(&ns)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// Send `payload`-byte datagrams to 10.0.2.2:9 for `time`; returns how long it sent.
fn blast(payload: usize, time: Duration) -> io::Result<Duration> {
    let udp = UdpSocket::bind((GUEST_ADDR, 0))?;
    udp.connect((HOST_ADDR, DISCARD_PORT))?;
    let buf = vec![0x5au8; payload];
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < time {
        // Full qdisc: ENOBUFS. The pump is what is measured; keep offering.
        let _ = udp.send(&buf);
        n += 1;
        if n % 4096 == 0 && t0.elapsed() >= time {
            break;
        }
    }
    Ok(t0.elapsed())
}

/// Count frames arriving on the helper's side until `stop`.
fn sink(sock: OwnedFd, slot: usize, stop: &AtomicBool) -> io::Result<(u64, u64)> {
    let mut batch = FrameBatch::new(pump::BATCH, slot);
    let (mut frames, mut bytes) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let n = pump::recv_frames(&mut batch, sock.as_fd())?;
        if n == 0 {
            let mut fds = [nix::poll::PollFd::new(
                sock.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, 20u8);
            continue;
        }
        for i in 0..n {
            let record = batch.record(i);
            if !record.truncated() {
                frames += 1;
                bytes += record.bytes.len() as u64;
            }
        }
    }
    Ok((frames, bytes))
}

/// Offer `frame` to the pump as fast as the socket takes it, for `time`.
fn source(sock: &OwnedFd, frame: &[u8], time: Duration) -> io::Result<(u64, Duration)> {
    let mut batch = FrameBatch::new(pump::BATCH, frame.len());
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < time {
        while let Some(slot) = batch.next_slot() {
            slot[..frame.len()].copy_from_slice(frame);
            batch.commit(frame.len());
        }
        let n = pump::send_frames(&mut batch, sock.as_fd())?;
        sent += n as u64;
        if n == 0 {
            let mut fds = [nix::poll::PollFd::new(
                sock.as_fd(),
                nix::poll::PollFlags::POLLOUT,
            )];
            let _ = nix::poll::poll(&mut fds, 20u8);
        }
    }
    Ok((sent, t0.elapsed()))
}

fn tap_mac(s: &Session) -> io::Result<[u8; 6]> {
    let out = std::process::Command::new("ip")
        .args(["-n", s.netns.name(), "-o", "link", "show", "dev", &s.tap])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .ok_or_else(|| io::Error::other(format!("no MAC in {text:?}")))?;
    let mut bytes = [0u8; 6];
    for (b, part) in bytes.iter_mut().zip(mac.split(':')) {
        *b = u8::from_str_radix(part, 16).map_err(|e| io::Error::other(format!("{mac}: {e}")))?;
    }
    Ok(bytes)
}

/// An Ethernet + IPv4 + UDP frame from 10.0.2.2 to 10.0.2.15:9 (UDP checksum 0: none).
fn udp_frame(dst: [u8; 6], payload: usize) -> Vec<u8> {
    let ip_len = 20 + 8 + payload;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 2, 2]);
    ip[16..20].copy_from_slice(&[10, 0, 2, 15]);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&DISCARD_PORT.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(14 + ip_len, 0xa5);
    f
}
