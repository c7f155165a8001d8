//! Process lifecycle: hangup, empty records, usage errors, libslirp path, config vectors and
//! bad configs.

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const USAGE: &str = "usage: bhyve-slirp-helper -S <socket>";
/// The whole usage line after a usage error: short, pointing to the rest.
const USAGE_LINE: &str = "usage: bhyve-slirp-helper -S <socket> [options] (see --help)";
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/nvlist");

#[cfg(target_os = "linux")]
fn io_uring_config() -> Vec<u8> {
    ConfigBuilder::bhyve().string("poller", "io_uring").encode()
}

#[test]
fn hangup_ends_helper_with_status_0_quickly() {
    hangup_quickly(restricted_config());
}

/// The io_uring engine learns of the hangup from its multishot receive (EOF), not a poll.
#[cfg(target_os = "linux")]
#[test]
fn hangup_ends_helper_with_status_0_quickly_io_uring() {
    hangup_quickly(io_uring_config());
}

fn hangup_quickly(config: Vec<u8>) {
    let mut bhyve = Bhyve::start(&config);
    assert!(
        bhyve.resolve(HOST_IP, STEP).is_some(),
        "helper not answering ARP; stderr:\n{}",
        bhyve.stderr()
    );
    bhyve.hang_up();
    let t0 = Instant::now();
    let code = bhyve.expect_exit(Duration::from_secs(5));
    let took = t0.elapsed();
    assert_eq!(code, 0, "stderr:\n{}", bhyve.stderr());
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?} after hangup"
    );
}

#[test]
fn hangup_before_any_frame_ends_helper_with_status_0() {
    hangup_before_any_frame(restricted_config());
}

#[cfg(target_os = "linux")]
#[test]
fn hangup_before_any_frame_ends_helper_with_status_0_io_uring() {
    hangup_before_any_frame(io_uring_config());
}

fn hangup_before_any_frame(config: Vec<u8>) {
    let mut bhyve = Bhyve::start(&config);
    // Give it time to read the config and start libslirp.
    thread::sleep(Duration::from_millis(500));
    bhyve.hang_up();
    assert_eq!(
        bhyve.expect_exit(Duration::from_secs(5)),
        0,
        "stderr:\n{}",
        bhyve.stderr()
    );
}

#[test]
fn hangup_with_open_connection_ends_helper_with_status_0() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut guest = Guest::new(Bhyve::start(&open_config()));
    guest.set_static();
    let h = guest.tcp_connect(std::net::SocketAddrV4::new(HOST_IP, port), STEP);
    assert!(h.is_some(), "connect; stderr:\n{}", guest.bhyve.stderr());
    let (conn, _) = listener.accept().unwrap();
    guest.bhyve.hang_up();
    let t0 = Instant::now();
    assert_eq!(
        guest.bhyve.expect_exit(Duration::from_secs(5)),
        0,
        "stderr:\n{}",
        guest.bhyve.stderr()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "exit took {:?}",
        t0.elapsed()
    );
    drop(conn);
}

#[test]
fn empty_record_does_not_end_helper() {
    empty_record_survived(restricted_config());
}

/// An empty record ends the engine's multishot receive (as EOF would): re-armed, not a hangup.
#[cfg(target_os = "linux")]
#[test]
fn empty_record_does_not_end_helper_io_uring() {
    empty_record_survived(io_uring_config());
}

fn empty_record_survived(config: Vec<u8>) {
    let mut bhyve = Bhyve::start(&config);
    assert!(bhyve.resolve(HOST_IP, STEP).is_some(), "ARP before");
    bhyve.send_frame(&[]).unwrap();
    thread::sleep(Duration::from_millis(1500));
    assert!(
        bhyve.is_running(),
        "an empty record ended the helper: {:?}; stderr:\n{}",
        bhyve.wait_exit(Duration::ZERO),
        bhyve.stderr()
    );
    assert!(
        bhyve.resolve(HOST_IP, STEP).is_some(),
        "ARP after the empty record"
    );
    assert!(
        bhyve.raw_ping(HOST_IP, 32, STEP),
        "ping after the empty record"
    );
}

