//! The command line (`cli::parse`), as bhyve, QEMU launchers and libvirt write it (`-S3`,
//! `--fd=3`, `--batch 8`, `--batch=8`): never panics on any argument list, bytes that are not
//! UTF-8 included; an accepted run names exactly one socket, and every accepted value is in
//! its range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slirp_helper::cli::{self, Command};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

fuzz_target!(|data: &[u8]| {
    // Arguments separated by NUL, as in /proc/PID/cmdline.
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let sockets = args
        .iter()
        .filter(|a| {
            let a = a.as_encoded_bytes();
            a.starts_with(b"-S") || a == b"--fd" || a.starts_with(b"--fd=")
        })
        .count();
    match cli::parse(args) {
        Ok(Command::Run(options)) => {
            assert!(sockets >= 1, "a run without -S or --fd");
            assert!(options.socket.fd() >= 0);
            if let Some(batch) = options.batch {
                assert!((1..=256).contains(&batch), "batch {batch}");
            }
            if let Some(path) = &options.libslirp {
                assert!(!path.is_empty(), "an empty --libslirp accepted");
            }
        }
        Ok(_) => {}
        Err(e) => {
            // Every refusal is one line the user reads.
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
        }
    }
});
