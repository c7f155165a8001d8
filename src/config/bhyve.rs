//! bhyve's view of the config nvlist (`usr.sbin/bhyve/config.c` semantics).
//!
//! INTERFACE CONTRACT: `BhyveConfig::from_nvlist(&Nvlist) -> Result<BhyveConfig, ConfigError>`,
//! `ConfigError::exit_code() -> i32` (1 or 4), `Display` naming the key/rule and value.
//!
//! Owns: which pairs count and what they mean. Like `get_config_value_node`, only a top-level
//! pair of type STRING with exactly the key's (case-sensitive) name counts; other types, nested
//! lists and unknown keys are ignored, so bhyve can forward its whole device node. Values are
//! taken literally: bhyve's `%(name)` expansion is refused rather than imitated.

use std::fmt;

use super::hostfwd::{parse_rules, HostFwdError, HostFwdRule};
use super::nvlist::{Nvlist, Value};
use super::value::{self, Expected, ValueError};

/// Smallest and largest guest MTU the helper accepts (`mtui`); libslirp's own bound is
/// 68..=65521, and the frame must still fit a 64 KiB record with its Ethernet header.
pub const MTU_RANGE: std::ops::RangeInclusive<u64> = 68..=65520;

/// What the helper takes from bhyve's config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BhyveConfig {
    /// `vmname` (STRING): process title only. libnv strings are bytes and the C helper takes
    /// any; kept printable here: UTF-8 as is, other bytes as `\xNN` (see [`printable`]).
    pub vmname: Option<String>,
    /// `open` (STRING, bool grammar); the helper is restricted when false.
    pub open: bool,
    /// `hostfwd` (STRING) parsed.
    pub hostfwd: Vec<HostFwdRule>,
    /// `mtui` (NUMBER): guest MTU; `None` when absent (frames up to 2048 bytes).
    pub mtui: Option<u32>,
    /// Every top-level STRING pair, in wire order, raw: options added later (e.g. `poller=`)
    /// read them through [`BhyveConfig::string_option`] without changing bhyve.
    options: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A config bhyve sent that the helper must refuse; `exit_code()` is the process exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The top-level list carries IGNORE_CASE/NO_UNIQUE; `nvlist_recv(sock, 0)` refuses that.
    Flags(u8),
    /// A value uses bhyve's `%(name)` expansion, which the helper does not perform.
    Expansion { key: String, value: String },
    /// A value is not UTF-8 (shown escaped).
    NotUtf8 { key: String, value: Vec<u8> },
    /// `open` is none of the boolean spellings bhyve accepts: exit 4, as bhyve's
    /// `get_config_bool_node_default`.
    Open(ValueError),
    /// `mtui` outside [`MTU_RANGE`].
    Mtu(ValueError),
    /// A `hostfwd` rule that does not parse.
    HostFwd(HostFwdError),
    /// A tunable key (`poller`, `batch`, `coalesce`) with a value it does not take; the same
    /// error as for the command-line option of the same name.
    Tunable(ValueError),
    /// A network setting (`net`, `dns`, `ipv6`, …) that is malformed or does not agree with the
    /// others.
    Network(super::network::NetworkError),
}

impl ConfigError {
    /// The exit status the C helper uses for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Open(_) => 4,
            _ => 1,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Flags(flags) => write!(
                f,
                "config nvlist has flags 0x{flags:02x}; bhyve sends 0 (IGNORE_CASE/NO_UNIQUE are refused)"
            ),
            ConfigError::Expansion { key, value } => write!(
                f,
                "{key}: '{}' uses bhyve's %(name) expansion, which this helper does not support; \
                 write the value literally",
                value.escape_debug()
            ),
            ConfigError::NotUtf8 { key, value } => {
                write!(f, "{key}: '{}' is not valid UTF-8", value.escape_ascii())
            }
            ConfigError::Open(e) | ConfigError::Mtu(e) | ConfigError::Tunable(e) => e.fmt(f),
            ConfigError::HostFwd(e) => e.fmt(f),
            ConfigError::Network(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Open(e) | ConfigError::Mtu(e) | ConfigError::Tunable(e) => Some(e),
            ConfigError::HostFwd(e) => Some(e),
            ConfigError::Network(e) => Some(e),
            ConfigError::Flags(_) | ConfigError::Expansion { .. } | ConfigError::NotUtf8 { .. } => {
                None
            }
        }
    }
}

impl From<HostFwdError> for ConfigError {
    fn from(e: HostFwdError) -> ConfigError {
        ConfigError::HostFwd(e)
    }
}