#[test]
fn empty_record_right_after_config_does_not_end_helper() {
    let cfg = restricted_config();
    let mut bhyve = Bhyve::spawn(Spawn {
        config: None,
        ..Spawn::default()
    });
    bhyve.send_frame(&cfg).unwrap();
    bhyve.send_frame(&[]).unwrap();
    assert!(
        bhyve.resolve(HOST_IP, STEP).is_some(),
        "ARP after the empty record"
    );
    assert!(bhyve.is_running());
}

#[test]
fn sigterm_exits_0() {
    let mut bhyve = Bhyve::start(&restricted_config());
    assert!(bhyve.resolve(HOST_IP, STEP).is_some());
    bhyve.signal(libc::SIGTERM);
    assert_eq!(
        bhyve.expect_exit(Duration::from_secs(5)),
        0,
        "stderr:\n{}",
        bhyve.stderr()
    );
    let stats = bhyve.stats();
    assert!(
        stats.is_some(),
        "no stats line at exit; stderr:\n{}",
        bhyve.stderr()
    );
    // What the sandbox refused is counted in the line (nothing, for a guest that only ARPs).
    assert_eq!(
        stats.unwrap().get("sandbox_refused"),
        Some(&0),
        "stderr:\n{}",
        bhyve.stderr()
    );
}

/// A SIGSYS that the seccomp filter did not raise (kill(2) from another process) must not be
/// taken for a refused system call: rewriting the return register of whatever the signal
/// interrupted (usually the loop's wait) would corrupt it. The helper ignores it and serves on.
#[test]
fn a_sigsys_sent_with_kill_is_not_a_refusal() {
    let mut bhyve = Bhyve::start(&restricted_config());
    assert!(bhyve.resolve(HOST_IP, STEP).is_some());
    for _ in 0..20 {
        bhyve.signal(libc::SIGSYS);
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        bhyve.resolve(HOST_IP, STEP).is_some(),
        "helper stopped answering after SIGSYS; stderr:\n{}",
        bhyve.stderr()
    );
    let stats = bhyve.stats_now(STEP).expect("stats line on SIGUSR1");
    assert_eq!(
        stats.get("sandbox_refused"),
        Some(&0),
        "stderr:\n{}",
        bhyve.stderr()
    );
    assert!(bhyve.is_running(), "stderr:\n{}", bhyve.stderr());
}

fn assert_usage_error(args: &[&str]) {
    let run = run_helper(args, STEP);
    assert_eq!(
        run.code(),
        Some(1),
        "args {args:?}: status {:?}; stderr:\n{}",
        run.status,
        run.stderr
    );
    assert!(
        run.stderr.contains(USAGE),
        "args {args:?}: stderr lacks the usage line:\n{}",
        run.stderr
    );
}

#[test]
fn usage_no_args() {
    assert_usage_error(&[]);
}

#[test]
fn usage_socket_not_a_number() {
    assert_usage_error(&["-S", "notanumber"]);
}

#[test]
fn usage_socket_closed_fd() {
    assert_usage_error(&["-S", "999"]);
}

#[test]
fn usage_missing_socket_argument() {
    assert_usage_error(&["-S"]);
}

