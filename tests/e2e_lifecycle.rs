//! End to end: lifetimes. The helper exits when the frontend is killed (socket hangup); the
//! frontend reports a dead helper and exits non-zero; exit statuses and clean-up.
//! Root only (skipped otherwise).

mod e2e_common;
use e2e_common::process::gone_within;
use e2e_common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

#[test]
fn guest_role() {
    guest_role_entry();
}

/// Start the frontend with a sleeping guest; return it and the helper pid it printed.
fn start_sleeping() -> (Child, i32, BufReader<std::process::ChildStderr>) {
    let mut cmd = frontend_with_role(&[], "sleep 30");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let pid = helper_pid(&mut err).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("no helper pid on the frontend's stderr")
    });
    (child, pid, err)
}

/// The helper pid the frontend prints first (`slirp-frontend: helper pid N (...)`).
fn helper_pid(err: &mut BufReader<std::process::ChildStderr>) -> Option<i32> {
    let mut line = String::new();
    for _ in 0..20 {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if let Some(rest) = line.split("helper pid ").nth(1) {
            return rest.split_whitespace().next().and_then(|p| p.parse().ok());
        }
    }
    None
}

#[test]
fn killing_the_frontend_makes_the_helper_exit() {
    if !root_or_skip("killing_the_frontend_makes_the_helper_exit") {
        return;
    }
    let (mut child, helper, _err) = start_sleeping();
    let frontend_pid = child.id();
    kill(Pid::from_raw(frontend_pid as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    // SIGKILL leaves its namespace behind: remove it (it is ours: named after the pid).
    let _ = std::process::Command::new("ip")
        .args(["netns", "delete", &format!("slirpfe-{frontend_pid}")])
        .status();
    assert!(
        gone_within(helper, Duration::from_secs(5)),
        "helper {helper} still running after the frontend was killed"
    );
}

#[test]
fn killing_the_helper_is_reported() {
    if !root_or_skip("killing_the_helper_is_reported") {
        return;
    }
    let (child, helper, mut err) = start_sleeping();
    kill(Pid::from_raw(helper), Signal::SIGKILL).unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    let out = wait_output(child, Duration::from_secs(20));
    assert!(!out.status.success(), "{rest}");
    assert!(
        rest.contains(&format!("the helper (pid {helper}) was killed by signal 9")),
        "{rest}"
    );
}

#[test]
fn sigterm_stops_everything_and_cleans_up() {
    if !root_or_skip("sigterm_stops_everything_and_cleans_up") {
        return;
    }
    let (child, helper, mut err) = start_sleeping();
    let fe = child.id();
    kill(Pid::from_raw(fe as i32), Signal::SIGTERM).unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    let out = wait_output(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(128 + 15), "{rest}");
    assert!(gone_within(helper, Duration::from_secs(5)));
    assert!(!std::path::Path::new(&format!("/run/netns/slirpfe-{fe}")).exists());
}

#[test]
fn exit_status_of_the_command_is_ours() {
    if !root_or_skip("exit_status_of_the_command_is_ours") {
        return;
    }
    let mut cmd = frontend(&[]);
    cmd.args(["--", "sh", "-c", "exit 7"]);
    let out = run(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
}

#[test]
fn frontend_killed_during_a_bulk_transfer_frees_the_helper_and_its_ports() {
    if !root_or_skip("frontend_killed_during_a_bulk_transfer_frees_the_helper_and_its_ports") {
        return;
    }
    // A host sink the guest streams into (through 10.0.2.2), and a hostfwd port to free.
    let (port, _listener) = host_listener(Duration::from_secs(60), |c| {
        let _ = recv_hash(&c, usize::MAX);
    });
    let hport = free_port(false);
    let hostfwd = format!("tcp:127.0.0.1:{hport}-:8080");
    let role = format!("bulk 10.0.2.2:{port} {}", 1usize << 30);
    let mut cmd = frontend_with_role(&["--open", "--hostfwd", &hostfwd], &role);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let helper = helper_pid(&mut err);
    let helper = helper.expect("helper pid");
    // Let the transfer get going, then kill the frontend as bhyve's death would.
    std::thread::sleep(Duration::from_secs(2));
    let frontend_pid = child.id();
    kill(Pid::from_raw(frontend_pid as i32), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    let _ = child.wait();
    let gone = gone_within(helper, Duration::from_secs(5));
    let took = killed_at.elapsed();
    let _ = std::process::Command::new("ip")
        .args(["netns", "delete", &format!("slirpfe-{frontend_pid}")])
        .status();
    eprintln!("frontend killed during a bulk transfer: helper gone after {took:?}");
    assert!(
        gone,
        "helper {helper} still running after the frontend was killed"
    );
    assert!(
        took < Duration::from_secs(1),
        "helper took {took:?} to exit"
    );
    // No orphaned listener: the hostfwd port can be bound again.
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", hport)).is_ok(),
        "hostfwd port {hport} still held"
    );
}
