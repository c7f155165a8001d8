//! Configuring the guest side of the namespace: links, addresses, DHCP, routes.
//!
//! Owns: the udhcpc script and the lease it reports. Must never: add a default route unless
//! asked (the namespace reaches only 10.0.2.0/24 otherwise, so open mode cannot leak), or
//! write a resolver configuration (no DNS through 10.0.2.3).

use super::netns::Netns;
use super::supervise::{Supervisor, Waited};
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The address the helper's DHCP server hands out first, used statically by default.
pub const GUEST_ADDR: &str = "10.0.2.15";
/// The helper's own address: gateway, and the host's 127.0.0.1 in open mode.
pub const HOST_ADDR: &str = "10.0.2.2";
/// How long DHCP may take in all (udhcpc itself retries 5 times, 1 s apart).
const DHCP_LIMIT: Duration = Duration::from_secs(15);

/// What udhcpc was given, as its script saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    pub ip: String,
    /// Prefix length.
    pub mask: String,
    /// Offered routers, space-separated; empty when none (restricted mode).
    pub router: String,
    /// Offered DNS servers, space-separated; empty when none (restricted mode).
    pub dns: String,
    /// DHCP option 15 (the helper's `domainname`); empty when none.
    pub domain: String,
    /// DHCP option 119 (the helper's `dnssearch`), space-separated; empty when none.
    pub search: String,
}

impl std::fmt::Display for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let none = |s: &str| {
            if s.is_empty() {
                "(none)".to_string()
            } else {
                s.to_string()
            }
        };
        write!(
            f,
            "ip={}/{} router={} dns={}",
            self.ip,
            self.mask,
            none(&self.router),
            none(&self.dns)
        )?;
        // Only when offered: the line stays as it was for the default network.
        if !self.domain.is_empty() {
            write!(f, " domain={}", self.domain)?;
        }
        if !self.search.is_empty() {
            write!(f, " search={}", self.search)?;
        }
        Ok(())
    }
}

/// Applies a lease without touching DNS; the default route only with SLIRPFE_DEFAULT_ROUTE.
/// Prints one `lease key=value...` line for the frontend (and tests) to read.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# Written by slirp-frontend. Never writes resolv.conf; a default route only when asked.
case "$1" in
deconfig)
  ip addr flush dev "$interface"
  ;;
bound|renew)
  ip addr replace "$ip/${mask:-24}" dev "$interface" || exit 1
  if [ -n "$SLIRPFE_DEFAULT_ROUTE" ] && [ -n "$router" ]; then
    ip route replace default via "${router%% *}" dev "$interface" || exit 1
  fi
  echo "lease ip=$ip mask=${mask:-24} router=${router:-} dns=${dns:-} domain=${domain:-} search=${search:-}"
  ;;
esac
exit 0
"#;

/// `lo` up; the tap at `mtu` and up.
pub fn links_up(ns: &Netns, tap: &str, mtu: u32) -> io::Result<()> {
    ns.ip(&["link", "set", "dev", "lo", "up"])?;
    ns.ip(&["link", "set", "dev", tap, "mtu", &mtu.to_string(), "up"])
}

/// 10.0.2.15/24 on the tap.
pub fn static_address(ns: &Netns, tap: &str) -> io::Result<()> {
    ns.ip(&["addr", "add", &format!("{GUEST_ADDR}/24"), "dev", tap])
}

/// `default via 10.0.2.2` (only when the user asks).
pub fn default_route(ns: &Netns, tap: &str) -> io::Result<()> {
    ns.ip(&["route", "replace", "default", "via", HOST_ADDR, "dev", tap])
}

