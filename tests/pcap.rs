//! Packet capture (`pcap=PATH`, `--pcap`) through the real helper binary and the real
//! libslirp: the file holds every frame exactly as it crossed bhyve's socket, both directions
//! (guest fragments as sent, not reassembled), its counts match the counters, tcpdump reads
//! it, the cap and a full disk stop capture but not networking, and a path that is not a
//! regular file is refused by name. The kernel-guest run through slirp-frontend is in
//! `tests/e2e_pcap.rs`.
//!
//! Network rule: restricted mode; traffic only inside the socketpair.

mod common;

use common::skip::skip;
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One record of a classic pcap file: seconds, microseconds, the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    secs: u32,
    micros: u32,
    frame: Vec<u8>,
}

/// The records of a classic pcap file (this host's byte order, microseconds, Ethernet), read
/// here independently of the helper's writer, and whether a partial record ends it.
fn read_pcap(bytes: &[u8]) -> (Vec<Record>, bool) {
    let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    assert!(bytes.len() >= 24, "no pcap header: {} bytes", bytes.len());
    assert_eq!(u32_at(0), 0xa1b2_c3d4, "magic: classic pcap, microseconds");
    assert_eq!(u32_at(20), 1, "LINKTYPE_ETHERNET");
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let (incl, orig) = (u32_at(at + 8) as usize, u32_at(at + 12) as usize);
        assert_eq!(incl, orig, "a frame was cut");
        if at + 16 + incl > bytes.len() {
            break;
        }
        records.push(Record {
            secs: u32_at(at),
            micros: u32_at(at + 4),
            frame: bytes[at + 16..at + 16 + incl].to_vec(),
        });
        at += 16 + incl;
    }
    (records, at != bytes.len())
}

fn counter(stats: &HashMap<String, u64>, key: &str) -> u64 {
    *stats
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in the stats line: {stats:?}"))
}

