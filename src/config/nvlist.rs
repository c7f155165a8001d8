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
//!
//! Owns: the byte format only (no sockets, no bhyve semantics). The decoder must never panic,
//! never allocate more than the bytes it was given (every count from the wire is checked against
//! the bytes left before anything is sized by it) and never recurse deeper than [`MAX_DEPTH`].
//!
//! Acceptance follows libnv's `nvlist_xunpack` (FreeBSD `subr_nvlist.c`, `subr_nvpair.c`), with
//! a few deliberate tightenings where libnv accepts bytes `nvlist_pack` can never produce (each
//! is marked "stricter than libnv" below). bhyve only ever sends `nvlist_pack` output, so these
//! never reject a real configuration, and they keep every accepted buffer representable as an
//! [`Nvlist`] that re-encodes to the same bytes.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// Size of the list header (and of a pair header).
pub(crate) const HEADER_LEN: usize = 19;
/// Size of a pair header: type, namesize, datasize, nitems.
pub(crate) const PAIR_HEADER_LEN: usize = 19;
/// libnv's `NV_NAME_MAX`: the largest namesize (name plus its NUL).
pub(crate) const NAME_MAX: usize = 2048;
/// Deepest nesting the decoder follows. libnv has no limit; bhyve's config tree is a few levels
/// deep, and a bound keeps recursion (and its stack) finite on hostile input.
pub(crate) const MAX_DEPTH: usize = 64;
/// First byte of every list header.
pub(crate) const MAGIC: u8 = 0x6c;

/// Public flag: names compare case-insensitively (ASCII, like `strcasecmp` in the C locale).
pub(crate) const FLAG_IGNORE_CASE: u8 = 0x01;
/// Public flag: duplicate names are allowed.
pub(crate) const FLAG_NO_UNIQUE: u8 = 0x02;
/// Private flag: the sender's multi-byte fields are big-endian.
pub(crate) const FLAG_BIG_ENDIAN: u8 = 0x80;
const FLAG_PUBLIC_MASK: u8 = FLAG_IGNORE_CASE | FLAG_NO_UNIQUE;
/// Flags that may appear in a header (`NV_FLAG_ALL_MASK` as far as it fits a byte).
const FLAG_ALL_MASK: u8 = FLAG_PUBLIC_MASK | FLAG_BIG_ENDIAN;

/// Wire type codes (`sys/nv.h`, `nv_impl.h`).
mod code {
    pub const NULL: u8 = 1;
    pub const BOOL: u8 = 2;
    pub const NUMBER: u8 = 3;
    pub const STRING: u8 = 4;
    pub const NVLIST: u8 = 5;
    pub const DESCRIPTOR: u8 = 6;
    pub const BINARY: u8 = 7;
    pub(crate) const BOOL_ARRAY: u8 = 8;
    pub(crate) const NUMBER_ARRAY: u8 = 9;
    pub(crate) const STRING_ARRAY: u8 = 10;
    pub(crate) const NVLIST_ARRAY: u8 = 11;
    pub(crate) const DESCRIPTOR_ARRAY: u8 = 12;
    pub(crate) const NVLIST_ARRAY_NEXT: u8 = 254;
    pub(crate) const NVLIST_UP: u8 = 255;
}

/// Byte order of an encoded nvlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    Little,
    Big,
}

impl ByteOrder {
    fn from_flags(flags: u8) -> ByteOrder {
        if flags & FLAG_BIG_ENDIAN != 0 {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        }
    }

    fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            ByteOrder::Little => u16::from_le_bytes(b),
            ByteOrder::Big => u16::from_be_bytes(b),
        }
    }

    fn u64(self, b: [u8; 8]) -> u64 {
        match self {
            ByteOrder::Little => u64::from_le_bytes(b),
            ByteOrder::Big => u64::from_be_bytes(b),
        }
    }

    fn u16_bytes(self, v: u16) -> [u8; 2] {
        match self {
            ByteOrder::Little => v.to_le_bytes(),
            ByteOrder::Big => v.to_be_bytes(),
        }
    }

    fn u64_bytes(self, v: u64) -> [u8; 8] {
        match self {
            ByteOrder::Little => v.to_le_bytes(),
            ByteOrder::Big => v.to_be_bytes(),
        }
    }
}

/// A decoding failure: where in the buffer and which libnv rule was broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset into the buffer where the offending field starts.
    pub offset: usize,
    /// The rule that was broken, in words.
    pub rule: String,
}

impl DecodeError {
    fn new(offset: usize, rule: impl Into<String>) -> DecodeError {
        DecodeError {
            offset,
            rule: rule.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid nvlist at byte {}: {}", self.offset, self.rule)
    }
}

impl std::error::Error for DecodeError {}

/// A list header (`struct nvlist_header`), multi-byte fields already in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Written 0 by libnv and never checked, so any value is accepted.
    pub version: u8,
    /// Raw flags byte: public flags plus [`FLAG_BIG_ENDIAN`].
    pub flags: u8,
    /// Descriptors sent after the body (for nested headers: from this list to the end).
    pub descriptors: u64,
    /// Bytes after this header to the end of the whole buffer.
    pub size: u64,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes of `buf`: magic, known flags, byte order.
    /// Does not compare `size` with the buffer (the caller may hold only the header).
    pub fn parse(buf: &[u8]) -> Result<Header, DecodeError> {
        let raw = buf
            .first_chunk::<HEADER_LEN>()
            .ok_or_else(|| DecodeError::new(0, "truncated nvlist header (needs 19 bytes)"))?;
        Header::from_raw(raw, 0)
    }

    fn from_raw(raw: &[u8; HEADER_LEN], at: usize) -> Result<Header, DecodeError> {
        let [magic, version, flags, c0, c1, c2, c3, c4, c5, c6, c7, s0, s1, s2, s3, s4, s5, s6, s7] =
            *raw;
        if magic != MAGIC {
            return Err(DecodeError::new(
                at,
                format!("bad magic 0x{magic:02x} (expected 0x{MAGIC:02x})"),
            ));
        }
        if flags & !FLAG_ALL_MASK != 0 {
            return Err(DecodeError::new(
                at + 2,
                format!("unknown header flags 0x{flags:02x} (known: 0x{FLAG_ALL_MASK:02x})"),
            ));
        }
        let order = ByteOrder::from_flags(flags);
        Ok(Header {
            version,
            flags,
            descriptors: order.u64([c0, c1, c2, c3, c4, c5, c6, c7]),
            size: order.u64([s0, s1, s2, s3, s4, s5, s6, s7]),
        })
    }

    /// Whether the sender wrote big-endian fields.
    pub fn big_endian(&self) -> bool {
        self.flags & FLAG_BIG_ENDIAN != 0
    }

    /// IGNORE_CASE / NO_UNIQUE only.
    pub(crate) fn public_flags(&self) -> u8 {
        self.flags & FLAG_PUBLIC_MASK
    }

    /// Header plus body: the bytes to read for the whole list; `None` on overflow.
    pub fn total_len(&self) -> Option<u64> {
        (HEADER_LEN as u64).checked_add(self.size)
    }
}

