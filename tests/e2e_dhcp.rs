//! End to end: DHCP from the helper to busybox udhcpc in the frontend's namespace; ping.
//! Root only (skipped otherwise).

mod e2e_common;
use e2e_common::*;
use std::time::Duration;

#[test]
fn guest_role() {
    guest_role_entry();
}

/// The lease line the frontend prints (from its udhcpc script's `ip`, `router`, `dns`).
fn lease(args: &[&str]) -> (String, std::process::Output) {
    let mut all = vec!["--dhcp"];
    all.extend_from_slice(args);
    let mut cmd = frontend(&all);
    cmd.args(["--", "ip", "-4", "-o", "addr", "show", "dev", "tap0"]);
    let out = run(cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let line = err
        .lines()
        .find(|l| l.contains("DHCP lease:"))
        .unwrap_or("")
        .to_string();
    (line, out)
}

#[test]
fn restricted_dhcp_offers_no_router_and_no_dns() {
    if !root_or_skip("restricted_dhcp_offers_no_router_and_no_dns") {
        return;
    }
    let (line, out) = lease(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(line.contains("ip=10.0.2.15/24"), "{}", text(&out));
    assert!(line.contains("router=(none)"), "{}", text(&out));
    assert!(line.contains("dns=(none)"), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.0.2.15/24"));
}

#[test]
fn open_dhcp_offers_router_and_dns_but_no_route_is_added() {
    if !root_or_skip("open_dhcp_offers_router_and_dns_but_no_route_is_added") {
        return;
    }
    let mut cmd = frontend(&["--dhcp", "--open"]);
    cmd.args(["--", "ip", "-4", "route", "show"]);
    let out = run(cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        err.contains("DHCP lease: ip=10.0.2.15/24 router=10.0.2.2 dns=10.0.2.3"),
        "{}",
        text(&out)
    );
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(!routes.contains("default"), "{}", text(&out));
}

#[test]
fn default_route_only_when_asked() {
    if !root_or_skip("default_route_only_when_asked") {
        return;
    }
    let mut cmd = frontend(&["--dhcp", "--open", "--default-route"]);
    cmd.args(["--", "ip", "-4", "route", "show"]);
    let out = run(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("default via 10.0.2.2"),
        "{}",
        text(&out)
    );
}

#[test]
fn ping_the_helper() {
    if !root_or_skip("ping_the_helper") {
        return;
    }
    let mut cmd = frontend(&["--open"]);
    cmd.args(["--", "busybox", "ping", "-c", "3", "-W", "2", "10.0.2.2"]);
    let out = run(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 packets received"),
        "{}",
        text(&out)
    );
}
