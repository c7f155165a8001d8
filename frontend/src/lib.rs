//! `slirp-frontend`: bhyve's role on Linux, for testing and measuring the helper, and
//! `slirp-loadgen` (module `loadgen`), the compiled load of the end-to-end benchmarks. Test
//! and benchmark tools: their own crate of the workspace, never installed with the helper.
//!
//! The guest is the Linux kernel inside a network namespace, behind a tap device; the helper
//! is spawned exactly as bhyve spawns it (socketpair, `-S <fd>`, config nvlist), and a pump
//! moves frames between the tap and the helper's socket.
//!
//! Modules, one owner each: `options` (argv), `os` (raw syscalls), `netns` (the namespace),
//! `tap` (the device), `helper` (the child and its config), `pump` (the data path, over the
//! helper library's `FrameBatch`), `supervise` (signals and waiting), `guest` (addresses,
//! DHCP), `session` (lifetime and teardown), `job` (the default job), `bench` (the pump
//! alone), `loadgen` (`slirp-loadgen`).
#![cfg(target_os = "linux")]

pub mod bench;
pub mod guest;
pub mod helper;
pub mod job;
pub mod netns;
pub mod options;
mod os;
pub mod pump;
pub mod session;
pub mod supervise;
mod tap;

pub mod loadgen;

use options::{Options, Parsed};
use session::{Backend, Failure, Session, Teardown};
use std::ffi::OsString;
use std::process::ExitCode;
use supervise::Supervisor;

fn err(msg: &str) {
    eprintln!("slirp-frontend: {msg}");
}

/// The whole program: parse, check privileges, run, tear down, report.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let opts = match options::parse(args) {
        Ok(Parsed::Run(opts)) => *opts,
        Ok(Parsed::Help) => {
            print!("{}", options::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            err(&format!("{e} (see slirp-frontend --help)"));
            return ExitCode::from(2);
        }
    };
    if !os::is_root() {
        err(
            "must run as root: it creates a network namespace and a tap device \
             (CAP_SYS_ADMIN and CAP_NET_ADMIN, /dev/net/tun, /run/netns). Try: sudo slirp-frontend ...",
        );
        return ExitCode::from(1);
    }
    // Before any thread exists: every thread inherits the blocked signal mask.
    let sup = match Supervisor::install() {
        Ok(sup) => sup,
        Err(e) => {
            err(&format!("signal set-up: {e}"));
            return ExitCode::from(1);
        }
    };
    let code = match opts.pump_bench {
        Some(secs) => bench::run(&opts, sup, secs),
        None if opts.command.is_empty() => job::run(opts, sup),
        None => run_command(&opts, sup),
    };
    ExitCode::from(code)
}

fn run_command(opts: &Options, sup: Supervisor) -> u8 {
    let session = match Session::start(opts, sup, Backend::Helper) {
        Ok(s) => s,
        Err(f) => return report(Err(f), None),
    };
    let result = session.run_user_command(&opts.command);
    let teardown = session.finish();
    report(result, Some(&teardown))
}

/// Print what went wrong (and what the helper did) and turn it into an exit code.
pub fn report(result: Result<u8, Failure>, teardown: Option<&Teardown>) -> u8 {
    let helper_died = teardown.is_some_and(|t| t.helper_hung_up());
    if let Some(t) = teardown {
        if let Some((pid, status)) = t.helper {
            if helper_died || !status.success() {
                err(&format!(
                    "the helper (pid {pid}) {} while the guest was running",
                    helper::describe(status)
                ));
            }
        }
        if let Some(p) = &t.pump {
            if let pump::PumpExit::Failed(e) = &p.exit {
                err(&format!("the pump failed: {e}"));
            }
        }
    }
    match result {
        Ok(code) if helper_died => code.max(1),
        Ok(code) => code,
        Err(Failure::Setup(msg)) => {
            err(&msg);
            1
        }
        Err(Failure::HelperGone) => {
            if teardown.is_none() {
                err("the helper went away");
            }
            1
        }
        Err(Failure::Signal(sig)) => {
            err(&format!("stopped by {}", sig.as_str()));
            128u8.saturating_add(sig as i32 as u8)
        }
    }
}