/// One value of a pair. Strings and names are bytes: libnv does not require UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(u64),
    /// Without the terminating NUL (the wire form has exactly one, at the end).
    String(Vec<u8>),
    Nvlist(Nvlist),
    /// Index into the descriptors received with the message.
    Descriptor(i64),
    Binary(Vec<u8>),
    BoolArray(Vec<bool>),
    NumberArray(Vec<u64>),
    /// Elements without their NULs.
    StringArray(Vec<Vec<u8>>),
    NvlistArray(Vec<Nvlist>),
    DescriptorArray(Vec<i64>),
}

impl Value {
    /// libnv's name for the type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Bool(_) => "BOOL",
            Value::Number(_) => "NUMBER",
            Value::String(_) => "STRING",
            Value::Nvlist(_) => "NVLIST",
            Value::Descriptor(_) => "DESCRIPTOR",
            Value::Binary(_) => "BINARY",
            Value::BoolArray(_) => "BOOL ARRAY",
            Value::NumberArray(_) => "NUMBER ARRAY",
            Value::StringArray(_) => "STRING ARRAY",
            Value::NvlistArray(_) => "NVLIST ARRAY",
            Value::DescriptorArray(_) => "DESCRIPTOR ARRAY",
        }
    }
}

/// An nvlist: ordered pairs plus the public flags of its header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nvlist {
    /// Public flags (IGNORE_CASE 0x01, NO_UNIQUE 0x02).
    pub flags: u8,
    pairs: Vec<(Vec<u8>, Value)>,
}

impl Nvlist {
    /// An empty list with flags 0 (what bhyve sends).
    pub fn new() -> Nvlist {
        Nvlist::default()
    }

    /// An empty list with the given public flags.
    pub fn with_flags(flags: u8) -> Nvlist {
        Nvlist {
            flags,
            pairs: Vec::new(),
        }
    }

    /// Appends a pair. No uniqueness check: the caller builds what it means to send. For the
    /// encoding to be valid, names and strings must not contain NUL, names must be shorter
    /// than [`NAME_MAX`], and arrays must not be empty (libnv refuses all of these).
    pub fn push(&mut self, name: impl Into<Vec<u8>>, value: Value) {
        self.pairs.push((name.into(), value));
    }

    /// The first pair called `name` (compared case-insensitively under IGNORE_CASE, as
    /// libnv's `nvlist_find`).
    pub fn get(&self, name: impl AsRef<[u8]>) -> Option<&Value> {
        self.find(name.as_ref(), |_| true)
    }

    /// The first STRING pair called `name` (`nvlist_get_string` semantics: a pair of another
    /// type with that name is skipped), without its NUL.
    pub fn get_string(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        match self.find(name.as_ref(), |v| matches!(v, Value::String(_))) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The first NUMBER pair called `name`.
    pub(crate) fn get_number(&self, name: impl AsRef<[u8]>) -> Option<u64> {
        match self.find(name.as_ref(), |v| matches!(v, Value::Number(_))) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    /// All pairs in wire order.
    pub fn pairs(&self) -> &[(Vec<u8>, Value)] {
        &self.pairs
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn find(&self, name: &[u8], type_ok: impl Fn(&Value) -> bool) -> Option<&Value> {
        let fold = self.flags & FLAG_IGNORE_CASE != 0;
        self.pairs
            .iter()
            .find(|(n, v)| type_ok(v) && names_equal(n, name, fold))
            .map(|(_, v)| v)
    }
}

fn names_equal(a: &[u8], b: &[u8], fold_case: bool) -> bool {
    if fold_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder

/// Decodes a whole nvlist buffer as `nvlist_recv` would after reading it: `buf` is the header
/// plus exactly `size` bytes, and `fds_received` descriptors came with it (the top-level header
/// must announce exactly that many; nested headers and descriptor indices must stay below it).
pub fn decode(buf: &[u8], fds_received: usize) -> Result<Nvlist, DecodeError> {
    let mut d = Decoder {
        buf,
        pos: 0,
        big_endian: false,
        fds_received,
    };
    let header = d.list_header(true)?;
    if header.descriptors != fds_received as u64 {
        return Err(DecodeError::new(
            3,
            format!(
                "header announces {} descriptors but {fds_received} were received",
                header.descriptors
            ),
        ));
    }
    d.list_body(header.public_flags(), 0, End::Buffer)
}

/// How the list being decoded ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The top-level list runs to the end of the buffer.
    Buffer,
    /// A nested NVLIST ends with an NVLIST_UP marker.
    Up,
    /// An element of an NVLIST_ARRAY ends with an NVLIST_ARRAY_NEXT marker.
    ArrayNext,
}

/// A pair header whose name and datasize have been checked against the buffer.
struct PairHeader<'a> {
    /// Offset of the pair's type byte.
    at: usize,
    code: u8,
    /// Without the NUL.
    name: &'a [u8],
    /// Already known to be <= the bytes left after the name.
    datasize: usize,
    nitems: u64,
}

impl PairHeader<'_> {
    fn datasize_at(&self) -> usize {
        self.at + 3
    }
    fn nitems_at(&self) -> usize {
        self.at + 11
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    /// libnv's `isbe`: set by the top-level header and by every nvlist-array element header,
    /// but NOT by a nested NVLIST header (`nvpair_unpack_nvlist` passes no `isbep`), and kept
    /// after a nested list ends. Matters only for mixed-order buffers, which no sender writes.
    big_endian: bool,
    fds_received: usize,
}

impl<'a> Decoder<'a> {
    fn order(&self) -> ByteOrder {
        if self.big_endian {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end).map(|s| (s, end))) {
            Some((s, end)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(DecodeError::new(
                self.pos,
                format!("{what}: needs {n} bytes, {} left", self.remaining()),
            )),
        }
    }

    fn take_array<const N: usize>(&mut self, what: &str) -> Result<&'a [u8; N], DecodeError> {
        let at = self.pos;
        self.take(N, what)?
            .first_chunk::<N>()
            .ok_or_else(|| DecodeError::new(at, what))
    }

    /// Reads a list header and checks it against the buffer (`nvlist_unpack_header`).
    fn list_header(&mut self, sets_byte_order: bool) -> Result<Header, DecodeError> {
        let at = self.pos;
        let raw = self.take_array::<HEADER_LEN>("truncated nvlist header")?;
        let header = Header::from_raw(raw, at)?;
        let left = self.remaining() as u64;
        if header.size != left {
            return Err(DecodeError::new(
                at + 11,
                format!(
                    "header size {} does not match the {left} bytes left in the buffer",
                    header.size
                ),
            ));
        }
        if header.descriptors > self.fds_received as u64 {
            return Err(DecodeError::new(
                at + 3,
                format!(
                    "header announces {} descriptors, more than the {} received",
                    header.descriptors, self.fds_received
                ),
            ));
        }
        if sets_byte_order {
            self.big_endian = header.big_endian();
        }
        Ok(header)
    }

    /// Reads pairs into a list until its terminator (`nvlist_xunpack`'s loop, one level).
    fn list_body(&mut self, flags: u8, depth: usize, end: End) -> Result<Nvlist, DecodeError> {
        let mut list = Nvlist::with_flags(flags);
        let mut names = NameSet::new(flags);
        loop {
            if self.remaining() == 0 {
                // Stricter than libnv, which stops at the end of the buffer at any depth.
                return match end {
                    End::Buffer => Ok(list),
                    End::Up | End::ArrayNext => Err(DecodeError::new(
                        self.pos,
                        "buffer ends inside a nested nvlist (missing end marker)",
                    )),
                };
            }
            let pair = self.pair_header()?;
            if pair.code == code::NVLIST_UP || pair.code == code::NVLIST_ARRAY_NEXT {
                check_marker(&pair, end)?;
                return Ok(list);
            }
            if !names.insert(pair.name) {
                return Err(DecodeError::new(
                    pair.at,
                    format!(
                        "duplicate name \"{}\" in a list without NO_UNIQUE",
                        pair.name.escape_ascii()
                    ),
                ));
            }
            let value = self.value(&pair, depth)?;
            list.pairs.push((pair.name.to_vec(), value));
        }
    }

    /// Reads and checks a pair header and its name (`nvpair_unpack_header`).
    fn pair_header(&mut self) -> Result<PairHeader<'a>, DecodeError> {
        let at = self.pos;
        let raw = self.take_array::<PAIR_HEADER_LEN>("truncated pair header")?;
        let [code, n0, n1, d0, d1, d2, d3, d4, d5, d6, d7, i0, i1, i2, i3, i4, i5, i6, i7] = *raw;
        if !(code::NULL..=code::DESCRIPTOR_ARRAY).contains(&code)
            && code != code::NVLIST_ARRAY_NEXT
            && code != code::NVLIST_UP
        {
            return Err(DecodeError::new(at, format!("unknown pair type {code}")));
        }
        let order = self.order();
        let namesize = usize::from(order.u16([n0, n1]));
        // libnv does not byte-swap nitems (a bug that breaks cross-order arrays); read it in
        // the sender's order, as libnv does on a host of that order.
        let nitems = order.u64([i0, i1, i2, i3, i4, i5, i6, i7]);
        let datasize = order.u64([d0, d1, d2, d3, d4, d5, d6, d7]);
        if namesize == 0 || namesize > NAME_MAX {
            return Err(DecodeError::new(
                at + 1,
                format!("namesize {namesize} outside 1..={NAME_MAX}"),
            ));
        }
        let name_at = self.pos;
        let name = self.take(namesize, "pair name runs past the end of the buffer")?;
        let name = match name.split_last() {
            Some((0, name)) if !name.contains(&0) => name,
            _ => {
                return Err(DecodeError::new(
                    name_at,
                    "pair name must have exactly one NUL, at its end",
                ))
            }
        };
        let datasize = match usize::try_from(datasize) {
            Ok(n) if n <= self.remaining() => n,
            _ => {
                return Err(DecodeError::new(
                    at + 3,
                    format!(
                        "datasize {datasize} exceeds the {} bytes left",
                        self.remaining()
                    ),
                ))
            }
        };
        Ok(PairHeader {
            at,
            code,
            name,
            datasize,
            nitems,
        })
    }

