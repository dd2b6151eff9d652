//! CLI errors: one `error:` line and a `hint:` line, never a panic.

use std::fmt;

/// An error shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// What went wrong (one line).
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// Process exit code.
    pub code: u8,
}

impl CliError {
    /// An error with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            code: 1,
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the exit code.
    pub fn code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// An error that is already reported (only the exit code matters).
    pub fn silent(code: u8) -> Self {
        Self {
            message: String::new(),
            hint: None,
            code,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(format!("I/O error: {e}"))
    }
}

impl From<airlock_proto::validate::Invalid> for CliError {
    fn from(e: airlock_proto::validate::Invalid) -> Self {
        CliError::new(e.message).hint(e.hint)
    }
}

/// Result alias.
pub type CliResult<T> = Result<T, CliError>;