/// Write the udhcpc script into `dir` and return its path.
pub fn write_script(dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("udhcpc.sh");
    std::fs::write(&path, UDHCPC_SCRIPT)
        .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// Parse the script's `lease ...` line.
pub fn parse_lease(out: &str) -> Option<Lease> {
    let line = out.lines().find_map(|l| l.strip_prefix("lease "))?;
    let mut lease = Lease::default();
    // Values may hold spaces (several routers or servers): split on the known keys.
    let keys = ["ip=", "mask=", "router=", "dns=", "domain=", "search="];
    let mut rest = line;
    for (i, key) in keys.iter().enumerate() {
        rest = rest.strip_prefix(key)?;
        let end = match keys.get(i + 1) {
            Some(next) => rest.find(&format!(" {next}"))?,
            None => rest.len(),
        };
        let value = rest[..end].trim().to_string();
        match i {
            0 => lease.ip = value,
            1 => lease.mask = value,
            2 => lease.router = value,
            3 => lease.dns = value,
            4 => lease.domain = value,
            _ => lease.search = value,
        }
        rest = rest[end..].trim_start();
    }
    Some(lease)
}

/// Run busybox udhcpc on the tap (one lease, then quit; fail when none) and return the lease.
pub fn dhcp(
    ns: &Netns,
    tap: &str,
    script: &Path,
    add_default_route: bool,
    sup: &Supervisor,
    pump_ended: BorrowedFd<'_>,
) -> Result<Lease, DhcpError> {
    let mut cmd = ns.command("busybox");
    cmd.args([
        "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1", "-A", "1", "-i", tap, "-s",
    ])
    .arg(script)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if add_default_route {
        cmd.env("SLIRPFE_DEFAULT_ROUTE", "1");
    } else {
        cmd.env_remove("SLIRPFE_DEFAULT_ROUTE");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| DhcpError::Failed(format!("starting busybox udhcpc: {e}")))?;
    let waited = sup
        .wait(&mut child, Some(pump_ended), Some(DHCP_LIMIT))
        .map_err(|e| DhcpError::Failed(format!("waiting for udhcpc: {e}")))?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    match waited {
        Waited::Exited(status) if status.success() => parse_lease(&out)
            .ok_or_else(|| DhcpError::Failed(format!("udhcpc reported no lease: {}", out.trim()))),
        Waited::Exited(status) => Err(DhcpError::Failed(format!(
            "udhcpc got no lease ({status}): {}",
            err.trim().replace('\n', "; ")
        ))),
        Waited::TimedOut => Err(DhcpError::Failed(format!(
            "udhcpc took longer than {DHCP_LIMIT:?}"
        ))),
        other => Err(DhcpError::Interrupted(other)),
    }
}

/// DHCP did not produce a lease.
#[derive(Debug)]
pub enum DhcpError {
    Failed(String),
    /// A signal or the helper's death ended the wait.
    Interrupted(Waited),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lines_parse_with_and_without_router() {
        let open = parse_lease(
            "x\nlease ip=10.0.2.15 mask=24 router=10.0.2.2 dns=10.0.2.3 domain= search=\n",
        )
        .unwrap();
        assert_eq!(
            open,
            Lease {
                ip: "10.0.2.15".into(),
                mask: "24".into(),
                router: "10.0.2.2".into(),
                dns: "10.0.2.3".into(),
                domain: String::new(),
                search: String::new(),
            }
        );
        assert_eq!(
            open.to_string(),
            "ip=10.0.2.15/24 router=10.0.2.2 dns=10.0.2.3"
        );
        let restricted =
            parse_lease("lease ip=10.0.2.15 mask=24 router= dns= domain= search=").unwrap();
        assert_eq!(restricted.router, "");
        assert_eq!(restricted.dns, "");
        let many = parse_lease(
            "lease ip=1.2.3.4 mask=8 router=a b dns=c d domain=corp.example search=a.example b.example",
        )
        .unwrap();
        assert_eq!(many.router, "a b");
        assert_eq!(many.dns, "c d");
        assert_eq!(many.domain, "corp.example");
        assert_eq!(many.search, "a.example b.example");
        assert_eq!(
            many.to_string(),
            "ip=1.2.3.4/8 router=a b dns=c d domain=corp.example search=a.example b.example"
        );
    }
}
