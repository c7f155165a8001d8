//! One guest: namespace, tap, helper, pump, addressing; and their teardown in the right order.
//!
//! Owns: the lifetime of everything the frontend creates. Teardown: stop the pump (closing
//! the socket: the helper sees the hangup), wait for the helper (SIGKILL by pid after a grace
//! period), delete the namespace if it was created here, remove the work directory.
//! Must never: leave a helper or a created namespace behind on any exit path it controls.

use super::guest::{self, DhcpError, Lease, SlaacError};
use super::helper::{self, Helper, HelperConfig};
use super::netns::Netns;
use super::options::Options;
use super::pump::{Pump, PumpExit, PumpReport};
use super::supervise::{Supervisor, Waited};
use super::{os, tap};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// How long the helper gets to exit on its own after the hangup before SIGKILL.
const HELPER_GRACE: Duration = Duration::from_secs(3);
/// How long a helper whose socket hung up during set-up gets to become reapable.
const HELPER_SETTLE: Duration = Duration::from_secs(1);

/// Why the frontend could not finish its job.
#[derive(Debug)]
pub enum Failure {
    /// Something could not be set up or a step failed: the message says what.
    Setup(String),
    /// The helper went away while the guest was running.
    HelperGone,
    /// SIGINT/SIGTERM/SIGHUP.
    Signal(Signal),
}

impl Failure {
    /// What went wrong, in words (for a detail under `-v`).
    pub fn describe(&self) -> String {
        match self {
            Failure::Setup(msg) => msg.clone(),
            Failure::HelperGone => "the helper went away".into(),
            Failure::Signal(sig) => format!("stopped by {}", sig.as_str()),
        }
    }

    pub fn setup(context: &str, e: impl std::fmt::Display) -> Failure {
        Failure::Setup(format!("{context}: {e}"))
    }

    /// A wait that did not end with the child's own exit.
    pub fn from_wait(what: &str, waited: Waited) -> Failure {
        match waited {
            Waited::Signal(sig) => Failure::Signal(sig),
            Waited::PumpEnded => Failure::HelperGone,
            Waited::TimedOut => Failure::Setup(format!("{what} timed out")),
            Waited::Exited(status) => Failure::Setup(format!("{what}: {status}")),
        }
    }
}

/// Who is on the other end of the socket.
pub enum Backend {
    /// The helper binary, spawned as bhyve does.
    Helper,
    /// A socket end handed in by the caller (the pump benchmark's sink).
    Socket(OwnedFd),
}

pub struct Session {
    // Field order is drop order: pump (closes the socket), helper, then the namespace.
    pump: Option<Pump>,
    helper: Option<Helper>,
    pub netns: Netns,
    pub tap: String,
    pub sup: Supervisor,
    pub lease: Option<Lease>,
    /// The guest's IPv6 address from SLAAC (with `--ipv6`).
    pub slaac: Option<String>,
    workdir: Option<PathBuf>,
    verbose: bool,
}

/// What teardown found.
pub struct Teardown {
    pub pump: Option<PumpReport>,
    /// `None` when there was no helper (benchmark) or it could not be reaped.
    pub helper: Option<(u32, ExitStatus)>,
}

impl Session {
    /// Build the guest. `sup` must have been installed before any thread was started.
    pub fn start(opts: &Options, sup: Supervisor, backend: Backend) -> Result<Session, Failure> {
        let netns = match &opts.netns {
            Some(name) => Netns::existing(name),
            None => Netns::create(&format!("slirpfe-{}", std::process::id())),
        }
        .map_err(|e| Failure::setup("network namespace", e))?;
        let mut s = Session {
            pump: None,
            helper: None,
            netns,
            tap: opts.tap.clone(),
            sup,
            lease: None,
            slaac: None,
            workdir: None,
            verbose: opts.verbose,
        };
        if let Err(failure) = s.set_up(opts, backend) {
            return Err(s.blame_helper(failure));
        }
        Ok(s)
    }