    /// Reads a pair's value (`nvpair_unpack_*`).
    fn value(&mut self, pair: &PairHeader<'a>, depth: usize) -> Result<Value, DecodeError> {
        match pair.code {
            code::NULL => {
                expect_datasize(pair, 0)?;
                Ok(Value::Null)
            }
            code::BOOL => self.bool_value(pair),
            code::NUMBER => {
                expect_datasize(pair, 8)?;
                let raw = self.take_array::<8>("NUMBER")?;
                Ok(Value::Number(self.order().u64(*raw)))
            }
            code::STRING => self.string_value(pair),
            code::NVLIST => self.nvlist_value(pair, depth),
            code::DESCRIPTOR => {
                expect_datasize(pair, 8)?;
                let at = self.pos;
                let raw = self.take_array::<8>("DESCRIPTOR")?;
                Ok(Value::Descriptor(self.descriptor_index(*raw, at)?))
            }
            code::BINARY => {
                if pair.datasize == 0 {
                    return Err(DecodeError::new(
                        pair.datasize_at(),
                        "BINARY with datasize 0",
                    ));
                }
                Ok(Value::Binary(self.take(pair.datasize, "BINARY")?.to_vec()))
            }
            code::BOOL_ARRAY => self.bool_array(pair),
            code::NUMBER_ARRAY => {
                let order = self.order();
                let bytes = self.fixed_array(pair, 8)?;
                Ok(Value::NumberArray(u64_items(bytes, order).collect()))
            }
            code::STRING_ARRAY => self.string_array(pair),
            code::NVLIST_ARRAY => self.nvlist_array(pair, depth),
            code::DESCRIPTOR_ARRAY => self.descriptor_array(pair),
            other => Err(DecodeError::new(
                pair.at,
                format!("unknown pair type {other}"),
            )),
        }
    }

    fn bool_value(&mut self, pair: &PairHeader<'a>) -> Result<Value, DecodeError> {
        expect_datasize(pair, 1)?;
        let at = self.pos;
        match self.take_array::<1>("BOOL")? {
            [0] => Ok(Value::Bool(false)),
            [1] => Ok(Value::Bool(true)),
            [b] => Err(DecodeError::new(
                at,
                format!("BOOL value {b} is not 0 or 1"),
            )),
        }
    }

    fn string_value(&mut self, pair: &PairHeader<'a>) -> Result<Value, DecodeError> {
        if pair.datasize == 0 {
            return Err(DecodeError::new(
                pair.datasize_at(),
                "STRING with datasize 0",
            ));
        }
        let at = self.pos;
        let bytes = self.take(pair.datasize, "STRING")?;
        match bytes.split_last() {
            Some((0, s)) if !s.contains(&0) => Ok(Value::String(s.to_vec())),
            _ => Err(DecodeError::new(
                at,
                "STRING must have exactly one NUL, at the end of its datasize",
            )),
        }
    }

    fn nvlist_value(&mut self, pair: &PairHeader<'a>, depth: usize) -> Result<Value, DecodeError> {
        // The datasize of an NVLIST pair is only a size hint in libnv: it must be non-zero
        // and fit the buffer (already checked), nothing more.
        if pair.datasize == 0 {
            return Err(DecodeError::new(
                pair.datasize_at(),
                "NVLIST with datasize 0",
            ));
        }
        let depth = nested_depth(pair, depth)?;
        let header = self.list_header(false)?;
        let list = self.list_body(header.public_flags(), depth, End::Up)?;
        Ok(Value::Nvlist(list))
    }

