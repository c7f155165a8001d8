//! `bhyve-slirp-helper -S <fd>`: start-up in the C helper's order (design note 7), then the
//! loop. Exit status: 0 on hangup or SIGTERM, 1 on bad usage/config/libslirp, 4 on a bad
//! boolean for `open`.

use slirp_helper::cli::{self, Command, Options};
use slirp_helper::coalesce::Coalescer;
use slirp_helper::config::{self, BhyveConfig};
use slirp_helper::event_loop::{self, Exit, Host};
use slirp_helper::frames::{FrameLimit, FrameRx, DEFAULT_BATCH};
use slirp_helper::poller::PollerKind;
use slirp_helper::reasm::{Ipv4Reassembler, ReasmLimits};
use slirp_helper::slirp::api::{SlirpApi, DEFAULT_LIBSLIRP};
use slirp_helper::slirp::{Stack, StackConfig};
use slirp_helper::{diag, sandbox, sys};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::Duration;

/// Where bhyve's socket lives after start-up, as in the C helper (`dup2(sd, 3)`).
const SOCKET_FD: RawFd = 3;
/// bhyve sends the config right after spawning the helper; waiting longer means it never will.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(30);

/// A start-up failure: what to say and the exit status.
struct Fatal(u8, String);

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        // No `diag::init` before the descriptor shuffle: a log channel kept open now could be
        // replaced by bhyve's socket. `diag` sends this one line through a channel it closes.
        Err(cli::UsageError(reason)) => {
            diag::error(&format!("{reason}\n{}", cli::USAGE));
            return ExitCode::from(1);
        }
    };
    match command {
        Command::Help => {
            print!("{}", cli::HELP);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("bhyve-slirp-helper {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Run(options) => match run(options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Fatal(code, msg)) => {
                diag::error(&msg);
                ExitCode::from(code)
            }
        },
    }
}

/// Check `-S`, move the socket to fd 3, close everything else inherited from bhyve, and point
/// the standard descriptors the socket vacated (or that were closed) at `/dev/null`. Only then
/// may `diag::init` open its syslog socket: nothing but frames is ever written to fd 3.
fn adopt_socket(fd: RawFd) -> Result<OwnedFd, Fatal> {
    let usage = |why: String| Fatal(1, format!("{why}\n{}", cli::USAGE));
    if !sys::fd_is_open(fd) {
        return Err(usage(format!(
            "invalid socket {fd}: not an open descriptor"
        )));
    }
    match sys::fd_is_socket(fd) {
        Ok(true) => {}
        Ok(false) => return Err(usage(format!("invalid socket {fd}: not a socket"))),
        Err(e) => return Err(usage(format!("invalid socket {fd}: {e}"))),
    }
    // A byte stream merges frames silently. SOCK_SEQPACKET is bhyve's; SOCK_DGRAM (QEMU's
    // `-netdev socket`) keeps frame boundaries too.
    match sys::socket_type(fd) {
        Ok(libc::SOCK_STREAM) => {
            return Err(usage(format!(
                "invalid socket {fd}: a SOCK_STREAM socket, which does not keep frame \
                 boundaries (use SOCK_SEQPACKET, as bhyve does, or SOCK_DGRAM)"
            )))
        }
        Ok(_) => {}
        Err(e) => return Err(usage(format!("invalid socket {fd}: SO_TYPE: {e}"))),
    }
    let vacant: Vec<RawFd> = (0..SOCKET_FD)
        .filter(|&std_fd| std_fd == fd || !sys::fd_is_open(std_fd))
        .collect();
    // SAFETY: this is start-up, before anything in the process opened a descriptor it keeps
    // (`diag::init` opens its log channel only after): `fd` is bhyve's socket, which nothing
    // here owns; descriptor 3 and those above it are leftovers of bhyve's that nothing here
    // uses; and the standard descriptors pointed at /dev/null are vacant.
    let sock = unsafe {
        let sock = sys::move_fd(fd, SOCKET_FD)
            .map_err(|e| Fatal(1, format!("dup2(socket, {SOCKET_FD}): {e}")))?;
        sys::closefrom(SOCKET_FD + 1);
        for std_fd in vacant {
            sys::dev_null_at(std_fd)
                .map_err(|e| Fatal(1, format!("/dev/null on descriptor {std_fd}: {e}")))?;
        }
        sock
    };
    sys::set_cloexec(sock.as_fd(), true).map_err(|e| Fatal(1, format!("fcntl(socket): {e}")))?;
    sys::set_nonblocking(sock.as_fd(), true)
        .map_err(|e| Fatal(1, format!("fcntl(socket): {e}")))?;
    Ok(sock)
}

