//! The config path end to end: the libnv vectors made by the real FreeBSD code
//! (`../shared/testdata/nvlist/`, checked against `expected.json`), `recv_config` over real
//! SOCK_SEQPACKET socket pairs, and a no-panic sweep over mutated vectors.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recv, send, sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use slirp_helper::cli;
use slirp_helper::config::nvlist::{decode, encode, ByteOrder, Header, Nvlist, Value};
use slirp_helper::config::recv::{recv_config, RecvError, MAX_CONFIG_LEN};
use slirp_helper::config::BhyveConfig;

// ---------------------------------------------------------------------------------------------
// Vectors

fn vector_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/nvlist"
    ))
}

fn vectors() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(vector_dir())
        .expect("test vectors in ../shared/testdata/nvlist")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 10,
        "expected the shared vectors, found {}",
        out.len()
    );
    out
}

/// Just enough JSON for expected.json: objects, strings, numbers, booleans, null.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Obj(BTreeMap<String, Json>),
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) {
        self.ws();
        assert_eq!(
            self.s.get(self.i),
            Some(&b),
            "JSON: expected {:?} at {}",
            b as char,
            self.i
        );
        self.i += 1;
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => self.object(),
            b'"' => Json::Str(self.string()),
            b't' => self.word("true", Json::Bool(true)),
            b'f' => self.word("false", Json::Bool(false)),
            b'n' => self.word("null", Json::Null),
            _ => self.number(),
        }
    }

    fn word(&mut self, w: &str, v: Json) -> Json {
        assert!(self.s[self.i..].starts_with(w.as_bytes()));
        self.i += w.len();
        v
    }

    fn number(&mut self) -> Json {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|b| b"-+.eE0123456789".contains(b))
        {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
        Json::Num(text.parse().expect("JSON number"))
    }

    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => return out,
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    out.push(match e {
                        b'n' => '\n',
                        b't' => '\t',
                        other => other as char,
                    });
                }
                _ => out.push(c as char),
            }
        }
    }

    fn object(&mut self) -> Json {
        self.eat(b'{');
        let mut map = BTreeMap::new();
        self.ws();
        if self.s[self.i] == b'}' {
            self.i += 1;
            return Json::Obj(map);
        }
        loop {
            self.ws();
            let key = self.string();
            self.eat(b':');
            map.insert(key, self.value());
            self.ws();
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b',' => continue,
                b'}' => return Json::Obj(map),
                _ => panic!("JSON: bad object at {}", self.i),
            }
        }
    }
}

fn expected() -> BTreeMap<String, Json> {
    let text = std::fs::read(vector_dir().join("expected.json")).unwrap();
    match (JsonParser { s: &text, i: 0 }).value() {
        Json::Obj(map) => map,
        other => panic!("expected.json is not an object: {other:?}"),
    }
}

fn field<'a>(entry: &'a Json, key: &str) -> &'a Json {
    match entry {
        Json::Obj(map) => map.get(key).unwrap_or_else(|| panic!("no {key}")),
        _ => panic!("entry is not an object"),
    }
}

fn opt_str(v: Option<&str>) -> Json {
    v.map_or(Json::Null, |s| Json::Str(s.to_owned()))
}

/// What the helper makes of one vector, in expected.json's terms: accepted by libnv, exit
/// status, the decoded list and, when the helper would run, its config.
fn outcome(bytes: &[u8]) -> (bool, i64, Option<Nvlist>, Option<BhyveConfig>) {
    let nvl = Header::parse(bytes).and_then(|h| decode(bytes, h.descriptors as usize));
    let Ok(nvl) = nvl else {
        return (false, 1, None, None);
    };
    match BhyveConfig::from_nvlist(&nvl) {
        Ok(config) => (true, 0, Some(nvl), Some(config)),
        Err(e) => (true, i64::from(e.exit_code()), Some(nvl), None),
    }
}