#[test]
fn help_exits_0_with_usage() {
    let run = run_helper(&["--help"], STEP);
    assert_eq!(run.code(), Some(0), "stderr:\n{}", run.stderr);
    assert!(
        run.stdout.contains(USAGE) || run.stderr.contains(USAGE),
        "--help prints no usage line; stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn version_prints_ours_and_libslirps() {
    let run = run_helper(&["--version"], STEP);
    assert_eq!(run.code(), Some(0), "stderr:\n{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "stdout:\n{}", run.stdout);
    assert_eq!(
        lines[0],
        concat!("bhyve-slirp-helper ", env!("CARGO_PKG_VERSION"))
    );
    // The default soname, as a run loads it; the version is libslirp's own string.
    let libslirp = lines[1]
        .strip_prefix("libslirp ")
        .and_then(|rest| rest.strip_suffix(" (libslirp.so.0)"))
        .unwrap_or_else(|| panic!("second line: {}", lines[1]));
    assert!(
        libslirp.split('.').all(|n| n.parse::<u32>().is_ok()),
        "libslirp version {libslirp:?}"
    );
}

#[test]
fn version_says_when_libslirp_cannot_be_loaded_and_still_exits_0() {
    let path = "/nonexistent/slirp-test-dir/libslirp.so.0";
    let run = run_helper(&["--libslirp", path, "--version"], STEP);
    assert_eq!(run.code(), Some(0), "stderr:\n{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "stdout:\n{}", run.stdout);
    assert_eq!(
        lines[0],
        concat!("bhyve-slirp-helper ", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        lines[1].starts_with(&format!("libslirp not loaded: unable to open {path}: ")),
        "{}",
        lines[1]
    );
}

#[test]
fn start_up_logs_both_versions() {
    let bhyve = Bhyve::start(&restricted_config());
    assert!(bhyve.resolve(HOST_IP, STEP).is_some(), "{}", bhyve.stderr());
    let want = concat!(
        "bhyve-slirp-helper: bhyve-slirp-helper ",
        env!("CARGO_PKG_VERSION"),
        " with libslirp "
    );
    let stderr = bhyve.stderr();
    let line = stderr.lines().find(|l| l.starts_with(want));
    assert!(
        line.is_some_and(|l| l.ends_with(" (libslirp.so.0)")),
        "no version line; stderr:\n{stderr}"
    );
}

/// `args` exit 1 with exactly `line` and the short usage line on stderr.
fn assert_usage_line(args: &[&str], line: &str) {
    let run = run_helper(args, STEP);
    assert_eq!(
        run.code(),
        Some(1),
        "args {args:?}; stderr:\n{}",
        run.stderr
    );
    assert_eq!(
        run.stderr,
        format!("bhyve-slirp-helper: {line}\n{USAGE_LINE}\n"),
        "args {args:?}"
    );
}

#[test]
fn usage_errors_name_the_option_and_the_valid_values() {
    assert_usage_line(&[], "-S: missing (the socket to bhyve; --fd for libvirt)");
    assert_usage_line(&["-S"], "-S: missing value");
    assert_usage_line(&["-S", "x"], "-S: 'x' is not a descriptor number");
    // run_helper closes descriptor 999 in the child.
    assert_usage_line(&["-S", "999"], "-S: '999' is not an open descriptor");
    assert_usage_line(&["-S", "0", "--bogus"], "unexpected argument '--bogus'");
    // libvirt's form (#14).
    assert_usage_line(&["--fd=999"], "--fd: '999' is not an open descriptor");
    assert_usage_line(&["--fd=x"], "--fd: 'x' is not a descriptor number");
    assert_usage_line(
        &["--fd=3", "--dbus-address=unix:path=/x"],
        "unexpected argument '--dbus-address'",
    );
    assert_usage_line(
        &["-S", "0", "--coalesce", "maybe"],
        "--coalesce: 'maybe' is not a boolean (use on/off, true/false, yes/no or 1/0)",
    );
    assert_usage_line(
        &["-S", "0", "--batch", "0"],
        "--batch: '0' is not a number from 1 to 256",
    );
    assert_usage_line(
        &["-S", "0", "--libslirp", ""],
        "--libslirp: '' is not a path",
    );
    #[cfg(target_os = "linux")]
    assert_usage_line(
        &["-S", "0", "--poller", "kqueue"],
        "--poller: 'kqueue' is not available here (use poll, epoll or io_uring)",
    );
}

/// A config with `key=value` exits `code` with exactly `line` among the helper's lines.
fn assert_config_line(config: Vec<u8>, code: i32, line: &str) {
    let mut bhyve = Bhyve::start(&config);
    let got = bhyve.expect_exit(STEP);
    let stderr = bhyve.stderr();
    assert_eq!(got, code, "stderr:\n{stderr}");
    let want = format!("bhyve-slirp-helper: {line}");
    assert!(
        stderr.lines().any(|l| l == want),
        "no line {want:?}; stderr:\n{stderr}"
    );
}

#[test]
fn a_bhyve_key_says_the_same_mistake_as_its_option() {
    assert_config_line(
        ConfigBuilder::bhyve().string("coalesce", "maybe").encode(),
        1,
        "configuration: coalesce: 'maybe' is not a boolean (use on/off, true/false, yes/no or 1/0)",
    );
    assert_config_line(
        ConfigBuilder::bhyve().string("batch", "0").encode(),
        1,
        "configuration: batch: '0' is not a number from 1 to 256",
    );
    #[cfg(target_os = "linux")]
    assert_config_line(
        ConfigBuilder::bhyve().string("poller", "kqueue").encode(),
        1,
        "configuration: poller: 'kqueue' is not available here (use poll, epoll or io_uring)",
    );
    // `open` is the same kind of value; only its exit status is bhyve's own.
    assert_config_line(
        ConfigBuilder::bhyve().string("open", "maybe").encode(),
        4,
        "configuration: open: 'maybe' is not a boolean (use on/off, true/false, yes/no or 1/0)",
    );
    // The key is named once, then the rule.
    assert_config_line(
        ConfigBuilder::bhyve()
            .hostfwd("tcp::1-:2;sctp::1-:2")
            .encode(),
        1,
        "configuration: hostfwd: rule 2 'sctp::1-:2': unsupported protocol 'sctp' \
         (expected proto:haddr:hport-gaddr:gport, proto tcp or udp, IPv6 addresses in [])",
    );
}

#[test]
fn empty_libslirp_path_is_refused_naming_the_option() {
    // dlopen("") would load the helper's own binary and report "in : ...".
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(restricted_config()),
        args: vec!["--libslirp".into(), String::new()],
        ..Spawn::default()
    });
    assert_eq!(bhyve.expect_exit(STEP), 1);
    assert!(
        bhyve.stderr().contains("--libslirp: '' is not a path"),
        "{}",
        bhyve.stderr()
    );
}

#[test]
fn bad_libslirp_path_exits_1_naming_it() {
    let path = "/nonexistent/slirp-test-dir/libslirp.so.0";
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(restricted_config()),
        env: vec![("SLIRP_HELPER_LIBSLIRP".into(), path.into())],
        ..Spawn::default()
    });
    assert_eq!(bhyve.expect_exit(STEP), 1);
    assert!(
        bhyve.stderr().contains(path),
        "stderr does not name {path}:\n{}",
        bhyve.stderr()
    );
}

