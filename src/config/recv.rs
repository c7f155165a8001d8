//! Reading the config nvlist from bhyve's socket by exact byte counts.
//!
//! INTERFACE CONTRACT: `recv_config(sock: BorrowedFd, timeout: Duration) -> Result<Nvlist, RecvError>`;
//! `RecvError: Display`.
