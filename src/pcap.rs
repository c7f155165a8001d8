//! Packet capture (`pcap=PATH`, `--pcap`): every frame as it crossed bhyve's socket, both
//! directions, in classic pcap (LINKTYPE_ETHERNET, microsecond timestamps from the real-time
//! clock), which tcpdump and Wireshark read.
//!
//! Owns: the capture file, opened before the sandbox (refused unless it is, or becomes, a
//! regular file; created 0600; on FreeBSD limited to writing with Capsicum), a preallocated
//! buffer of whole records written at the end of each loop iteration (or when full), the
//! `pcap_max` cap, and the capture counters.
//! Must never: allocate or log per frame, block networking on a failure of its own (at the cap
//! or on a write error it stops with one log line), or need a system call the sandbox does
//! not already allow (only `write` on the descriptor it holds).

use crate::diag;
use crate::frames::FrameLimit;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::time::{SystemTime, UNIX_EPOCH};

/// `pcap_max` when not set: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Bytes of the file header; the smallest `pcap_max` (a file with the header alone).
pub const FILE_HEADER_LEN: usize = 24;
/// Bytes of each record's header (timestamp, captured length, original length).
pub const RECORD_HEADER_LEN: usize = 16;
/// The largest `pcap_max`: what a file offset (`off_t`) holds.
pub const MAX_MAX_BYTES: u64 = i64::MAX as u64;

/// Classic pcap, microsecond timestamps, written in this host's byte order (readers tell by
/// the magic, as libpcap writes it).
const MAGIC_MICROSECONDS: u32 = 0xa1b2_c3d4;
const VERSION: (u16, u16) = (2, 4);
/// libpcap's largest snapshot length for Ethernet (`MAXIMUM_SNAPLEN`): above any frame the
/// helper accepts (65520 + 14 + a VLAN tag), so no record is ever cut.
const SNAPLEN: u32 = 262_144;
const LINKTYPE_ETHERNET: u32 = 1;

/// Records are gathered here and written with one `write` per loop iteration: at least this
/// much, and always room for the largest record.
const BUFFER_BYTES: usize = 256 * 1024;

/// What the capture did, for the stats line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaptureCounters {
    /// Whole records in the file.
    pub frames: u64,
    /// Bytes of the frames in those records (record headers not counted: the same measure
    /// as `rx_bytes` and `tx_bytes`).
    pub bytes: u64,
    /// Capture stopped (cap reached or a write failed); networking went on.
    pub stopped: bool,
}

/// Why the capture file cannot be used: the helper refuses to start (exit 1).
#[derive(Debug)]
pub struct CaptureError {
    pub path: String,
    pub problem: CaptureProblem,
}

#[derive(Debug)]
pub enum CaptureProblem {
    /// The path exists and is not a regular file (a symbolic link, a directory, a fifo, a
    /// device, a socket): the name of what it is.
    NotRegular(&'static str),
    /// An existing file with other names (hard links): truncating it would destroy what the
    /// other names hold (FreeBSD lets any user link to another's file by default).
    Linked { links: u64 },
    /// An existing file that belongs to another user, who could read the guest's traffic.
    Foreign { owner: u32, euid: u32 },
    /// A call on the path or the new descriptor failed.
    Call { call: &'static str, err: io::Error },
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.escape_debug();
        match &self.problem {
            CaptureProblem::NotRegular(what) => write!(
                f,
                "pcap: '{path}' exists and is {what}, not a regular file: refusing to write to it"
            ),
            CaptureProblem::Linked { links } => write!(
                f,
                "pcap: '{path}' has {links} hard links: refusing to truncate a file that has \
                 other names"
            ),
            CaptureProblem::Foreign { owner, euid } => write!(
                f,
                "pcap: '{path}' belongs to uid {owner}, not to this process (uid {euid}): \
                 refusing to write the guest's traffic to it"
            ),
            CaptureProblem::Call { call, err } => write!(f, "pcap: '{path}': {call}: {err}"),
        }
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            CaptureProblem::NotRegular(_)
            | CaptureProblem::Linked { .. }
            | CaptureProblem::Foreign { .. } => None,
            CaptureProblem::Call { err, .. } => Some(err),
        }
    }
}

/// What a non-regular file is, for the refusal.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a fifo"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// An open capture: the file, the records not yet written, the cap.
#[derive(Debug)]
pub struct Capture {
    file: File,
    /// For the one log line when capture stops.
    path: String,
    /// Whole records not yet written; never grows past its first capacity.
    buf: Vec<u8>,
    /// Frames and frame bytes in `buf`.
    pending_frames: u64,
    pending_bytes: u64,
    /// File header and every record so far, written or buffered.
    file_bytes: u64,
    max_bytes: u64,
    pub counters: CaptureCounters,
}