#[test]
fn good_libslirp_path_via_env_works() {
    // Control for the test above: the variable is honoured, not merely tolerated.
    let path = "/usr/lib/x86_64-linux-gnu/libslirp.so.0";
    if !Path::new(path).exists() {
        common::skip::skip(
            "good_libslirp_path_via_env_works",
            &format!("{path} absent (Debian's libslirp0 on x86_64 installs it)"),
        );
        return;
    }
    let bhyve = Bhyve::spawn(Spawn {
        config: Some(restricted_config()),
        env: vec![("SLIRP_HELPER_LIBSLIRP".into(), path.into())],
        ..Spawn::default()
    });
    assert!(
        bhyve.resolve(HOST_IP, STEP).is_some(),
        "stderr:\n{}",
        bhyve.stderr()
    );
}

/// `exit` of `file` in expected.json (hand-parsed: one object per file, `"exit": N`).
fn expected_exit(json: &str, file: &str) -> i32 {
    let start = json
        .find(&format!("\"{file}\""))
        .unwrap_or_else(|| panic!("{file} not in expected.json"));
    let obj = &json[start..];
    let obj = &obj[..obj.find('}').expect("object end")];
    let at = obj.find("\"exit\"").expect("exit field") + "\"exit\"".len();
    obj[at..]
        .trim_start_matches([':', ' '])
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .expect("exit value")
}

