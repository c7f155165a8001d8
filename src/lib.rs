//! bhyve-slirp-helper: a drop-in replacement for FreeBSD bhyve's libslirp helper.
//!
//! bhyve hands the helper one end of a SOCK_SEQPACKET socket, sends the device configuration
//! as a libnv nvlist, then exchanges one raw Ethernet frame per record. The helper runs
//! libslirp (loaded at run time) as the guest's TCP/IP stack.
#![deny(unsafe_op_in_unsafe_fn)]

// `unsafe` lives only in the FFI and syscall modules (`sys`, `slirp`, `sandbox`, the batch
// calls in `frames::mmsg` and the poller backends); everything else is denied it.
#[deny(unsafe_code)]
pub mod api;
#[deny(unsafe_code)]
pub mod cli;
#[deny(unsafe_code)]
pub mod coalesce;
#[deny(unsafe_code)]
pub mod config;
#[deny(unsafe_code)]
pub mod diag;
#[deny(unsafe_code)]
pub mod echo6;
#[deny(unsafe_code)]
pub mod error;
#[deny(unsafe_code)]
pub mod event_loop;
#[deny(unsafe_code)]
pub(crate) mod flow_budget;
pub mod frames;
#[deny(unsafe_code)]
pub mod pcap;
pub mod poller;
#[deny(unsafe_code)]
pub mod reasm;
pub mod sandbox;
pub mod slirp;
#[deny(unsafe_code)]
pub(crate) mod stats;
pub mod sys;
#[cfg(test)]
mod test_rng;
#[deny(unsafe_code)]
pub mod wire;
