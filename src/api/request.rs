//! The control socket's requests: slirp4netns's shapes (`{"execute":…,"arguments":{…}}`) read
//! into typed [`Request`]s, and the error text each mistake gets.
//!
//! Owns: turning one request's bytes into a request or a [`RequestError`] whose text names the
//! field and what it must be. Never touches libslirp or a socket: the fuzz target
//! (`fuzz/fuzz_targets/api_request.rs`) runs it on arbitrary bytes.
//!
//! Compatible with slirp4netns (`api.c`): the same command names and argument names, a missing
//! `host_addr` means 0.0.0.0 and a missing `guest_addr` the guest's DHCP address, unknown
//! members are ignored, errors start with `bad request: `. Stricter where slirp4netns guesses:
//! a port must be an integer 0..=65535 (parson reads 80.7 as 80), and a wrong type is named.

use crate::config::{HostFwdRule, Proto};
use serde_json::{Map, Value};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Install a forward; `host_port` 0 binds a free port.
    AddHostFwd(HostFwdRule),
    /// Every forward, the config's included.
    ListHostFwd,
    /// Remove the forward with this id.
    RemoveHostFwd { id: u64 },
    /// Every counter of the stats line.
    Stats,
    /// libslirp's `slirp_connection_info`, parsed.
    Connections,
    /// Ours and libslirp's version.
    Version,
}

/// The command names, as a client writes them.
pub const COMMANDS: &[&str] = &[
    "add_hostfwd",
    "list_hostfwd",
    "remove_hostfwd",
    "stats",
    "connections",
    "version",
];

/// Why a request is refused: the reply's `desc`, without the `bad request: ` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError(pub String);

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad request: {}", self.0)
    }
}

impl std::error::Error for RequestError {}

fn bad(text: impl Into<String>) -> RequestError {
    RequestError(text.into())
}

/// JSON's name for a value's type, for error text.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parse one request (a line without its newline, or a whole slirp4netns-style message).
pub fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("cannot parse JSON: {e}")))?;
    let Value::Object(request) = value else {
        return Err(bad(format!(
            "a request is a JSON object, not {}",
            type_name(&value)
        )));
    };
    let execute = match request.get("execute") {
        None => return Err(bad("no execute found")),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(bad(format!(
                "execute must be a string, not {}",
                type_name(other)
            )))
        }
    };
    let empty = Map::new();
    let arguments = match request.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(a)) => a,
        Some(other) => {
            return Err(bad(format!(
                "{execute}: arguments must be an object, not {}",
                type_name(other)
            )))
        }
    };
    match execute {
        "add_hostfwd" => add_hostfwd(arguments).map(Request::AddHostFwd),
        "list_hostfwd" => Ok(Request::ListHostFwd),
        "remove_hostfwd" => {
            let id = integer(arguments, "remove_hostfwd", "id", u64::MAX)?
                .ok_or_else(|| bad("remove_hostfwd: bad arguments.id: missing"))?;
            Ok(Request::RemoveHostFwd { id })
        }
        "stats" => Ok(Request::Stats),
        "connections" => Ok(Request::Connections),
        "version" => Ok(Request::Version),
        other => Err(bad(format!(
            "unknown execute '{}' (known: {})",
            other.escape_debug(),
            COMMANDS.join(", ")
        ))),
    }
}

/// `arguments.NAME` as an integer 0..=max; `None` when absent (or null). Integral floats
/// (`80.0`) are accepted: slirp4netns's parser reads every number as a double.
fn integer(
    arguments: &Map<String, Value>,
    command: &str,
    name: &str,
    max: u64,
) -> Result<Option<u64>, RequestError> {
    let wrong = |what: String| bad(format!("{command}: bad arguments.{name}: {what}"));
    match arguments.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let value = n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= max as f64)
                    .map(|f| f as u64)
            });
            match value {
                Some(v) if v <= max => Ok(Some(v)),
                _ => Err(wrong(format!("{n} is not an integer from 0 to {max}"))),
            }
        }
        Some(other) => Err(wrong(format!(
            "must be an integer from 0 to {max}, not {}",
            type_name(other)
        ))),
    }
}

/// `arguments.NAME` as an address, IPv4 or IPv6; `None` when absent, null or empty (as
/// slirp4netns).
fn address(arguments: &Map<String, Value>, name: &str) -> Result<Option<IpAddr>, RequestError> {
    let wrong = |what: String| bad(format!("add_hostfwd: bad arguments.{name}: {what}"));
    match arguments.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse::<IpAddr>().map(Some).map_err(|_| {
            wrong(format!(
                "'{}' is not an IPv4 or IPv6 address",
                s.escape_debug()
            ))
        }),
        Some(other) => Err(wrong(format!("must be a string, not {}", type_name(other)))),
    }
}