#[test]
fn config_vectors_match_expected_exit_status() {
    let json = std::fs::read_to_string(format!("{VECTORS}/expected.json")).expect("expected.json");
    let mut files: Vec<_> = std::fs::read_dir(VECTORS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "vectors missing: {files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(path).unwrap();
        let want = expected_exit(&json, name);
        // Vectors carry hostfwd rules on fixed ports (2222, 8080, 5353): a port held by someone
        // else makes the helper exit 1, so retry a few times before blaming the helper.
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let mut bhyve = Bhyve::start(&bytes);
            let outcome = if want == 0 {
                if bhyve.resolve(HOST_IP, STEP).is_some() {
                    bhyve.hang_up();
                    match bhyve.wait_exit(Duration::from_secs(5)).map(|s| s.code()) {
                        Some(Some(0)) => Ok(()),
                        other => Err(format!("after hangup: {other:?}")),
                    }
                } else {
                    Err(format!(
                        "no ARP reply; status {:?}",
                        bhyve.wait_exit(Duration::from_secs(2))
                    ))
                }
            } else {
                // A truncated body can still be completed by a later record, so the helper
                // may wait for it (bounded, see the test below); bhyve then goes away, as the
                // sender that produced these vectors did after nvlist_send.
                let mut status = bhyve.wait_exit(Duration::from_secs(5));
                if status.is_none() {
                    eprintln!("{name}: still waiting after 5 s; hanging up");
                    bhyve.hang_up();
                    status = bhyve.wait_exit(Duration::from_secs(5));
                }
                match status.map(|s| s.code()) {
                    Some(Some(c)) if c == want => Ok(()),
                    other => Err(format!("status {other:?}, want exit {want}")),
                }
            };
            let stderr = bhyve.stderr();
            let busy = stderr.to_lowercase().contains("in use");
            match outcome {
                Err(e) if busy && attempt < 5 => {
                    eprintln!("{name}: port busy, retrying ({e})");
                    thread::sleep(Duration::from_secs(1));
                }
                o => break o.map_err(|e| format!("{e}; stderr:\n{stderr}")),
            }
        };
        if let Err(e) = outcome {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "vector failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn truncated_config_with_socket_open_exits_1_within_bound() {
    // bhyve alive but the config incomplete: the helper must give up (exit 1), not wait forever
    // as libnv's blocking read in the C helper would.
    let bytes = std::fs::read(format!("{VECTORS}/g02_trunc_body.bin")).unwrap();
    let mut bhyve = Bhyve::start(&bytes);
    assert_eq!(
        bhyve.expect_exit(Duration::from_secs(60)),
        1,
        "stderr:\n{}",
        bhyve.stderr()
    );
    assert!(
        bhyve.stderr().contains("configuration"),
        "stderr:\n{}",
        bhyve.stderr()
    );
}

/// Starts the helper with `config` and expects exit `code` with stderr naming every `needle`.
fn assert_config_rejected(config: Vec<u8>, code: i32, needles: &[&str]) {
    let mut bhyve = Bhyve::start(&config);
    let got = bhyve.expect_exit(STEP);
    let stderr = bhyve.stderr();
    assert_eq!(got, code, "stderr:\n{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr does not name {n:?}:\n{stderr}");
    }
}

#[test]
fn open_maybe_exits_4_naming_key_and_value() {
    assert_config_rejected(
        ConfigBuilder::bhyve().string("open", "maybe").encode(),
        4,
        &["open", "maybe"],
    );
}

#[test]
fn open_empty_string_exits_4() {
    assert_config_rejected(
        ConfigBuilder::bhyve().string("open", "").encode(),
        4,
        &["open"],
    );
}