fn libslirp_path(options: &Options) -> String {
    options
        .libslirp
        .clone()
        .or_else(|| {
            std::env::var(cli::LIBSLIRP_ENV)
                .ok()
                .filter(|p| !p.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_LIBSLIRP.to_string())
}

/// The config, or `None` when SIGTERM/SIGINT arrived while waiting for it.
fn read_config(sock: BorrowedFd<'_>) -> Result<Option<BhyveConfig>, Fatal> {
    let nvlist =
        match config::recv::recv_config_until(sock, CONFIG_TIMEOUT, &sys::SIGNALS.terminate) {
            Ok(nvlist) => nvlist,
            Err(config::RecvError::Stopped) => return Ok(None),
            Err(e) => {
                return Err(Fatal(
                    1,
                    format!("reading the configuration from bhyve: {e}"),
                ))
            }
        };
    BhyveConfig::from_nvlist(&nvlist)
        .map(Some)
        .map_err(|e| Fatal(e.exit_code() as u8, format!("configuration: {e}")))
}

/// A tunable: the command line wins, else bhyve's config key of the same name
/// (`-s 2,virtio-net,slirp,poller=poll,batch=1`), else `default`.
fn tunable<T>(
    from_cli: Option<T>,
    config: &BhyveConfig,
    key: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
    default: impl FnOnce() -> T,
) -> Result<T, Fatal> {
    if let Some(value) = from_cli {
        return Ok(value);
    }
    let text = config
        .string_option(key)
        .map_err(|e| Fatal(e.exit_code() as u8, format!("configuration: {e}")))?;
    match text {
        None => Ok(default()),
        Some(text) => parse(text).map_err(|why| Fatal(1, format!("configuration: {key}: {why}"))),
    }
}

fn poller_kind(options: &Options, config: &BhyveConfig) -> Result<PollerKind, Fatal> {
    let parse = |name: &str| {
        PollerKind::parse(name).ok_or_else(|| {
            let best = PollerKind::platform_default().name();
            format!("'{name}' is not available here (use poll or {best})")
        })
    };
    tunable(
        options.poller,
        config,
        "poller",
        parse,
        PollerKind::platform_default,
    )
}

fn batch_size(options: &Options, config: &BhyveConfig) -> Result<usize, Fatal> {
    let parse = |text: &str| cli::parse_batch(text).map_err(|cli::UsageError(why)| why);
    tunable(options.batch, config, "batch", parse, || DEFAULT_BATCH)
}

/// Merging guest TCP segments needs a batch to merge from: with `--batch 1` (the C helper's
/// design) it is off unless asked for.
fn coalescing(options: &Options, config: &BhyveConfig, batch: usize) -> Result<bool, Fatal> {
    let parse = |text: &str| cli::parse_switch(text).map_err(|cli::UsageError(why)| why);
    tunable(options.coalesce, config, "coalesce", parse, || batch > 1)
}

fn run(options: Options) -> Result<(), Fatal> {
    sys::install_signal_handlers().map_err(|e| Fatal(1, format!("sigaction: {e}")))?;
    let sock = adopt_socket(options.socket)?;
    diag::init();
    if let Err(e) = sys::raise_nofile_limit() {
        diag::warn(&format!("cannot raise the descriptor limit: {e}"));
    }

    let Some(config) = read_config(sock.as_fd())? else {
        diag::info("terminated by signal while waiting for the configuration");
        return Ok(());
    };
    if let Some(vmname) = &config.vmname {
        sys::set_process_title(vmname);
    }

    let path = libslirp_path(&options);
    let api = SlirpApi::load(&path).map_err(|e| Fatal(1, e.to_string()))?;

    let limit = FrameLimit::from_mtui(config.mtui);
    let kind = poller_kind(&options, &config)?;
    let batch = batch_size(&options, &config)?;
    let coalesce = coalescing(&options, &config, batch)?;
    if batch > 1 {
        // bhyve drops frames when the helper's receive buffer is full, and on Linux the
        // sender's buffer bounds what is in flight: room for a few rings of whole frames.
        let bytes = (4 * batch * limit.max_frame()).clamp(1 << 20, 8 << 20);
        if let Err(e) = sys::set_socket_buffers(sock.as_fd(), bytes) {
            diag::warn(&format!(
                "cannot size the socket buffers to {bytes} bytes: {e}"
            ));
        }
    }
    let host = Host::new(kind, sock.as_fd(), limit, batch)
        .map_err(|e| Fatal(1, format!("creating the poller: {e}")))?;
    let restricted = !config.open;
    let mut stack = Stack::new(
        api,
        StackConfig {
            restricted,
            mtu: limit.mtu(),
        },
        host,
    )
    .map_err(|e| Fatal(1, format!("libslirp: {e}")))?;
    for rule in &config.hostfwd {
        stack
            .add_hostfwd(rule)
            .map_err(|e| Fatal(1, format!("unable to add hostfwd rule '{rule}': {e}")))?;
    }

    sandbox::drop_privileges().map_err(|e| Fatal(1, e.to_string()))?;
    sandbox::confine(restricted).map_err(|e| Fatal(1, e.to_string()))?;

    let mut rx = FrameRx::new(sock.as_fd(), limit, batch);
    let mut reasm = Ipv4Reassembler::new(ReasmLimits::default());
    let mut coalescer = Coalescer::new(coalesce);
    let exit = event_loop::run(&mut stack, &mut rx, &mut reasm, &mut coalescer);
    let stats = event_loop::stats_line(&mut stack, &rx, &reasm, &coalescer);
    // The guest is gone: dropping the stack (slirp_cleanup) resets its TCP connections.
    stack.host().reset_connections_on_close();
    match exit {
        Ok(Exit::Hangup) => diag::info(&format!("bhyve closed the connection; {stats}")),
        Ok(Exit::Terminated) => diag::info(&format!("terminated by signal; {stats}")),
        Err(e) => return Err(Fatal(1, format!("{e}; {stats}"))),
    }
    Ok(())
}
