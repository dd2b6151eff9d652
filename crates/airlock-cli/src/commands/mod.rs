//! One module per verb.

pub mod admin;
pub mod app;
pub mod completion;
pub mod config_ssh;
pub mod keys;
pub mod login;
pub mod ping;
pub mod proxy;
pub mod session;
pub mod settings;
pub mod speedtest;
pub mod ssh;
pub mod status;
pub mod vfolder;
