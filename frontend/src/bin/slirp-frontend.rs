//! `slirp-frontend`: plays bhyve's role on Linux (see the `slirp_frontend` library).

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    slirp_frontend::main(std::env::args_os().skip(1))
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("slirp-frontend: Linux only (it uses network namespaces and tap devices)");
    std::process::ExitCode::from(1)
}
