//! End to end: guest TCP to a host listener on 127.0.0.1 through 10.0.2.2 (open mode),
//! bulk both ways with SHA-256, 200 concurrent connections, restricted mode's refusal, and
//! MTU 65520. Root only (skipped otherwise).

mod e2e_common;
use e2e_common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn guest_role() {
    guest_role_entry();
}

const MIB16: usize = 16 << 20;

/// Host side of `bulk`: records (received len, received sha, sent sha).
fn bulk(mtu: &str) {
    bulk_with(mtu, &[]);
}

/// `bulk` with extra options for the frontend (`--helper-arg …`).
fn bulk_with(mtu: &str, extra: &[&str]) {
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let (port, _l) = host_listener(Duration::from_secs(90), move |c| {
        let r = bulk_both_ways(c, 2, MIB16, Fin::AfterEof);
        *g.lock().unwrap() = Some(r.map_err(|e| e.to_string()));
    });
    let role = format!("bulk 10.0.2.2:{port} {MIB16}");
    let mut args = vec!["--open", "--mtu", mtu];
    args.extend_from_slice(extra);
    let out = run(frontend_with_role(&args, &role), Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    let (host_sent, host_rlen, host_rsha) = got
        .lock()
        .unwrap()
        .clone()
        .expect("host side ran")
        .expect("host side ok");
    assert_eq!(host_rlen, MIB16);
    assert_eq!(Some(host_rsha), field(&out, "SENT_SHA"), "guest->host");
    assert_eq!(host_rsha_expected(), field(&out, "SENT_SHA").unwrap());
    assert_eq!(
        field(&out, "RECV_LEN"),
        Some(MIB16.to_string()),
        "{}",
        text(&out)
    );
    assert_eq!(Some(host_sent), field(&out, "RECV_SHA"), "host->guest");
    if extra.contains(&"io_uring") {
        // Guest frames came through the ring, not from reads of the socket.
        let all = text(&out);
        assert!(all.contains("poller=io_uring"), "{all}");
        assert!(all.contains(" rx_syscalls=0 "), "{all}");
    }
}

fn host_rsha_expected() -> String {
    expected_hash(1, MIB16)
}

#[test]
fn bulk_16_mib_each_way_with_sha256() {
    if !root_or_skip("bulk_16_mib_each_way_with_sha256") {
        return;
    }
    bulk("1500");
}

#[test]
fn mtu_65520_bulk_with_sha256() {
    if !root_or_skip("mtu_65520_bulk_with_sha256") {
        return;
    }
    bulk("65520");
}

/// The io_uring engine moves the frames through its ring both ways (multishot receive into
/// its buffer ring, linked sends in the waiting enter): the same bytes arrive.
#[test]
fn bulk_16_mib_each_way_with_sha256_io_uring() {
    if !root_or_skip("bulk_16_mib_each_way_with_sha256_io_uring") {
        return;
    }
    bulk_with("1500", &IO_URING);
}

#[test]
fn mtu_65520_bulk_with_sha256_io_uring() {
    if !root_or_skip("mtu_65520_bulk_with_sha256_io_uring") {
        return;
    }
    bulk_with("65520", &IO_URING);
}

/// The engine, and the helper's counters line at its exit (`-v`).
const IO_URING: [&str; 5] = ["-v", "--helper-arg", "--poller", "--helper-arg", "io_uring"];

#[test]
fn two_hundred_concurrent_connections() {
    if !root_or_skip("two_hundred_concurrent_connections") {
        return;
    }
    let (port, _l) = host_listener(Duration::from_secs(90), echo);
    let role = format!("conns 10.0.2.2:{port} 200 65536");
    let out = run(
        frontend_with_role(&["--open"], &role),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        field(&out, "CONNS_OK"),
        Some("200".into()),
        "{}",
        text(&out)
    );
}

#[test]
fn restricted_mode_refuses_the_host() {
    if !root_or_skip("restricted_mode_refuses_the_host") {
        return;
    }
    let accepted = Arc::new(Mutex::new(0));
    let a = accepted.clone();
    let (port, _l) = host_listener(Duration::from_secs(30), move |_| {
        *a.lock().unwrap() += 1;
    });
    let role = format!("refused 10.0.2.2:{port}");
    let out = run(frontend_with_role(&[], &role), Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        field(&out, "CONNECT"),
        Some("refused".into()),
        "{}",
        text(&out)
    );
    assert_eq!(*accepted.lock().unwrap(), 0);
}
