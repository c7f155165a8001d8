//! `scripts/install.sh`, the FreeBSD install path, run for real against a stand-in of the base
//! system's helper in a temporary directory: the base file is kept as `.orig` exactly once, the
//! installed binary is ours and stripped, the man page is installed next to it (in a temporary
//! man directory), a base update that replaces ours is noticed, and `--uninstall` puts the
//! base file back and removes the page.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh");
const HELPER: &str = env!("CARGO_BIN_EXE_bhyve-slirp-helper");
const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bhyve-slirp-helper.8");

/// A stand-in for bhyve's C helper: like it, it knows only `-S` and exits 1 on anything else.
fn write_base_helper(path: &Path, tag: &str) {
    fs::write(
        path,
        format!("#!/bin/sh\n# {tag}\necho 'usage: slirp-helper -S <socket>' >&2\nexit 1\n"),
    )
    .unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o555)).unwrap();
}

/// The man directory of a test install: next to `dest`, never the system's.
fn man_dir(dest: &Path) -> PathBuf {
    dest.parent().unwrap().join("man8")
}

fn install(dest: &Path, extra: &[&str]) -> std::process::Output {
    // The script finds the build under $CARGO_TARGET_DIR/release, where cargo put the helper.
    let target_dir = Path::new(HELPER).parent().unwrap().parent().unwrap();
    Command::new("sh")
        .arg(SCRIPT)
        .arg("--no-build")
        .arg("--dest")
        .arg(dest)
        .arg("--man-dir")
        .arg(man_dir(dest))
        .args(extra)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("run sh scripts/install.sh")
}

fn ok(out: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh failed:\n{text}");
    text
}

fn is_ours(path: &Path) -> bool {
    Command::new(path)
        .arg("--version")
        .output()
        .map(|o| o.status.success() && o.stdout.starts_with(b"bhyve-slirp-helper "))
        .unwrap_or(false)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("install-script-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn install_keeps_the_base_helper_once_and_uninstall_restores_it() {
    let dir = temp_dir("once");
    let dest = dir.join("bhyve-slirp-helper");
    let orig = dir.join("bhyve-slirp-helper.orig");
    let page = man_dir(&dest).join("bhyve-slirp-helper.8");
    write_base_helper(&dest, "base 14.3");

    let said = ok(&install(&dest, &[]));
    assert!(said.contains("kept the base helper"), "{said}");
    assert!(is_ours(&dest), "the installed file must be ours");
    assert!(said.contains("installed the man page"), "{said}");
    assert_eq!(
        fs::read(&page).expect("the installed man page"),
        fs::read(PAGE).unwrap()
    );
    assert_eq!(
        fs::metadata(&page).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert!(fs::read_to_string(&orig).unwrap().contains("base 14.3"));
    let installed = fs::metadata(&dest).unwrap();
    assert_eq!(installed.permissions().mode() & 0o777, 0o555);
    assert!(
        installed.len() < fs::metadata(HELPER).unwrap().len(),
        "the installed binary is stripped: {} bytes, the build {}",
        installed.len(),
        fs::metadata(HELPER).unwrap().len()
    );

    // Installing again must not put our binary in .orig.
    ok(&install(&dest, &[]));
    assert!(fs::read_to_string(&orig).unwrap().contains("base 14.3"));

    // A base-system update replaces ours: the next install keeps the new base file.
    write_base_helper(&dest, "base 14.4");
    ok(&install(&dest, &[]));
    assert!(is_ours(&dest));
    assert!(fs::read_to_string(&orig).unwrap().contains("base 14.4"));

    let said = ok(&install(&dest, &["--uninstall"]));
    assert!(said.contains("restored"), "{said}");
    assert!(fs::read_to_string(&dest).unwrap().contains("base 14.4"));
    assert!(!orig.exists());
    assert!(
        !page.exists(),
        "--uninstall must remove the man page: {said}"
    );

    // Nothing left to restore: a clear error, the file left alone.
    let out = install(&dest, &["--uninstall"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(".orig to restore"));
    assert!(fs::read_to_string(&dest).unwrap().contains("base 14.4"));
    fs::remove_dir_all(&dir).unwrap();
}

/// `--dest` and `--man-dir` relative to where the script is run, not to the repository it
/// changes into to find the build.
#[test]
fn relative_paths_are_the_callers() {
    let dir = temp_dir("relative");
    write_base_helper(&dir.join("helper"), "base");
    let target_dir = Path::new(HELPER).parent().unwrap().parent().unwrap();
    let out = Command::new("sh")
        .args([
            SCRIPT,
            "--no-build",
            "--dest",
            "helper",
            "--man-dir=man/man8",
        ])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap();
    let said = ok(&out);
    assert!(is_ours(&dir.join("helper")), "{said}");
    assert!(dir.join("man/man8/bhyve-slirp-helper.8").exists(), "{said}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_option_is_refused_by_name() {
    let out = Command::new("sh")
        .args([SCRIPT, "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'--bogus'") && err.contains("--help"), "{err}");
}