impl Capture {
    /// Open `path` for capture, before the sandbox. An existing path must be a regular file
    /// (checked without following a symbolic link: as root, a link someone planted must not
    /// aim the helper at another file) with no other name and owned by this process's user;
    /// it is truncated. The file ends up mode 0600 (it holds
    /// the guest's traffic) and starts with the pcap header. `limit` bounds the frames either
    /// direction may carry; `max_bytes` is `pcap_max`.
    pub fn open(path: &str, max_bytes: u64, limit: FrameLimit) -> Result<Capture, CaptureError> {
        let fail = |call, err| CaptureError {
            path: path.to_owned(),
            problem: CaptureProblem::Call { call, err },
        };
        let refuse = |what| CaptureError {
            path: path.to_owned(),
            problem: CaptureProblem::NotRegular(what),
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_file() => {
                return Err(refuse(kind_of(meta.file_type())))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("lstat", e)),
        }
        // O_NOFOLLOW and O_NONBLOCK: if the path was swapped for a link or a fifo since the
        // check, the open fails (or does not wait for a reader) and fstat below refuses it.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                // O_NOFOLLOW on a link: ELOOP on Linux, EMLINK on FreeBSD.
                Some(libc::ELOOP) | Some(libc::EMLINK) => refuse("a symbolic link"),
                Some(libc::EISDIR) => refuse("a directory"),
                _ => fail("open", e),
            })?;
        let meta = file.metadata().map_err(|e| fail("fstat", e))?;
        if !meta.file_type().is_file() {
            return Err(refuse(kind_of(meta.file_type())));
        }
        // The helper runs as root: a file someone else prepared at the path must not become
        // a way to destroy another file (a hard link) or to read the guest's traffic (theirs).
        let problem = |problem| CaptureError {
            path: path.to_owned(),
            problem,
        };
        if meta.nlink() > 1 {
            return Err(problem(CaptureProblem::Linked {
                links: meta.nlink(),
            }));
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(problem(CaptureProblem::Foreign {
                owner: meta.uid(),
                euid,
            }));
        }
        file.set_len(0).map_err(|e| fail("ftruncate", e))?;
        if meta.permissions().mode() & 0o7777 != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| fail("fchmod", e))?;
        }
        crate::sys::limit_to_writing(&file).map_err(|e| fail("cap_rights_limit", e))?;
        let mut capture = Capture {
            file,
            path: path.to_owned(),
            buf: Vec::with_capacity(BUFFER_BYTES.max(RECORD_HEADER_LEN + limit.max_rx_frame())),
            pending_frames: 0,
            pending_bytes: 0,
            file_bytes: FILE_HEADER_LEN as u64,
            max_bytes,
            counters: CaptureCounters::default(),
        };
        capture
            .file
            .write_all(&file_header())
            .map_err(|e| fail("writing the pcap header", e))?;
        Ok(capture)
    }

    /// One frame that crossed bhyve's socket, stamped now. Once capture stopped, nothing.
    #[inline]
    pub fn record(&mut self, frame: &[u8]) {
        if self.counters.stopped {
            return;
        }
        self.record_at(frame, SystemTime::now());
    }

    fn record_at(&mut self, frame: &[u8], when: SystemTime) {
        let record = (RECORD_HEADER_LEN + frame.len()) as u64;
        if self.file_bytes + record > self.max_bytes {
            self.flush();
            if self.counters.stopped {
                return;
            }
            let max = self.max_bytes;
            self.stop(format_args!("reached pcap_max ({max} bytes)"));
            return;
        }
        if self.buf.len() + record as usize > self.buf.capacity() {
            self.flush();
            if self.counters.stopped {
                return;
            }
        }
        let since = when.duration_since(UNIX_EPOCH).unwrap_or_default();
        // Classic pcap's seconds are 32 bits: good until 2106.
        let len = frame.len() as u32;
        let header = [since.as_secs() as u32, since.subsec_micros(), len, len];
        for field in header {
            self.buf.extend_from_slice(&field.to_ne_bytes());
        }
        self.buf.extend_from_slice(frame);
        self.file_bytes += record;
        self.pending_frames += 1;
        self.pending_bytes += frame.len() as u64;
    }

    /// Write the buffered records (the loop calls this at the end of each iteration, and
    /// before every stats line, so the counters match the file). A write error stops capture:
    /// the records written whole before it still count.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut written = 0;
        let mut failure = None;
        while written < self.buf.len() {
            match self.file.write(&self.buf[written..]) {
                Ok(0) => {
                    failure = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            None => {
                self.counters.frames += self.pending_frames;
                self.counters.bytes += self.pending_bytes;
            }
            Some(err) => {
                let (frames, bytes) = whole_records(&self.buf[..written]);
                self.counters.frames += frames;
                self.counters.bytes += bytes;
                self.stop(format_args!("writing failed ({err})"));
            }
        }
        self.buf.clear();
        self.pending_frames = 0;
        self.pending_bytes = 0;
    }

    /// Stop for good, saying why once. Networking goes on.
    fn stop(&mut self, why: fmt::Arguments<'_>) {
        self.counters.stopped = true;
        self.buf.clear();
        diag::warn(&format!(
            "pcap: '{}' {why}: capture stopped after {} frames; networking goes on",
            self.path.escape_debug(),
            self.counters.frames
        ));
    }
}

