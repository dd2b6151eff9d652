//! One module per verb.

pub mod keys;
pub mod login;
pub mod session;
pub mod settings;
pub mod vfolder;
