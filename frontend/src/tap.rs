//! The guest's tap device, created inside the guest namespace.
//!
//! Owns: the thread that enters the namespace to create the device. Must never: let any
//! other thread of the process change namespace.

use super::netns::Netns;
use super::os;
use std::io;
use std::os::fd::OwnedFd;

/// Create tap `name` inside `ns` and return its (non-blocking) descriptor. A tap lives in the
/// namespace of the thread that creates it, so a short-lived thread enters the namespace for
/// that one job; the descriptor works from any namespace afterwards.
pub fn create_in(ns: &Netns, name: &str) -> io::Result<OwnedFd> {
    let ns_file = ns
        .open()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", ns.path().display())))?;
    let name = name.to_string();
    let nsname = ns.name().to_string();
    std::thread::Builder::new()
        .name("tap-create".into())
        .spawn(move || {
            os::enter_netns(&ns_file)
                .map_err(|e| io::Error::new(e.kind(), format!("setns({nsname}): {e}")))?;
            os::create_tap(&name)
        })?
        .join()
        .map_err(|_| io::Error::other("the tap-creating thread panicked"))?
}
