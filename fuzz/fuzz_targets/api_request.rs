//! The control socket's parsers on arbitrary bytes: `api::request::parse` (a client's request
//! line) never panics, an accepted `add_hostfwd` written back in slirp4netns's shape parses to
//! the same rule, and every refusal is a `bad request: ` line; `api::connections::parse` (the
//! text of `slirp_connection_info`) never panics and reads only rows it fully understood.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slirp_helper::api::{connections, request};
use slirp_helper::config::Proto;

fuzz_target!(|data: &[u8]| {
    match request::parse(data) {
        Ok(request::Request::AddHostFwd(rule)) => {
            let proto = match rule.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            };
            let again = format!(
                r#"{{"execute":"add_hostfwd","arguments":{{"proto":"{proto}","host_addr":"{}","host_port":{},"guest_addr":"{}","guest_port":{}}}}}"#,
                rule.host_addr, rule.host_port, rule.guest_addr, rule.guest_port
            );
            assert_eq!(
                request::parse(again.as_bytes()),
                Ok(request::Request::AddHostFwd(rule)),
                "{again}"
            );
            assert_ne!(rule.guest_port, 0);
        }
        Ok(_) => {}
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("bad request: "), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }
    let table = String::from_utf8_lossy(data);
    if let Ok(rows) = connections::parse(&table) {
        for row in rows {
            assert!(matches!(
                row["proto"].as_str(),
                Some("tcp" | "udp" | "icmp")
            ));
            assert!(row["fd"].is_i64());
        }
    }
});
