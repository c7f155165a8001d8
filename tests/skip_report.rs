//! Skipped is not passed: a test that returns early because it cannot run here (not root)
//! leaves a `SKIPPED: <test>: <reason>` line, and `scripts/test-summary.sh` (the closing lines
//! of `scripts/test.sh`) counts it as skipped, not passed. Checked for real: as root, this
//! binary runs its own root-only probe again as `nobody`.

mod common;

use common::skip::skip;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

const NOBODY: u32 = 65534;

/// A test that needs root, as every e2e test does; the other test runs it as `nobody`.
#[test]
fn root_only_probe() {
    if !nix::unistd::geteuid().is_root() {
        skip("root_only_probe", "needs root (the skip report's probe)");
        return;
    }
    assert!(nix::unistd::geteuid().is_root());
}

#[test]
fn a_test_run_without_root_is_reported_skipped_not_passed() {
    if !nix::unistd::geteuid().is_root() {
        skip(
            "a_test_run_without_root_is_reported_skipped_not_passed",
            "needs root (to run the probe as nobody)",
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("slirp-skip-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    // nobody writes the skip file here.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let skips = dir.join("skips");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "root_only_probe",
            "--exact",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(common::skip::SKIPS_ENV, &skips)
        .current_dir(&dir)
        .uid(NOBODY)
        .gid(NOBODY)
        // (std drops the supplementary groups when root changes uid)
        .output()
        .expect("run the probe as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "probe as nobody: {out:?}");
    // libtest alone calls it passed: the reason this mechanism exists.
    assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
    let recorded = std::fs::read_to_string(&skips).expect("no skip line recorded");
    assert_eq!(
        recorded,
        "SKIPPED: root_only_probe: needs root (the skip report's probe)\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("SKIPPED: root_only_probe"));

    // scripts/test.sh's closing line over this run: skipped, not passed.
    let log = dir.join("log");
    std::fs::write(&log, &stdout).unwrap();
    let summary = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/test-summary.sh"
        ))
        .args([&log, &skips])
        .env_remove("CI")
        .output()
        .expect("run scripts/test-summary.sh");
    let text = String::from_utf8_lossy(&summary.stdout).into_owned();
    assert!(summary.status.success(), "{summary:?}");
    assert_eq!(
        text.lines().last(),
        Some("tests: 0 passed, 0 failed, 1 skipped"),
        "{text}"
    );
    assert!(text.contains("root_only_probe: needs root"), "{text}");
    // In CI a skip fails the run.
    let ci = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/test-summary.sh"
        ))
        .args([&log, &skips])
        .env("CI", "true")
        .output()
        .expect("run scripts/test-summary.sh");
    assert_eq!(ci.status.code(), Some(1), "{ci:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
