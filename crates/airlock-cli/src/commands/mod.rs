//! One module per verb.

pub mod keys;
pub mod login;
pub mod settings;