    /// Everything after the namespace: tap, helper, pump, guest addresses.
    fn set_up(&mut self, opts: &Options, backend: Backend) -> Result<(), Failure> {
        let s = self;
        s.say(&format!(
            "namespace {} ({})",
            s.netns.name(),
            s.netns.path().display()
        ));
        let tap = tap::create_in(&s.netns, &opts.tap)
            .map_err(|e| Failure::setup(&format!("creating tap {}", opts.tap), e))?;
        if opts.ipv6 {
            guest::enable_ipv6(&s.netns, &opts.tap, opts.default_route)
                .map_err(|e| Failure::setup("IPv6 on the tap", e))?;
        }
        guest::links_up(&s.netns, &opts.tap, opts.mtu).map_err(|e| Failure::setup("links", e))?;

        let sock = match backend {
            Backend::Socket(sock) => sock,
            Backend::Helper => s.spawn_helper(opts)?,
        };
        if opts.sockbuf > 0 {
            use std::os::fd::AsFd;
            slirp_helper::sys::set_socket_buffers(sock.as_fd(), opts.sockbuf)
                .map_err(|e| Failure::setup("socket buffers", e))?;
        }
        s.pump = Some(
            Pump::start(tap, sock, opts.mtu).map_err(|e| Failure::setup("starting the pump", e))?,
        );

        if opts.dhcp {
            let lease = s.dhcp(opts.default_route)?;
            eprintln!("slirp-frontend: DHCP lease: {lease}");
            s.lease = Some(lease);
        } else {
            guest::static_address(&s.netns, &opts.tap).map_err(|e| Failure::setup("address", e))?;
            if opts.default_route {
                guest::default_route(&s.netns, &opts.tap)
                    .map_err(|e| Failure::setup("default route", e))?;
            }
        }
        if opts.ipv6 {
            let addr = guest::wait_slaac(&s.netns, &opts.tap, &s.sup).map_err(|e| match e {
                SlaacError::Failed(msg) => Failure::Setup(format!("SLAAC: {msg}")),
                SlaacError::Signal(sig) => Failure::Signal(sig),
            })?;
            eprintln!("slirp-frontend: SLAAC address: {addr}");
            s.slaac = Some(addr);
        }
        Ok(())
    }

    /// A set-up step that failed because the helper died (its socket hung up, the pump
    /// stopped, the tap went away) is reported as the helper's death, the real cause, after
    /// the helper's own message: one error, not a consequence such as `ip`'s "Cannot find
    /// device" (that detail only with `-v`). A signal stays a signal.
    fn blame_helper(&mut self, failure: Failure) -> Failure {
        if matches!(failure, Failure::Signal(_)) {
            return failure;
        }
        // The pump sees the hangup while the dying helper is still being torn down by the
        // kernel: give it a moment to become reapable. Not when the helper still serves.
        let settle = if self.pump_ended() {
            HELPER_SETTLE
        } else {
            Duration::ZERO
        };
        let verbose = self.verbose;
        let Some(helper) = self.helper.as_mut() else {
            return failure;
        };
        match helper.wait_exit(settle) {
            Ok(Some(status)) => {
                let mut msg = format!(
                    "the helper (pid {}) {} during set-up",
                    helper.pid(),
                    helper::describe(status)
                );
                if verbose {
                    msg.push_str(&format!(" (then: {})", failure.describe()));
                }
                Failure::Setup(msg)
            }
            _ => failure,
        }
    }

