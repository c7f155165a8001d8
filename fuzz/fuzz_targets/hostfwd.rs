//! `hostfwd` grammar: `parse_rules` never panics, and accepted rules printed back in the
//! bhyve grammar (`Display`, joined with `;`) parse to the same rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slirp_helper::config::parse_rules;

fuzz_target!(|data: &[u8]| {
    // bhyve config values reach the parser as &str only after the UTF-8 check in
    // `BhyveConfig::string_option`; lossy conversion keeps the mutator's non-UTF-8 inputs useful.
    let value = String::from_utf8_lossy(data);
    let Ok(rules) = parse_rules(&value) else {
        return;
    };
    assert!(!rules.is_empty(), "accepted {value:?} as no rules");
    assert_eq!(
        rules.len(),
        value.split(';').count(),
        "rule count differs from the ';'-separated parts of {value:?}"
    );
    let shown = rules
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(";");
    match parse_rules(&shown) {
        Ok(again) => assert_eq!(again, rules, "{value:?} -> {shown:?} changed the rules"),
        Err(e) => panic!("{value:?} displayed as {shown:?}, which does not parse: {e}"),
    }
});
