//! Error type of the runner library.

use std::path::Path;

/// Errors of the runner library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a named object failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// SSH key parsing or encoding failed.
    #[error("ssh key: {0}")]
    Key(#[from] ssh_key::Error),
    /// The SSH protocol layer failed.
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
    /// A system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },
    /// Invalid input or state.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with a context string.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An I/O error about a path.
    pub fn path(what: &str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }

    /// A system call error with a context string.
    pub fn sys(context: impl Into<String>, source: nix::errno::Errno) -> Self {
        Error::Sys {
            context: context.into(),
            source,
        }
    }
}
