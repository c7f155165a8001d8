//! A setting's value, whichever way it came: a command-line option (`--coalesce maybe`) or a
//! key of bhyve's device node (`coalesce=maybe`). One parser per kind of value, with the
//! setting's name passed in, so that one mistake reads the same both ways (issue 17):
//! `--coalesce: 'maybe' is not a boolean (…)` and `coalesce: 'maybe' is not a boolean (…)`.
//!
//! Owns: the wording of a bad value. Knows no setting by name; callers pass the name in.

use std::fmt;

/// What a setting takes; the end of the message for a value that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// bhyve's boolean spellings (`get_config_bool`).
    Boolean,
    /// A plain decimal number from `min` to `max`.
    Number { min: u64, max: u64 },
    /// One of these names (what this system has).
    OneOf(&'static [&'static str]),
    /// A descriptor number.
    Descriptor,
    /// A path; an empty one names nothing (`dlopen("")` is the program itself).
    Path,
    /// A dotted-quad IPv4 address.
    Ipv4Addr,
    /// An IPv6 address in text form (RFC 4291), no brackets.
    Ipv6Addr,
    /// `ADDR/LEN`, `LEN` from `min` to `max`.
    Ipv4Network { min: u8, max: u8 },
    /// `ADDR/LEN` for IPv6, `LEN` from `min` to `max`.
    Ipv6Network { min: u8, max: u8 },
    /// A DNS name of at most `max` characters.
    DomainName { max: usize },
    /// At most `max` DNS names separated by `;`.
    DomainNames { max: usize },
}

/// A value its setting does not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The setting as the user wrote it: `--batch` (an option) or `batch` (a bhyve key).
    pub setting: &'static str,
    /// The value as given (bytes that are not UTF-8 as `\xNN`).
    pub value: String,
    pub expected: Expected,
}

impl ValueError {
    pub fn new(setting: &'static str, value: &str, expected: Expected) -> ValueError {
        ValueError {
            setting,
            value: value.to_owned(),
            expected,
        }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.value.escape_debug();
        write!(f, "{}: '{value}' ", self.setting)?;
        match self.expected {
            Expected::Boolean => {
                f.write_str("is not a boolean (use on/off, true/false, yes/no or 1/0)")
            }
            Expected::Number { min, max } => write!(f, "is not a number from {min} to {max}"),
            Expected::OneOf(names) => {
                f.write_str("is not available here (use ")?;
                for (i, name) in names.iter().enumerate() {
                    match i {
                        0 => {}
                        i if i + 1 == names.len() => f.write_str(" or ")?,
                        _ => f.write_str(", ")?,
                    }
                    f.write_str(name)?;
                }
                f.write_str(")")
            }
            Expected::Descriptor => f.write_str("is not a descriptor number"),
            Expected::Path => f.write_str("is not a path"),
            Expected::Ipv4Addr => f.write_str("is not an IPv4 address"),
            Expected::Ipv6Addr => f.write_str("is not an IPv6 address"),
            Expected::Ipv4Network { min, max } => write!(
                f,
                "is not an IPv4 network ADDR/LEN with LEN from {min} to {max}"
            ),
            Expected::Ipv6Network { min, max } => write!(
                f,
                "is not an IPv6 prefix ADDR/LEN with LEN from {min} to {max}"
            ),
            Expected::DomainName { max } => write!(
                f,
                "is not a domain name (letters, digits and '-' in dot-separated labels, \
                 at most {max} characters)"
            ),
            Expected::DomainNames { max } => write!(
                f,
                "is not a list of domain names separated by ';' (at most {max})"
            ),
        }
    }
}

impl std::error::Error for ValueError {}

/// bhyve's `get_config_bool` spellings: `true/on/yes/1`, `false/off/no/0`, any case.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    let any = |words: [&str; 3]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
    if v == "1" || any(["true", "on", "yes"]) {
        Some(true)
    } else if v == "0" || any(["false", "off", "no"]) {
        Some(false)
    } else {
        None
    }
}

