//! `bhyve-slirp-helper -S <fd>`: start-up in the C helper's order (design note 7), then the
//! loop. `--fd <fd>` (libvirt's slirp-helper contract) is the same start-up without the
//! nvlist and without the descriptor shuffle. Exit status: 0 on hangup or SIGTERM, else
//! [`HelperError::exit_code`] (1 on bad usage/config/libslirp, 4 on a bad boolean for `open`).

use slirp_helper::api::socket::ControlSocket;
use slirp_helper::api::ApiServer;
use slirp_helper::cli::{self, Command, Options, Socket};
use slirp_helper::coalesce::Coalescer;
use slirp_helper::config::{
    self, BhyveConfig, ConfigError, HostFwdRule, Network, Settings, ValueError,
};
use slirp_helper::echo6::Echo6Filter;
use slirp_helper::error::{HelperError, SocketError, SocketProblem};
use slirp_helper::event_loop::{self, Exit, Host};
use slirp_helper::frames::{FrameLimit, FrameRx, DEFAULT_BATCH};
use slirp_helper::pcap::{self, Capture};
use slirp_helper::poller::PollerKind;
use slirp_helper::reasm::{ReasmLimits, Reassembler};
use slirp_helper::slirp::api::{SlirpApi, DEFAULT_LIBSLIRP};
use slirp_helper::slirp::{Stack, StackConfig};
use slirp_helper::{diag, sandbox, sys};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Where bhyve's socket lives after start-up, as in the C helper (`dup2(sd, 3)`).
const SOCKET_FD: RawFd = 3;
/// bhyve sends the config right after spawning the helper; waiting longer means it never will.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => return fail(&HelperError::Usage(e)),
    };
    match command {
        Command::Help => {
            print!("{}", cli::HELP);
            ExitCode::SUCCESS
        }
        Command::Capabilities => {
            print!("{}", cli::capabilities_json());
            ExitCode::SUCCESS
        }
        Command::Version { libslirp } => {
            print!("{}", version_text(libslirp.as_deref()));
            ExitCode::SUCCESS
        }
        Command::ApiRequest { path, request } => api_request(&path, &request),
        Command::Run(options) => match run(options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
    }
}