impl BhyveConfig {
    /// Reads the helper's keys from a decoded config. Checks run in the C helper's order of
    /// use: `vmname`, `open`, the MTU, then `hostfwd`.
    pub fn from_nvlist(nvl: &Nvlist) -> Result<BhyveConfig, ConfigError> {
        if nvl.flags != 0 {
            return Err(ConfigError::Flags(nvl.flags));
        }
        let mut config = BhyveConfig {
            options: top_level_strings(nvl),
            ..BhyveConfig::default()
        };
        config.vmname = config.vmname()?;
        config.open = match config.string_option("open")? {
            None => false,
            Some(v) => value::parse_switch("open", v).map_err(ConfigError::Open)?,
        };
        config.mtui = mtu(nvl)?;
        if let Some(rules) = config.string_option("hostfwd")? {
            config.hostfwd = parse_rules(rules)?;
        }
        Ok(config)
    }

    /// The value of top-level STRING pair `key` (exact, case-sensitive name), checked as the
    /// known keys are: UTF-8 and no `%(` expansion. `Ok(None)` when absent.
    pub fn string_option(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        let Some((_, raw)) = self.options.iter().find(|(k, _)| k == key.as_bytes()) else {
            return Ok(None);
        };
        let value = std::str::from_utf8(raw).map_err(|_| ConfigError::NotUtf8 {
            key: key.to_owned(),
            value: raw.clone(),
        })?;
        if value.contains("%(") {
            return Err(ConfigError::Expansion {
                key: key.to_owned(),
                value: value.to_owned(),
            });
        }
        Ok(Some(value))
    }

    /// `vmname` printable. Any bytes are accepted (never refuse to start over a title); only
    /// `%(` is refused, as for every known key.
    fn vmname(&self) -> Result<Option<String>, ConfigError> {
        let Some((_, raw)) = self.options.iter().find(|(k, _)| k == b"vmname") else {
            return Ok(None);
        };
        if raw.windows(2).any(|w| w == b"%(") {
            return Err(ConfigError::Expansion {
                key: "vmname".to_owned(),
                value: printable(raw),
            });
        }
        Ok(Some(printable(raw)))
    }

    /// Every top-level STRING pair (name, value) in wire order, unchecked.
    pub fn options(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.options
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }
}