#[test]
fn open_accepts_bhyve_bool_spellings() {
    for v in ["true", "on", "YES", "1", "false", "off", "No", "0"] {
        let bhyve = Bhyve::start(&ConfigBuilder::bhyve().string("open", v).encode());
        assert!(
            bhyve.resolve(HOST_IP, STEP).is_some(),
            "open={v}: helper not running; stderr:\n{}",
            bhyve.stderr()
        );
    }
}

#[test]
fn hostfwd_unknown_proto_exits_1_naming_rule() {
    assert_config_rejected(
        ConfigBuilder::bhyve().hostfwd("sctp::1-:2").encode(),
        1,
        &["sctp::1-:2"],
    );
}

#[test]
fn hostfwd_trailing_empty_rule_exits_1() {
    assert_config_rejected(
        ConfigBuilder::bhyve().hostfwd("tcp::1-:2;").encode(),
        1,
        &["hostfwd"],
    );
}

#[test]
fn vmname_expansion_reference_exits_1() {
    assert_config_rejected(
        ConfigBuilder::bhyve().string("vmname", "%(x)").encode(),
        1,
        &["vmname"],
    );
}

#[test]
fn garbage_config_record_exits_1() {
    assert_config_rejected(b"this is not an nvlist at all".to_vec(), 1, &[]);
}

#[test]
fn mtui_as_number_is_accepted() {
    let bhyve = Bhyve::start(&ConfigBuilder::bhyve().mtui(1500).encode());
    assert!(
        bhyve.resolve(HOST_IP, STEP).is_some(),
        "stderr:\n{}",
        bhyve.stderr()
    );
}

#[test]
fn encoder_matches_worked_example_from_protocol_doc() {
    // docs/bhyve-protocol.md 4.5: {"mtui": NUMBER 1500, "vmname": "vm0", "open": "true"}.
    let got = ConfigBuilder::empty()
        .mtui(1500)
        .string("vmname", "vm0")
        .string("open", "true")
        .encode();
    let hex = [
        "6c 00 00 00 00 00 00 00 00 00 00 5b 00 00 00 00",
        "00 00 00 03 05 00 08 00 00 00 00 00 00 00 00 00",
        "00 00 00 00 00 00 6d 74 75 69 00 dc 05 00 00 00",
        "00 00 00 04 07 00 04 00 00 00 00 00 00 00 00 00",
        "00 00 00 00 00 00 76 6d 6e 61 6d 65 00 76 6d 30",
        "00 04 05 00 05 00 00 00 00 00 00 00 00 00 00 00",
        "00 00 00 00 6f 70 65 6e 00 74 72 75 65 00",
    ]
    .join(" ");
    let want: Vec<u8> = hex
        .split_whitespace()
        .collect::<String>()
        .as_bytes()
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect();
    assert_eq!(want.len(), 110);
    assert_eq!(got, want);
}

#[test]
fn poller_and_batch_config_keys_select_the_loop_design() {
    // bhyve forwards `-s …,slirp,poller=poll,batch=1` as string pairs: the C helper's design.
    for (poller, batch) in [
        ("poll", "1"),
        ("poll", "64"),
        ("epoll", "1"),
        ("epoll", "8"),
        ("io_uring", "1"),
        ("io_uring", "8"),
    ] {
        let mut bhyve = Bhyve::start(
            &ConfigBuilder::bhyve()
                .string("poller", poller)
                .string("batch", batch)
                .encode(),
        );
        assert!(
            bhyve.raw_ping(HOST_IP, 1000, STEP),
            "poller={poller} batch={batch}: no ping reply; stderr:\n{}",
            bhyve.stderr()
        );
        let stats = bhyve.stats_now(STEP).expect("stats line");
        assert!(stats["rx_frames"] >= 2, "{stats:?}");
        assert!(
            bhyve.stderr().contains(&format!("poller={poller}")),
            "{}",
            bhyve.stderr()
        );
    }
}