/// A fresh directory for one test's files.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pcap-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What `tcpdump -r` reads from `path`: (frames, the sum of their lengths, its exit status,
/// its stderr), or `None` (after a skip line) when tcpdump is not installed.
fn tcpdump_read(test: &str, path: &Path) -> Option<(u64, u64, Option<i32>, String)> {
    let out = match Command::new("tcpdump")
        .args(["-r"])
        .arg(path)
        .args(["-nn", "-e", "-tt"])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            skip(
                test,
                "tcpdump is not installed (scripts/setup.sh installs it)",
            );
            return None;
        }
        Err(e) => panic!("tcpdump: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut frames = 0;
    let mut bytes = 0;
    for line in stdout.lines() {
        // With -e, the first "length N" of a line is the whole frame's.
        let len = line
            .split_once("length ")
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no frame length in tcpdump's line {line:?}"));
        frames += 1;
        bytes += len;
    }
    Some((
        frames,
        bytes,
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An ICMP echo to 10.0.2.2 cut into fragments of `size` bytes, as a guest kernel would send
/// it (the helper reassembles them before libslirp).
fn fragmented_echo(gw: [u8; 6], payload: &[u8], size: usize) -> Vec<Vec<u8>> {
    let whole = icmp_echo_frame(gw, HOST_IP, 0x5151, 1, payload);
    let data = &whole[34..];
    let mut frames = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let end = (at + size).min(data.len());
        let mut ip = whole[14..34].to_vec();
        ip[2..4].copy_from_slice(&((20 + end - at) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0x6161u16.to_be_bytes());
        let flags = (at / 8) as u16 | if end < data.len() { 0x2000 } else { 0 };
        ip[6..8].copy_from_slice(&flags.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let sum = ip_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frames.push([&whole[..14], &ip, &data[at..end]].concat());
        at = end;
    }
    frames
}

fn ip_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn the_file_holds_every_frame_as_it_crossed_the_socket() {
    let test = "the_file_holds_every_frame_as_it_crossed_the_socket";
    let dir = test_dir("every-frame");
    let path = dir.join("vm.pcap");
    let start = now_secs();
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(restricted_config()),
        args: vec!["--pcap".into(), path.to_str().unwrap().into()],
        ..Spawn::default()
    });
    let mut sent = Vec::new();
    let mut received = Vec::new();
    let arp = arp_frame(1, GUEST_MAC, GUEST_IP, [0xff; 6], HOST_IP);
    bhyve.send_frame(&arp).unwrap();
    sent.push(arp);
    received.extend(bhyve.records(STEP));
    let gw = received
        .iter()
        .find_map(|f| Arp::parse(f).filter(|a| a.op == 2).map(|a| a.sha))
        .unwrap_or_else(|| panic!("no ARP reply; stderr:\n{}", bhyve.stderr()));
    // Fragments: the capture must hold them as sent, not the datagram libslirp was given.
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
    for f in fragmented_echo(gw, &payload, 1480) {
        bhyve.send_frame(&f).unwrap();
        sent.push(f);
    }
    received.extend(bhyve.records(STEP));
    assert!(
        received.iter().any(|f| f.len() > 1000),
        "no echo reply; stderr:\n{}",
        bhyve.stderr()
    );
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0, "stderr:\n{}", bhyve.stderr());
    let stats = bhyve.stats().expect("a stats line at exit");
    let end = now_secs();

    let bytes = std::fs::read(&path).unwrap();
    let (records, partial) = read_pcap(&bytes);
    assert!(!partial, "the file ends in a partial record");
    let (guest, helper): (Vec<&Record>, Vec<&Record>) =
        records.iter().partition(|r| r.frame[6..12] == GUEST_MAC);
    let guest: Vec<&[u8]> = guest.iter().map(|r| &r.frame[..]).collect();
    let helper: Vec<&[u8]> = helper.iter().map(|r| &r.frame[..]).collect();
    let sent: Vec<&[u8]> = sent.iter().map(|f| &f[..]).collect();
    let received: Vec<&[u8]> = received.iter().map(|f| &f[..]).collect();
    assert_eq!(
        guest, sent,
        "guest frames in the file, byte for byte and in order"
    );
    assert_eq!(helper, received, "frames to the guest in the file");
    for r in &records {
        assert!(
            (start..=end).contains(&u64::from(r.secs)) && r.micros < 1_000_000,
            "timestamp {}.{:06} outside the run ({start}..={end})",
            r.secs,
            r.micros
        );
    }

    let frames = records.len() as u64;
    let frame_bytes: u64 = records.iter().map(|r| r.frame.len() as u64).sum();
    assert_eq!(counter(&stats, "pcap_frames"), frames);
    assert_eq!(counter(&stats, "pcap_bytes"), frame_bytes);
    assert_eq!(counter(&stats, "pcap_stopped"), 0);
    assert_eq!(
        frames,
        counter(&stats, "rx_frames") + counter(&stats, "tx_frames")
    );
    assert_eq!(
        frame_bytes,
        counter(&stats, "rx_bytes") + counter(&stats, "tx_bytes")
    );
    // The sandbox (entered after the file was opened) allowed every write.
    assert_eq!(counter(&stats, "sandbox_refused"), 0);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);

    if let Some((n, b, status, err)) = tcpdump_read(test, &path) {
        assert_eq!(
            (n, b),
            (frames, frame_bytes),
            "tcpdump's count; stderr: {err}"
        );
        assert_eq!(status, Some(0), "tcpdump: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pings 10.0.2.2 `count` times; how many were answered.
fn pings(bhyve: &Bhyve, count: usize, len: usize) -> usize {
    (0..count)
        .filter(|_| bhyve.raw_ping(HOST_IP, len, Duration::from_secs(5)))
        .count()
}

#[test]
fn the_cap_stops_capture_but_not_networking() {
    let test = "the_cap_stops_capture_but_not_networking";
    let dir = test_dir("cap");
    let path = dir.join("vm.pcap");
    let cap = 8000u64;
    // Both as bhyve keys: `-s …,slirp,pcap=PATH,pcap_max=8000`.
    let config = ConfigBuilder::bhyve()
        .string("pcap", path.to_str().unwrap())
        .string("pcap_max", &cap.to_string())
        .encode();
    let mut bhyve = Bhyve::start(&config);
    let answered = pings(&bhyve, 30, 500);
    assert_eq!(answered, 30, "stderr:\n{}", bhyve.stderr());
    let stats = bhyve.stats_now(STEP).expect("stats line");
    assert_eq!(counter(&stats, "pcap_stopped"), 1);
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0);
    let stderr = bhyve.stderr();
    let stops: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("capture stopped"))
        .collect();
    assert_eq!(stops.len(), 1, "one log line when capture stops:\n{stderr}");
    assert!(
        stops[0].contains(&format!("reached pcap_max ({cap} bytes)"))
            && stops[0].contains(path.to_str().unwrap()),
        "{}",
        stops[0]
    );

    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.len() as u64 <= cap,
        "{} bytes past the cap",
        bytes.len()
    );
    let (records, partial) = read_pcap(&bytes);
    assert!(!partial);
    let stats = bhyve.stats().unwrap();
    assert_eq!(counter(&stats, "pcap_frames"), records.len() as u64);
    assert!(counter(&stats, "rx_frames") + counter(&stats, "tx_frames") > records.len() as u64);
    if let Some((n, _, status, err)) = tcpdump_read(test, &path) {
        assert_eq!(n, records.len() as u64, "{err}");
        assert_eq!(status, Some(0), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_stops_capture_but_not_networking() {
    let test = "a_full_disk_stops_capture_but_not_networking";
    if !nix::unistd::geteuid().is_root() {
        skip(test, "needs root (a tmpfs in a private mount namespace)");
        return;
    }
    let dir = test_dir("full");
    // 16 KiB: four pages, so the pings below fill it after a dozen frames.
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(restricted_config()),
        args: vec![
            "--pcap".into(),
            dir.join("vm.pcap").to_str().unwrap().into(),
        ],
        tmpfs: Some((
            std::ffi::CString::new(dir.to_str().unwrap()).unwrap(),
            16 * 1024,
        )),
        ..Spawn::default()
    });
    let answered = pings(&bhyve, 30, 1000);
    assert_eq!(answered, 30, "stderr:\n{}", bhyve.stderr());
    let stats = bhyve.stats_now(STEP).expect("stats line");
    assert_eq!(counter(&stats, "pcap_stopped"), 1, "{}", bhyve.stderr());
    // The file as the helper sees it, in its own mount namespace.
    let inside = PathBuf::from(format!("/proc/{}/root", bhyve.pid()))
        .join(dir.strip_prefix("/").unwrap())
        .join("vm.pcap");
    let bytes = std::fs::read(&inside).unwrap();
    let copy = dir.join("copy.pcap");
    assert!(
        !Path::new(&copy).exists(),
        "the tmpfs leaked into the host's namespace"
    );
    std::fs::write(&copy, &bytes).unwrap();
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0);
    let stderr = bhyve.stderr();
    let stops: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("capture stopped"))
        .collect();
    assert_eq!(stops.len(), 1, "{stderr}");
    assert!(stops[0].contains("No space left on device"), "{}", stops[0]);

    let (records, partial) = read_pcap(&bytes);
    eprintln!(
        "full disk: {} bytes, {} whole records, partial record at the end: {partial}",
        bytes.len(),
        records.len()
    );
    assert!(!records.is_empty());
    assert_eq!(counter(&stats, "pcap_frames"), records.len() as u64);
    let frame_bytes: u64 = records.iter().map(|r| r.frame.len() as u64).sum();
    assert_eq!(counter(&stats, "pcap_bytes"), frame_bytes);
    // tcpdump reads every whole record; a record cut by the full disk ends the file, which
    // tcpdump reports as a truncated dump file after the last whole one.
    if let Some((n, b, status, err)) = tcpdump_read(test, &copy) {
        assert_eq!((n, b), (records.len() as u64, frame_bytes), "{err}");
        if partial {
            assert!(err.contains("truncated dump file"), "{err}");
        } else {
            assert_eq!(status, Some(0), "{err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_past_the_size_limit_stops_capture_not_the_helper() {
    let dir = test_dir("fsize");
    let path = dir.join("vm.pcap");
    // RLIMIT_FSIZE of 4 KiB: without SIGXFSZ ignored, the write past it would kill the helper.
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(restricted_config()),
        args: vec!["--pcap".into(), path.to_str().unwrap().into()],
        fsize: Some(4096),
        ..Spawn::default()
    });
    let answered = pings(&bhyve, 10, 1000);
    assert_eq!(answered, 10, "stderr:\n{}", bhyve.stderr());
    let stats = bhyve.stats_now(STEP).expect("stats line");
    assert_eq!(counter(&stats, "pcap_stopped"), 1);
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0, "{}", bhyve.stderr());
    let stderr = bhyve.stderr();
    let stops: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("capture stopped"))
        .collect();
    assert_eq!(stops.len(), 1, "{stderr}");
    assert!(stops[0].contains("File too large"), "{}", stops[0]);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 4096);
    let (records, _) = read_pcap(&bytes);
    assert_eq!(counter(&stats, "pcap_frames"), records.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts the helper with `--pcap path`; its exit code and stderr.
fn refused(path: &Path) -> (i32, String) {
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(restricted_config()),
        args: vec!["--pcap".into(), path.to_str().unwrap().into()],
        ..Spawn::default()
    });
    let code = bhyve.expect_exit(STEP);
    (code, bhyve.stderr())
}

