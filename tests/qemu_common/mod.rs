//! A real hypervisor as the frontend: QEMU (`-netdev socket,fd=N` + virtio-net) booting
//! Debian's kernel with a busybox initramfs, the helper on the other end of a SOCK_DGRAM
//! socketpair (#14).
//!
//! Owns: finding QEMU, the kernel and its modules; building the initramfs (cached under
//! `target/tmp`); choosing KVM only when it really boots a guest, else TCG; one QEMU process per
//! guest, its serial console driven as a shell, and its console log (printed when a test
//! fails). Every wait has a deadline; only pids started here are killed.
//!
//! Network rule: the guest has one NIC, whose other end is the helper; the helper reaches only
//! 127.0.0.1 services the tests start.
#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Where the initramfs and the console logs go (`target/tmp`).
const WORK_DIR: &str = env!("CARGO_TARGET_TMPDIR");
/// What the guest's init prints once its NIC is up and its shell reads the console.
const READY: &str = "GUEST-READY";
/// The guest's MAC (the helper's DHCP server leases 10.0.2.15 to the first client).
pub const GUEST_MAC: &str = "52:54:00:12:34:56";
/// A boot under TCG takes about 3 s here; a shared 2-core machine may be slower.
const BOOT_LIMIT: Duration = Duration::from_secs(60);
/// How long a KVM boot may take before KVM is declared broken here (guests hang early).
const KVM_PROBE_LIMIT: Duration = Duration::from_secs(15);
/// Guest memory: the initramfs, busybox and two 16 MiB files in tmpfs.
const GUEST_MEMORY_MIB: u32 = 256;
/// Modules the guest needs for its NIC; their dependencies come from `modules.dep`.
const GUEST_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

/// Everything a guest needs on this machine.
pub struct Kit {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: Accel,
}

/// How QEMU runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg"],
        }
    }
}

/// The kit, or why there is none (the caller reports a skip with it). Built once per process.
pub fn kit() -> Result<&'static Kit, String> {
    static KIT: OnceLock<Result<Kit, String>> = OnceLock::new();
    KIT.get_or_init(build_kit).as_ref().map_err(Clone::clone)
}

fn build_kit() -> Result<Kit, String> {
    let qemu = find_program("qemu-system-x86_64")
        .ok_or("qemu-system-x86_64 not found (Debian package qemu-system-x86)")?;
    let busybox = find_program("busybox").ok_or("busybox not found (Debian package busybox)")?;
    let (kernel, release) = find_kernel()?;
    let modules = Path::new("/lib/modules").join(&release);
    if !modules.join("modules.dep").exists() {
        return Err(format!(
            "{} has no modules.dep (Debian package linux-image-amd64)",
            modules.display()
        ));
    }
    let dir = Path::new(WORK_DIR).join("qemu-guest");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let initramfs = dir.join(format!("initramfs-{release}.cpio"));
    if !initramfs.exists() {
        build_initramfs(&busybox, &modules, &initramfs)?;
    }
    let mut kit = Kit {
        qemu,
        kernel,
        initramfs,
        accel: Accel::Tcg,
    };
    kit.accel = choose_accel(&kit, &dir.join(format!("accel-{release}")));
    eprintln!("qemu tests: guest under {:?}", kit.accel);
    Ok(kit)
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The running kernel's image when it is in /boot (CI), else the newest /boot/vmlinuz-* whose
/// modules are installed (a container whose host runs another kernel).
fn find_kernel() -> Result<(PathBuf, String), String> {
    let running = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let running = running.trim();
    let mut found: Vec<String> = fs::read_dir("/boot")
        .map_err(|e| format!("/boot: {e}"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_owned)
        })
        .filter(|release| Path::new("/lib/modules").join(release).is_dir())
        .collect();
    found.sort();
    let release = if found.iter().any(|r| r == running) {
        running.to_owned()
    } else {
        found
            .pop()
            .ok_or("no /boot/vmlinuz-* with its modules (Debian package linux-image-amd64)")?
    };
    Ok((
        Path::new("/boot").join(format!("vmlinuz-{release}")),
        release,
    ))
}

