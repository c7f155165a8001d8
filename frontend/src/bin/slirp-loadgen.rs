//! `slirp-loadgen`: load for the end-to-end benchmarks (see `slirp_frontend::loadgen`).

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    slirp_frontend::loadgen::main(std::env::args_os().skip(1))
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("slirp-loadgen: Linux only (it is the load of perf/run.sh)");
    std::process::ExitCode::from(1)
}
