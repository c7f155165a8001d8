//! bhyve-slirp-helper: a drop-in replacement for FreeBSD bhyve's libslirp helper.
//!
//! bhyve hands the helper one end of a SOCK_SEQPACKET socket, sends the device configuration
//! as a libnv nvlist, then exchanges one raw Ethernet frame per record. The helper runs
//! libslirp (loaded at run time) as the guest's TCP/IP stack.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod coalesce;
pub mod config;
pub mod diag;
pub mod error;
pub mod event_loop;
pub mod flow_budget;
pub mod frames;
pub mod poller;
pub mod reasm;
pub mod sandbox;
pub mod slirp;
pub mod stats;
pub mod sys;
#[cfg(test)]
mod test_rng;
pub mod wire;