#[test]
fn bad_poller_or_batch_exits_1_naming_the_key() {
    assert_config_rejected(
        ConfigBuilder::bhyve().string("poller", "select").encode(),
        1,
        &["poller", "select"],
    );
    for bad in ["0", "257", "many"] {
        assert_config_rejected(
            ConfigBuilder::bhyve().string("batch", bad).encode(),
            1,
            &["batch", bad],
        );
    }
}

/// `--exit-with-parent` (QEMU and libvirt start the helper; #14): when the process that
/// started it dies, even by SIGKILL and with its end of the socket still open elsewhere, the
/// helper ends as on SIGTERM. Without the option it stays, as under bhyve, where the socket's
/// end is what ends it.
#[test]
fn exit_with_parent_ends_the_helper_when_its_parent_is_killed() {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    for with_option in [true, false] {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let log = std::env::temp_dir().join(format!(
            "exit-with-parent-{}-{with_option}.log",
            std::process::id()
        ));
        let flag = if with_option {
            "--exit-with-parent"
        } else {
            ""
        };
        // The parent: starts the helper in the background, says its pid, then waits as
        // `sleep` (exec keeps the pid: the helper's parent is the process we kill).
        let script = format!(
            "\"$0\" -S 3 {flag} 2>'{}' & echo $!; exec sleep 60",
            log.display()
        );
        let their_fd = theirs.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script, HELPER])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: runs in the forked child before exec; dup2 is async-signal-safe and the copy
        // it makes (descriptor 3, without CLOEXEC) is what the helper inherits.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(their_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut parent = cmd.spawn().expect("spawn sh");
        drop(theirs);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(parent.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let helper: i32 = line.trim().parse().expect("the helper's pid");
        nix::sys::socket::send(
            ours.as_raw_fd(),
            &restricted_config(),
            nix::sys::socket::MsgFlags::MSG_EOR,
        )
        .expect("send the config");
        // Up: its start-up line (stderr is a file, so it logs there).
        let t0 = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(" with libslirp ")
        {
            assert!(t0.elapsed() < STEP, "helper did not start");
            thread::sleep(Duration::from_millis(20));
        }

        parent.kill().unwrap();
        parent.wait().unwrap();
        let gone = common::process::gone_within(helper, Duration::from_secs(2));
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if with_option {
            assert!(
                gone,
                "helper still running 2 s after its parent died:\n{said}"
            );
            assert!(said.contains("terminated by signal"), "{said}");
        } else {
            assert!(
                !gone,
                "without the option the helper must outlive its parent:\n{said}"
            );
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(helper),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            assert!(
                common::process::gone_within(helper, STEP),
                "helper did not end on SIGTERM"
            );
        }
        drop(ours);
        let _ = std::fs::remove_file(&log);
    }
}

/// A kernel that refuses io_uring (ENOSYS, EPERM from kernel.io_uring_disabled, a container's
/// seccomp; forced here through the engine's test variable, which fails ring creation as
/// ENOSYS would): the helper says so in one line and serves on epoll.
#[cfg(target_os = "linux")]
#[test]
fn io_uring_refused_falls_back_to_epoll() {
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(ConfigBuilder::bhyve().string("poller", "io_uring").encode()),
        env: vec![(
            slirp_helper::poller::uring::FORCE_FAILURE_ENV.into(),
            "1".into(),
        )],
        ..Spawn::default()
    });
    assert!(
        bhyve.raw_ping(HOST_IP, 1000, STEP),
        "no ping reply after the fallback; stderr:\n{}",
        bhyve.stderr()
    );
    assert!(bhyve.stats_now(STEP).is_some(), "{}", bhyve.stderr());
    let stderr = bhyve.stderr();
    assert_eq!(
        stderr.matches("io_uring unavailable").count(),
        1,
        "one fallback line: {stderr}"
    );
    assert!(stderr.contains("using epoll"), "{stderr}");
    assert!(stderr.contains("poller=epoll"), "{stderr}");
}
