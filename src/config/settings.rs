//! Settings that are both a bhyve key and a command-line option: `-s …,slirp,net=192.168.77.0/24`
//! or `--net 192.168.77.0/24` (also `--net=…`, as libvirt writes its options). The option wins.
//!
//! Owns: the table of such settings and the lookup that merges both sources. Knows nothing of
//! what a value means (that is [`super::network`]); the name it returns is the one the user
//! wrote (`--net` or `net`), so an error names what the user can fix.

use super::bhyve::{BhyveConfig, ConfigError};

/// One setting: its bhyve key and its command-line option.
#[derive(Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub option: &'static str,
}

macro_rules! settings {
    ($($key:literal),* $(,)?) => {
        &[$(Setting { key: $key, option: concat!("--", $key) }),*]
    };
}

/// Every setting taken both ways. (`poller`, `batch` and `coalesce` predate this table and
/// keep their typed options in `cli`.)
pub const SETTINGS: &[Setting] = settings![
    "net",
    "host",
    "dhcpstart",
    "dns",
    "dnssearch",
    "domainname",
    "hostname",
    "dnsproxy",
    "dhcp",
    "hostloopback",
    "outbound",
    "outbound6",
    "ipv6",
    "net6",
    "host6",
    "dns6",
];

/// The setting whose option is `option` (`--net`).
pub fn by_option(option: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.option == option)
}

/// What the command line set, in order (a later one wins), as `(key, value)`.
pub type Overrides = Vec<(&'static str, String)>;

/// The command line's overrides over bhyve's config.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    cli: &'a [(&'static str, String)],
    config: &'a BhyveConfig,
}

impl<'a> Settings<'a> {
    pub fn new(cli: &'a [(&'static str, String)], config: &'a BhyveConfig) -> Settings<'a> {
        Settings { cli, config }
    }

    /// `key`'s value and the name it came under (`--net` or `net`); `Ok(None)` when neither
    /// source has it. A key's value is checked as every bhyve key is (UTF-8, no `%(`).
    pub fn get(&self, key: &'static str) -> Result<Option<(&'static str, &'a str)>, ConfigError> {
        let setting = SETTINGS
            .iter()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("{key} is not in SETTINGS"));
        if let Some((_, value)) = self.cli.iter().rev().find(|(k, _)| *k == key) {
            return Ok(Some((setting.option, value.as_str())));
        }
        Ok(self.config.string_option(key)?.map(|v| (setting.key, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Nvlist, Value};

    #[test]
    fn the_option_wins_and_names_itself() {
        let mut nvl = Nvlist::new();
        nvl.push("net", Value::String(b"10.9.0.0/16".to_vec()));
        nvl.push("dns", Value::String(b"10.9.0.3".to_vec()));
        let config = BhyveConfig::from_nvlist(&nvl).unwrap();
        let cli = vec![("net", "1.0.0.0/8".into()), ("net", "2.0.0.0/8".into())];
        let s = Settings::new(&cli, &config);
        assert_eq!(s.get("net").unwrap(), Some(("--net", "2.0.0.0/8")));
        assert_eq!(s.get("dns").unwrap(), Some(("dns", "10.9.0.3")));
        assert_eq!(s.get("host").unwrap(), None);
    }

    #[test]
    fn options_are_the_keys_with_dashes() {
        assert_eq!(by_option("--net6").map(|s| s.key), Some("net6"));
        assert_eq!(by_option("net6"), None);
        for s in SETTINGS {
            assert_eq!(s.option, format!("--{}", s.key));
        }
    }
}