    fn nvlist_array(&mut self, pair: &PairHeader<'a>, depth: usize) -> Result<Value, DecodeError> {
        // Stricter than libnv, which ignores the datasize here; nvlist_pack writes 0.
        expect_datasize(pair, 0)?;
        if pair.nitems == 0 {
            return Err(DecodeError::new(
                pair.nitems_at(),
                "NVLIST ARRAY with no items",
            ));
        }
        // libnv's bound: each element needs at least a pair header's worth of bytes.
        let fits = pair
            .nitems
            .checked_mul(PAIR_HEADER_LEN as u64)
            .is_some_and(|n| n <= self.remaining() as u64);
        if !fits {
            return Err(DecodeError::new(
                pair.nitems_at(),
                format!(
                    "NVLIST ARRAY of {} items cannot fit the {} bytes left",
                    pair.nitems,
                    self.remaining()
                ),
            ));
        }
        let depth = nested_depth(pair, depth)?;
        // Grows per element: every element consumes at least 39 bytes, so the vector stays
        // bounded by the buffer whatever nitems claims.
        let mut elements = Vec::new();
        for _ in 0..pair.nitems {
            let header = self.list_header(true)?;
            elements.push(self.list_body(header.public_flags(), depth, End::ArrayNext)?);
        }
        Ok(Value::NvlistArray(elements))
    }

    fn bool_array(&mut self, pair: &PairHeader<'a>) -> Result<Value, DecodeError> {
        let at = self.pos;
        let bytes = self.fixed_array(pair, 1)?;
        // Stricter than libnv, which copies any byte into its bool array.
        if let Some(i) = bytes.iter().position(|&b| b > 1) {
            return Err(DecodeError::new(at + i, "BOOL ARRAY item is not 0 or 1"));
        }
        Ok(Value::BoolArray(bytes.iter().map(|&b| b == 1).collect()))
    }

    fn string_array(&mut self, pair: &PairHeader<'a>) -> Result<Value, DecodeError> {
        if pair.datasize == 0 || pair.nitems == 0 {
            return Err(DecodeError::new(
                pair.datasize_at(),
                "STRING ARRAY needs datasize >= 1 and nitems >= 1",
            ));
        }
        let at = self.pos;
        let mut rest = self.take(pair.datasize, "STRING ARRAY")?;
        let mut items = Vec::new();
        // Each item consumes at least its NUL, so this loop ends within datasize iterations
        // whatever nitems claims.
        for _ in 0..pair.nitems {
            let Some(nul) = rest.iter().position(|&b| b == 0) else {
                return Err(DecodeError::new(
                    at,
                    format!(
                        "STRING ARRAY datasize {} holds fewer than {} NUL-terminated items",
                        pair.datasize, pair.nitems
                    ),
                ));
            };
            let (item, tail) = rest.split_at(nul);
            items.push(item.to_vec());
            rest = tail.get(1..).unwrap_or_default();
        }
        if !rest.is_empty() {
            return Err(DecodeError::new(
                at,
                format!(
                    "STRING ARRAY datasize {} leaves {} bytes after {} items",
                    pair.datasize,
                    rest.len(),
                    pair.nitems
                ),
            ));
        }
        Ok(Value::StringArray(items))
    }

    fn descriptor_array(&mut self, pair: &PairHeader<'a>) -> Result<Value, DecodeError> {
        let at = self.pos;
        let bytes = self.fixed_array(pair, 8)?;
        let mut items = Vec::new();
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let raw = chunk.first_chunk::<8>().copied().unwrap_or_default();
            items.push(self.descriptor_index(raw, at + 8 * i)?);
        }
        Ok(Value::DescriptorArray(items))
    }

    /// An index into the received descriptors: 0 <= idx < fds_received.
    fn descriptor_index(&self, raw: [u8; 8], at: usize) -> Result<i64, DecodeError> {
        let idx = self.order().u64(raw) as i64;
        if idx < 0 || idx as u64 >= self.fds_received as u64 {
            return Err(DecodeError::new(
                at,
                format!(
                    "descriptor index {idx} outside the {} received",
                    self.fds_received
                ),
            ));
        }
        Ok(idx)
    }

    /// The bytes of a BOOL/NUMBER/DESCRIPTOR array: nitems >= 1 and datasize exactly
    /// nitems * item_size, without overflow.
    fn fixed_array(
        &mut self,
        pair: &PairHeader<'a>,
        item_size: u64,
    ) -> Result<&'a [u8], DecodeError> {
        if pair.nitems == 0 {
            return Err(DecodeError::new(pair.nitems_at(), "array with no items"));
        }
        let Some(size) = pair.nitems.checked_mul(item_size) else {
            return Err(DecodeError::new(
                pair.nitems_at(),
                format!("nitems {} overflows the array size", pair.nitems),
            ));
        };
        if size != pair.datasize as u64 {
            return Err(DecodeError::new(
                pair.datasize_at(),
                format!(
                    "datasize {} is not {} items of {item_size} bytes",
                    pair.datasize, pair.nitems
                ),
            ));
        }
        self.take(pair.datasize, "array data")
    }
}

fn expect_datasize(pair: &PairHeader<'_>, want: usize) -> Result<(), DecodeError> {
    if pair.datasize != want {
        return Err(DecodeError::new(
            pair.datasize_at(),
            format!("datasize {} (this type needs {want})", pair.datasize),
        ));
    }
    Ok(())
}