#[test]
fn vectors_match_expected_json() {
    let expected = expected();
    let vectors = vectors();
    assert_eq!(expected.len(), vectors.len(), "every vector has an entry");
    for (name, bytes) in &vectors {
        let want = expected
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in expected.json"));
        assert_eq!(
            field(want, "size"),
            &Json::Num(bytes.len() as f64),
            "{name}"
        );
        let (accepted, exit, nvl, config) = outcome(bytes);
        assert_eq!(
            field(want, "accept"),
            &Json::Bool(accepted),
            "{name}: accept"
        );
        assert_eq!(field(want, "exit"), &Json::Num(exit as f64), "{name}: exit");
        let Some(c) = config else {
            // The C helper reads vmname (process title) before it gives up on `open`.
            let vmname = nvl.as_ref().and_then(|n| n.get_string("vmname"));
            let vmname = vmname.map(|v| String::from_utf8(v.to_vec()).unwrap());
            assert_eq!(field(want, "vmname"), &opt_str(vmname.as_deref()), "{name}");
            for key in ["hostfwd", "open", "restricted", "mtui"] {
                assert_eq!(field(want, key), &Json::Null, "{name}: {key}");
            }
            continue;
        };
        assert_eq!(
            field(want, "vmname"),
            &opt_str(c.vmname.as_deref()),
            "{name}"
        );
        let hostfwd = c.string_option("hostfwd").unwrap();
        assert_eq!(field(want, "hostfwd"), &opt_str(hostfwd), "{name}");
        assert_eq!(hostfwd.is_some(), !c.hostfwd.is_empty(), "{name}");
        assert_eq!(field(want, "open"), &Json::Bool(c.open), "{name}");
        assert_eq!(field(want, "restricted"), &Json::Bool(!c.open), "{name}");
        let mtui = c.mtui.map_or(Json::Null, |m| Json::Num(f64::from(m)));
        assert_eq!(field(want, "mtui"), &mtui, "{name}");
    }
}

#[test]
fn accepted_vectors_re_encode_identically() {
    let mut accepted = 0;
    for (name, bytes) in vectors() {
        let Ok(header) = Header::parse(&bytes) else {
            continue;
        };
        let Ok(nvl) = decode(&bytes, header.descriptors as usize) else {
            continue;
        };
        let order = if header.big_endian() {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        };
        assert_eq!(encode(&nvl, order), bytes, "{name}");
        // The same list from a big-endian sender decodes to the same thing.
        let swapped = encode(&nvl, ByteOrder::Big);
        assert_eq!(
            decode(&swapped, header.descriptors as usize).unwrap(),
            nvl,
            "{name}"
        );
        accepted += 1;
    }
    assert_eq!(accepted, 7);
}

