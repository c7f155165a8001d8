//! End to end: packet capture with the Linux kernel as the guest behind `slirp-frontend`
//! (bhyve's role), the helper given `--pcap` through `--helper-arg`. A TCP transfer both ways
//! (SHA-256 checked) runs while the helper records; `tcpdump -r` reads the file and its frame
//! and byte counts match the helper's counters for the same run. A small `pcap_max` and a
//! full tmpfs (mounted in a private mount namespace) stop capture, never the transfer.
//! Root only (skipped otherwise).
//!
//! Network rule: open mode to a listener on the host's 127.0.0.1 through 10.0.2.2; the
//! frontend's namespace has no default route.

mod e2e_common;
use e2e_common::skip::skip;
use e2e_common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn guest_role() {
    guest_role_entry();
}

/// Bytes each way: enough frames to fill several capture buffers and pass a small cap.
const LEN: usize = 4 << 20;

fn tcpdump_installed(test: &str) -> bool {
    if Command::new("tcpdump").arg("--version").output().is_err() {
        skip(
            test,
            "tcpdump is not installed (bash scripts/setup.sh installs it)",
        );
        return false;
    }
    true
}

/// The helper's counters from its exit line (the frontend shows it with `-v`).
fn helper_counters(out: &Output) -> HashMap<String, u64> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("rx_runt="))
        .unwrap_or_else(|| panic!("no counters line:\n{}", text(out)));
    line.split_whitespace()
        .filter_map(|tok| {
            let (k, v) = tok.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn counter(c: &HashMap<String, u64>, key: &str) -> u64 {
    *c.get(key)
        .unwrap_or_else(|| panic!("no {key} in the counters: {c:?}"))
}

/// `tcpdump -r`: (frames, sum of frame lengths, its stderr). With `-e` the first
/// `length N` of each line is the Ethernet frame's.
fn tcpdump_read(path: &Path) -> (u64, u64, Option<i32>, String) {
    let out = Command::new("tcpdump")
        .arg("-r")
        .arg(path)
        .args(["-nn", "-e", "-tt"])
        .output()
        .expect("tcpdump");
    let (mut frames, mut bytes) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let len: u64 = line
            .split_once("length ")
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no frame length in {line:?}"));
        frames += 1;
        bytes += len;
    }
    (
        frames,
        bytes,
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("e2e-pcap-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A host listener for one bulk transfer both ways; returns its port and the host side's
/// result: (sent sha, received len, received sha).
type BulkResult = Arc<Mutex<Option<Result<(String, usize, String), String>>>>;

fn bulk_listener() -> (u16, BulkResult, std::thread::JoinHandle<usize>) {
    let got: BulkResult = Arc::new(Mutex::new(None));
    let g = got.clone();
    let (port, listener) = host_listener(Duration::from_secs(90), move |c| {
        let r = bulk_both_ways(c, 2, LEN, Fin::AfterEof);
        *g.lock().unwrap() = Some(r.map_err(|e| e.to_string()));
    });
    (port, got, listener)
}

/// The transfer completed intact both ways.
fn assert_transfer_intact(out: &Output, got: &BulkResult) {
    assert!(out.status.success(), "{}", text(out));
    let (host_sent, host_rlen, host_rsha) = got
        .lock()
        .unwrap()
        .clone()
        .expect("host side ran")
        .expect("host side ok");
    assert_eq!(host_rlen, LEN, "guest→host length");
    assert_eq!(Some(host_rsha), field(out, "SENT_SHA"), "guest→host");
    assert_eq!(
        field(out, "RECV_LEN"),
        Some(LEN.to_string()),
        "{}",
        text(out)
    );
    assert_eq!(Some(host_sent), field(out, "RECV_SHA"), "host→guest");
}

/// The frontend arguments for a capture to `path` (plus `extra` helper arguments).
fn frontend_args(path: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["-v", "--open", "--mtu", "1500"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for a in ["--pcap", path.to_str().unwrap()].iter().chain(extra) {
        args.push("--helper-arg".into());
        args.push(a.to_string());
    }
    args
}

#[test]
fn tcpdump_reads_the_capture_of_a_transfer_and_counts_what_the_helper_counted() {
    let test = "tcpdump_reads_the_capture_of_a_transfer_and_counts_what_the_helper_counted";
    if !root_or_skip(test) || !tcpdump_installed(test) {
        return;
    }
    let dir = test_dir("counts");
    let path = dir.join("vm0.pcap");
    let (port, got, _listener) = bulk_listener();
    let args = frontend_args(&path, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(
        frontend_with_role(&args, &format!("bulk 10.0.2.2:{port} {LEN}")),
        Duration::from_secs(120),
    );
    assert_transfer_intact(&out, &got);
    let c = helper_counters(&out);
    assert_eq!(counter(&c, "pcap_stopped"), 0);
    assert_eq!(counter(&c, "sandbox_refused"), 0);
    let (frames, bytes, status, err) = tcpdump_read(&path);
    assert_eq!(status, Some(0), "tcpdump: {err}");
    assert_eq!(frames, counter(&c, "pcap_frames"), "frames; {err}");
    assert_eq!(bytes, counter(&c, "pcap_bytes"), "bytes");
    // Every frame that crossed the socket, both ways: the data of the transfer at least.
    assert_eq!(frames, counter(&c, "rx_frames") + counter(&c, "tx_frames"));
    assert_eq!(bytes, counter(&c, "rx_bytes") + counter(&c, "tx_bytes"));
    assert!(bytes > 2 * LEN as u64, "{bytes} bytes captured");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cap_stops_capture_but_not_the_transfer() {
    let test = "the_cap_stops_capture_but_not_the_transfer";
    if !root_or_skip(test) || !tcpdump_installed(test) {
        return;
    }
    let dir = test_dir("cap");
    let path = dir.join("vm0.pcap");
    let cap = 1_000_000u64;
    let (port, got, _listener) = bulk_listener();
    let args = frontend_args(&path, &["--pcap-max", &cap.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(
        frontend_with_role(&args, &format!("bulk 10.0.2.2:{port} {LEN}")),
        Duration::from_secs(120),
    );
    assert_transfer_intact(&out, &got);
    let c = helper_counters(&out);
    assert_eq!(counter(&c, "pcap_stopped"), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("capture stopped").count(),
        1,
        "one line:\n{stderr}"
    );
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size <= cap && size > cap - 1600, "file of {size} bytes");
    let (frames, bytes, status, err) = tcpdump_read(&path);
    assert_eq!(status, Some(0), "tcpdump: {err}");
    assert_eq!(
        (frames, bytes),
        (counter(&c, "pcap_frames"), counter(&c, "pcap_bytes"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_stops_capture_but_not_the_transfer() {
    let test = "a_full_disk_stops_capture_but_not_the_transfer";
    if !root_or_skip(test) || !tcpdump_installed(test) {
        return;
    }
    let dir = test_dir("full");
    let mount = dir.join("tmpfs");
    std::fs::create_dir(&mount).unwrap();
    let copy = dir.join("copy.pcap");
    let (port, got, _listener) = bulk_listener();
    let args = frontend_args(&mount.join("vm0.pcap"), &[]);
    // The frontend (and the helper it spawns) in a private mount namespace with a 256 KiB
    // tmpfs: the host never sees the mount; the file is copied out before the namespace goes.
    let script = r#"mount -t tmpfs -o size=256k tmpfs "$1" || exit 99
dir=$1; copy=$2; shift 2
"$@"; rc=$?
cp "$dir/vm0.pcap" "$copy"
exit $rc"#;
    let inner = frontend_with_role(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &format!("bulk 10.0.2.2:{port} {LEN}"),
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(&mount)
    .arg(&copy)
    .arg(inner.get_program())
    .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = run(cmd, Duration::from_secs(120));
    assert_transfer_intact(&out, &got);
    assert!(
        std::fs::read_dir(&mount).unwrap().next().is_none(),
        "the tmpfs leaked into the host's namespace"
    );
    let c = helper_counters(&out);
    assert_eq!(counter(&c, "pcap_stopped"), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stops: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("capture stopped"))
        .collect();
    assert_eq!(stops.len(), 1, "{stderr}");
    assert!(stops[0].contains("No space left on device"), "{}", stops[0]);
    // tcpdump reads every whole record; a record the full disk cut ends the file (tcpdump
    // then says "truncated dump file" after the last whole one).
    let (frames, bytes, _status, err) = tcpdump_read(&copy);
    assert_eq!(
        (frames, bytes),
        (counter(&c, "pcap_frames"), counter(&c, "pcap_bytes")),
        "{err}"
    );
    assert!(frames > 0);
    let _ = std::fs::remove_dir_all(&dir);
}
