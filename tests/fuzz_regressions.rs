//! Inputs the fuzz targets (`fuzz/`, see `docs/fuzzing.md`) found failing, kept as plain tests
//! so that a fix stays fixed without a fuzzing toolchain.
//!
//! Tests of bugs not fixed yet are `#[ignore]`d with the finding's id, so that they do not
//! break `cargo test` for everyone meanwhile; `cargo test --test fuzz_regressions -- --ignored`
//! shows them failing. Remove the `ignore` with the fix. Findings: docs/fuzzing.md.

use slirp_helper::config::nvlist::{decode, encode, ByteOrder, Header, Nvlist, Value};

/// `list` with its descriptors numbered 0, 1, 2, ... in wire order, as `encode` (like
/// `nvlist_pack`) numbers them.
fn renumbered(list: &Nvlist, next: &mut i64) -> Nvlist {
    fn number(next: &mut i64) -> i64 {
        *next += 1;
        *next - 1
    }
    let mut out = Nvlist::with_flags(list.flags);
    for (name, value) in list.pairs() {
        let value = match value {
            Value::Descriptor(_) => Value::Descriptor(number(next)),
            Value::DescriptorArray(items) => {
                Value::DescriptorArray(items.iter().map(|_| number(next)).collect())
            }
            Value::Nvlist(sub) => Value::Nvlist(renumbered(sub, next)),
            Value::NvlistArray(subs) => {
                Value::NvlistArray(subs.iter().map(|sub| renumbered(sub, next)).collect())
            }
            other => other.clone(),
        };
        out.push(name.clone(), value);
    }
    out
}

/// The `nvlist_decode` target's property: whatever `decode` accepts re-encodes, in either byte
/// order, to bytes that `decode` takes back as the same list (descriptors renumbered in wire
/// order), and encoding that is a fixed point.
fn assert_round_trip(bytes: &[u8], fds_received: usize) {
    let Ok(list) = decode(bytes, fds_received) else {
        return; // refusing the input is fine too
    };
    let expected = renumbered(&list, &mut 0);
    for order in [ByteOrder::Little, ByteOrder::Big] {
        let encoded = encode(&list, order);
        let announced = Header::parse(&encoded).unwrap().descriptors as usize;
        let again = decode(&encoded, announced).unwrap_or_else(|e| {
            panic!("decode refuses encode's output of {list:?} ({order:?}): {e}")
        });
        assert_eq!(again, expected, "{order:?}");
        assert_eq!(
            encode(&again, order),
            encoded,
            "{order:?}: not a fixed point"
        );
    }
}

/// F1, minimal: `{fd: DESCRIPTOR 1}` sent with 2 descriptors. libnv accepts it (index 1 < 2
/// received) and so does `decode`, but `encode` announced only the 1 descriptor item it wrote
/// and kept the index 1, which `decode` then refused ("descriptor index 1 outside the 1
/// received"). Fixed in b6f6ca7: `encode` numbers descriptors 0, 1, 2, ... in wire order, as
/// `nvlist_pack` does.
#[test]
fn nvlist_descriptor_index_beyond_item_count() {
    #[rustfmt::skip]
    let bytes: [u8; 49] = [
        0x6c, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1e,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x03, 0x00, 0x08, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x66, 0x64, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00,
    ];
    assert_round_trip(&bytes, 2);
}

/// F1 as `nvlist_decode` found it (crash-aca9d7ab...): 232 descriptors announced, items
/// `fd` = 32 and `fds` = [1, 0], plus `vmname`; re-encoded, 3 were announced and index 32 was
/// refused.
#[test]
fn nvlist_descriptor_index_beyond_item_count_as_found() {
    #[rustfmt::skip]
    let bytes: [u8; 118] = [
        0x6c, 0x00, 0x00, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x63,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x03, 0x00, 0x08, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x66, 0x64, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x0c, 0x04, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x66, 0x64, 0x73, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x04, 0x07, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x76,
        0x6d, 0x6e, 0x61, 0x6d, 0x65, 0x00, 0x76, 0x6d, 0x30, 0x00,
    ];
    assert_round_trip(&bytes, 0xe8);
}

/// F2 (fixed in d22a55c): a signal arriving while the RX ring checked whether an empty record
/// meant EOF ended the helper as if bhyve had hung up. `frames::rx::peer_shut_down` treated
/// every error of its `poll(fd, 1, 0)` as a hangup, and a zero-timeout poll with nothing ready
/// still fails with EINTR when a signal is pending (Linux `do_poll` checks `signal_pending`
/// before honouring the zero timeout). In the helper: an empty record from the guest plus
/// SIGUSR1 (stats dump) at the wrong moment made it exit 0 under a live bhyve. `frame_path` hit
/// it through libFuzzer's SIGALRM (crash-a632425a…, 32 frames, 29 of them empty records, after
/// 662,298 inputs). Before the fix this test failed within 0.1–1 s.
///
/// Here the main thread reads empty records while another thread keeps signalling it; every
/// drain must end `Drained`.
#[test]
fn signal_during_empty_record_check_is_not_a_hangup() {
    use nix::sys::signal::{pthread_sigmask, sigaction, SaFlags, SigAction, SigHandler, SigSet};
    use nix::sys::signal::{SigmaskHow, Signal};
    use nix::sys::socket::{send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
    use slirp_helper::frames::{FrameLimit, FrameRx, RxStatus};
    use std::os::fd::{AsFd, AsRawFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    extern "C" fn nothing(_: libc::c_int) {}
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe {
        sigaction(
            Signal::SIGUSR2,
            &SigAction::new(
                SigHandler::Handler(nothing),
                SaFlags::empty(),
                SigSet::empty(),
            ),
        )
    }
    .unwrap();
    let mut usr2 = SigSet::empty();
    usr2.add(Signal::SIGUSR2);
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&usr2), None).unwrap();

    let (helper, guest) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let mut rx = FrameRx::new(helper.as_fd(), FrameLimit::from_mtui(Some(1500)), 64);

    // SAFETY: pthread_self has no preconditions.
    let reader = unsafe { libc::pthread_self() };
    let stop = Arc::new(AtomicBool::new(false));
    let signaller = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the reader thread outlives this loop (joined below).
                unsafe { libc::pthread_kill(reader, libc::SIGUSR2) };
                std::thread::yield_now();
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut result = Ok(());
    let mut records = 0u64;
    while Instant::now() < deadline {
        // EINTR from the signaller: try again.
        if send(guest.as_raw_fd(), &[], MsgFlags::MSG_EOR).is_err() {
            continue;
        }
        records += 1;
        match rx.drain(|_| {}) {
            Ok(RxStatus::Drained) => {}
            other => {
                result = Err(format!(
                    "drain returned {other:?} after {records} empty records"
                ));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    signaller.join().unwrap();
    result.unwrap();
}
