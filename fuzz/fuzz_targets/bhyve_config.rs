//! The configuration path: bytes → `decode` → `BhyveConfig::from_nvlist` (and the capture
//! keys `pcap`, `pcap_max` through start-up's parsers) never panics, and
//! `recv_config` on a real `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK)` (as bhyve
//! creates it) never panics, hangs past its timeout, leaks a descriptor, or returns a list other
//! than the one its bytes decode to.
//!
//! Input: `[ctl, split1, split2, payload...]`.
//! - `ctl & 3`: records the payload is sent in (0 and 1 → 1, 2 → 2, 3 → 3), cut at
//!   `split1/255` and `split2/255` of its length (empty records included: bhyve never sends
//!   them, but a 0-byte record must not look like EOF).
//! - `ctl & 0x44 == 0x44`: keep bhyve's end open after sending (the reader then waits for the
//!   timeout when the bytes do not complete the configuration); otherwise it is closed, so
//!   most inputs end at once instead of costing a timeout each.
//! - `(ctl >> 3) & 7`: one-byte messages carrying one descriptor each (SCM_RIGHTS), sent after
//!   the payload, as libnv's `fd_send` does.
#![no_main]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use slirp_helper::config::nvlist::{decode, Header};
use slirp_helper::config::recv::{recv_config, MAX_DESCRIPTORS};
use slirp_helper::cli;
use slirp_helper::config::BhyveConfig;

/// How long `recv_config` may wait; short, so that incomplete configs cost little.
const TIMEOUT: Duration = Duration::from_millis(20);
/// Allowance on top of the timeout before a slow return counts as a hang (shared 2-core box).
const SLACK: Duration = Duration::from_secs(5);

/// The descriptor sent with SCM_RIGHTS (any open file will do; the helper closes what it gets).
fn devnull() -> &'static OwnedFd {
    static FD: OnceLock<OwnedFd> = OnceLock::new();
    FD.get_or_init(|| {
        std::fs::File::open("/dev/null")
            .expect("open /dev/null")
            .into()
    })
}

/// The lowest free descriptor number: it rises if a run leaks one.
fn lowest_free_fd() -> i32 {
    let probe = devnull().try_clone().expect("dup");
    probe.as_raw_fd()
}

fn semantics(payload: &[u8]) {
    let fds = match Header::parse(payload) {
        Ok(h) if h.descriptors <= MAX_DESCRIPTORS => h.descriptors as usize,
        _ => 0,
    };
    let Ok(list) = decode(payload, fds) else {
        return;
    };
    match BhyveConfig::from_nvlist(&list) {
        Ok(config) => {
            // What main() does with the result next.
            for key in ["poller", "batch", "mtu"] {
                let _ = config.string_option(key);
            }
            // The capture keys, through the parsers start-up uses: a value is taken only
            // when it is what the key needs, and a refusal names the key.
            if let Ok(Some(text)) = config.string_option("pcap_max") {
                match cli::parse_pcap_max("pcap_max", text) {
                    Ok(max) => {
                        assert!((24..=i64::MAX as u64).contains(&max), "pcap_max {max}");
                        assert_eq!(max.to_string(), text.trim_start_matches('0').to_string());
                    }
                    Err(e) => assert!(e.to_string().starts_with("pcap_max: '")),
                }
            }
            if let Ok(Some(text)) = config.string_option("pcap") {
                match cli::parse_pcap_path("pcap", text) {
                    Ok(path) => assert!(!path.is_empty() && path == text),
                    Err(e) => assert_eq!(e.to_string(), "pcap: '' is not a path"),
                }
            }
            assert_eq!(config.options().count(), config.options().count());
            if let Some(mtu) = config.mtui {
                assert!((68..=65520).contains(&mtu), "mtui {mtu} let through");
            }
        }
        Err(e) => {
            assert!(
                matches!(e.exit_code(), 1 | 4),
                "exit code {}",
                e.exit_code()
            );
            assert!(!e.to_string().is_empty());
        }
    }
}

fn send_record(peer: &OwnedFd, bytes: &[u8]) {
    // EAGAIN (buffer full) drops the record, as bhyve's own non-blocking send would.
    let _ = nix::sys::socket::send(peer.as_raw_fd(), bytes, MsgFlags::MSG_EOR);
}

fn socket_path(ctl: u8, split1: u8, split2: u8, payload: &[u8]) {
    let fd_floor = lowest_free_fd();
    let (helper, peer) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");

    let records = match ctl & 3 {
        0 | 1 => 1,
        n => n as usize,
    };
    let len = payload.len();
    let mut cuts = [split1 as usize * len / 255, split2 as usize * len / 255];
    cuts.sort_unstable();
    let pieces: Vec<&[u8]> = match records {
        1 => vec![payload],
        2 => vec![&payload[..cuts[0]], &payload[cuts[0]..]],
        _ => vec![
            &payload[..cuts[0]],
            &payload[cuts[0]..cuts[1]],
            &payload[cuts[1]..],
        ],
    };
    // The byte stream the reader sees: records in order, then the descriptor messages' bytes.
    let mut stream: Vec<u8> = Vec::with_capacity(len + 8);
    for piece in &pieces {
        send_record(&peer, piece);
        stream.extend_from_slice(piece);
    }
    let descriptor_messages = (ctl >> 3) & 7;
    for _ in 0..descriptor_messages {
        let fds = [devnull().as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(&[0u8])];
        let _ = sendmsg::<UnixAddr>(peer.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_EOR, None);
    }
    stream.resize(stream.len() + usize::from(descriptor_messages), 0);
    let keep_open = ctl & 0x44 == 0x44;
    // then_some moves the end in either case: when not kept, it is closed right here.
    let peer = keep_open.then_some(peer);

    let start = Instant::now();
    let result = recv_config(helper.as_fd(), TIMEOUT);
    let took = start.elapsed();
    assert!(
        took < TIMEOUT + SLACK,
        "recv_config took {took:?} with a {TIMEOUT:?} timeout"
    );
    match result {
        Ok(list) => {
            // Whatever arrived must be exactly the first header + size bytes of the stream.
            let header = Header::parse(&stream).expect("accepted without a header");
            let total = header.total_len().expect("accepted an overflowing size") as usize;
            assert!(total <= stream.len(), "accepted more bytes than were sent");
            let direct = decode(&stream[..total], header.descriptors as usize);
            assert_eq!(
                direct.as_ref(),
                Ok(&list),
                "recv_config and decode disagree on the same bytes"
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    drop(peer);
    drop(helper);
    assert_eq!(
        lowest_free_fd(),
        fd_floor,
        "a descriptor leaked (ctl {ctl:#04x})"
    );
}

fuzz_target!(|data: &[u8]| {
    let [ctl, split1, split2, payload @ ..] = data else {
        return;
    };
    semantics(payload);
    socket_path(*ctl, *split1, *split2, payload);
});