/// `--api PATH REQUEST`: the replies on stdout; exit 0 when every one is a success, 1 on an
/// error reply or when the helper cannot be reached.
fn api_request(path: &std::path::Path, request: &str) -> ExitCode {
    match slirp_helper::api::client::request(path, request, Duration::from_secs(10)) {
        Ok(replies) => {
            print!("{replies}");
            if slirp_helper::api::client::all_succeeded(&replies) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("bhyve-slirp-helper: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Say why and end with the error's status. Before `diag::init` (a usage error, a bad `-S`)
/// `diag` sends the line through a channel it closes again: a log channel kept open then could
/// be replaced by bhyve's socket.
fn fail(e: &HelperError) -> ExitCode {
    if e.shows_usage() {
        diag::error(&format!("{e}\n{}", cli::USAGE));
    } else {
        diag::error(&e.to_string());
    }
    ExitCode::from(e.exit_code())
}

/// `--version`: ours, then libslirp's as a run would load it (or why it cannot be loaded).
fn version_text(libslirp: Option<&str>) -> String {
    let path = libslirp_path(libslirp);
    let ours = concat!("bhyve-slirp-helper ", env!("CARGO_PKG_VERSION"));
    match SlirpApi::load(&path) {
        Ok(api) => format!("{ours}\nlibslirp {} ({path})\n", api.version()),
        Err(e) => format!("{ours}\nlibslirp not loaded: {e}\n"),
    }
}

/// Check the socket. `-S` (bhyve): move it to fd 3, close everything else inherited from
/// bhyve, and point the standard descriptors the socket vacated (or that were closed) at
/// `/dev/null`. `--fd` (libvirt): the socket keeps its number and inherited descriptors stay
/// open, since libvirt's pidfile lock is one of them (`virCommandSetPidFile` leaks the locked
/// descriptor into the helper, and `virPidFileForceCleanupPath` kills the helper only while
/// the lock is held); only closed standard descriptors are pointed at `/dev/null`. Only then
/// may `diag::init` open its syslog socket: nothing but frames is ever written to the socket.
fn adopt_socket(socket: Socket) -> Result<OwnedFd, HelperError> {
    let fd = socket.fd();
    let option = match socket {
        Socket::Bhyve(_) => "-S",
        Socket::Frames(_) => "--fd",
    };
    let refuse = |problem| {
        HelperError::from(SocketError {
            option,
            fd,
            problem,
        })
    };
    if !sys::fd_is_open(fd) {
        return Err(refuse(SocketProblem::NotOpen));
    }
    match sys::fd_is_socket(fd) {
        Ok(true) => {}
        Ok(false) => return Err(refuse(SocketProblem::NotSocket)),
        Err(err) => return Err(refuse(SocketProblem::Query { call: "fstat", err })),
    }
    match sys::socket_type(fd) {
        Ok(libc::SOCK_STREAM) => return Err(refuse(SocketProblem::Stream)),
        Ok(_) => {}
        Err(err) => {
            return Err(refuse(SocketProblem::Query {
                call: "getsockopt(SO_TYPE)",
                err,
            }))
        }
    }
    if matches!(socket, Socket::Frames(_)) && fd < SOCKET_FD {
        return Err(refuse(SocketProblem::Standard));
    }
    let vacant: Vec<RawFd> = (0..SOCKET_FD)
        .filter(|&std_fd| std_fd == fd || !sys::fd_is_open(std_fd))
        .collect();
    let setup = |call| move |err| HelperError::Setup { call, err };
    let sock = match socket {
        // SAFETY: this is start-up, before anything in the process opened a descriptor it
        // keeps (`diag::init` opens its log channel only after): `fd` is bhyve's socket,
        // which nothing here owns; descriptor 3 and those above it are leftovers of bhyve's
        // that nothing here uses; and the standard descriptors pointed at /dev/null are
        // vacant.
        Socket::Bhyve(_) => unsafe {
            let sock = sys::move_fd(fd, SOCKET_FD).map_err(setup("dup2(socket, 3)"))?;
            sys::closefrom(SOCKET_FD + 1);
            for std_fd in vacant {
                sys::dev_null_at(std_fd).map_err(|err| HelperError::DevNull { fd: std_fd, err })?;
            }
            sock
        },
        // SAFETY: start-up, as above: `fd` (3 or above, checked) is the launcher's socket,
        // which nothing here owns, so it gets its one owner; the standard descriptors pointed
        // at /dev/null are closed ones (never `fd`), so nothing is replaced.
        Socket::Frames(_) => unsafe {
            for std_fd in vacant {
                sys::dev_null_at(std_fd).map_err(|err| HelperError::DevNull { fd: std_fd, err })?;
            }
            sys::move_fd(fd, fd).map_err(setup("adopting the --fd socket"))?
        },
    };
    sys::set_cloexec(sock.as_fd(), true).map_err(setup("fcntl(socket, FD_CLOEXEC)"))?;
    sys::set_nonblocking(sock.as_fd(), true).map_err(setup("fcntl(socket, O_NONBLOCK)"))?;
    Ok(sock)
}

/// `--libslirp`, else `$SLIRP_HELPER_LIBSLIRP` when not empty, else the soname.
fn libslirp_path(option: Option<&str>) -> String {
    option
        .map(str::to_owned)
        .or_else(|| {
            std::env::var(cli::LIBSLIRP_ENV)
                .ok()
                .filter(|p| !p.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_LIBSLIRP.to_string())
}

/// The config, or `None` when SIGTERM/SIGINT arrived while waiting for it. On the `--fd`
/// path nothing is read: the configuration is the keys' defaults (10.0.2.0/24, no forwards,
/// frames up to 2048 bytes) in open mode, as QEMU's own user network and libvirt expect (libvirt
/// never passes `--restrict`; a helper restricted by default would give its guests no
/// network beyond the host); `--hostfwd`, `--mtu`, `--poller`,
/// `--batch` and `--coalesce` apply as on every path, and the network keys come as options
/// (`--net=A/P`, as libvirt passes it), applied over these defaults in `run`.
fn read_config(socket: Socket, sock: BorrowedFd<'_>) -> Result<Option<BhyveConfig>, HelperError> {
    if let Socket::Frames(_) = socket {
        let mut config = BhyveConfig::default();
        config.open = true;
        return Ok(Some(config));
    }
    let nvlist =
        match config::recv::recv_config_until(sock, CONFIG_TIMEOUT, &sys::SIGNALS.terminate) {
            Ok(nvlist) => nvlist,
            Err(config::RecvError::Stopped) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
    Ok(Some(BhyveConfig::from_nvlist(&nvlist)?))
}

/// A tunable: the command line wins, else bhyve's config key of the same name
/// (`-s 2,virtio-net,slirp,poller=poll,batch=1`), else `default`. The key goes through the
/// option's parser, so a mistake reads the same both ways.
fn tunable<T>(
    from_cli: Option<T>,
    config: &BhyveConfig,
    key: &'static str,
    parse: impl FnOnce(&'static str, &str) -> Result<T, ValueError>,
    default: impl FnOnce() -> T,
) -> Result<T, HelperError> {
    if let Some(value) = from_cli {
        return Ok(value);
    }
    match config.string_option(key)? {
        None => Ok(default()),
        Some(text) => Ok(parse(key, text).map_err(ConfigError::Tunable)?),
    }
}

fn poller_kind(options: &Options, config: &BhyveConfig) -> Result<PollerKind, HelperError> {
    tunable(
        options.poller,
        config,
        "poller",
        cli::parse_poller,
        PollerKind::platform_default,
    )
}

fn batch_size(options: &Options, config: &BhyveConfig) -> Result<usize, HelperError> {
    tunable(options.batch, config, "batch", cli::parse_batch, || {
        DEFAULT_BATCH
    })
}

/// Merging guest TCP segments needs a batch to merge from: with `--batch 1` (the C helper's
/// design) it is off unless asked for.
fn coalescing(options: &Options, config: &BhyveConfig, batch: usize) -> Result<bool, HelperError> {
    tunable(
        options.coalesce,
        config,
        "coalesce",
        cli::parse_switch,
        || batch > 1,
    )
}

/// How long a parent that leads the helper's session has to exit before it counts as the
/// hypervisor rather than a daemonizing step. libvirt's middle process exits as soon as the
/// helper-to-be has written its pidfile, before the exec.
const DAEMONIZING_PARENT_GRACE: Duration = Duration::from_millis(500);

/// Whether the helper was daemonized the way libvirt does it (`virCommandDaemonize`: fork,
/// setsid, fork, and the middle process exits once the pidfile is written). Its parent then
/// leads the helper's new session and is about to exit: following it would end the helper a
/// moment after start, and nothing else is its parent. A hypervisor that leads a session
/// (a service's shell that starts the helper and `exec`s QEMU) stays, and is followed.
fn started_by_daemonizing_parent(parent: libc::pid_t) -> bool {
    if sys::session_id() != parent {
        return false;
    }
    let deadline = std::time::Instant::now() + DAEMONIZING_PARENT_GRACE;
    while std::time::Instant::now() < deadline {
        if sys::parent_pid() != parent {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// `pcap=PATH` / `--pcap PATH`: the capture file, opened now (before the privilege drop and
/// the sandbox), or `None` without capture. `pcap_max` is checked even without `pcap`, so a
/// bad value is never silently kept for later.
fn capture(
    options: &Options,
    config: &BhyveConfig,
    limit: FrameLimit,
) -> Result<Option<Capture>, HelperError> {
    let path = tunable(
        options.pcap.clone(),
        config,
        "pcap",
        cli::parse_pcap_path,
        String::new,
    )?;
    let max = tunable(
        options.pcap_max,
        config,
        "pcap_max",
        cli::parse_pcap_max,
        || pcap::DEFAULT_MAX_BYTES,
    )?;
    if path.is_empty() {
        return Ok(None);
    }
    let capture = Capture::open(&path, max, limit)?;
    diag::info(&format!(
        "pcap: recording every frame to '{}' (at most {max} bytes)",
        path.escape_debug()
    ));
    Ok(Some(capture))
}

/// The control socket's path: `--api`, else the `api` key, else none.
fn api_path(options: &Options, config: &BhyveConfig) -> Result<Option<PathBuf>, HelperError> {
    tunable(
        options.api.clone().map(Some),
        config,
        "api",
        |key, text| cli::parse_api_path(key, text).map(Some),
        || None,
    )
}

/// Why `add_hostfwd` cannot work once the sandbox is entered, if it cannot: Capsicum (FreeBSD,
/// restricted mode) forbids binding a socket by address.
fn api_add_refusal(restricted: bool) -> Option<&'static str> {
    (cfg!(target_os = "freebsd") && restricted).then_some(
        "restricted mode on FreeBSD runs under Capsicum, which forbids binding a socket by \
         address; put the forward in the hostfwd key, or use open mode",
    )
}

fn run(options: Options) -> Result<(), HelperError> {
    let parent = sys::parent_pid();
    sys::install_signal_handlers().map_err(|err| HelperError::Setup {
        call: "sigaction",
        err,
    })?;
    // After the handlers: a SIGTERM during this wait (at most DAEMONIZING_PARENT_GRACE) is
    // then a clean end, not the default action.
    let follow_parent = options.exit_with_parent && !started_by_daemonizing_parent(parent);
    // Armed now for the wait for the configuration, and again after the privilege drop,
    // which clears it.
    let exit_with_parent = || {
        if follow_parent {
            sys::exit_with_parent(parent).map_err(|err| HelperError::Setup {
                call: "exit-with-parent (PR_SET_PDEATHSIG / PROC_PDEATHSIG_CTL)",
                err,
            })?;
        }
        Ok::<(), HelperError>(())
    };
    exit_with_parent()?;
    let sock = adopt_socket(options.socket)?;
    diag::init();
    if options.exit_with_parent && !follow_parent {
        diag::info(
            "--exit-with-parent: started by a daemonizing parent (as libvirt does), which has \
             exited; no parent to follow, the launcher stops the helper",
        );
    }
    if let Err(e) = sys::raise_nofile_limit() {
        diag::warn(&format!("cannot raise the descriptor limit: {e}"));
    }

    let Some(mut config) = read_config(options.socket, sock.as_fd())? else {
        diag::info("terminated by signal while waiting for the configuration");
        return Ok(());
    };
    // The options win over bhyve's keys, as for every setting.
    if let Some(rules) = &options.hostfwd {
        config.hostfwd = rules.clone();
    }
    if let Some(mtu) = options.mtu {
        config.mtui = Some(mtu);
    }
    if let Some(vmname) = &config.vmname {
        sys::set_process_title(vmname);
    }

    let network = Network::from_settings(&Settings::new(&options.settings, &config))?;
    // Before libslirp is loaded: the process that removes the file at exit is forked small.
    let control = match api_path(&options, &config)? {
        Some(path) => Some(ControlSocket::create(&path).map_err(HelperError::Api)?),
        None => None,
    };

    let path = libslirp_path(options.libslirp.as_deref());
    let api = SlirpApi::load(&path)?;
    let loaded = api.version_number();
    network.check_libslirp(loaded).map_err(ConfigError::from)?;

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
    let capture = capture(&options, &config, limit)?;
    let mut host = Host::new(kind, sock.as_fd(), limit, batch).map_err(HelperError::Poller)?;
    host.tx.capture = capture;
    host.echo6 = Echo6Filter::new(&network, loaded);
    let restricted = options.restrict || !config.open;
    let mut stack = Stack::new(
        api,
        StackConfig {
            restricted,
            mtu: limit.mtu(),
            network: &network,
        },
        host,
    )
    .map_err(HelperError::SlirpNew)?;
    diag::info(&format!(
        "bhyve-slirp-helper {} with libslirp {} ({path})",
        env!("CARGO_PKG_VERSION"),
        stack.version()
    ));
    let mut installed = Vec::with_capacity(config.hostfwd.len());
    for (i, rule) in config.hostfwd.iter().enumerate() {
        let rule = rule.with_guest_default(network.dhcp_start);
        let host_port = stack
            .add_hostfwd(&rule)
            .map_err(|err| HelperError::HostFwd {
                index: i + 1,
                rule,
                err,
            })?;
        installed.push(HostFwdRule { host_port, ..rule });
    }
    let mut api_server = control.map(|socket| {
        diag::info(&format!("control socket at {}", socket.path().display()));
        ApiServer::new(
            socket,
            &installed,
            api_add_refusal(restricted),
            network.dhcp_start,
        )
    });

    if sandbox::drop_privileges()? == sandbox::PrivilegeDrop::NoCapability {
        diag::warn(
            "running as root without the capabilities to become nobody (as libvirt starts \
             the helper); staying root without capabilities, confined by the sandbox",
        );
    }
    exit_with_parent()?;
    // The kind in use after any fallback: seccomp lets io_uring_enter through only for a ring.
    let uring = stack.host().poller.kind() == PollerKind::IoUring;
    sandbox::confine(restricted, api_server.is_some(), uring)?;

    let mut rx = FrameRx::new(sock.as_fd(), limit, batch);
    let mut reasm = Reassembler::new(ReasmLimits::default());
    // libslirp drops IPv6 packets longer than its if_mtu: IPv6 merges stop there (65520 with
    // IPv6 on, where the TX ring fragments what libslirp sends).
    let six_mtu = slirp_helper::slirp::if_mtu(limit.mtu(), network.ipv6.is_some());
    let mut coalescer = Coalescer::new(coalesce).with_ipv6_mtu(six_mtu);
    let exit = event_loop::run(
        &mut stack,
        &mut rx,
        &mut reasm,
        &mut coalescer,
        api_server.as_mut(),
    );
    let mut stats = event_loop::stats_line(&mut stack, &rx, &reasm, &coalescer);
    if let Some(api) = &api_server {
        stats.push_str(&api.stats_fields());
    }
    // The guest is gone: dropping the stack (slirp_cleanup) resets its TCP connections.
    stack.host().reset_connections_on_close();
    match exit {
        Ok(Exit::Hangup) => diag::info(&format!("bhyve closed the connection; {stats}")),
        Ok(Exit::Terminated) => diag::info(&format!("terminated by signal; {stats}")),
        Err(err) => return Err(HelperError::Loop { err, stats }),
    }
    Ok(())
}
