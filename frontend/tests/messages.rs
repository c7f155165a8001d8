//! The tools' messages as a user meets them (issue 17, "Messages"): one error line that points
//! to `--help`, the helper's own message and nothing after it when it fails during set-up,
//! its counters at exit only with `-v`, `--dhcp` refused below MTU 576, and slirp-loadgen's
//! unknown command, `--secs` and zero-transaction runs.
//!
//! The frontend runs need root (a namespace and a tap) and the real helper built next to the
//! frontend (`cargo build --release` at the root); otherwise they are reported as skipped.
//! The loadgen runs use loopback listeners of this test only.
#![cfg(target_os = "linux")]

#[path = "../../tests/common/skip.rs"]
mod skip;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FRONTEND: &str = env!("CARGO_BIN_EXE_slirp-frontend");
const LOADGEN: &str = env!("CARGO_BIN_EXE_slirp-loadgen");
/// Longer than any run here takes; only a hang reaches it.
const HANG: Duration = Duration::from_secs(60);

/// Run to completion, killed by pid after [`HANG`] (then the test fails on the status).
fn run(bin: &str, args: &[&str]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + HANG;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The real helper next to the frontend, when this machine can run the frontend at all.
fn helper_or_skip(test: &str) -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        skip::skip(test, "needs root (a network namespace and a tap device)");
        return None;
    }
    let helper = PathBuf::from(FRONTEND).with_file_name("bhyve-slirp-helper");
    if !helper.is_file() {
        skip::skip(
            test,
            &format!(
                "{} is missing (cargo build --release at the root builds it)",
                helper.display()
            ),
        );
        return None;
    }
    Some(helper)
}

