//! Configuring the guest side of the namespace: links, addresses, DHCP, routes.
//!
//! Owns: the udhcpc script and the lease it reports; the tap's IPv6 settings and the SLAAC
//! address. Must never: add a default route unless asked (the namespace reaches only
//! 10.0.2.0/24, and with IPv6 the on-link prefix, otherwise, so open mode cannot leak), or
//! write a resolver configuration (no DNS through 10.0.2.3 or fec0::3).

use super::netns::Netns;
use super::os;
use super::supervise::{Supervisor, Waited};
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The address the helper's DHCP server hands out first, used statically by default.
pub const GUEST_ADDR: &str = "10.0.2.15";
/// The helper's own address: gateway, and the host's 127.0.0.1 in open mode.
pub const HOST_ADDR: &str = "10.0.2.2";
/// How long DHCP may take in all (udhcpc itself retries 5 times, 1 s apart).
const DHCP_LIMIT: Duration = Duration::from_secs(15);
/// libslirp's IPv6 router address (its default `host6`), as the guest reaches it.
pub const HOST_ADDR6: &str = "fec0::2";
/// How long SLAAC may take: duplicate address detection of the link-local address (1 s),
/// the router solicitation and libslirp's answer, then DAD of the new address (1 s). A lost
/// first solicitation costs another 4 s (the kernel's rtr_solicit_interval).
const SLAAC_LIMIT: Duration = Duration::from_secs(12);

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
  ip -4 addr flush dev "$interface"
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

/// IPv6 on the tap, configured by router advertisements (SLAAC), before the link comes up so
/// that its first router solicitation already counts. `accept_ra=2` takes RAs even if the
/// namespace forwards; the default router an RA offers is taken only with `default_route`
/// (otherwise the guest reaches only the on-link prefix, as with IPv4).
pub fn enable_ipv6(ns: &Netns, tap: &str, default_route: bool) -> io::Result<()> {
    let settings = [
        ("disable_ipv6", "0"),
        ("accept_ra", "2"),
        ("autoconf", "1"),
        ("accept_ra_defrtr", if default_route { "1" } else { "0" }),
    ];
    set_sysctls(ns, tap, &settings)
}

/// Write `net.ipv6.conf.TAP.KEY` for each pair from a thread inside the namespace (a
/// thread's /proc/sys/net is its own namespace's); no `sysctl` program needed.
fn set_sysctls(ns: &Netns, tap: &str, settings: &[(&'static str, &'static str)]) -> io::Result<()> {
    let ns_file = ns
        .open()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", ns.path().display())))?;
    let dir = PathBuf::from("/proc/sys/net/ipv6/conf").join(tap);
    let settings = settings.to_vec();
    let nsname = ns.name().to_string();
    std::thread::Builder::new()
        .name("netns-sysctl".into())
        .spawn(move || {
            os::enter_netns(&ns_file)
                .map_err(|e| io::Error::new(e.kind(), format!("setns({nsname}): {e}")))?;
            for (key, value) in settings {
                let path = dir.join(key);
                std::fs::write(&path, value).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("writing {value} to {}: {e}", path.display()),
                    )
                })?;
            }
            Ok(())
        })?
        .join()
        .map_err(|_| io::Error::other("the sysctl thread panicked"))?
}

/// Wait (bounded) until the tap has an IPv6 address from SLAAC that passed duplicate
/// address detection, and return it.
pub fn wait_slaac(ns: &Netns, tap: &str, sup: &Supervisor) -> Result<String, SlaacError> {
    let deadline = Instant::now() + SLAAC_LIMIT;
    loop {
        let out = ns
            .ip_output(&["-6", "-o", "addr", "show", "dev", tap])
            .map_err(|e| SlaacError::Failed(e.to_string()))?;
        if let Some(addr) = slaac_address(&out) {
            return Ok(addr);
        }
        if let Some(sig) = sup.pending() {
            return Err(SlaacError::Signal(sig));
        }
        if Instant::now() >= deadline {
            return Err(SlaacError::Failed(format!(
                "no IPv6 address from a router advertisement within {SLAAC_LIMIT:?} ({})",
                out.trim().replace('\n', "; ")
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first usable autoconfigured address in `ip -6 -o addr` output: not link-local, not
/// still tentative, not failed DAD.
pub fn slaac_address(out: &str) -> Option<String> {
    out.lines()
        .filter(|l| l.contains(" dynamic") && !l.contains("scope link"))
        .filter(|l| !l.contains("tentative") && !l.contains("dadfailed"))
        .find_map(|l| {
            let rest = &l[l.find("inet6 ")? + 6..];
            let cidr = rest.split_whitespace().next()?;
            Some(cidr.split('/').next()?.to_string())
        })
}

/// SLAAC did not produce an address.
#[derive(Debug)]
pub enum SlaacError {
    Failed(String),
    Signal(nix::sys::signal::Signal),
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
    fn slaac_address_skips_link_local_and_tentative() {
        let out = "2: tap0    inet6 fec0::1:2ff:fe03:405/64 scope site tentative dynamic mngtmpaddr \\       valid_lft 86400sec preferred_lft 14400sec
2: tap0    inet6 fe80::1:2ff:fe03:405/64 scope link \\       valid_lft forever preferred_lft forever
";
        assert_eq!(slaac_address(out), None);
        let done = out.replace("tentative ", "");
        assert_eq!(slaac_address(&done), Some("fec0::1:2ff:fe03:405".into()));
        assert_eq!(slaac_address(""), None);
    }

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