#[test]
fn e_robust_holds_every_type() {
    let bytes = std::fs::read(vector_dir().join("e_robust.bin")).unwrap();
    let nvl = decode(&bytes, 0).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    fn walk(nvl: &Nvlist, seen: &mut std::collections::BTreeSet<&'static str>) {
        for (_, v) in nvl.pairs() {
            seen.insert(v.type_name());
            match v {
                Value::Nvlist(sub) => walk(sub, seen),
                Value::NvlistArray(items) => items.iter().for_each(|i| walk(i, seen)),
                _ => {}
            }
        }
    }
    walk(&nvl, &mut seen);
    // Descriptors cannot be packed without sending fds, so the vector has none.
    for t in [
        "NULL",
        "BOOL",
        "NUMBER",
        "STRING",
        "NVLIST",
        "BINARY",
        "BOOL ARRAY",
    ] {
        assert!(seen.contains(t), "{t} missing from {seen:?}");
    }
    for t in ["NUMBER ARRAY", "STRING ARRAY", "NVLIST ARRAY"] {
        assert!(seen.contains(t), "{t} missing from {seen:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// recv_config over real sockets

const TIMEOUT: Duration = Duration::from_secs(5);

/// (helper's end, bhyve's end), non-blocking like bhyve's pair.
fn pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

fn send_record(fd: &OwnedFd, bytes: &[u8]) {
    assert_eq!(
        send(fd.as_raw_fd(), bytes, MsgFlags::MSG_EOR).unwrap(),
        bytes.len()
    );
}

fn send_fds(fd: &OwnedFd, fds: &[i32]) {
    let iov = [std::io::IoSlice::new(&[0u8])];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<UnixAddr>(fd.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
}

fn typical() -> Vec<u8> {
    std::fs::read(vector_dir().join("b_typical.bin")).unwrap()
}

fn with_descriptors(n: i64) -> Vec<u8> {
    let mut nvl = Nvlist::new();
    nvl.push("vmname", Value::String(b"vm0".to_vec()));
    for i in 0..n {
        nvl.push(format!("fd{i}"), Value::Descriptor(i));
    }
    encode(&nvl, ByteOrder::Little)
}

#[test]
fn recv_whole_record() {
    let (helper, bhyve) = pair();
    send_record(&bhyve, &typical());
    let nvl = recv_config(helper.as_fd(), TIMEOUT).unwrap();
    let c = BhyveConfig::from_nvlist(&nvl).unwrap();
    assert_eq!(c.vmname.as_deref(), Some("vm0"));
    assert_eq!(c.hostfwd.len(), 1);
}

#[test]
fn recv_every_accepted_vector() {
    for (name, bytes) in vectors() {
        let (helper, bhyve) = pair();
        send_record(&bhyve, &bytes);
        // bhyve may be gone by the time the helper reads: queued bytes still count.
        drop(bhyve);
        let got = recv_config(helper.as_fd(), TIMEOUT);
        assert_eq!(got.is_ok(), decode(&bytes, 0).is_ok(), "{name}: {got:?}");
        if name.starts_with("g02") {
            // Four bytes short: the helper waits for them until bhyve hangs up.
            assert!(matches!(got, Err(RecvError::Closed { .. })), "{got:?}");
        }
    }
}

#[test]
fn recv_leaves_the_first_frame_in_the_socket() {
    let (helper, bhyve) = pair();
    let frame: Vec<u8> = (0..60u8).collect();
    send_record(&bhyve, &typical());
    send_record(&bhyve, &frame);
    recv_config(helper.as_fd(), TIMEOUT).unwrap();
    let mut buf = [0u8; 2048];
    let n = recv(helper.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert_eq!(&buf[..n], &frame[..]);
}

#[test]
fn recv_header_and_body_in_separate_records() {
    let bytes = typical();
    let (helper, bhyve) = pair();
    send_record(&bhyve, &bytes[..19]);
    send_record(&bhyve, &bytes[19..]);
    assert!(recv_config(helper.as_fd(), TIMEOUT).is_ok());

    // A header split across records, the body in three, and an empty record on the way.
    let (helper, bhyve) = pair();
    for part in [
        &bytes[..5],
        &bytes[5..19],
        &[][..],
        &bytes[19..40],
        &bytes[40..41],
        &bytes[41..],
    ] {
        send_record(&bhyve, part);
    }
    send_record(&bhyve, b"frame");
    assert!(recv_config(helper.as_fd(), TIMEOUT).is_ok());
    let mut buf = [0u8; 64];
    let n = recv(helper.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert_eq!(&buf[..n], b"frame");
}

#[test]
fn recv_config_sent_by_another_thread_later() {
    let (helper, bhyve) = pair();
    let sender = std::thread::spawn(move || {
        let bytes = typical();
        std::thread::sleep(Duration::from_millis(50));
        send_record(&bhyve, &bytes[..30]);
        std::thread::sleep(Duration::from_millis(50));
        send_record(&bhyve, &bytes[30..]);
        bhyve
    });
    assert!(recv_config(helper.as_fd(), TIMEOUT).is_ok());
    drop(sender.join().unwrap());
}

#[cfg(target_os = "linux")]
#[test]
fn recv_refuses_a_record_longer_than_the_config() {
    // On Linux the kernel would drop the tail; the helper must say so, not lose a frame.
    let (helper, bhyve) = pair();
    let mut bytes = typical();
    bytes.extend_from_slice(b"first frame glued on");
    send_record(&bhyve, &bytes);
    let err = recv_config(helper.as_fd(), TIMEOUT).unwrap_err();
    assert!(matches!(err, RecvError::Truncated { .. }), "{err}");
}

#[test]
fn recv_with_descriptors() {
    let (helper, bhyve) = pair();
    let (a, b) = pair();
    send_record(&bhyve, &with_descriptors(2));
    send_fds(&bhyve, &[a.as_raw_fd(), b.as_raw_fd()]);
    send_record(&bhyve, b"frame");
    let nvl = recv_config(helper.as_fd(), TIMEOUT).unwrap();
    assert_eq!(nvl.get("fd1"), Some(&Value::Descriptor(1)));
    let mut buf = [0u8; 64];
    let n = recv(helper.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert_eq!(&buf[..n], b"frame");
}

#[test]
fn recv_with_descriptors_in_several_messages() {
    let (helper, bhyve) = pair();
    let (a, b) = pair();
    send_record(&bhyve, &with_descriptors(3));
    send_fds(&bhyve, &[a.as_raw_fd()]);
    send_fds(&bhyve, &[b.as_raw_fd(), a.as_raw_fd()]);
    assert!(recv_config(helper.as_fd(), TIMEOUT).is_ok());
}

#[test]
fn recv_descriptor_count_mismatch() {
    // More than announced.
    let (helper, bhyve) = pair();
    let (a, b) = pair();
    send_record(&bhyve, &with_descriptors(1));
    send_fds(&bhyve, &[a.as_raw_fd(), b.as_raw_fd()]);
    let err = recv_config(helper.as_fd(), TIMEOUT).unwrap_err();
    assert!(
        matches!(
            err,
            RecvError::DescriptorCount {
                announced: 1,
                received: 2
            }
        ),
        "{err}"
    );
    // Fewer: a message without descriptors where one was due.
    let (helper, bhyve) = pair();
    send_record(&bhyve, &with_descriptors(2));
    send_fds(&bhyve, &[a.as_raw_fd()]);
    send_record(&bhyve, b"x");
    let err = recv_config(helper.as_fd(), TIMEOUT).unwrap_err();
    assert!(
        matches!(
            err,
            RecvError::DescriptorCount {
                announced: 2,
                received: 1
            }
        ),
        "{err}"
    );
    // Fewer, then bhyve goes away.
    let (helper, bhyve) = pair();
    send_record(&bhyve, &with_descriptors(2));
    send_fds(&bhyve, &[a.as_raw_fd()]);
    drop(bhyve);
    let err = recv_config(helper.as_fd(), TIMEOUT).unwrap_err();
    assert!(matches!(err, RecvError::Closed { .. }), "{err}");
}

#[test]
fn recv_peer_closed_before_config() {
    let (helper, bhyve) = pair();
    drop(bhyve);
    let err = recv_config(helper.as_fd(), TIMEOUT).unwrap_err();
    assert!(matches!(err, RecvError::Closed { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("bhyve hung up before the configuration was complete"));

    // Closed halfway through the body.
    let (helper, bhyve) = pair();
    send_record(&bhyve, &typical()[..50]);
    drop(bhyve);
    let err = recv_config(helper.as_fd(), TIMEOUT).unwrap_err();
    assert!(
        matches!(
            err,
            RecvError::Closed {
                stage: slirp_helper::config::recv::Stage::Body
            }
        ),
        "{err}"
    );
}

#[test]
fn recv_times_out() {
    let (helper, _bhyve) = pair();
    let start = Instant::now();
    let err = recv_config(helper.as_fd(), Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, RecvError::Timeout { .. }), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(start.elapsed() < TIMEOUT);

    // Half a config, then silence.
    let (helper, bhyve) = pair();
    send_record(&bhyve, &typical()[..100]);
    let err = recv_config(helper.as_fd(), Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, RecvError::Timeout { .. }), "{err}");
}

#[test]
fn recv_refuses_bad_headers_early() {
    let (helper, bhyve) = pair();
    let mut bytes = typical();
    bytes[11..19].copy_from_slice(&MAX_CONFIG_LEN.to_le_bytes());
    send_record(&bhyve, &bytes[..19]);
    let err = recv_config(helper.as_fd(), TIMEOUT).unwrap_err();
    assert!(matches!(err, RecvError::TooLarge { .. }), "{err}");

    let (helper, bhyve) = pair();
    let mut bytes = typical();
    bytes[3..11].copy_from_slice(&5000u64.to_le_bytes());
    send_record(&bhyve, &bytes);
    let err = recv_config(helper.as_fd(), TIMEOUT).unwrap_err();
    assert!(
        matches!(err, RecvError::TooManyDescriptors { announced: 5000 }),
        "{err}"
    );

    let (helper, bhyve) = pair();
    let mut bytes = typical();
    bytes[0] = 0x6d;
    send_record(&bhyve, &bytes);
    let err = recv_config(helper.as_fd(), TIMEOUT).unwrap_err();
    assert!(matches!(err, RecvError::Decode(_)), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Robustness: decoding must return, never panic, whatever the bytes.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn exercise(bytes: &[u8], fds: usize) {
    if let Ok(nvl) = decode(bytes, fds) {
        let _ = BhyveConfig::from_nvlist(&nvl);
        // Whatever decodes must re-encode to something that decodes to the same list.
        let again = encode(&nvl, ByteOrder::Little);
        let announced = Header::parse(&again).unwrap().descriptors as usize;
        assert_eq!(decode(&again, announced).as_ref(), Ok(&nvl));
    }
}

#[test]
fn mutated_vectors_never_panic() {
    let vectors = vectors();
    for (_, bytes) in &vectors {
        for len in 0..=bytes.len() {
            exercise(&bytes[..len], 0);
        }
    }
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let interesting = [0u8, 1, 0x7f, 0x80, 0xfe, 0xff, 0x6c, 19, 20];
    for i in 0..20_000 {
        let (_, original) = &vectors[i % vectors.len()];
        let mut bytes = original.clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] = if rng.next() & 1 == 0 {
                rng.next() as u8
            } else {
                interesting[rng.below(interesting.len())]
            };
        }
        if rng.below(8) == 0 {
            bytes.truncate(rng.below(bytes.len() + 1));
        }
        exercise(&bytes, rng.below(3));
    }
}

// ---------------------------------------------------------------------------------------------
// Capture keys: `pcap=PATH`, `pcap_max=BYTES`, as bhyve forwards them (STRING pairs), through
// the same parsers the helper's start-up uses (`cli::parse_pcap_*`, the key's name passed in).

/// The capture keys' values read from a config nvlist as the helper reads them.
fn capture_keys(pairs: &[(&str, &[u8])]) -> Result<(Option<String>, Option<u64>), String> {
    let mut nvl = Nvlist::new();
    nvl.push("device", Value::String(b"virtio-net".to_vec()));
    nvl.push("backend", Value::String(b"slirp".to_vec()));
    for (key, value) in pairs {
        nvl.push(*key, Value::String(value.to_vec()));
    }
    let bytes = encode(&nvl, ByteOrder::Little);
    let config =
        BhyveConfig::from_nvlist(&decode(&bytes, 0).unwrap()).map_err(|e| e.to_string())?;
    let path = match config.string_option("pcap").map_err(|e| e.to_string())? {
        Some(text) => Some(cli::parse_pcap_path("pcap", text).map_err(|e| e.to_string())?),
        None => None,
    };
    let max = match config
        .string_option("pcap_max")
        .map_err(|e| e.to_string())?
    {
        Some(text) => Some(cli::parse_pcap_max("pcap_max", text).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok((path, max))
}

#[test]
fn capture_keys_take_a_path_and_a_byte_count() {
    assert_eq!(
        capture_keys(&[("pcap", b"/var/tmp/vm0.pcap"), ("pcap_max", b"1048576")]),
        Ok((Some("/var/tmp/vm0.pcap".into()), Some(1 << 20)))
    );
    assert_eq!(capture_keys(&[("pcap_max", b"24")]), Ok((None, Some(24))));
    assert_eq!(
        capture_keys(&[("pcap_max", b"9223372036854775807")]),
        Ok((None, Some(i64::MAX as u64)))
    );
    // A name that looks like a key is not one: only the exact name counts.
    assert_eq!(capture_keys(&[("PCAP", b"/x")]), Ok((None, None)));
}

#[test]
fn bad_capture_values_name_the_key_and_the_value() {
    let range = "is not a number from 24 to 9223372036854775807";
    let cases: &[(&str, &[u8], String)] = &[
        ("pcap_max", b"", format!("pcap_max: '' {range}")),
        ("pcap_max", b"0", format!("pcap_max: '0' {range}")),
        ("pcap_max", b"23", format!("pcap_max: '23' {range}")),
        ("pcap_max", b"-1", format!("pcap_max: '-1' {range}")),
        ("pcap_max", b"+100", format!("pcap_max: '+100' {range}")),
        ("pcap_max", b" 100", format!("pcap_max: ' 100' {range}")),
        ("pcap_max", b"1G", format!("pcap_max: '1G' {range}")),
        ("pcap_max", b"0x1000", format!("pcap_max: '0x1000' {range}")),
        (
            "pcap_max",
            b"9223372036854775808",
            format!("pcap_max: '9223372036854775808' {range}"),
        ),
        (
            "pcap_max",
            b"99999999999999999999999",
            format!("pcap_max: '99999999999999999999999' {range}"),
        ),
        ("pcap", b"", "pcap: '' is not a path".into()),
        (
            "pcap",
            b"/tmp/%(vmname).pcap",
            "pcap: '/tmp/%(vmname).pcap' uses bhyve's %(name) expansion, which this helper \
             does not support; write the value literally"
                .into(),
        ),
    ];
    for (key, value, want) in cases {
        let got = capture_keys(&[(key, value)]).expect_err("refused");
        assert_eq!(&got, want, "{key}={}", value.escape_ascii());
    }
    // Not UTF-8: refused naming the key, as every key bhyve sends.
    let got = capture_keys(&[("pcap_max", b"1\xff")]).expect_err("refused");
    assert!(got.contains("pcap_max"), "{got}");
}

// The network keys (issue 12) through the real helper binary: a bad value exits 1 with one
// line naming the key (or option) and the value.

mod common;

/// What the helper says before a configuration error.
const CONFIG_ERROR: &str = "bhyve-slirp-helper: configuration: ";

/// Run the helper with the network `keys` (and `args`); its exit code and stderr.
fn helper_with(keys: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut config = common::ConfigBuilder::bhyve();
    for (k, v) in keys {
        config = config.string(k, v);
    }
    let mut helper = common::Bhyve::spawn(common::Spawn {
        config: Some(config.encode()),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..common::Spawn::default()
    });
    let code = helper.expect_exit(Duration::from_secs(10));
    (code, helper.stderr())
}

/// Every network key with malformed and out-of-range values: (keys, the message after
/// [`CONFIG_ERROR`]).
const BAD_NETWORK_KEYS: &[(&[(&str, &str)], &str)] = &[
    (
        &[("net", "bogus")],
        "net: 'bogus' is not an IPv4 network ADDR/LEN with LEN from 8 to 30",
    ),
    (
        &[("net", "10.0.2.0")],
        "net: '10.0.2.0' is not an IPv4 network ADDR/LEN with LEN from 8 to 30",
    ),
    (
        &[("net", "10.0.2.0/7")],
        "net: '10.0.2.0/7' is not an IPv4 network ADDR/LEN with LEN from 8 to 30",
    ),
    (
        &[("net", "10.0.2.0/31")],
        "net: '10.0.2.0/31' is not an IPv4 network ADDR/LEN with LEN from 8 to 30",
    ),
    (
        &[("net", "10.0.2.256/24")],
        "net: '10.0.2.256/24' is not an IPv4 network ADDR/LEN with LEN from 8 to 30",
    ),
    (&[("host", "")], "host: '' is not an IPv4 address"),
    (&[("host", "10.0.2")], "host: '10.0.2' is not an IPv4 address"),
    (&[("host", "10.0.3.2")], "host: '10.0.3.2' is outside net 10.0.2.0/24"),
    (
        &[("host", "10.0.2.0")],
        "host: '10.0.2.0' is the network address of the network",
    ),
    (
        &[("dhcpstart", "10.0.2.x")],
        "dhcpstart: '10.0.2.x' is not an IPv4 address",
    ),
    (
        &[("dhcpstart", "10.0.2.255")],
        "dhcpstart: '10.0.2.255' is the broadcast address of the network",
    ),
    (
        &[("net", "192.168.77.0/24"), ("host", "10.0.2.2")],
        "host: '10.0.2.2' is outside net 192.168.77.0/24",
    ),
    (
        &[("net", "10.0.2.0/29")],
        "dhcpstart: '10.0.2.15' is outside net 10.0.2.0/29 (its default); set it inside",
    ),
    (&[("dns", "010.0.2.3")], "dns: '010.0.2.3' is not an IPv4 address"),
    (
        &[("dns", "10.0.2.2")],
        "dns: '10.0.2.2' is also host's address; each needs its own",
    ),
    (
        &[("dns", "192.168.77.3")],
        "dns: '192.168.77.3' is outside net 10.0.2.0/24",
    ),
    (
        &[("dnssearch", "a.example;;b.example")],
        "dnssearch: 'a.example;;b.example' is not a list of domain names separated by ';' (at most 6)",
    ),
    (
        &[("dnssearch", "a;b;c;d;e;f;g")],
        "dnssearch: 'a;b;c;d;e;f;g' is not a list of domain names separated by ';' (at most 6)",
    ),
    (
        &[("domainname", "bad domain")],
        "domainname: 'bad domain' is not a domain name (letters, digits and '-' in dot-separated labels, at most 253 characters)",
    ),
    (
        &[("hostname", "a_b")],
        "hostname: 'a_b' is not a domain name (letters, digits and '-' in dot-separated labels, at most 32 characters)",
    ),
    (
        &[("hostname", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")],
        "hostname: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' is not a domain name (letters, digits and '-' in dot-separated labels, at most 32 characters)",
    ),
    (
        &[("dnsproxy", "maybe")],
        "dnsproxy: 'maybe' is not a boolean (use on/off, true/false, yes/no or 1/0)",
    ),
    (
        &[("dhcp", "2")],
        "dhcp: '2' is not a boolean (use on/off, true/false, yes/no or 1/0)",
    ),
    (
        &[("hostloopback", "")],
        "hostloopback: '' is not a boolean (use on/off, true/false, yes/no or 1/0)",
    ),
    (
        &[("outbound", "10.0.0.256")],
        "outbound: '10.0.0.256' is not an IPv4 address",
    ),
    (&[("outbound", "::1")], "outbound: '::1' is not an IPv4 address"),
    (
        &[("ipv6", "on"), ("outbound6", "1.2.3.4")],
        "outbound6: '1.2.3.4' is not an IPv6 address",
    ),
    (
        &[("ipv6", "sometimes")],
        "ipv6: 'sometimes' is not a boolean (use on/off, true/false, yes/no or 1/0)",
    ),
    (
        &[("ipv6", "off"), ("net6", "fec0::/64")],
        "net6: set while ipv6 is off",
    ),
    (
        &[("ipv6", "on"), ("net6", "fec0::/127")],
        "net6: 'fec0::/127' is not an IPv6 prefix ADDR/LEN with LEN from 1 to 126",
    ),
    (
        &[("ipv6", "on"), ("host6", "fec0::g")],
        "host6: 'fec0::g' is not an IPv6 address",
    ),
    (
        &[("ipv6", "on"), ("host6", "fd00::2")],
        "host6: 'fd00::2' is outside net6 fec0::/64",
    ),
    (
        &[("ipv6", "on"), ("dns6", "fec0::2")],
        "dns6: 'fec0::2' is also host6's address; each needs its own",
    ),
];

#[test]
fn bad_network_keys_exit_1_naming_key_and_value() {
    for (keys, want) in BAD_NETWORK_KEYS {
        let (code, stderr) = helper_with(keys, &[]);
        assert_eq!(code, 1, "{keys:?}: stderr:\n{stderr}");
        let want = format!("{CONFIG_ERROR}{want}");
        assert!(
            stderr.lines().any(|l| l == want),
            "{keys:?}: want the line\n{want}\nstderr:\n{stderr}"
        );
    }
}

#[test]
fn bad_network_options_exit_1_naming_the_option() {
    for (args, want) in [
        (
            &["--net", "bogus"][..],
            "--net: 'bogus' is not an IPv4 network ADDR/LEN with LEN from 8 to 30",
        ),
        (
            &["--dns=10.0.2.2"],
            "--dns: '10.0.2.2' is also host's address; each needs its own",
        ),
        (
            &["--hostloopback", "perhaps"],
            "--hostloopback: 'perhaps' is not a boolean (use on/off, true/false, yes/no or 1/0)",
        ),
        (
            &["--outbound", "localhost"],
            "--outbound: 'localhost' is not an IPv4 address",
        ),
    ] {
        let (code, stderr) = helper_with(&[], args);
        assert_eq!(code, 1, "{args:?}: stderr:\n{stderr}");
        let want = format!("{CONFIG_ERROR}{want}");
        assert!(
            stderr.lines().any(|l| l == want),
            "{args:?}: want the line\n{want}\nstderr:\n{stderr}"
        );
    }
}

#[test]
fn a_network_option_wins_over_its_key() {
    // A bad key under a good option: the helper runs, on the option's network (it answers
    // ARP for the host address the option's network has by default).
    let mut helper = common::Bhyve::spawn(common::Spawn {
        config: Some(
            common::ConfigBuilder::bhyve()
                .string("net", "bogus")
                .encode(),
        ),
        args: vec!["--net=192.168.77.0/24".into()],
        ..common::Spawn::default()
    });
    let host = std::net::Ipv4Addr::new(192, 168, 77, 2);
    assert!(
        helper.resolve(host, common::STEP).is_some(),
        "no ARP answer for {host}; stderr:\n{}",
        helper.stderr()
    );
    helper.hang_up();
    assert_eq!(
        helper.expect_exit(Duration::from_secs(10)),
        0,
        "{}",
        helper.stderr()
    );
    // A good key under a bad option: the option is what counts, and what the error names.
    let (code, stderr) = helper_with(&[("net", "192.168.77.0/24")], &["--net", "10.0.2.0/33"]);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    let want = format!(
        "{CONFIG_ERROR}--net: '10.0.2.0/33' is not an IPv4 network ADDR/LEN with LEN from 8 to 30"
    );
    assert!(
        stderr.lines().any(|l| l == want),
        "want\n{want}\nstderr:\n{stderr}"
    );
}
