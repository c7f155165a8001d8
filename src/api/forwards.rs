//! The forward table behind `add_hostfwd`, `list_hostfwd` and `remove_hostfwd`: ids, the
//! rules with the ports they are bound to, and the replies.
//!
//! Owns: which forwards exist and their ids (the config's are 1..=N, each added one takes the
//! next, never reused) and the refusals that need no libslirp call (a duplicate, the limit,
//! a sandbox that forbids binding). Installing and removing are the caller's (libslirp's),
//! handed in as closures, so the table changes only when they succeeded.

use crate::config::{HostFwdRule, Proto};
use serde_json::{json, Value};
use std::io;

/// Forwards at once (the config's included): each holds a host socket.
pub const MAX_FORWARDS: usize = 256;

/// One forward: its id and the rule, with the port it is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub id: u64,
    pub rule: HostFwdRule,
}

pub(crate) fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

pub struct ForwardTable {
    entries: Vec<Forward>,
    next_id: u64,
    /// Why adding cannot work in this process (FreeBSD's Capsicum), if it cannot.
    add_refused: Option<&'static str>,
}

impl ForwardTable {
    /// The config's rules as installed (ids 1..=N).
    pub fn new(installed: &[HostFwdRule], add_refused: Option<&'static str>) -> ForwardTable {
        let entries: Vec<Forward> = installed
            .iter()
            .zip(1..)
            .map(|(rule, id)| Forward { id, rule: *rule })
            .collect();
        ForwardTable {
            next_id: entries.len() as u64 + 1,
            entries,
            add_refused,
        }
    }

    pub fn entries(&self) -> &[Forward] {
        &self.entries
    }

    /// `add_hostfwd`: `install` binds it (libslirp) and says which port it got.
    pub fn add(
        &mut self,
        rule: HostFwdRule,
        install: impl FnOnce(&HostFwdRule) -> io::Result<u16>,
    ) -> Result<Value, String> {
        if let Some(why) = self.add_refused {
            return Err(format!("bad request: add_hostfwd: refused: {why}"));
        }
        // Checked here: with SO_REUSEADDR a second UDP bind to the same address would succeed.
        let same = |f: &&Forward| {
            f.rule.proto == rule.proto
                && f.rule.host_addr == rule.host_addr
                && f.rule.host_port == rule.host_port
        };
        if rule.host_port != 0 {
            if let Some(f) = self.entries.iter().find(same) {
                return Err(format!(
                    "bad request: add_hostfwd: {} {}:{} is already forwarded (id {})",
                    proto_name(rule.proto),
                    rule.host_addr,
                    rule.host_port,
                    f.id
                ));
            }
        }
        if self.entries.len() >= MAX_FORWARDS {
            return Err(format!(
                "bad request: add_hostfwd: {MAX_FORWARDS} forwards already (the limit); remove one \
                 first"
            ));
        }
        let port = install(&rule).map_err(|e| {
            format!(
                "bad request: add_hostfwd: slirp_add_hostfwd failed: {} {}:{}: {e}",
                proto_name(rule.proto),
                rule.host_addr,
                rule.host_port
            )
        })?;
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(Forward {
            id,
            rule: HostFwdRule {
                host_port: port,
                ..rule
            },
        });
        Ok(if rule.host_port == 0 {
            json!({"id": id, "host_port": port})
        } else {
            json!({ "id": id })
        })
    }

    /// `list_hostfwd`'s `{"entries":[…]}`, in id order.
    pub fn list(&self) -> Value {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .map(|f| {
                json!({
                    "id": f.id,
                    "proto": proto_name(f.rule.proto),
                    "host_addr": f.rule.host_addr.to_string(),
                    "host_port": f.rule.host_port,
                    "guest_addr": f.rule.guest_addr.to_string(),
                    "guest_port": f.rule.guest_port,
                })
            })
            .collect();
        json!({ "entries": entries })
    }

    /// `remove_hostfwd`: `uninstall` closes its listener (libslirp).
    pub fn remove(
        &mut self,
        id: u64,
        uninstall: impl FnOnce(&HostFwdRule) -> io::Result<()>,
    ) -> Result<Value, String> {
        let Some(pos) = self.entries.iter().position(|f| f.id == id) else {
            return Err(format!(
                "bad request: remove_hostfwd: bad arguments.id: no forward has id {id}"
            ));
        };
        uninstall(&self.entries[pos].rule).map_err(|e| {
            format!("bad request: remove_hostfwd: slirp_remove_hostfwd failed: id {id}: {e}")
        })?;
        self.entries.remove(pos);
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn rule(port: u16) -> HostFwdRule {
        HostFwdRule {
            proto: Proto::Tcp,
            host_addr: Ipv4Addr::LOCALHOST.into(),
            host_port: port,
            guest_addr: Ipv4Addr::new(10, 0, 2, 15).into(),
            guest_port: 80,
        }
    }

    #[test]
    fn ids_follow_the_config_and_are_never_reused() {
        let mut t = ForwardTable::new(&[rule(1000), rule(1001)], None);
        assert_eq!(t.add(rule(1002), |_| Ok(1002)), Ok(json!({"id": 3})));
        assert_eq!(t.remove(3, |_| Ok(())), Ok(json!({})));
        assert_eq!(
            t.add(rule(0), |_| Ok(40123)),
            Ok(json!({"id": 4, "host_port": 40123}))
        );
        let ids: Vec<u64> = t.entries().iter().map(|f| f.id).collect();
        assert_eq!(ids, [1, 2, 4]);
        assert_eq!(t.entries()[2].rule.host_port, 40123);
    }

    #[test]
    fn refusals_leave_the_table_as_it_was() {
        let mut t = ForwardTable::new(&[rule(1000)], None);
        let before = t.list();
        let dup = t.add(rule(1000), |_| panic!("a duplicate reached libslirp"));
        assert_eq!(
            dup,
            Err("bad request: add_hostfwd: tcp 127.0.0.1:1000 is already forwarded (id 1)".into())
        );
        let failed = t.add(rule(1001), |_| {
            Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
        });
        assert!(failed.unwrap_err().starts_with(
            "bad request: add_hostfwd: slirp_add_hostfwd failed: tcp 127.0.0.1:1001: "
        ));
        assert!(t
            .remove(7, |_| panic!("an unknown id reached libslirp"))
            .is_err());
        assert!(t
            .remove(1, |_| Err(io::Error::other("gone")))
            .unwrap_err()
            .ends_with("id 1: gone"));
        assert_eq!(t.list(), before);
        // A second port-0 forward is no duplicate: each gets a port of its own.
        assert!(t.add(rule(0), |_| Ok(5000)).is_ok());
        assert!(t.add(rule(0), |_| Ok(5001)).is_ok());
    }

    #[test]
    fn the_limit_and_the_sandbox_refuse_before_libslirp() {
        let mut t = ForwardTable::new(&[], None);
        for port in 0..MAX_FORWARDS as u16 {
            t.add(rule(port + 1), |r| Ok(r.host_port)).unwrap();
        }
        let full = t.add(rule(60000), |_| panic!("past the limit"));
        assert!(full.unwrap_err().contains("256 forwards already"));
        let mut capsicum = ForwardTable::new(&[], Some("capability mode"));
        assert_eq!(
            capsicum.add(rule(1), |_| panic!("refused")),
            Err("bad request: add_hostfwd: refused: capability mode".into())
        );
    }
}
