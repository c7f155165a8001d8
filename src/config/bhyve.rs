//! bhyve's view of the config nvlist (`usr.sbin/bhyve/config.c` semantics).
//!
//! INTERFACE CONTRACT: `BhyveConfig::from_nvlist(&Nvlist) -> Result<BhyveConfig, ConfigError>`,
//! `ConfigError::exit_code() -> i32` (1 or 4), `Display` naming the key/rule and value.

use super::hostfwd::HostFwdRule;

/// What the helper takes from bhyve's config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BhyveConfig {
    /// `vmname` (STRING): process title only.
    pub vmname: Option<String>,
    /// `open` (STRING, bool grammar); the helper is restricted when false.
    pub open: bool,
    /// `hostfwd` (STRING) parsed.
    pub hostfwd: Vec<HostFwdRule>,
    /// `mtui` (NUMBER): guest MTU; `None` when absent (frames up to 2048 bytes).
    pub mtui: Option<u32>,
}

/// A config bhyve sent that the helper must refuse; `exit_code()` is the process exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {}