    /// Whether the pump thread has ended on its own (the helper hung up, or a pump failure).
    fn pump_ended(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let Some(pump) = self.pump.as_ref() else {
            return false;
        };
        let mut fds = [PollFd::new(pump.ended_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    fn say(&self, msg: &str) {
        if self.verbose {
            eprintln!("slirp-frontend: {msg}");
        }
    }

    fn spawn_helper(&mut self, opts: &Options) -> Result<OwnedFd, Failure> {
        let path = match &opts.helper {
            Some(p) => p.clone(),
            None => helper::default_path().map_err(|e| Failure::setup("helper", e))?,
        };
        let cfg = HelperConfig {
            mtu: opts.mtu,
            open: opts.open,
            hostfwd: opts.hostfwd.clone(),
            keys: opts.keys.clone(),
            vmname: opts
                .vmname
                .clone()
                .unwrap_or_else(|| format!("slirpfe-{}", std::process::id())),
        };
        let (helper, sock) = helper::spawn(&path, &opts.helper_args, &cfg, opts.verbose)
            .map_err(|e| Failure::setup("helper", e))?;
        // Always printed: tests and users need the pid to watch the helper.
        eprintln!(
            "slirp-frontend: helper pid {} ({}), mtu {}, {}{}",
            helper.pid(),
            path.display(),
            cfg.mtu,
            if cfg.open { "open" } else { "restricted" },
            cfg.hostfwd
                .as_deref()
                .map(|r| format!(", hostfwd {r}"))
                .unwrap_or_default()
        );
        self.helper = Some(helper);
        Ok(sock)
    }

    fn dhcp(&mut self, default_route: bool) -> Result<Lease, Failure> {
        let dir = std::env::temp_dir().join(format!("slirpfe-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::setup(&format!("creating {}", dir.display()), e))?;
        self.workdir = Some(dir.clone());
        let script = guest::write_script(&dir).map_err(|e| Failure::setup("udhcpc script", e))?;
        let pump = self.pump.as_ref().expect("the pump runs before DHCP");
        guest::dhcp(
            &self.netns,
            &self.tap,
            &script,
            default_route,
            &self.sup,
            pump.ended_fd(),
        )
        .map_err(|e| match e {
            DhcpError::Failed(msg) => Failure::Setup(format!("DHCP: {msg}")),
            DhcpError::Interrupted(w) => Failure::from_wait("DHCP", w),
        })
    }

    /// A command that runs inside the namespace and is SIGKILLed if the frontend dies.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut cmd = self.netns.command(program);
        os::kill_child_with_parent(&mut cmd);
        cmd
    }

    /// Run `program` inside the namespace, waiting at most `limit`, stopping it on a signal
    /// or when the helper dies.
    pub fn run(
        &self,
        cmd: &mut std::process::Command,
        what: &str,
        limit: Option<Duration>,
    ) -> Result<ExitStatus, Failure> {
        let mut child = cmd
            .spawn()
            .map_err(|e| Failure::setup(&format!("starting {what}"), e))?;
        self.wait(&mut child, what, limit)
    }

    /// Wait for a child started by `command`, as `run` does.
    pub fn wait(
        &self,
        child: &mut std::process::Child,
        what: &str,
        limit: Option<Duration>,
    ) -> Result<ExitStatus, Failure> {
        let ended = self.pump.as_ref().map(|p| p.ended_fd());
        match self.sup.wait(child, ended, limit) {
            Ok(Waited::Exited(status)) => Ok(status),
            Ok(other) => Err(Failure::from_wait(what, other)),
            Err(e) => Err(Failure::setup(&format!("waiting for {what}"), e)),
        }
    }

    /// The user's command: its exit status as ours (128 + signal when it was killed).
    pub fn run_user_command(&self, argv: &[OsString]) -> Result<u8, Failure> {
        let mut cmd = self.command(&argv[0]);
        cmd.args(&argv[1..]);
        let status = self.run(&mut cmd, &format!("{:?}", argv[0]), None)?;
        Ok(exit_code(status))
    }

    /// Tear everything down (see the module comment).
    pub fn finish(mut self) -> Teardown {
        let pump = self.pump.take().map(Pump::stop);
        let helper = self.helper.take().and_then(|h| {
            let pid = h.pid();
            h.finish(HELPER_GRACE).ok().map(|status| (pid, status))
        });
        if let Some(dir) = self.workdir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        Teardown { pump, helper }
        // `self.netns` is dropped here: deleted if this process created it.
    }
}

impl Teardown {
    /// Whether the pump ended because the helper went away.
    pub fn helper_hung_up(&self) -> bool {
        matches!(
            self.pump,
            Some(PumpReport {
                exit: PumpExit::Hangup,
                ..
            })
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(dir) = self.workdir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A child's status as an exit code: its own code, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        _ => 1,
    }
}