// ---------------------------------------------------------------------------------------------
// The initramfs
// ---------------------------------------------------------------------------------------------

/// The guest's /init: mount, load the NIC's modules in dependency order, bring the NIC up,
/// then a shell on the console for the test to drive.
fn init_script(modules: &[String]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         mount -t tmpfs tmp /tmp\n",
    );
    for m in modules {
        s.push_str(&format!("insmod /modules/{m} || echo INSMOD-FAILED {m}\n"));
    }
    s.push_str(&format!(
        "ip link set lo up\n\
         ip link set eth0 up || echo NO-ETH0\n\
         stty -echo 2>/dev/null\n\
         export PS1=''\n\
         echo {READY}\n\
         exec sh\n"
    ));
    s
}

/// What busybox udhcpc runs with a lease (`udhcpc -s /etc/udhcpc.script`): the address and
/// its prefix only. No default route, whatever the lease offers: the guest reaches 10.0.2.0/24
/// and nothing else, so open mode cannot carry a test's traffic off the machine.
const UDHCPC_SCRIPT: &str = "#!/bin/sh\n\
case \"$1\" in\n\
bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\";;\n\
deconfig) ip addr flush dev \"$interface\";;\n\
esac\n\
exit 0\n";

/// `modules` and everything they need, dependencies first (from `modules.dep`), as file names.
fn module_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>, String> {
    let dep = fs::read_to_string(modules_dir.join("modules.dep"))
        .map_err(|e| format!("modules.dep: {e}"))?;
    let deps: Vec<(String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.to_owned(),
                d.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect();
    let by_name = |name: &str| -> Option<&(String, Vec<String>)> {
        deps.iter().find(|(path, _)| {
            let file = path.rsplit('/').next().unwrap_or(path);
            file.split('.').next() == Some(name)
        })
    };
    fn visit(
        path: &str,
        deps: &[(String, Vec<String>)],
        out: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 32 {
            return Err(format!("modules.dep: a cycle through {path}"));
        }
        if out.iter().any(|p| p == path) {
            return Ok(());
        }
        let own = deps
            .iter()
            .find(|(p, _)| p == path)
            .ok_or_else(|| format!("modules.dep: no entry for {path}"))?;
        for d in &own.1 {
            visit(d, deps, out, depth + 1)?;
        }
        out.push(path.to_owned());
        Ok(())
    }
    let mut out = Vec::new();
    for name in wanted {
        let (path, _) = by_name(name).ok_or_else(|| {
            format!(
                "module {name} not in {}/modules.dep (built in?)",
                modules_dir.display()
            )
        })?;
        visit(path, &deps, &mut out, 0)?;
    }
    Ok(out.into_iter().map(|p| modules_dir.join(p)).collect())
}

/// The shared libraries `program` loads, and its interpreter (`ldd`'s answer).
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("statically linked") || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn build_initramfs(busybox: &Path, modules_dir: &Path, out: &Path) -> Result<(), String> {
    let modules = module_order(modules_dir, GUEST_MODULES)?;
    let mut archive = Cpio::default();
    for dir in [
        "bin", "dev", "proc", "sys", "tmp", "modules", "lib", "lib64",
    ] {
        archive.dir(dir);
    }
    let read = |p: &Path| fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    archive.file("bin/busybox", 0o755, &read(busybox)?);
    for lib in shared_libraries(busybox)? {
        let rel = lib.to_string_lossy().trim_start_matches('/').to_owned();
        let mut parent = String::new();
        for part in rel.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            parent = if parent.is_empty() {
                (*part).to_owned()
            } else {
                format!("{parent}/{part}")
            };
            archive.dir(&parent);
        }
        // Follow links: the file the name resolves to, stored under the name.
        archive.file(&rel, 0o755, &read(&lib)?);
    }
    let mut names = Vec::new();
    for m in &modules {
        let name = m.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".ko.xz") || name.ends_with(".ko.zst") || name.ends_with(".ko.gz") {
            return Err(format!(
                "{}: compressed modules are not supported by this test's loader",
                m.display()
            ));
        }
        archive.file(&format!("modules/{name}"), 0o644, &read(m)?);
        names.push(name);
    }
    archive.file("init", 0o755, init_script(&names).as_bytes());
    archive.dir("etc");
    archive.file("etc/udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes());
    // Tests of one binary run in parallel: write aside, then rename into place.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, archive.finish()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))
}