/// A boolean setting, in bhyve's spellings.
pub fn parse_switch(setting: &'static str, text: &str) -> Result<bool, ValueError> {
    parse_bool(text).ok_or_else(|| ValueError::new(setting, text, Expected::Boolean))
}

/// A plain decimal number from `min` to `max`: digits only (`str::parse` would also take a
/// leading `+`).
pub(crate) fn parse_number(
    setting: &'static str,
    text: &str,
    min: u64,
    max: u64,
) -> Result<u64, ValueError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u64>() {
        Ok(n) if digits && (min..=max).contains(&n) => Ok(n),
        _ => Err(ValueError::new(
            setting,
            text,
            Expected::Number { min, max },
        )),
    }
}

/// One of `names`.
pub(crate) fn parse_name(
    setting: &'static str,
    text: &str,
    names: &'static [&'static str],
) -> Result<&'static str, ValueError> {
    names
        .iter()
        .copied()
        .find(|&name| name == text)
        .ok_or_else(|| ValueError::new(setting, text, Expected::OneOf(names)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_mistake_reads_the_same_as_an_option_and_as_a_key() {
        assert_eq!(
            parse_switch("--coalesce", "maybe").unwrap_err().to_string(),
            "--coalesce: 'maybe' is not a boolean (use on/off, true/false, yes/no or 1/0)"
        );
        assert_eq!(
            parse_switch("coalesce", "maybe").unwrap_err().to_string(),
            "coalesce: 'maybe' is not a boolean (use on/off, true/false, yes/no or 1/0)"
        );
        assert_eq!(
            parse_number("--batch", "0", 1, 256)
                .unwrap_err()
                .to_string(),
            "--batch: '0' is not a number from 1 to 256"
        );
        assert_eq!(
            parse_number("batch", "0", 1, 256).unwrap_err().to_string(),
            "batch: '0' is not a number from 1 to 256"
        );
        const NAMES: &[&str] = &["poll", "epoll"];
        assert_eq!(
            parse_name("--poller", "kqueue", NAMES)
                .unwrap_err()
                .to_string(),
            "--poller: 'kqueue' is not available here (use poll or epoll)"
        );
        assert_eq!(
            parse_name("poller", "kqueue", NAMES)
                .unwrap_err()
                .to_string(),
            "poller: 'kqueue' is not available here (use poll or epoll)"
        );
    }

    #[test]
    fn lists_read_as_a_sentence_and_odd_bytes_are_escaped() {
        let three = ValueError::new("x", "a\n'", Expected::OneOf(&["p", "q", "r"]));
        assert_eq!(
            three.to_string(),
            "x: 'a\\n\\'' is not available here (use p, q or r)"
        );
        let one = ValueError::new("x", "", Expected::OneOf(&["p"]));
        assert_eq!(one.to_string(), "x: '' is not available here (use p)");
        assert_eq!(
            ValueError::new("-S", "x", Expected::Descriptor).to_string(),
            "-S: 'x' is not a descriptor number"
        );
        assert_eq!(
            ValueError::new("--libslirp", "", Expected::Path).to_string(),
            "--libslirp: '' is not a path"
        );
    }

    #[test]
    fn numbers_are_plain_decimal_within_bounds() {
        for ok in ["1", "64", "256", "0064"] {
            assert!(parse_number("n", ok, 1, 256).is_ok(), "{ok}");
        }
        for bad in ["0", "257", "x", "+1", "", " 1", "99999999999999999999999"] {
            assert!(parse_number("n", bad, 1, 256).is_err(), "{bad}");
        }
    }

    #[test]
    fn bhyve_boolean_spellings() {
        for (text, want) in [("on", true), ("OFF", false), ("1", true), ("No", false)] {
            assert_eq!(parse_switch("s", text), Ok(want), "{text}");
        }
        for bad in ["", "maybe", "2", "t", "yes ", "01", "truee"] {
            assert!(parse_switch("s", bad).is_err(), "{bad}");
        }
    }
}
