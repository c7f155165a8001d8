//! `slirp-frontend`: plays bhyve's role on Linux (see `slirp_helper::frontend`).

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    slirp_helper::frontend::main(std::env::args_os().skip(1))
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("slirp-frontend: Linux only (it uses network namespaces and tap devices)");
    std::process::ExitCode::from(1)
}