#[test]
fn a_path_that_is_not_a_regular_file_is_refused_by_name() {
    let dir = test_dir("refused");
    let link = dir.join("link-to-null");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let directory = dir.join("directory");
    std::fs::create_dir(&directory).unwrap();
    for (path, what) in [
        (&link, "a symbolic link"),
        (&fifo, "a fifo"),
        (&directory, "a directory"),
        (&PathBuf::from("/dev/null"), "a character device"),
    ] {
        let (code, stderr) = refused(path);
        assert_eq!(code, 1, "{stderr}");
        let want = format!(
            "bhyve-slirp-helper: pcap: '{}' exists and is {what}, not a regular file: \
             refusing to write to it",
            path.display()
        );
        assert!(
            stderr.lines().any(|l| l == want),
            "want {want:?} in:\n{stderr}"
        );
    }
    // Nothing was written through the link or into the fifo's place.
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let missing = dir.join("no-such-dir").join("vm.pcap");
    let (code, stderr) = refused(&missing);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("pcap: '{}': open: ", missing.display())),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_option_wins_over_the_key() {
    let dir = test_dir("option-wins");
    let (by_option, by_key) = (dir.join("option.pcap"), dir.join("key.pcap"));
    let config = ConfigBuilder::bhyve()
        .string("pcap", by_key.to_str().unwrap())
        .string("pcap_max", "23")
        .encode();
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(config),
        args: vec![
            "--pcap".into(),
            by_option.to_str().unwrap().into(),
            "--pcap-max".into(),
            "100000".into(),
        ],
        ..Spawn::default()
    });
    assert!(bhyve.raw_ping(HOST_IP, 64, STEP), "{}", bhyve.stderr());
    bhyve.hang_up();
    assert_eq!(bhyve.expect_exit(STEP), 0, "{}", bhyve.stderr());
    assert!(by_option.exists() && !by_key.exists());
    let (records, _) = read_pcap(&std::fs::read(&by_option).unwrap());
    assert!(
        records.len() >= 4,
        "ARP and echo, both ways: {}",
        records.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_pcap_keys_exit_1_naming_the_key() {
    for (key, value, want) in [
        (
            "pcap_max",
            "0",
            "configuration: pcap_max: '0' is not a number from 24 to 9223372036854775807",
        ),
        (
            "pcap_max",
            "1GiB",
            "configuration: pcap_max: '1GiB' is not a number from 24 to 9223372036854775807",
        ),
        ("pcap", "", "configuration: pcap: '' is not a path"),
    ] {
        let mut bhyve = Bhyve::start(&ConfigBuilder::bhyve().string(key, value).encode());
        assert_eq!(bhyve.expect_exit(STEP), 1);
        let stderr = bhyve.stderr();
        let want = format!("bhyve-slirp-helper: {want}");
        assert!(
            stderr.lines().any(|l| l == want),
            "want {want:?}:\n{stderr}"
        );
    }
}
