//! Configuration: the libnv codec, reading the config record from bhyve's socket, and bhyve's
//! key semantics (`vmname`, `open`, `hostfwd`, `mtui`), and the wording of a bad value,
//! the same for a bhyve key and a command-line option.
//!
//! Owns: turning bytes from bhyve into a validated [`BhyveConfig`]. Never touches libslirp.

pub mod bhyve;
pub mod hostfwd;
pub mod network;
pub mod nvlist;
pub mod recv;
pub mod settings;
pub mod value;

pub use bhyve::{BhyveConfig, ConfigError, MTU_RANGE};
pub use hostfwd::{parse_rules, HostFwdError, HostFwdRule, Proto};
pub use network::{LibslirpVersion, Network, NetworkError};
pub use nvlist::{decode, encode, ByteOrder, DecodeError, Nvlist, Value};
pub use recv::{recv_config, RecvError};
pub use settings::{Settings, SETTINGS};
pub use value::{Expected, ValueError};
