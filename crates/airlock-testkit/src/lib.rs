//! Test harness for system tests: real binaries, real processes.
//!
//! Everything here is for tests only (it is a dev-dependency of nothing
//! shipped). Processes started here are killed when their handle drops, and
//! every wait has a deadline, so a failing test never hangs the suite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod docker;
pub mod nginx;
pub mod pki;
pub mod process;
pub mod ssh;

pub use process::{Airlockd, Background, Cli, LogOnPanic, Output, bin, free_port, run};
