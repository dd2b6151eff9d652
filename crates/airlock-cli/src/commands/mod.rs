//! One module per verb.

pub mod app;
pub mod config_ssh;
pub mod keys;
pub mod login;
pub mod proxy;
pub mod session;
pub mod settings;
pub mod ssh;
pub mod vfolder;