fn nested_depth(pair: &PairHeader<'_>, depth: usize) -> Result<usize, DecodeError> {
    let depth = depth.saturating_add(1);
    if depth > MAX_DEPTH {
        return Err(DecodeError::new(
            pair.at,
            format!("nvlists nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(depth)
}

/// Markers must have the shape `nvlist_pack` writes and close the kind of list that is open.
/// Stricter than libnv, which ignores the marker's fields and treats UP and NEXT alike except
/// for moving to the next array element.
fn check_marker(pair: &PairHeader<'_>, end: End) -> Result<(), DecodeError> {
    let (wanted, name) = match pair.code {
        code::NVLIST_UP => (End::Up, "NVLIST_UP"),
        _ => (End::ArrayNext, "NVLIST_ARRAY_NEXT"),
    };
    if end != wanted {
        let where_ = match end {
            End::Buffer => "in the top-level list",
            End::Up => "inside a nested NVLIST (expected NVLIST_UP)",
            End::ArrayNext => "inside an NVLIST ARRAY element (expected NVLIST_ARRAY_NEXT)",
        };
        return Err(DecodeError::new(pair.at, format!("{name} {where_}")));
    }
    if !pair.name.is_empty() || pair.datasize != 0 || pair.nitems != 0 {
        return Err(DecodeError::new(
            pair.at,
            format!("{name} marker must have an empty name, datasize 0 and nitems 0"),
        ));
    }
    Ok(())
}

fn u64_items(bytes: &[u8], order: ByteOrder) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .filter_map(|c| c.first_chunk::<8>())
        .map(move |raw| order.u64(*raw))
}

/// Names seen in one list, for libnv's uniqueness rule (by that list's own flags).
struct NameSet<'a> {
    unique: bool,
    fold_case: bool,
    // A set rather than libnv's linear search: a 16 MiB buffer of tiny pairs would
    // otherwise cost O(n^2) comparisons.
    seen: HashSet<Cow<'a, [u8]>>,
}

impl<'a> NameSet<'a> {
    fn new(flags: u8) -> NameSet<'a> {
        NameSet {
            unique: flags & FLAG_NO_UNIQUE == 0,
            fold_case: flags & FLAG_IGNORE_CASE != 0,
            seen: HashSet::new(),
        }
    }

    /// False if the name is already present (and duplicates are not allowed).
    fn insert(&mut self, name: &'a [u8]) -> bool {
        if !self.unique {
            return true;
        }
        let key = if self.fold_case {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        self.seen.insert(key)
    }
}

// ---------------------------------------------------------------------------------------------
// Encoder

/// Encodes `list` exactly as libnv's `nvlist_pack` (and so `nvlist_send`) does on a host of
/// byte order `order`, including its quirky size fields:
/// - every header's `size` counts the bytes to the end of the whole buffer;
/// - every header's `descriptors` counts descriptor items from that list to the end of the
///   whole tree (`nvlist_ndescriptors` walks on into the parents);
/// - an NVLIST pair's datasize is `nvlist_size()` of the nested list, which for a non-empty
///   list also walks on through every pair after it in the parents (19 for an empty list).
///
/// Descriptor values are written as `nvlist_pack` writes them: numbered 0, 1, 2… in wire
/// order (the position of the descriptor the sender attaches), whatever index they held when
/// decoded. So `decode(encode(x)) == x` for lists whose descriptors are numbered that way, and
/// `encode` is a fixed point after one round trip for every list.
pub fn encode(list: &Nvlist, order: ByteOrder) -> Vec<u8> {
    let walk = walk_size(list);
    let mut enc = Encoder {
        out: Vec::with_capacity(HEADER_LEN + walk as usize),
        order,
        total_len: HEADER_LEN as u64 + walk,
        total_walk: walk,
        total_descriptors: descriptor_count(list),
        walk_done: 0,
        descriptors_done: 0,
    };
    enc.list(list);
    enc.out
}

/// What `nvlist_size` adds for one pair when it meets it: header, name, and the data, where a
/// nested list counts its header and end marker (its pairs are counted as the walk reaches them).
fn pair_walk_size(name: &[u8], value: &Value) -> u64 {
    let marker = (PAIR_HEADER_LEN + 1) as u64;
    let head = (PAIR_HEADER_LEN + name.len() + 1) as u64;
    head + match value {
        Value::Nvlist(_) => HEADER_LEN as u64 + marker,
        Value::NvlistArray(items) => (HEADER_LEN as u64 + marker) * items.len() as u64,
        other => datasize(other),
    }
}

/// Bytes of a list's pairs, recursively, as `nvlist_size` counts them (everything but the
/// list's own header and end marker).
fn walk_size(list: &Nvlist) -> u64 {
    list.pairs
        .iter()
        .map(|(name, value)| {
            pair_walk_size(name, value)
                + match value {
                    Value::Nvlist(sub) => walk_size(sub),
                    Value::NvlistArray(items) => items.iter().map(walk_size).sum(),
                    _ => 0,
                }
        })
        .sum()
}

fn descriptor_count(list: &Nvlist) -> u64 {
    list.pairs
        .iter()
        .map(|(_, value)| match value {
            Value::Descriptor(_) => 1,
            Value::DescriptorArray(items) => items.len() as u64,
            Value::Nvlist(sub) => descriptor_count(sub),
            Value::NvlistArray(items) => items.iter().map(descriptor_count).sum(),
            _ => 0,
        })
        .sum()
}

/// The datasize field of a non-NVLIST value.
fn datasize(value: &Value) -> u64 {
    match value {
        Value::Null | Value::NvlistArray(_) | Value::Nvlist(_) => 0,
        Value::Bool(_) => 1,
        Value::Number(_) | Value::Descriptor(_) => 8,
        Value::String(s) => s.len() as u64 + 1,
        Value::Binary(b) => b.len() as u64,
        Value::BoolArray(items) => items.len() as u64,
        Value::NumberArray(items) => 8 * items.len() as u64,
        Value::DescriptorArray(items) => 8 * items.len() as u64,
        Value::StringArray(items) => items.iter().map(|s| s.len() as u64 + 1).sum(),
    }
}

fn nitems(value: &Value) -> u64 {
    match value {
        Value::BoolArray(v) => v.len() as u64,
        Value::NumberArray(v) => v.len() as u64,
        Value::StringArray(v) => v.len() as u64,
        Value::NvlistArray(v) => v.len() as u64,
        Value::DescriptorArray(v) => v.len() as u64,
        _ => 0,
    }
}

fn type_code(value: &Value) -> u8 {
    match value {
        Value::Null => code::NULL,
        Value::Bool(_) => code::BOOL,
        Value::Number(_) => code::NUMBER,
        Value::String(_) => code::STRING,
        Value::Nvlist(_) => code::NVLIST,
        Value::Descriptor(_) => code::DESCRIPTOR,
        Value::Binary(_) => code::BINARY,
        Value::BoolArray(_) => code::BOOL_ARRAY,
        Value::NumberArray(_) => code::NUMBER_ARRAY,
        Value::StringArray(_) => code::STRING_ARRAY,
        Value::NvlistArray(_) => code::NVLIST_ARRAY,
        Value::DescriptorArray(_) => code::DESCRIPTOR_ARRAY,
    }
}

struct Encoder {
    out: Vec<u8>,
    order: ByteOrder,
    total_len: u64,
    total_walk: u64,
    total_descriptors: u64,
    /// `nvlist_size` walk bytes of the pairs written so far.
    walk_done: u64,
    /// Descriptor items written so far.
    descriptors_done: u64,
}

impl Encoder {
    fn list(&mut self, list: &Nvlist) {
        let mut flags = list.flags & FLAG_PUBLIC_MASK;
        if self.order == ByteOrder::Big {
            flags |= FLAG_BIG_ENDIAN;
        }
        let size = self.total_len - (self.out.len() + HEADER_LEN) as u64;
        self.out.extend_from_slice(&[MAGIC, 0, flags]);
        self.u64(self.total_descriptors - self.descriptors_done);
        self.u64(size);
        for (name, value) in &list.pairs {
            self.pair(name, value);
        }
    }

    fn pair(&mut self, name: &[u8], value: &Value) {
        self.walk_done += pair_walk_size(name, value);
        let size = match value {
            Value::Nvlist(sub) if sub.is_empty() => HEADER_LEN as u64,
            Value::Nvlist(_) => HEADER_LEN as u64 + self.total_walk - self.walk_done,
            other => datasize(other),
        };
        self.pair_header(type_code(value), name, size, nitems(value));
        self.data(value);
    }

    fn pair_header(&mut self, code: u8, name: &[u8], datasize: u64, nitems: u64) {
        self.out.push(code);
        self.out
            .extend_from_slice(&self.order.u16_bytes((name.len() + 1) as u16));
        self.u64(datasize);
        self.u64(nitems);
        self.out.extend_from_slice(name);
        self.out.push(0);
    }

    fn data(&mut self, value: &Value) {
        match value {
            Value::Null => {}
            Value::Bool(b) => self.out.push(u8::from(*b)),
            Value::Number(n) => self.u64(*n),
            Value::String(s) => {
                self.out.extend_from_slice(s);
                self.out.push(0);
            }
            Value::Nvlist(sub) => {
                self.list(sub);
                self.pair_header(code::NVLIST_UP, b"", 0, 0);
            }
            Value::Descriptor(_) => {
                self.u64(self.descriptors_done);
                self.descriptors_done += 1;
            }
            Value::Binary(b) => self.out.extend_from_slice(b),
            Value::BoolArray(items) => self.out.extend(items.iter().map(|&b| u8::from(b))),
            Value::NumberArray(items) => items.iter().for_each(|&n| self.u64(n)),
            Value::StringArray(items) => {
                for s in items {
                    self.out.extend_from_slice(s);
                    self.out.push(0);
                }
            }
            Value::NvlistArray(items) => {
                for item in items {
                    self.list(item);
                    self.pair_header(code::NVLIST_ARRAY_NEXT, b"", 0, 0);
                }
            }
            Value::DescriptorArray(items) => {
                for _ in items {
                    self.u64(self.descriptors_done);
                    self.descriptors_done += 1;
                }
            }
        }
    }

    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&self.order.u64_bytes(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn string(s: &str) -> Value {
        Value::String(s.as_bytes().to_vec())
    }

    /// Section 4.5 of the protocol doc, byte for byte.
    fn worked_example() -> (Nvlist, Vec<u8>) {
        let mut nvl = Nvlist::new();
        nvl.push("mtui", Value::Number(1500));
        nvl.push("vmname", string("vm0"));
        nvl.push("open", string("true"));
        let bytes = hex("6c 00 00 00 00 00 00 00 00 00 00 5b 00 00 00 00
             00 00 00 03 05 00 08 00 00 00 00 00 00 00 00 00
             00 00 00 00 00 00 6d 74 75 69 00 dc 05 00 00 00
             00 00 00 04 07 00 04 00 00 00 00 00 00 00 00 00
             00 00 00 00 00 00 76 6d 6e 61 6d 65 00 76 6d 30
             00 04 05 00 05 00 00 00 00 00 00 00 00 00 00 00
             00 00 00 00 6f 70 65 6e 00 74 72 75 65 00");
        (nvl, bytes)
    }

    fn nested_example() -> Nvlist {
        let mut sub = Nvlist::new();
        sub.push("b", string("x"));
        let mut nvl = Nvlist::new();
        nvl.push("a", string("y"));
        nvl.push("sub", Value::Nvlist(sub));
        nvl.push("z", string("w"));
        nvl
    }

    /// A tree with every type, nesting inside arrays and arrays inside nesting.
    fn every_type() -> Nvlist {
        let mut inner = Nvlist::new();
        inner.push("x", string("y"));
        inner.push("n", Value::Null);
        let mut deeper = Nvlist::new();
        deeper.push("inner", Value::Nvlist(inner.clone()));
        deeper.push("empty", Value::Nvlist(Nvlist::new()));
        let mut el1 = Nvlist::new();
        el1.push("i", string("1"));
        el1.push("sub", Value::Nvlist(inner));
        let mut nvl = Nvlist::new();
        nvl.push("null", Value::Null);
        nvl.push("t", Value::Bool(true));
        nvl.push("f", Value::Bool(false));
        nvl.push("num", Value::Number(u64::MAX));
        nvl.push("", string(""));
        nvl.push("deeper", Value::Nvlist(deeper));
        nvl.push("fd", Value::Descriptor(0));
        nvl.push("blob", Value::Binary(vec![0, 0xde, 0xad]));
        nvl.push("barr", Value::BoolArray(vec![true, false]));
        nvl.push("narr", Value::NumberArray(vec![1, 2, u64::MAX]));
        nvl.push(
            "sarr",
            Value::StringArray(vec![b"a".to_vec(), Vec::new(), b"bc".to_vec()]),
        );
        nvl.push(
            "nvarr",
            Value::NvlistArray(vec![Nvlist::new(), el1, Nvlist::with_flags(FLAG_NO_UNIQUE)]),
        );
        nvl.push("fds", Value::DescriptorArray(vec![1, 2]));
        nvl.push("last", Value::Number(7));
        nvl
    }

    fn rule_of(buf: &[u8], fds: usize) -> String {
        decode(buf, fds).expect_err("must be rejected").rule
    }

    #[test]
    fn worked_example_encodes_byte_for_byte() {
        let (nvl, bytes) = worked_example();
        assert_eq!(bytes.len(), 110);
        assert_eq!(encode(&nvl, ByteOrder::Little), bytes);
        assert_eq!(decode(&bytes, 0).unwrap(), nvl);
    }

    #[test]
    fn nested_example_has_libnv_sizes() {
        let nvl = nested_example();
        let bytes = encode(&nvl, ByteOrder::Little);
        assert_eq!(bytes.len(), 150);
        // Pair "a" is 23 bytes; the "sub" pair header follows at 42, its name at 61.
        assert_eq!(bytes[42], code::NVLIST);
        assert_eq!(&bytes[45..53], &65u64.to_le_bytes());
        let nested = Header::parse(&bytes[65..]).unwrap();
        assert_eq!(nested.size, 66);
        assert_eq!((65 + HEADER_LEN) as u64 + nested.size, 150);
        // After the nested header (19) and pair b (23): the UP marker.
        let up = &bytes[107..127];
        assert_eq!(up[..3], [0xff, 0x01, 0x00]);
        assert!(up[3..].iter().all(|&b| b == 0));
        assert_eq!(decode(&bytes, 0).unwrap(), nvl);
    }

    #[test]
    fn every_type_round_trips_in_both_orders() {
        let nvl = every_type();
        for order in [ByteOrder::Little, ByteOrder::Big] {
            let bytes = encode(&nvl, order);
            let header = Header::parse(&bytes).unwrap();
            assert_eq!(header.big_endian(), order == ByteOrder::Big);
            assert_eq!(header.descriptors, 3);
            assert_eq!(header.total_len(), Some(bytes.len() as u64));
            let back = decode(&bytes, 3).unwrap();
            assert_eq!(back, nvl);
            assert_eq!(encode(&back, order), bytes);
        }
        assert_ne!(
            encode(&nvl, ByteOrder::Little),
            encode(&nvl, ByteOrder::Big)
        );
    }

    #[test]
    fn getters_follow_libnv_lookup() {
        let mut nvl = Nvlist::with_flags(FLAG_NO_UNIQUE);
        nvl.push("open", Value::Bool(true));
        nvl.push("open", string("yes"));
        nvl.push("mtui", string("1500"));
        nvl.push("mtui", Value::Number(9000));
        assert_eq!(nvl.get("open"), Some(&Value::Bool(true)));
        assert_eq!(nvl.get_string("open"), Some(&b"yes"[..]));
        assert_eq!(nvl.get_string("OPEN"), None);
        assert_eq!(nvl.get_number("mtui"), Some(9000));
        assert_eq!(nvl.get_number("open"), None);
        let mut folded = Nvlist::with_flags(FLAG_IGNORE_CASE);
        folded.push("VmName", string("a"));
        assert_eq!(folded.get_string("vmname"), Some(&b"a"[..]));
    }

    #[test]
    fn header_rules() {
        let (_, good) = worked_example();
        let mut b = good.clone();
        b[0] = 0x6d;
        assert!(rule_of(&b, 0).contains("magic"));
        let mut b = good.clone();
        b[2] = 0x04;
        assert_eq!(decode(&b, 0).unwrap_err().offset, 2);
        let mut b = good.clone();
        b.push(0);
        assert!(rule_of(&b, 0).contains("size"));
        assert!(rule_of(&good[..109], 0).contains("size"));
        assert!(rule_of(&good[..10], 0).contains("truncated"));
        assert!(Header::parse(&good[..18]).is_err());
        let mut b = good.clone();
        b[3] = 1; // one descriptor announced, none received
        assert!(rule_of(&b, 0).contains("descriptors"));
        assert!(decode(&b, 1).is_ok());
        assert!(
            decode(&good, 1).is_err(),
            "a received descriptor must be announced"
        );
    }

    #[test]
    fn public_flags_are_decoded() {
        let mut nvl = Nvlist::with_flags(FLAG_IGNORE_CASE | FLAG_NO_UNIQUE);
        nvl.push("a", Value::Null);
        nvl.push("A", Value::Null);
        let back = decode(&encode(&nvl, ByteOrder::Little), 0).unwrap();
        assert_eq!(back.flags, FLAG_IGNORE_CASE | FLAG_NO_UNIQUE);
    }

    /// Builds `{name: value}` and returns the buffer plus the offset of the pair header.
    fn single(name: &str, value: Value) -> Vec<u8> {
        let mut nvl = Nvlist::new();
        nvl.push(name, value);
        encode(&nvl, ByteOrder::Little)
    }

    const PAIR: usize = HEADER_LEN; // offset of the first pair header
    const DATASIZE: usize = PAIR + 3;
    const NITEMS: usize = PAIR + 11;

    /// Rewrites the size field of the header at `at` after the buffer was shortened.
    fn fix_size(b: &mut [u8], at: usize) {
        let size = (b.len() - at - HEADER_LEN) as u64;
        set_u64(b, at + 11, size);
    }

    fn set_u64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn pair_header_rules() {
        let good = single("key", Value::Null);
        for bad_type in [0u8, 13, 100, 253] {
            let mut b = good.clone();
            b[PAIR] = bad_type;
            assert!(rule_of(&b, 0).contains("unknown pair type"), "{bad_type}");
        }
        let mut b = good.clone();
        b[PAIR + 1] = 0; // namesize 0
        assert!(rule_of(&b, 0).contains("namesize"));
        let mut b = good.clone();
        b[PAIR + 1] = 3; // "ke" + 'y' where the NUL should be
        assert!(rule_of(&b, 0).contains("NUL"));
        let mut b = good.clone();
        b[PAIR + HEADER_LEN + 1] = 0; // "k\0y\0": NUL inside the name
        assert!(rule_of(&b, 0).contains("NUL"));
        let mut b = good.clone();
        set_u64(&mut b, DATASIZE, 1);
        assert!(rule_of(&b, 0).contains("datasize"));
        // The longest legal name and one beyond it.
        let long = "n".repeat(NAME_MAX - 1);
        assert!(decode(&single(&long, Value::Null), 0).is_ok());
        let too_long = "n".repeat(NAME_MAX);
        assert!(rule_of(&single(&too_long, Value::Null), 0).contains("namesize"));
        // The empty name is legal.
        assert!(decode(&single("", Value::Null), 0).is_ok());
    }

    #[test]
    fn scalar_rules() {
        let mut b = single("b", Value::Bool(true));
        *b.last_mut().unwrap() = 2;
        assert!(rule_of(&b, 0).contains("0 or 1"));
        let mut b = single("s", string("ab"));
        *b.last_mut().unwrap() = b'c';
        assert!(rule_of(&b, 0).contains("NUL"));
        let mut b = single("s", string("ab"));
        let n = b.len();
        b[n - 2] = 0; // "a\0\0"
        assert!(rule_of(&b, 0).contains("NUL"));
        let mut b = single("s", string("ab"));
        b.truncate(b.len() - 3);
        set_u64(&mut b, DATASIZE, 0);
        fix_size(&mut b, 0);
        assert!(rule_of(&b, 0).contains("datasize 0"));
        let mut b = single("x", Value::Binary(vec![1]));
        b.pop();
        set_u64(&mut b, DATASIZE, 0);
        fix_size(&mut b, 0);
        assert!(rule_of(&b, 0).contains("BINARY"));
        let mut b = single("n", Value::Number(1));
        b.pop();
        set_u64(&mut b, DATASIZE, 7);
        fix_size(&mut b, 0);
        assert!(rule_of(&b, 0).contains("needs 8"));
        let mut b = single("z", Value::Null);
        b.push(0);
        set_u64(&mut b, DATASIZE, 1);
        fix_size(&mut b, 0);
        assert!(rule_of(&b, 0).contains("needs 0"));
    }

    #[test]
    fn descriptor_rules() {
        // The encoder numbers descriptors in wire order; other indices are patched in.
        fn with_indices(value: Value, indices: &[i64]) -> Vec<u8> {
            let mut b = single("fd", value);
            let start = b.len() - 8 * indices.len();
            for (i, idx) in indices.iter().enumerate() {
                b[start + 8 * i..start + 8 * i + 8].copy_from_slice(&idx.to_le_bytes());
            }
            b
        }
        let b = single("fd", Value::Descriptor(7));
        assert_eq!(
            decode(&b, 1).unwrap().get("fd"),
            Some(&Value::Descriptor(0))
        );
        let b = with_indices(Value::Descriptor(0), &[1]);
        assert!(rule_of(&b, 1).contains("descriptor index 1"));
        let mut b = with_indices(Value::Descriptor(0), &[-1]);
        b[3] = 1;
        assert!(rule_of(&b, 1).contains("descriptor index -1"));
        let b = with_indices(Value::DescriptorArray(vec![0; 3]), &[0, 1, 1]);
        assert_eq!(
            decode(&b, 3).unwrap().get("fd"),
            Some(&Value::DescriptorArray(vec![0, 1, 1]))
        );
        let b = with_indices(Value::DescriptorArray(vec![0; 2]), &[0, 5]);
        assert!(rule_of(&b, 2).contains("descriptor index 5"));
        // Whatever indices a list held, encoding is a fixed point after one round trip.
        let once = encode(
            &decode(
                &with_indices(Value::DescriptorArray(vec![0; 3]), &[2, 2, 0]),
                3,
            )
            .unwrap(),
            ByteOrder::Big,
        );
        let twice = encode(&decode(&once, 3).unwrap(), ByteOrder::Big);
        assert_eq!(once, twice);
    }

    #[test]
    fn array_rules() {
        let good = single("a", Value::NumberArray(vec![1, 2]));
        let mut b = good.clone();
        set_u64(&mut b, NITEMS, 3);
        assert!(rule_of(&b, 0).contains("not 3 items"));
        let mut b = good.clone();
        set_u64(&mut b, NITEMS, (1u64 << 61) + 2); // 8 * n wraps to 16
        assert!(rule_of(&b, 0).contains("overflows"));
        let mut b = good.clone();
        set_u64(&mut b, NITEMS, 0);
        assert!(rule_of(&b, 0).contains("no items"));
        let mut b = single("b", Value::BoolArray(vec![true, false]));
        *b.last_mut().unwrap() = 7;
        assert!(rule_of(&b, 0).contains("0 or 1"));

        let strings = single("s", Value::StringArray(vec![b"ab".to_vec(), b"c".to_vec()]));
        assert!(decode(&strings, 0).is_ok());
        let mut b = strings.clone();
        set_u64(&mut b, NITEMS, 1); // slack after the first item
        assert!(rule_of(&b, 0).contains("leaves"));
        let mut b = strings.clone();
        set_u64(&mut b, NITEMS, 3);
        assert!(rule_of(&b, 0).contains("fewer"));
        let mut b = strings.clone();
        set_u64(&mut b, NITEMS, u64::MAX);
        assert!(rule_of(&b, 0).contains("fewer"));
        let mut b = strings.clone();
        *b.last_mut().unwrap() = b'x';
        assert!(rule_of(&b, 0).contains("fewer"));
    }

    #[test]
    fn nvlist_array_rules() {
        let good = single("a", Value::NvlistArray(vec![Nvlist::new(), Nvlist::new()]));
        assert!(decode(&good, 0).is_ok());
        let mut b = good.clone();
        set_u64(&mut b, NITEMS, 0);
        assert!(rule_of(&b, 0).contains("no items"));
        let mut b = good.clone();
        set_u64(&mut b, NITEMS, u64::MAX / 2);
        assert!(rule_of(&b, 0).contains("cannot fit"));
        let mut b = good.clone();
        set_u64(&mut b, NITEMS, 3); // fits the 19*n bound, but the third header is missing
        assert!(decode(&b, 0).is_err());
        let mut b = good.clone();
        set_u64(&mut b, DATASIZE, 1);
        assert!(rule_of(&b, 0).contains("needs 0"));
    }

    #[test]
    fn marker_rules() {
        // NVLIST_UP / NEXT at the top level.
        for marker in [code::NVLIST_UP, code::NVLIST_ARRAY_NEXT] {
            let mut b = single("", Value::Null);
            b[PAIR] = marker;
            assert!(rule_of(&b, 0).contains("top-level"), "{marker}");
        }
        let nested = encode(&nested_example(), ByteOrder::Little);
        // Marker with a name byte / datasize / the wrong kind.
        let mut b = nested.clone();
        b[107] = code::NVLIST_ARRAY_NEXT;
        assert!(rule_of(&b, 0).contains("expected NVLIST_UP"));
        let mut b = nested.clone();
        b[107 + 3] = 1;
        assert!(rule_of(&b, 0).contains("marker must"));
        let mut b = nested.clone();
        b[107 + 11] = 1;
        assert!(rule_of(&b, 0).contains("marker must"));
        // Nested list whose end marker is missing: buffer ends inside it.
        let mut sub = Nvlist::new();
        sub.push("b", string("x"));
        let mut nvl = Nvlist::new();
        nvl.push("sub", Value::Nvlist(sub));
        let mut b = encode(&nvl, ByteOrder::Little);
        b.truncate(b.len() - 20);
        fix_size(&mut b, 0);
        let at = HEADER_LEN + HEADER_LEN + 4;
        fix_size(&mut b, at);
        assert!(rule_of(&b, 0).contains("inside a nested"));
    }

    #[test]
    fn nvlist_pair_datasize_is_only_a_hint() {
        let nested = encode(&nested_example(), ByteOrder::Little);
        let mut b = nested.clone();
        set_u64(&mut b, 42 + 3, 1);
        assert!(decode(&b, 0).is_ok());
        set_u64(&mut b, 42 + 3, 0);
        assert!(rule_of(&b, 0).contains("NVLIST with datasize 0"));
        set_u64(&mut b, 42 + 3, 86); // more than the 85 bytes left
        assert!(rule_of(&b, 0).contains("exceeds"));
    }

    #[test]
    fn uniqueness_follows_each_lists_flags() {
        let mut nvl = Nvlist::new();
        nvl.push("k", Value::Null);
        nvl.push("k", Value::Null);
        let b = encode(&nvl, ByteOrder::Little);
        let err = decode(&b, 0).unwrap_err();
        assert!(err.rule.contains("duplicate"));
        assert_eq!(err.offset, HEADER_LEN + 21);

        nvl.flags = FLAG_NO_UNIQUE;
        assert!(decode(&encode(&nvl, ByteOrder::Little), 0).is_ok());

        let mut folded = Nvlist::with_flags(FLAG_IGNORE_CASE);
        folded.push("Key", Value::Null);
        folded.push("kEY", Value::Null);
        assert!(rule_of(&encode(&folded, ByteOrder::Little), 0).contains("duplicate"));
        let mut exact = Nvlist::new();
        exact.push("Key", Value::Null);
        exact.push("kEY", Value::Null);
        assert!(decode(&encode(&exact, ByteOrder::Little), 0).is_ok());

        // The nested list's own flag counts, not the parent's.
        let mut top = Nvlist::with_flags(FLAG_NO_UNIQUE);
        top.push("sub", Value::Nvlist(exact.clone()));
        let mut dup = Nvlist::new();
        dup.push("x", Value::Null);
        dup.push("x", Value::Null);
        top.push("sub2", Value::Nvlist(dup.clone()));
        assert!(rule_of(&encode(&top, ByteOrder::Little), 0).contains("duplicate"));
        dup.flags = FLAG_NO_UNIQUE;
        let mut top = Nvlist::new();
        top.push("sub", Value::Nvlist(dup));
        assert!(decode(&encode(&top, ByteOrder::Little), 0).is_ok());
    }

    fn nest(levels: usize) -> Nvlist {
        let mut nvl = Nvlist::new();
        nvl.push("leaf", Value::Null);
        for _ in 0..levels {
            let mut up = Nvlist::new();
            up.push("n", Value::Nvlist(nvl));
            nvl = up;
        }
        nvl
    }

    #[test]
    fn depth_is_bounded() {
        let ok = nest(MAX_DEPTH);
        assert_eq!(decode(&encode(&ok, ByteOrder::Little), 0).unwrap(), ok);
        let deep = encode(&nest(MAX_DEPTH + 1), ByteOrder::Big);
        assert!(rule_of(&deep, 0).contains("deeper"));
        // Arrays count as levels too.
        let mut nvl = Nvlist::new();
        for _ in 0..=MAX_DEPTH {
            let mut up = Nvlist::new();
            up.push("a", Value::NvlistArray(vec![nvl]));
            nvl = up;
        }
        assert!(rule_of(&encode(&nvl, ByteOrder::Little), 0).contains("deeper"));
    }

    #[test]
    fn every_prefix_is_rejected_without_panic() {
        let bytes = encode(&every_type(), ByteOrder::Big);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], 3).is_err(), "prefix {len}");
        }
    }
}
