//! The tools' command lines as a user meets them: help on request, a bad option named with
//! exit status 2. No root needed: nothing here gets past argument parsing.
//!
//! (Also what makes `cargo test` at the root build the tools' binaries, which the helper's
//! `e2e_*` tests run from the same target directory.)
#![cfg(target_os = "linux")]

use std::process::{Command, Output};

const FRONTEND: &str = env!("CARGO_BIN_EXE_slirp-frontend");
const LOADGEN: &str = env!("CARGO_BIN_EXE_slirp-loadgen");

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("spawn")
}

#[test]
fn frontend_help_goes_to_stdout_with_status_0() {
    let out = run(FRONTEND, &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("usage: slirp-frontend"), "{text}");
}

#[test]
fn frontend_names_an_unknown_option_and_exits_2() {
    let out = run(FRONTEND, &["--no-such-option"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-option"), "{err}");
}

#[test]
fn loadgen_help_and_missing_command() {
    let help = run(LOADGEN, &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: slirp-loadgen"));
    let none = run(LOADGEN, &[]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no command"));
}
