//! Pure-Rust libnv codec (FreeBSD `sys/contrib/libnv`): decoder for the whole wire format and an
//! encoder. See `../shared/docs/bhyve-protocol.md` section 4.
//!
//! INTERFACE CONTRACT (other modules and tests rely on these signatures):
//! - `HEADER_LEN = 19`
//! - `Header::parse(&[u8]) -> Result<Header, DecodeError>` (first 19 bytes; fields `flags`,
//!   `descriptors`, `size`, `big_endian()`), `Header::total_len() -> Option<u64>` = 19 + size.
//! - `decode(buf: &[u8], fds_received: usize) -> Result<Nvlist, DecodeError>`
//! - `encode(&Nvlist, ByteOrder) -> Vec<u8>`
//! - `Nvlist::new()`, `Nvlist::push(name, Value)`, `Nvlist::get(name) -> Option<&Value>`,
//!   `Nvlist::pairs()`.

use std::fmt;

pub const HEADER_LEN: usize = 19;

/// Byte order of an encoded nvlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    Little,
    Big,
}

/// A decoding failure: where in the buffer and which libnv rule was broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset into the buffer where the offending field starts.
    pub offset: usize,
    /// The rule that was broken, in words.
    pub rule: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid nvlist at byte {}: {}", self.offset, self.rule)
    }
}

impl std::error::Error for DecodeError {}

/// One value of a pair. Strings and names are bytes: libnv does not require UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(u64),
    String(Vec<u8>),
    Nvlist(Nvlist),
    /// Index into the descriptors received with the message.
    Descriptor(i64),
    Binary(Vec<u8>),
    BoolArray(Vec<bool>),
    NumberArray(Vec<u64>),
    StringArray(Vec<Vec<u8>>),
    NvlistArray(Vec<Nvlist>),
    DescriptorArray(Vec<i64>),
}

/// An nvlist: ordered pairs plus the public flags of its header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nvlist {
    /// Public flags (IGNORE_CASE 0x01, NO_UNIQUE 0x02).
    pub flags: u8,
    pairs: Vec<(Vec<u8>, Value)>,
}