/// A `newc` cpio archive, what the kernel unpacks as an initramfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
    dirs: Vec<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.inode += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len(),
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            name.len() + 1,
            0, // check
        );
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        if !self.dirs.iter().any(|d| d == name) {
            self.dirs.push(name.to_owned());
            self.entry(name, 0o040755, &[]);
        }
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

// ---------------------------------------------------------------------------------------------
// KVM or TCG
// ---------------------------------------------------------------------------------------------

/// KVM only when it really boots this guest: on some machines `/dev/kvm` exists but guests
/// hang early and `-cpu host` fails on an MSR. The answer is kept in `cache` (one probe per
/// machine and kernel); `SLIRP_TEST_QEMU_ACCEL=tcg|kvm` overrides it.
fn choose_accel(kit: &Kit, cache: &Path) -> Accel {
    match std::env::var("SLIRP_TEST_QEMU_ACCEL").as_deref() {
        Ok("tcg") => return Accel::Tcg,
        Ok("kvm") => return Accel::Kvm,
        _ => {}
    }
    match fs::read_to_string(cache).as_deref().map(str::trim) {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    let accel = if Path::new("/dev/kvm").exists() && kvm_boots(kit) {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let _ = fs::write(cache, if accel == Accel::Kvm { "kvm" } else { "tcg" });
    accel
}

fn kvm_boots(kit: &Kit) -> bool {
    let probe = Kit {
        qemu: kit.qemu.clone(),
        kernel: kit.kernel.clone(),
        initramfs: kit.initramfs.clone(),
        accel: Accel::Kvm,
    };
    let Ok(mut guest) = Guest::boot_with(&probe, "kvm-probe", Nic::None, KVM_PROBE_LIMIT) else {
        return false;
    };
    let ok = guest.run("true", Duration::from_secs(5)).is_ok();
    guest.kill();
    ok
}

// ---------------------------------------------------------------------------------------------
// A guest
// ---------------------------------------------------------------------------------------------

/// The guest's network interface.
pub enum Nic {
    /// No NIC (the KVM probe).
    None,
    /// virtio-net on `-netdev socket,fd=N`: QEMU's end of the socketpair, and the guest MTU
    /// QEMU announces (`host_mtu`), if any.
    Socket { fd: OwnedFd, host_mtu: Option<u32> },
}

/// How QEMU is started.
pub struct Launch<'a> {
    /// A shell command run before QEMU by the same process, which then `exec`s QEMU: what it
    /// starts in the background has QEMU as its parent (`--exit-with-parent`). The given
    /// socket (the helper's end) is on descriptor 3 for it, QEMU's end on descriptor 4; the
    /// command should close 4 for what it starts (`4<&-`), and QEMU does not get 3.
    pub before: Option<(&'a str, OwnedFd)>,
}

/// One QEMU process and its console.
pub struct Guest {
    child: Child,
    stdin: ChildStdin,
    console: Arc<Mutex<String>>,
    log: PathBuf,
    status: Option<ExitStatus>,
    commands: u32,
}

/// A command that did not finish, or finished with another status.
#[derive(Debug)]
pub struct Failed {
    pub status: Option<i32>,
    pub output: String,
}

impl Guest {
    /// Boot a guest whose NIC is `nic`; the console log is `target/tmp/qemu-logs/<name>.log`.
    pub fn boot(kit: &Kit, name: &str, nic: Nic) -> Guest {
        Self::launch(kit, name, nic, Launch { before: None }, BOOT_LIMIT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Guest::boot`], QEMU exec'd by a shell that first runs `launch.before`.
    pub fn boot_after(kit: &Kit, name: &str, nic: Nic, launch: Launch<'_>) -> Guest {
        Self::launch(kit, name, nic, launch, BOOT_LIMIT).unwrap_or_else(|e| panic!("{e}"))
    }

    fn boot_with(kit: &Kit, name: &str, nic: Nic, limit: Duration) -> Result<Guest, String> {
        Self::launch(kit, name, nic, Launch { before: None }, limit)
    }

    fn launch(
        kit: &Kit,
        name: &str,
        nic: Nic,
        launch: Launch<'_>,
        limit: Duration,
    ) -> Result<Guest, String> {
        let logs = Path::new(WORK_DIR).join("qemu-logs");
        let _ = fs::create_dir_all(&logs);
        let log = logs.join(format!("{name}.log"));
        let mut args: Vec<String> = vec![
            "-machine".into(),
            "q35".into(),
            "-m".into(),
            GUEST_MEMORY_MIB.to_string(),
            "-smp".into(),
            "1".into(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-serial".into(),
            "stdio".into(),
            "-no-reboot".into(),
            "-kernel".into(),
            kit.kernel.to_string_lossy().into_owned(),
            "-initrd".into(),
            kit.initramfs.to_string_lossy().into_owned(),
            "-append".into(),
            "console=ttyS0 quiet panic=-1".into(),
        ];
        args.extend(kit.accel.args().iter().map(|s| s.to_string()));
        let mut qemu_fd: Option<RawFd> = None;
        let mut keep: Option<OwnedFd> = None;
        if let Nic::Socket { fd, host_mtu } = nic {
            let n = if launch.before.is_some() {
                4
            } else {
                fd.as_raw_fd()
            };
            args.push("-netdev".into());
            args.push(format!("socket,id=n0,fd={n}"));
            let mut device = format!("virtio-net-pci,netdev=n0,mac={GUEST_MAC}");
            if let Some(mtu) = host_mtu {
                device.push_str(&format!(",host_mtu={mtu}"));
            }
            args.push("-device".into());
            args.push(device);
            qemu_fd = Some(fd.as_raw_fd());
            keep = Some(fd);
        }
        let mut cmd = match launch.before {
            None => {
                let mut c = Command::new(&kit.qemu);
                c.args(&args);
                c
            }
            Some((before, _)) => {
                let mut c = Command::new("/bin/sh");
                let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
                c.arg("-c").arg(format!(
                    "{before}\nexec {} {} 3<&-",
                    shell_quote(&kit.qemu.to_string_lossy()),
                    quoted.join(" ")
                ));
                c
            }
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let helper_end: Option<RawFd> = launch.before.as_ref().map(|(_, fd)| fd.as_raw_fd());
        if let Some(fd) = qemu_fd {
            // SAFETY: runs in the forked child before exec; fcntl and dup2 are
            // async-signal-safe and touch only this child's descriptor table.
            unsafe {
                cmd.pre_exec(move || {
                    if let Some(helper) = helper_end {
                        // QEMU's end on 4 and the helper's on 3, through a spare number so
                        // that neither overwrites the other (dup2 leaves the copies without
                        // CLOEXEC).
                        const SPARE: RawFd = 200;
                        if libc::dup2(fd, SPARE) < 0
                            || libc::dup2(helper, 3) < 0
                            || libc::dup2(SPARE, 4) < 0
                            || libc::close(SPARE) < 0
                        {
                            return Err(io::Error::last_os_error());
                        }
                        return Ok(());
                    }
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", kit.qemu.display()))?;
        drop(keep);
        drop(launch.before);
        let stdin = child.stdin.take().unwrap();
        let console = Arc::new(Mutex::new(String::new()));
        let file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let console = Arc::clone(&console);
            let mut file = file.try_clone().unwrap();
            thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = file.write_all(&buf[..n]);
                    console
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut guest = Guest {
            child,
            stdin,
            console,
            log,
            status: None,
            commands: 0,
        };
        if guest.wait_console(READY, limit).is_none() {
            let text = guest.console_text();
            guest.kill();
            return Err(format!(
                "guest {name} did not boot within {limit:?} under {:?}; console:\n{text}",
                kit.accel
            ));
        }
        // The shell reads the console from here on; characters that reached the serial line
        // while the kernel was still setting it up can be lost, so agree on a first command
        // (retried) before the test's own.
        if !(0..3).any(|_| guest.run("true", Duration::from_secs(20)).is_ok()) {
            let text = guest.console_text();
            guest.kill();
            return Err(format!(
                "guest {name}: the console shell does not answer:\n{text}"
            ));
        }
        if let Some(line) = guest.console_text().lines().find(|l| {
            l.contains("INSMOD-FAILED") || l.contains("NO-ETH0") || l.contains("insmod: can't")
        }) {
            let text = guest.console_text();
            guest.kill();
            return Err(format!("guest {name}: {line}; console:\n{text}"));
        }
        Ok(guest)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn console_text(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// Waits (bounded) for `pat` on the console; the console text then.
    pub fn wait_console(&mut self, pat: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.console_text();
            if text.contains(pat) {
                return Some(text);
            }
            if Instant::now() >= deadline || self.exited() {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_some()
    }

    /// Run `command` in the guest's shell; its output on success (status 0).
    pub fn run(&mut self, command: &str, limit: Duration) -> Result<String, Failed> {
        self.commands += 1;
        let n = self.commands;
        let start = self.console_text().len();
        // The marker's number is computed by the guest's shell, so the command line itself
        // (should the console echo it) never matches `@@n:`.
        let line = format!("{command}\necho \"@@$(({n}+0)):$?@@\"\n");
        if self.stdin.write_all(line.as_bytes()).is_err() {
            return Err(Failed {
                status: None,
                output: "the console is closed (QEMU exited)".into(),
            });
        }
        let _ = self.stdin.flush();
        let marker = format!("@@{n}:");
        let deadline = Instant::now() + limit;
        loop {
            let text = self.console_text();
            let new = &text[start.min(text.len())..];
            if let Some(at) = new.find(&marker) {
                let rest = &new[at + marker.len()..];
                if let Some(end) = rest.find("@@") {
                    let status: i32 = rest[..end].trim().parse().unwrap_or(-1);
                    let output = new[..at].to_owned();
                    return if status == 0 {
                        Ok(output)
                    } else {
                        Err(Failed {
                            status: Some(status),
                            output,
                        })
                    };
                }
            }
            if Instant::now() >= deadline || self.exited() {
                return Err(Failed {
                    status: None,
                    output: new.to_owned(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// As [`Guest::run`], panicking with the console log on failure.
    pub fn must(&mut self, command: &str, limit: Duration) -> String {
        match self.run(command, limit) {
            Ok(out) => out,
            Err(f) => panic!(
                "guest command failed ({:?}): {command}\noutput:\n{}",
                f.status, f.output
            ),
        }
    }

    /// Power off from inside (a clean QEMU exit); QEMU's status, bounded.
    pub fn poweroff(&mut self, limit: Duration) -> Option<ExitStatus> {
        let _ = self.stdin.write_all(b"poweroff -f\n");
        let _ = self.stdin.flush();
        self.wait_exit(limit)
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if self.exited() {
                return self.status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL QEMU (this pid only) and reap it.
    pub fn kill(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "---- guest console ({}) ----\n{}\n---- end of console ----",
                self.log.display(),
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// `s` as one word for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