/// The 24-byte file header.
fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_MICROSECONDS.to_ne_bytes());
    h[4..6].copy_from_slice(&VERSION.0.to_ne_bytes());
    h[6..8].copy_from_slice(&VERSION.1.to_ne_bytes());
    // 8..16: time zone offset and timestamp accuracy, both 0 as every writer sets them.
    h[16..20].copy_from_slice(&SNAPLEN.to_ne_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
    h
}

/// Frames and frame bytes of the whole records at the start of `bytes` (records as
/// `record_at` writes them): what a failed write left complete in the file.
fn whole_records(bytes: &[u8]) -> (u64, u64) {
    let (mut frames, mut frame_bytes, mut at) = (0, 0, 0);
    while let Some(header) = bytes.get(at..at + RECORD_HEADER_LEN) {
        let mut len = [0u8; 4];
        len.copy_from_slice(&header[8..12]);
        let len = u32::from_ne_bytes(len) as usize;
        if bytes.len() < at + RECORD_HEADER_LEN + len {
            break;
        }
        frames += 1;
        frame_bytes += len as u64;
        at += RECORD_HEADER_LEN + len;
    }
    (frames, frame_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    fn mtu1500() -> FrameLimit {
        FrameLimit::from_mtui(Some(1500))
    }

    /// A directory of one test's files, removed when the test ends.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("pcap-unit-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self, name: &str) -> String {
            self.0.join(name).to_str().unwrap().to_owned()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The records of a classic pcap file, read independently of the writer: (seconds,
    /// microseconds, frame).
    fn read_records(bytes: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(u32_at(0), 0xa1b2_c3d4, "magic");
        assert_eq!(
            &bytes[4..8],
            &[2u16.to_ne_bytes(), 4u16.to_ne_bytes()].concat()[..]
        );
        assert_eq!(u32_at(16), 262_144, "snaplen");
        assert_eq!(u32_at(20), 1, "LINKTYPE_ETHERNET");
        let mut out = Vec::new();
        let mut at = 24;
        while at < bytes.len() {
            let (sec, usec, incl, orig) =
                (u32_at(at), u32_at(at + 4), u32_at(at + 8), u32_at(at + 12));
            assert_eq!(incl, orig);
            let start = at + 16;
            out.push((sec, usec, bytes[start..start + incl as usize].to_vec()));
            at = start + incl as usize;
        }
        assert_eq!(at, bytes.len(), "no partial record");
        out
    }

    #[test]
    fn records_every_frame_with_its_time() {
        let scratch = Scratch::new("records_every_frame_with_its_time");
        let path = scratch.path("records.pcap");
        let mut c = Capture::open(&path, DEFAULT_MAX_BYTES, mtu1500()).unwrap();
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        c.record_at(&[0xaa; 60], t);
        c.record_at(&[0xbb; 1514], t + Duration::from_micros(5));
        assert_eq!(c.counters.frames, 0, "counted once written");
        c.flush();
        assert_eq!(
            c.counters,
            CaptureCounters {
                frames: 2,
                bytes: 1574,
                stopped: false
            }
        );
        let records = read_records(&std::fs::read(&path).unwrap());
        assert_eq!(
            records,
            vec![
                (1_700_000_000, 123_456, vec![0xaa; 60]),
                (1_700_000_000, 123_461, vec![0xbb; 1514]),
            ]
        );
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
    }

    #[test]
    fn the_cap_stops_capture_before_the_record_that_would_pass_it() {
        let scratch = Scratch::new("the_cap_stops_capture_before_the_record_that_would_pass_it");
        let path = scratch.path("cap.pcap");
        // Header + two 100-byte frames fit exactly; the third does not.
        let max = (FILE_HEADER_LEN + 2 * (RECORD_HEADER_LEN + 100)) as u64;
        let mut c = Capture::open(&path, max, mtu1500()).unwrap();
        for _ in 0..3 {
            c.record(&[1; 100]);
        }
        c.record(&[2; 10]);
        c.flush();
        assert_eq!(
            c.counters,
            CaptureCounters {
                frames: 2,
                bytes: 200,
                stopped: true
            }
        );
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, max);
        assert_eq!(read_records(&bytes).len(), 2);
    }

    #[test]
    fn a_full_buffer_is_written_and_never_grows() {
        let scratch = Scratch::new("a_full_buffer_is_written_and_never_grows");
        let path = scratch.path("full.pcap");
        let mut c =
            Capture::open(&path, DEFAULT_MAX_BYTES, FrameLimit::from_mtui(Some(65520))).unwrap();
        let capacity = c.buf.capacity();
        for i in 0..40u8 {
            c.record(&[i; 65534]);
            assert_eq!(c.buf.capacity(), capacity);
        }
        c.flush();
        assert_eq!(c.counters.frames, 40);
        let records = read_records(&std::fs::read(&path).unwrap());
        assert!(records
            .iter()
            .enumerate()
            .all(|(i, r)| r.2 == vec![i as u8; 65534]));
    }

    #[test]
    fn an_existing_regular_file_is_truncated_and_made_private() {
        let scratch = Scratch::new("an_existing_regular_file_is_truncated_and_made_private");
        let path = scratch.path("existing.pcap");
        std::fs::write(&path, vec![7u8; 5000]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = Capture::open(&path, DEFAULT_MAX_BYTES, mtu1500()).unwrap();
        drop(c);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.mode() & 0o777), (24, 0o600));
    }

    #[test]
    fn what_is_not_a_regular_file_is_refused_by_name() {
        let scratch = Scratch::new("what_is_not_a_regular_file_is_refused_by_name");
        let dir = scratch.path("a-directory");
        std::fs::create_dir_all(&dir).unwrap();
        let link = scratch.path("link-to-null");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        for (path, what) in [
            (dir.as_str(), "a directory"),
            (link.as_str(), "a symbolic link"),
            ("/dev/null", "a character device"),
        ] {
            let e = Capture::open(path, DEFAULT_MAX_BYTES, mtu1500()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("pcap: '{path}' exists and is {what}, not a regular file: refusing to write to it")
            );
        }
        let missing = scratch.path("no/such/dir.pcap");
        let e = Capture::open(&missing, DEFAULT_MAX_BYTES, mtu1500()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("pcap: '{missing}': open: ")),
            "{e}"
        );
    }

    #[test]
    fn a_file_with_other_names_or_another_owner_is_refused() {
        let scratch = Scratch::new("a_file_with_other_names_or_another_owner_is_refused");
        let path = scratch.path("linked.pcap");
        let other = scratch.path("other-name");
        let _ = std::fs::remove_file(&other);
        std::fs::write(&path, b"precious").unwrap();
        std::fs::hard_link(&path, &other).unwrap();
        let e = Capture::open(&path, DEFAULT_MAX_BYTES, mtu1500()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "pcap: '{path}' has 2 hard links: refusing to truncate a file that has other names"
            )
        );
        assert_eq!(std::fs::read(&other).unwrap(), b"precious");
        std::fs::remove_file(&other).unwrap();
        if nix::unistd::geteuid().is_root() {
            // As root, hand the file to `nobody` (65534) and try again.
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let e = Capture::open(&path, DEFAULT_MAX_BYTES, mtu1500()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "pcap: '{path}' belongs to uid 65534, not to this process (uid 0): refusing \
                     to write the guest's traffic to it"
                )
            );
            assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        }
    }

    #[test]
    fn whole_records_stop_at_a_cut() {
        let mut buf = Vec::new();
        for len in [10u32, 20, 30] {
            buf.extend_from_slice(&[0; 8]);
            buf.extend_from_slice(&len.to_ne_bytes());
            buf.extend_from_slice(&len.to_ne_bytes());
            buf.extend(std::iter::repeat_n(0, len as usize));
        }
        assert_eq!(whole_records(&buf), (3, 60));
        assert_eq!(whole_records(&buf[..buf.len() - 1]), (2, 30));
        assert_eq!(whole_records(&buf[..16 + 10 + 5]), (1, 10));
        assert_eq!(whole_records(&[]), (0, 0));
    }
}
