//! `bhyve-slirp-helper --api PATH REQUEST`: one request from a shell, for systems without
//! `nc -U` or `socat` (Debian's minimal installs have neither; FreeBSD's base `nc` has `-U`).
//!
//! Owns: the client side only: connect, send the request line(s), half-close, read every
//! reply until the helper closes. Bounded in time: a helper that does not answer is an error.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The replies to `request` (one JSON object per line), as the helper wrote them.
pub fn request(path: &Path, request: &str, timeout: Duration) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write, newline included: an object seen without its newline is answered as
    // slirp4netns's one request per connection, and the connection closes.
    let mut line = request.trim_end().to_owned();
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    // EOF tells the helper no more requests come: it answers and closes.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut replies = String::new();
    stream.read_to_string(&mut replies)?;
    Ok(replies)
}

/// Whether every reply is a success (`{"return":…}`), none an error.
pub fn all_succeeded(replies: &str) -> bool {
    let mut any = false;
    for line in replies.lines().filter(|l| !l.trim().is_empty()) {
        any = true;
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) if v.get("return").is_some() => {}
            _ => return false,
        }
    }
    any
}
