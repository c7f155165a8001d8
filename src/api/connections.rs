//! libslirp's `slirp_connection_info` table, read into one object per socket.
//!
//! Owns: parsing the text libslirp prints (libslirp `misc.c`, the same since 4.0): a header
//! line, then per TCP, UDP and ICMP socket
//! `  TCP[STATE]  FD  SRC_ADDR SRC_PORT  DST_ADDR DST_PORT RECVQ SENDQ`, where the state of a
//! UDP or ICMP socket is `N sec` (seconds until it expires) and ICMP has `-` for ports. For a
//! forward's listener and the connections it accepted, the source is the host side. Never
//! calls libslirp: the caller hands it the text.

use serde_json::{json, Map, Value};
use std::fmt;

/// A line that is not in libslirp's format (a libslirp that prints something new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    /// 1-based line number in libslirp's text.
    pub line: usize,
    pub text: String,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slirp_connection_info line {}: unexpected format '{}'",
            self.line,
            self.text.escape_debug()
        )
    }
}

impl std::error::Error for TableError {}

/// Every socket of the table as a JSON object:
/// `{"proto":"tcp","state":"ESTABLISHED","fd":12,"src_addr":"10.0.2.15","src_port":40000,
/// "dst_addr":"10.0.2.2","dst_port":80,"recv_q":0,"send_q":0}`; UDP and ICMP sockets carry
/// `expires_in_s` instead of a TCP state (`state` is then `null`, or `HOST_FORWARD`), ICMP has
/// `null` ports.
pub fn parse(table: &str) -> Result<Vec<Value>, TableError> {
    let mut out = Vec::new();
    for (i, line) in table.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("Protocol[State]") {
            continue;
        }
        let bad = || TableError {
            line: i + 1,
            text: line.chars().take(200).collect(),
        };
        out.push(parse_row(trimmed).ok_or_else(bad)?);
    }
    Ok(out)
}

fn parse_row(row: &str) -> Option<Value> {
    let open = row.find('[')?;
    let close = row.find(']')?;
    if close < open {
        return None;
    }
    let proto = match &row[..open] {
        "TCP" => "tcp",
        "UDP" => "udp",
        "ICMP" => "icmp",
        _ => return None,
    };
    let state = &row[open + 1..close];
    let fields: Vec<&str> = row[close + 1..].split_whitespace().collect();
    let [fd, src_addr, src_port, dst_addr, dst_port, recv_q, send_q] = fields[..] else {
        return None;
    };
    let number = |s: &str| s.parse::<i64>().ok();
    let port = |s: &str| -> Option<Value> {
        if s == "-" {
            Some(Value::Null)
        } else {
            s.parse::<u16>().ok().map(Value::from)
        }
    };
    let mut obj = Map::new();
    obj.insert("proto".into(), json!(proto));
    match state.strip_suffix(" sec") {
        Some(secs) if proto != "tcp" => {
            obj.insert("state".into(), Value::Null);
            obj.insert("expires_in_s".into(), json!(number(secs)?));
        }
        _ if state.is_empty() || state.contains(char::is_whitespace) => return None,
        _ => {
            obj.insert("state".into(), json!(state));
        }
    }
    obj.insert("fd".into(), json!(number(fd)?));
    obj.insert("src_addr".into(), json!(src_addr));
    obj.insert("src_port".into(), port(src_port)?);
    obj.insert("dst_addr".into(), json!(dst_addr));
    obj.insert("dst_port".into(), port(dst_port)?);
    obj.insert("recv_q".into(), json!(number(recv_q)?));
    obj.insert("send_q".into(), json!(number(send_q)?));
    Some(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As libslirp 4.7.0 prints it (its `printf` widths).
    const TABLE: &str =
        "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\n\
  TCP[HOST_FORWARD]   12       127.0.0.1  8080       10.0.2.15    80     0     0\n\
  TCP[ESTABLISHED]    14       10.0.2.15 40312        10.0.2.2  5201     0  1448\n\
  UDP[HOST_FORWARD]   13               *  5353       10.0.2.15    53     0     0\n\
  UDP[238 sec]        15       10.0.2.15 51000        10.0.2.3    53     0     0\n\
  ICMP[4 sec]         16       10.0.2.15  -            10.0.2.2  -        0     0\n";

    #[test]
    fn reads_every_kind_of_row() {
        let rows = parse(TABLE).unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[0],
            json!({"proto":"tcp","state":"HOST_FORWARD","fd":12,"src_addr":"127.0.0.1",
                   "src_port":8080,"dst_addr":"10.0.2.15","dst_port":80,"recv_q":0,"send_q":0})
        );
        assert_eq!(rows[1]["state"], "ESTABLISHED");
        assert_eq!(rows[1]["send_q"], 1448);
        assert_eq!(rows[2]["src_addr"], "*");
        assert_eq!(rows[2]["state"], "HOST_FORWARD");
        assert_eq!(rows[3]["state"], Value::Null);
        assert_eq!(rows[3]["expires_in_s"], 238);
        assert_eq!(rows[4]["proto"], "icmp");
        assert_eq!(rows[4]["src_port"], Value::Null);
        assert_eq!(rows[4]["expires_in_s"], 4);
        assert_eq!(parse("  Protocol[State]    FD\n"), Ok(vec![]));
    }

    #[test]
    fn a_row_in_another_format_is_named() {
        let e = parse("header\n  TCP[X] 1 2\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("  Protocol[State]\n  SCTP[X] 1 a 1 b 2 0 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "slirp_connection_info line 2: unexpected format '  SCTP[X] 1 a 1 b 2 0 0'"
        );
        assert!(parse("  TCP[ESTABLISHED] 1 a 99999 b 2 0 0").is_err());
        assert!(parse("  TCP]x[ 1 a 1 b 2 0 0").is_err());
    }
}