#[test]
fn frontend_usage_error_is_one_line_that_points_to_help() {
    let out = run(FRONTEND, &["--no-such-option"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(
        stderr_lines(&out),
        ["slirp-frontend: unknown option \"--no-such-option\" (see slirp-frontend --help)"],
        "{}",
        show(&out)
    );
    assert!(out.stdout.is_empty(), "{}", show(&out));
}

#[test]
fn frontend_refuses_dhcp_below_576_with_the_reason() {
    for args in [["--mtu", "500", "--dhcp"], ["--dhcp", "--mtu", "575"]] {
        let out = run(FRONTEND, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{args:?}: {}", show(&out));
        assert!(
            lines[0]
                .starts_with("slirp-frontend: --dhcp needs --mtu 576 or more (DHCP cannot work")
                && lines[0].ends_with("(see slirp-frontend --help)"),
            "{args:?}: {}",
            show(&out)
        );
    }
    // The example: the default job takes a DHCP lease.
    let job = run(FRONTEND, &["--mtu", "68"]);
    assert_eq!(job.status.code(), Some(2), "{}", show(&job));
    assert_eq!(
        stderr_lines(&job),
        [
            "slirp-frontend: the default job (DHCP) needs --mtu 576 or more (DHCP cannot work \
             at --mtu 68: its replies are 576-byte datagrams) (see slirp-frontend --help)"
        ],
        "{}",
        show(&job)
    );
    let help = run(FRONTEND, &["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("needs --mtu 576 or more"), "{text}");
    assert!(text.contains("576 or more for DHCP"), "{text}");
}

#[test]
fn frontend_reports_a_helper_that_fails_during_set_up_once() {
    let test = "frontend_reports_a_helper_that_fails_during_set_up_once";
    let Some(helper) = helper_or_skip(test) else {
        return;
    };
    let helper = helper.to_str().expect("UTF-8 path");
    // A hostfwd rule the helper refuses after it has started: it exits 1 with its message
    // while the frontend is still setting the guest up.
    let out = run(
        FRONTEND,
        &["--helper", helper, "--hostfwd", "tcp::x-:22", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let lines = stderr_lines(&out);
    let said = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}\n{}", show(&out)))
    };
    let helper_msg = said("bhyve-slirp-helper: configuration: hostfwd");
    // Every frontend line but the helper pid is an error: exactly one, after the helper's.
    let errors: Vec<(usize, &String)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("slirp-frontend: ") && !l.contains(" helper pid "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", show(&out));
    let (at, error) = errors[0];
    assert!(at > helper_msg, "{}", show(&out));
    // Set-up usually fails first; if the guest was up already, the same death is reported
    // from the run.
    assert!(
        error.ends_with("exited with status 1 during set-up")
            || error.ends_with("exited with status 1 while the guest was running"),
        "{}",
        show(&out)
    );
    assert!(!error.contains("Cannot find device"), "{}", show(&out));
}

#[test]
fn frontend_shows_the_helpers_exit_counters_only_with_verbose() {
    let test = "frontend_shows_the_helpers_exit_counters_only_with_verbose";
    let Some(helper) = helper_or_skip(test) else {
        return;
    };
    let helper = helper.to_str().expect("UTF-8 path");
    let quiet = run(FRONTEND, &["--helper", helper, "--", "true"]);
    assert_eq!(quiet.status.code(), Some(0), "{}", show(&quiet));
    let err = String::from_utf8_lossy(&quiet.stderr);
    assert!(!err.contains("rx_frames="), "{}", show(&quiet));
    assert!(
        !err.contains("bhyve closed the connection"),
        "{}",
        show(&quiet)
    );

    // With a capture file and the control socket, the line has their fields too.
    let dir = std::env::temp_dir().join(format!("fe-messages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("c.pcap");
    let api = dir.join("api.sock");
    let verbose = run(
        FRONTEND,
        &[
            "-v",
            "--helper",
            helper,
            "--helper-arg",
            "--pcap",
            "--helper-arg",
            pcap.to_str().unwrap(),
            "--helper-arg",
            "--api",
            "--helper-arg",
            api.to_str().unwrap(),
            "--",
            "true",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(verbose.status.code(), Some(0), "{}", show(&verbose));
    let err = String::from_utf8_lossy(&verbose.stderr);
    let exit_line = err
        .lines()
        .find_map(|l| l.strip_prefix("bhyve-slirp-helper: bhyve closed the connection; "))
        .unwrap_or_else(|| panic!("no exit counters with -v\n{}", show(&verbose)));
    assert!(
        exit_line.starts_with("rx_frames=") && exit_line.contains(" iterations="),
        "{exit_line}"
    );
    readme_documents_exactly(exit_line);
}

/// README.md's "Counters" table has one row per field of the helper's real counters line
/// (`epoll`, the Linux default, with `pcap` and `api` set, prints every field), and no row for
/// a field it lacks.
fn readme_documents_exactly(line: &str) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Counters\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a '## Counters' section in README.md");
    let mut documented: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    let mut printed: Vec<&str> = line
        .split_whitespace()
        .filter_map(|kv| kv.split('=').next())
        .collect();
    documented.sort_unstable();
    printed.sort_unstable();
    assert_eq!(
        documented, printed,
        "README's Counters table vs the line:\n{line}"
    );
}

#[test]
fn loadgen_names_an_unknown_command_as_one() {
    for args in [
        &["bogus"][..],
        &["bogus", "--connect", "127.0.0.1:9", "--secs", "1"],
    ] {
        let out = run(LOADGEN, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        assert_eq!(
            stderr_lines(&out),
            [
                "slirp-loadgen: unknown command \"bogus\": one of rr-server, rr-client, \
              hold-server, hold (see slirp-loadgen --help)"
            ],
            "{args:?}: {}",
            show(&out)
        );
    }
    let out = run(LOADGEN, &["rr-client", "--secs", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(stderr_lines(&out).len(), 1, "{}", show(&out));
}

/// A loopback listener of this test whose single connection echoes each byte after `delay`,
/// for at most `limit` (then it closes).
fn echo_server(delay: Duration, limit: Duration) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let server = std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = s.set_read_timeout(Some(limit));
        let end = Instant::now() + limit;
        let mut b = [0u8; 1];
        while Instant::now() < end {
            match s.read(&mut b) {
                Ok(1) => {
                    std::thread::sleep(delay);
                    if s.write_all(&b).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    (addr, server)
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn loadgen_secs_1_measures_one_second() {
    let (addr, server) = echo_server(Duration::ZERO, Duration::from_secs(20));
    let addr = addr.to_string();
    let out = run(
        LOADGEN,
        &[
            "rr-client",
            "--connect",
            &addr,
            "--secs",
            "1",
            "--warmup-ms",
            "100",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("rr "))
        .unwrap_or_else(|| panic!("no rr line\n{}", show(&out)));
    assert!(field(line, "transactions") > 0.0, "{line}");
    // One second measured (minus at most the first round trip's start, plus the last's end);
    // the upper bound only catches a run that did not stop.
    let secs = field(line, "secs");
    assert!((0.9..10.0).contains(&secs), "{line}");
    server.join().unwrap();
}

#[test]
fn loadgen_with_zero_transactions_fails() {
    // The first echo comes after 3 s: the one round trip spans the whole measured second
    // (after a 0.5 s warm-up), so nothing is counted; within the client's 5 s stall limit.
    let (addr, server) = echo_server(Duration::from_secs(3), Duration::from_secs(10));
    let addr = addr.to_string();
    let out = run(
        LOADGEN,
        &[
            "rr-client",
            "--connect",
            &addr,
            "--secs",
            "1",
            "--warmup-ms",
            "500",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        out.stdout.is_empty(),
        "no result line for no result\n{}",
        show(&out)
    );
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{}", show(&out));
    assert!(
        lines[0].starts_with("slirp-loadgen: no round trip to ") && lines[0].contains("1 s"),
        "{}",
        show(&out)
    );
    server.join().unwrap();
}
