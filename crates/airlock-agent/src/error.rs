//! Agent errors.

use http::StatusCode;

/// What can go wrong on an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The Docker engine failed or is unreachable.
    #[error("docker: {0}")]
    Docker(String),
    /// The session is not on this agent.
    #[error("no session {0} on this agent")]
    NoSession(String),
    /// A request was invalid (bad path, missing image, …).
    #[error("{message}")]
    Invalid {
        /// What was wrong.
        message: String,
        /// What to do.
        hint: Option<String>,
        /// Status to answer with.
        status: StatusCode,
    },
    /// The host firewall for the session network could not be set up.
    #[error("cannot set up the session firewall: {0}")]
    Firewall(String),
    /// Local I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl AgentError {
    /// An invalid-request error.
    pub fn invalid(status: StatusCode, message: impl Into<String>) -> Self {
        AgentError::Invalid {
            message: message.into(),
            hint: None,
            status,
        }
    }

    /// What to do about it, when the error says.
    pub fn hint(&self) -> Option<&str> {
        match self {
            AgentError::Invalid { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }

    /// Adds a hint to an invalid-request error.
    pub fn with_hint(self, h: impl Into<String>) -> Self {
        match self {
            AgentError::Invalid {
                message, status, ..
            } => AgentError::Invalid {
                message,
                hint: Some(h.into()),
                status,
            },
            other => other,
        }
    }
}
