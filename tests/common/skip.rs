//! Skipped is not passed: a test that cannot run here (not root, a tool missing) says so in a
//! line that `scripts/test.sh` counts, instead of returning as if it had passed.
//!
//! The line is `SKIPPED: <test>: <reason>`, printed to stderr (shown with `--nocapture`) and
//! appended to the file named by `$SLIRP_TEST_SKIPS` when set (scripts/test.sh sets it: the
//! test harness captures stderr of passing tests).

/// The environment variable naming the file skip lines are appended to.
pub const SKIPS_ENV: &str = "SLIRP_TEST_SKIPS";

/// Record that `test` did not run (or not all of it) because of `reason`; the caller then
/// returns.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIPPED: {test}: {reason}\n");
    eprint!("{line}");
    if let Some(path) = std::env::var_os(SKIPS_ENV) {
        // One short write with O_APPEND: lines of tests running in parallel do not mix.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            eprintln!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
}