fn add_hostfwd(arguments: &Map<String, Value>) -> Result<HostFwdRule, RequestError> {
    let proto = match arguments.get("proto") {
        Some(Value::String(p)) if p == "tcp" => Proto::Tcp,
        Some(Value::String(p)) if p == "udp" => Proto::Udp,
        None | Some(Value::Null) => {
            return Err(bad(
                "add_hostfwd: bad arguments.proto: missing (tcp or udp)",
            ))
        }
        Some(Value::String(p)) => {
            return Err(bad(format!(
                "add_hostfwd: bad arguments.proto: '{}' is not tcp or udp",
                p.escape_debug()
            )))
        }
        Some(other) => {
            return Err(bad(format!(
                "add_hostfwd: bad arguments.proto: must be \"tcp\" or \"udp\", not {}",
                type_name(other)
            )))
        }
    };
    let host = address(arguments, "host_addr")?;
    let guest = address(arguments, "guest_addr")?;
    // An absent address is the unspecified one of the other's family: every host interface,
    // and the guest's DHCP address (IPv4) or the address it uses (IPv6), as in `hostfwd`.
    let unspecified = match host.or(guest) {
        Some(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let (host_addr, guest_addr) = (host.unwrap_or(unspecified), guest.unwrap_or(unspecified));
    let port = |name| -> Result<u16, RequestError> {
        integer(arguments, "add_hostfwd", name, u64::from(u16::MAX))?
            .map(|p| p as u16)
            .ok_or_else(|| bad(format!("add_hostfwd: bad arguments.{name}: missing")))
    };
    let host_port = port("host_port")?;
    let guest_port = port("guest_port")?;
    if guest_port == 0 {
        return Err(bad(
            "add_hostfwd: bad arguments.guest_port: 0 is no port a guest service listens on",
        ));
    }
    let rule = HostFwdRule {
        proto,
        host_addr,
        host_port,
        guest_addr,
        guest_port,
    };
    // The same rules as the hostfwd key's, in the same words.
    rule.check()
        .map_err(|problem| bad(format!("add_hostfwd: bad arguments: {problem}")))?;
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn slirp4netns_shapes_parse_unchanged() {
        let add = r#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 8080, "guest_addr": "10.0.2.15", "guest_port": 80}}"#;
        assert_eq!(
            parse(add.as_bytes()),
            Ok(Request::AddHostFwd(HostFwdRule {
                proto: Proto::Tcp,
                host_addr: Ipv4Addr::LOCALHOST.into(),
                host_port: 8080,
                guest_addr: Ipv4Addr::new(10, 0, 2, 15).into(),
                guest_port: 80,
            }))
        );
        // Defaults as slirp4netns: no host_addr is 0.0.0.0; no guest_addr the DHCP address
        // (0.0.0.0 here, which the server replaces with `dhcpstart`).
        let bare = r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_port":53.0,"guest_port":53}}"#;
        assert_eq!(
            parse(bare.as_bytes()),
            Ok(Request::AddHostFwd(HostFwdRule {
                proto: Proto::Udp,
                host_addr: Ipv4Addr::UNSPECIFIED.into(),
                host_port: 53,
                guest_addr: Ipv4Addr::UNSPECIFIED.into(),
                guest_port: 53,
            }))
        );
        assert_eq!(
            parse(br#"{"execute": "list_hostfwd"}"#),
            Ok(Request::ListHostFwd)
        );
        assert_eq!(
            parse(br#"{"execute": "remove_hostfwd", "arguments": {"id": 42}}"#),
            Ok(Request::RemoveHostFwd { id: 42 })
        );
        for (name, want) in [
            ("stats", Request::Stats),
            ("connections", Request::Connections),
            ("version", Request::Version),
        ] {
            let line = format!(r#"{{"execute":"{name}","extra":1}}"#);
            assert_eq!(parse(line.as_bytes()), Ok(want));
        }
    }

    #[test]
    fn every_mistake_gets_its_own_text() {
        let cases = [
            ("", "bad request: cannot parse JSON: EOF while parsing a value at line 1 column 0"),
            ("[1]", "bad request: a request is a JSON object, not an array"),
            ("{}", "bad request: no execute found"),
            (r#"{"execute":7}"#, "bad request: execute must be a string, not a number"),
            (
                r#"{"execute":"reboot"}"#,
                "bad request: unknown execute 'reboot' (known: add_hostfwd, list_hostfwd, remove_hostfwd, stats, connections, version)",
            ),
            (
                r#"{"execute":"stats","arguments":[]}"#,
                "bad request: stats: arguments must be an object, not an array",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"host_port":1,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.proto: missing (tcp or udp)",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"sctp","host_port":1,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.proto: 'sctp' is not tcp or udp",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":"80","guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.host_port: must be an integer from 0 to 65535, not a string",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":65536,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.host_port: 65536 is not an integer from 0 to 65535",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":-1,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.host_port: -1 is not an integer from 0 to 65535",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":8.5,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.host_port: 8.5 is not an integer from 0 to 65535",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.guest_port: missing",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":1,"guest_port":0}}"#,
                "bad request: add_hostfwd: bad arguments.guest_port: 0 is no port a guest service listens on",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"localhost","host_port":1,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.host_addr: 'localhost' is not an IPv4 or IPv6 address",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":1,"guest_addr":"10.0.2.15","guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments: host and guest addresses are of different families (write both as IPv4 or both in brackets)",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":1,"guest_addr":1,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.guest_addr: must be a string, not a number",
            ),
            (
                r#"{"execute":"remove_hostfwd"}"#,
                "bad request: remove_hostfwd: bad arguments.id: missing",
            ),
            (
                r#"{"execute":"remove_hostfwd","arguments":{"id":true}}"#,
                "bad request: remove_hostfwd: bad arguments.id: must be an integer from 0 to 18446744073709551615, not a boolean",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(err(line), want, "{line}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(err(&deep).starts_with("bad request: cannot parse JSON: recursion limit"));
    }
}
