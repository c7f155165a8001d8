//! The guest's network namespace: a named one (`/run/netns/NAME`) so that `ip -n` and
//! `ip netns exec` can reach it.
//!
//! Owns: creating `slirpfe-<pid>` and deleting it when dropped (never a namespace it did not
//! create), and running `ip` against it. Must never: change the namespace of the calling thread.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const NETNS_DIR: &str = "/run/netns";

pub struct Netns {
    name: String,
    /// Whether this process created it (and so removes it).
    owned: bool,
}

/// Run `ip ARGS`, turning a failure into an error that quotes the command and ip's message.
pub fn run_ip<I, S>(args: I) -> io::Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("ip");
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.stderr(Stdio::piped()).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("running {shown}: {e} (is iproute2 installed?)"),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Netns {
    /// Create a new named namespace, removed again when the value is dropped.
    pub fn create(name: &str) -> io::Result<Netns> {
        run_ip(["netns", "add", name])?;
        Ok(Netns {
            name: name.to_string(),
            owned: true,
        })
    }

    /// Use an existing named namespace; it is left in place at exit.
    pub fn existing(name: &str) -> io::Result<Netns> {
        let ns = Netns {
            name: name.to_string(),
            owned: false,
        };
        ns.open().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("network namespace {name:?} ({}): {e}", ns.path().display()),
            )
        })?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// The namespace file, for `setns`.
    pub fn open(&self) -> io::Result<File> {
        File::open(self.path())
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        run_ip(["-n", self.name.as_str()].iter().chain(args))
    }

    /// `ip -n NAME ARGS`, returning what it printed.
    pub fn ip_output(&self, args: &[&str]) -> io::Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", self.name.as_str()]).args(args);
        let shown = format!("{cmd:?}").replace('"', "");
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("running {shown}: {e}")))?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{shown} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which also
    /// mounts the namespace's /sys and /etc/netns/NAME files).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name.as_str()]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = run_ip(["netns", "delete", self.name.as_str()]) {
                eprintln!("slirp-frontend: removing namespace {}: {e}", self.name);
            }
        }
    }
}
