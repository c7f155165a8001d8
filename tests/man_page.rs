//! The man page, `bhyve-slirp-helper.8`, kept true: its list of bhyve keys is the README's key
//! table, its list of options is what `--help` prints, its list of counters is the fields of a
//! real counters line (the helper's answer to SIGUSR1), each exactly, and `mandoc -Tlint`
//! finds nothing at warning level or above.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::skip::skip;
use common::*;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bhyve-slirp-helper.8");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

fn page() -> String {
    std::fs::read_to_string(PAGE).expect("bhyve-slirp-helper.8 at the repository root")
}

/// The source of the page's section `name`, from its `.Sh` line to the next one.
fn section<'a>(page: &'a str, name: &str) -> &'a str {
    let head = format!(".Sh {name}\n");
    let start = page
        .find(&head)
        .unwrap_or_else(|| panic!("no '{}' in the page", head.trim_end()));
    let rest = &page[start + head.len()..];
    &rest[..rest.find("\n.Sh ").unwrap_or(rest.len())]
}

/// The first argument of each `.It <macro> X` line of `text`: the names the lists document.
fn items<'a>(text: &'a str, mac: &str) -> BTreeSet<&'a str> {
    let prefix = format!(".It {mac} ");
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str())?.split_whitespace().next())
        .collect()
}

fn diff(what: &str, page: &BTreeSet<&str>, truth: &BTreeSet<&str>, from: &str) -> String {
    format!(
        "{what}: missing from the page: {:?}; in the page but not in {from}: {:?}",
        truth.difference(page).collect::<Vec<_>>(),
        page.difference(truth).collect::<Vec<_>>()
    )
}

#[test]
fn keys_are_the_readmes_key_table() {
    let readme = std::fs::read_to_string(README).expect("README.md");
    let table = readme
        .split("\n| key | meaning |\n")
        .nth(1)
        .expect("the key table ('| key | meaning |') in README.md");
    // A row may name several keys: "| `host`, `dhcpstart`, `dns` | …".
    let readme_keys: BTreeSet<&str> = table
        .lines()
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| ")?.split(" |").next())
        .flat_map(|cell| {
            cell.split(", ")
                .filter_map(|k| k.strip_prefix('`')?.strip_suffix('`'))
        })
        .collect();
    for setting in slirp_helper::config::SETTINGS {
        assert!(
            readme_keys.contains(setting.key),
            "{} (an option and a key) is not in README's key table",
            setting.key
        );
    }
    assert!(readme_keys.contains("hostfwd"), "{readme_keys:?}");

    let page = page();
    // An item may name several keys: ".It Cm host Ns = Ns Ar addr , Cm dhcpstart …".
    let page_keys: BTreeSet<&str> = section(&page, "CONFIGURATION KEYS")
        .lines()
        .filter(|l| l.starts_with(".It Cm "))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .windows(2)
                .filter(|w| w[0] == "Cm")
                .map(|w| w[1])
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        page_keys,
        readme_keys,
        "{}",
        diff("bhyve keys", &page_keys, &readme_keys, "README")
    );
}

/// `-h, --help` in the help text gives `-h` and `--help`; the page writes them `Fl h` and
/// `Fl -help`.
#[test]
fn options_are_the_ones_help_lists() {
    let out = Command::new(HELPER)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    let listed: BTreeSet<String> = help
        .lines()
        .filter(|l| l.starts_with("  -"))
        // The option column ends at the first gap of two spaces: "  --batch <n>    frames…",
        // "  --host A, --dhcpstart A, --dns A".
        .flat_map(|l| {
            l.trim_start()
                .split("  ")
                .next()
                .unwrap_or("")
                .split_whitespace()
                .filter(|w| w.starts_with('-'))
                .map(|w| w.trim_end_matches(',').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    assert!(
        listed.contains("-S") && listed.contains("--version"),
        "{listed:?}"
    );

    let page = page();
    let documented: BTreeSet<String> = section(&page, "OPTIONS")
        .lines()
        .filter(|l| l.starts_with(".It "))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .windows(2)
                .filter(|w| w[0] == "Fl")
                .map(|w| format!("-{}", w[1]))
                .collect::<Vec<_>>()
        })
        .collect();
    let documented: BTreeSet<&str> = documented.iter().map(String::as_str).collect();
    assert_eq!(
        documented,
        listed,
        "{}",
        diff("options", &documented, &listed, "--help")
    );
}

/// With the default poller (epoll on Linux), a capture file and the control socket on, the
/// line has every field, `poll_*`, `pcap_*` and `api_*` included.
#[test]
fn counters_are_the_fields_of_a_real_line() {
    let capture = std::env::temp_dir().join(format!("man-page-{}.pcap", std::process::id()));
    let dir = std::env::temp_dir().join(format!("bsh-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("api.sock");
    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(restricted_config()),
        args: vec![
            "--pcap".into(),
            capture.to_str().unwrap().into(),
            "--api".into(),
            api.to_str().unwrap().into(),
        ],
        ..Spawn::default()
    });
    // Up and serving first: a SIGUSR1 that arrives before the helper has installed its
    // handlers takes the default action (the process ends), as for any program.
    assert!(
        bhyve.resolve(HOST_IP, STEP).is_some(),
        "helper not answering ARP; stderr:\n{}",
        bhyve.stderr()
    );
    bhyve
        .stats_now(STEP)
        .unwrap_or_else(|| panic!("no counters line on SIGUSR1; stderr:\n{}", bhyve.stderr()));
    let stderr = bhyve.stderr();
    drop(bhyve);
    let _ = std::fs::remove_dir_all(&dir);
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("rx_runt="))
        .expect("the counters line");
    let fields: BTreeSet<&str> = line
        .split_whitespace()
        .filter_map(|kv| Some(kv.split_once('=')?.0))
        .collect();
    assert!(
        fields.contains("poller")
            && fields.contains("poll_adds")
            && fields.contains("pcap_frames")
            && fields.contains("api_requests"),
        "{line}"
    );
    let _ = std::fs::remove_file(&capture);

    let page = page();
    let documented = items(section(&page, "COUNTERS"), "Va");
    assert_eq!(
        documented,
        fields,
        "{}\nline: {line}",
        diff("counters", &documented, &fields, "the line")
    );
}

#[test]
fn mandoc_lint_is_clean() {
    let out = match Command::new("mandoc")
        .args(["-Tlint", "-Wwarning", PAGE])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            skip(
                "mandoc_lint_is_clean",
                &format!("mandoc cannot be run ({e}); apt-get install mandoc"),
            );
            return;
        }
    };
    assert!(
        out.status.success(),
        "mandoc -Tlint -Wwarning: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