fn top_level_strings(nvl: &Nvlist) -> Vec<(Vec<u8>, Vec<u8>)> {
    nvl.pairs()
        .iter()
        .filter_map(|(name, value)| match value {
            Value::String(s) => Some((name.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

/// `bytes` as text: valid UTF-8 as it is, every other byte as `\xNN`.
pub(crate) fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `mtui` counts only as a NUMBER (a STRING `mtui` is some other option).
fn mtu(nvl: &Nvlist) -> Result<Option<u32>, ConfigError> {
    match nvl.get_number("mtui") {
        None => Ok(None),
        Some(value) if MTU_RANGE.contains(&value) => Ok(u32::try_from(value).ok()),
        Some(value) => Err(ConfigError::Mtu(ValueError::new(
            "mtui",
            &value.to_string(),
            Expected::Number {
                min: *MTU_RANGE.start(),
                max: *MTU_RANGE.end(),
            },
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::nvlist::FLAG_NO_UNIQUE;
    use crate::config::Proto;

    fn s(v: &str) -> Value {
        Value::String(v.as_bytes().to_vec())
    }

    fn config(pairs: Vec<(&str, Value)>) -> Result<BhyveConfig, ConfigError> {
        let mut nvl = Nvlist::new();
        for (k, v) in pairs {
            nvl.push(k, v);
        }
        BhyveConfig::from_nvlist(&nvl)
    }

    #[test]
    fn bhyve_typical_node() {
        let c = config(vec![
            ("device", s("virtio-net")),
            ("backend", s("slirp")),
            ("mtu", s("1500")),
            ("hostfwd", s("tcp::2222-:22")),
            ("vmname", s("vm0")),
            ("mtui", Value::Number(1500)),
        ])
        .unwrap();
        assert_eq!(c.vmname.as_deref(), Some("vm0"));
        assert!(!c.open);
        assert_eq!(c.mtui, Some(1500));
        assert_eq!(c.hostfwd.len(), 1);
        assert_eq!(c.hostfwd[0].proto, Proto::Tcp);
        assert_eq!(c.string_option("mtu"), Ok(Some("1500")));
        assert_eq!(c.string_option("backend"), Ok(Some("slirp")));
        assert_eq!(c.string_option("poller"), Ok(None));
        assert_eq!(c.options().count(), 5);
    }

    #[test]
    fn empty_config_is_defaults() {
        assert_eq!(config(vec![]).unwrap(), BhyveConfig::default());
    }

    #[test]
    fn open_spellings() {
        for (v, want) in [
            ("true", true),
            ("TRUE", true),
            ("On", true),
            ("yes", true),
            ("YES", true),
            ("1", true),
            ("false", false),
            ("Off", false),
            ("NO", false),
            ("0", false),
        ] {
            assert_eq!(config(vec![("open", s(v))]).unwrap().open, want, "{v}");
        }
        for v in ["", "maybe", "2", "t", "yes ", "01", "truee"] {
            let e = config(vec![("open", s(v))]).unwrap_err();
            assert_eq!(e.exit_code(), 4, "{v}");
            assert!(e.to_string().starts_with(&format!("open: '{v}' ")), "{e}");
        }
        let e = config(vec![("open", s("maybe"))]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "open: 'maybe' is not a boolean (use on/off, true/false, yes/no or 1/0)"
        );
    }

    #[test]
    fn only_top_level_strings_with_exact_names_count() {
        let mut sub = Nvlist::new();
        sub.push("open", s("maybe"));
        let c = config(vec![
            ("open", Value::Bool(true)),
            ("Vmname", s("wrong")),
            ("hostfwd", Value::Number(3)),
            ("mtui", s("9000")),
            ("nested", Value::Nvlist(sub)),
            ("weird", s("%(ignored because unknown)")),
        ])
        .unwrap();
        assert!(!c.open);
        assert_eq!(c.vmname, None);
        assert!(c.hostfwd.is_empty());
        assert_eq!(c.mtui, None);
        assert_eq!(c.string_option("mtui"), Ok(Some("9000")));
    }

    #[test]
    fn mtu_bounds() {
        for ok in [68, 1500, 65520] {
            assert_eq!(
                config(vec![("mtui", Value::Number(ok))]).unwrap().mtui,
                Some(ok as u32)
            );
        }
        for bad in [0, 67, 65521, u64::MAX] {
            let e = config(vec![("mtui", Value::Number(bad))]).unwrap_err();
            assert!(matches!(e, ConfigError::Mtu(_)), "{e:?}");
            assert_eq!(e.exit_code(), 1);
            assert_eq!(
                e.to_string(),
                format!("mtui: '{bad}' is not a number from 68 to 65520")
            );
        }
    }

    #[test]
    fn expansion_is_refused_for_known_keys() {
        for key in ["vmname", "open", "hostfwd"] {
            let e = config(vec![(key, s("a%(vm.name)b"))]).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{key}");
            assert_eq!(
                e.to_string(),
                format!(
                    "{key}: 'a%(vm.name)b' uses bhyve's %(name) expansion, which this helper \
                     does not support; write the value literally"
                )
            );
        }
        // A lone '%' is literal in bhyve too.
        let c = config(vec![("vmname", s("100%"))]).unwrap();
        assert_eq!(c.vmname.as_deref(), Some("100%"));
    }

    #[test]
    fn non_utf8_known_values_are_refused() {
        let e = config(vec![("open", Value::String(vec![b'v', 0xff]))]).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "open: 'v\\xff' is not valid UTF-8");
        // Unknown keys may be anything.
        assert!(config(vec![("other", Value::String(vec![0xff]))]).is_ok());
    }

    #[test]
    fn vmname_takes_any_bytes_shown_escaped() {
        let raw = vec![b'v', 0xff, b'm', 0xc3, 0xa9, 0xe2, 0x82];
        let c = config(vec![("vmname", Value::String(raw))]).unwrap();
        assert_eq!(c.vmname.as_deref(), Some("v\\xffm\u{e9}\\xe2\\x82"));
        let e = config(vec![("vmname", Value::String(b"\xff%(x)".to_vec()))]).unwrap_err();
        assert!(
            e.to_string().starts_with("vmname: '\\\\xff%(x)' uses"),
            "{e}"
        );
    }

    #[test]
    fn bad_hostfwd_exits_1() {
        let e = config(vec![("hostfwd", s("tcp::1-:2;"))]).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        // Named once: the rule's own message starts with the key.
        assert_eq!(
            e.to_string(),
            "hostfwd: rule 2 '': empty rule (stray ';'?) \
             (expected proto:haddr:hport-gaddr:gport, proto tcp or udp, IPv6 addresses in [])"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn public_flags_are_refused() {
        let nvl = Nvlist::with_flags(FLAG_NO_UNIQUE);
        let e = BhyveConfig::from_nvlist(&nvl).unwrap_err();
        assert_eq!(e, ConfigError::Flags(FLAG_NO_UNIQUE));
        assert_eq!(e.exit_code(), 1);
    }
}
