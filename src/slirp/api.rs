//! libslirp loaded at run time: every symbol the loop needs is resolved up front, so a missing
//! one is a start-up error, never a surprise later.

use super::ffi::*;
use crate::config::LibslirpVersion;
use libloading::Library;
use std::ffi::CStr;
use std::fmt;

/// The soname bhyve's helper opens; overridable for tests and other installs.
pub const DEFAULT_LIBSLIRP: &str = "libslirp.so.0";

/// Why libslirp could not be used.
#[derive(Debug)]
pub enum LoadError {
    /// `dlopen` failed: the library is not installed or not at that path.
    Open {
        path: String,
        err: libloading::Error,
    },
    /// The library lacks a symbol we need: too old (we need >= 4.5.0) or not libslirp.
    Symbol {
        path: String,
        symbol: &'static str,
        err: libloading::Error,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Open { path, err } => {
                // dlerror() starts with the path itself: say it once.
                let why = err.to_string();
                let why = why.strip_prefix(&format!("{path}: ")).unwrap_or(&why);
                write!(
                    f,
                    "unable to open {path}: {why} (install libslirp >= 4.5.0)"
                )
            }
            LoadError::Symbol { path, symbol, err } => {
                write!(
                    f,
                    "failed to resolve {symbol} in {path}: {err} (libslirp >= 4.5.0 needed)"
                )
            }
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Open { err, .. } | LoadError::Symbol { err, .. } => Some(err),
        }
    }
}

/// Function table of one loaded libslirp. The `Library` is kept so the pointers stay valid.
pub struct SlirpApi {
    pub new: SlirpNewFn,
    pub cleanup: SlirpCleanupFn,
    pub input: SlirpInputFn,
    pub pollfds_fill: SlirpPollfdsFillFn,
    pub pollfds_poll: SlirpPollfdsPollFn,
    /// 4.7 and later: the timers of `SlirpConfig.version` 4 (`timer_new_opaque`). Older
    /// libslirp gets version 3 and only ever calls `timer_new`.
    pub handle_timer: Option<SlirpHandleTimerFn>,
    pub add_hostxfwd: SlirpAddHostxfwdFn,
    pub remove_hostxfwd: SlirpRemoveHostxfwdFn,
    pub connection_info: SlirpConnectionInfoFn,
    /// GLib's allocator, for what `connection_info` returns.
    pub g_free: GFreeFn,
    version_string: SlirpVersionStringFn,
    _library: Library,
}

impl SlirpApi {
    /// `dlopen` the library at `path` and resolve every symbol.
    pub fn load(path: &str) -> Result<SlirpApi, LoadError> {
        // SAFETY: loading runs the library's initialisers; libslirp's only set up GLib state.
        let library = unsafe { Library::new(path) }.map_err(|err| LoadError::Open {
            path: path.to_string(),
            err,
        })?;
        macro_rules! resolve {
            ($name:literal, $ty:ty) => {{
                // SAFETY: the symbol's C signature in libslirp.h is exactly `$ty`.
                let symbol = unsafe { library.get::<$ty>(concat!($name, "\0").as_bytes()) };
                *symbol.map_err(|err| LoadError::Symbol {
                    path: path.to_string(),
                    symbol: $name,
                    err,
                })?
            }};
        }
        Ok(SlirpApi {
            new: resolve!("slirp_new", SlirpNewFn),
            cleanup: resolve!("slirp_cleanup", SlirpCleanupFn),
            input: resolve!("slirp_input", SlirpInputFn),
            pollfds_fill: resolve!("slirp_pollfds_fill", SlirpPollfdsFillFn),
            pollfds_poll: resolve!("slirp_pollfds_poll", SlirpPollfdsPollFn),
            // SAFETY: as in resolve!: the C signature is exactly SlirpHandleTimerFn.
            handle_timer: unsafe { library.get::<SlirpHandleTimerFn>(b"slirp_handle_timer\0") }
                .ok()
                .map(|symbol| *symbol),
            add_hostxfwd: resolve!("slirp_add_hostxfwd", SlirpAddHostxfwdFn),
            remove_hostxfwd: resolve!("slirp_remove_hostxfwd", SlirpRemoveHostxfwdFn),
            connection_info: resolve!("slirp_connection_info", SlirpConnectionInfoFn),
            // dlsym on libslirp's handle searches its dependencies: GLib's g_free.
            g_free: resolve!("g_free", GFreeFn),
            version_string: resolve!("slirp_version_string", SlirpVersionStringFn),
            _library: library,
        })
    }

    /// The version `slirp_version_string` gives, parsed; 4.5.0 (the oldest with every
    /// required symbol) when it does not parse.
    pub fn version_number(&self) -> LibslirpVersion {
        LibslirpVersion::parse(&self.version()).unwrap_or(LibslirpVersion(4, 5, 0))
    }

    /// libslirp's own version string, e.g. "4.7.0".
    pub fn version(&self) -> String {
        // SAFETY: slirp_version_string returns a static NUL-terminated string.
        let ptr = unsafe { (self.version_string)() };
        if ptr.is_null() {
            return String::from("unknown");
        }
        // SAFETY: non-null and NUL-terminated per the libslirp contract, valid while loaded.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_named_once() {
        let path = "/nonexistent/slirp-test-dir/libslirp.so.0";
        let Err(e) = SlirpApi::load(path) else {
            panic!("{path} loaded");
        };
        let text = e.to_string();
        assert_eq!(text.matches(path).count(), 1, "{text}");
        assert!(
            text.starts_with(&format!("unable to open {path}: ")),
            "{text}"
        );
        assert!(text.ends_with(" (install libslirp >= 4.5.0)"), "{text}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
