//! The default job (no command): placeholder until implemented.
use super::options::Options;
use super::supervise::Supervisor;

pub fn run(_opts: Options, _sup: Supervisor) -> u8 {
    eprintln!("slirp-frontend: default job not implemented yet");
    1
}
