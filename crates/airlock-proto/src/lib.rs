//! Wire facts shared by every airlock component, with no I/O.
//!
//! This crate is the single place that knows how airlock talks: the API
//! version string, the HMAC request signature and the encrypted login body of
//! the Backend.AI protocol (so that the official `backend.ai` client works
//! against our gateway), the JSON shapes of our own API, validation rules for
//! user input, and SSH public-key handling.
//!
//! Invariant: nothing here opens files or sockets, spawns tasks or reads the
//! environment. Everything is a pure function or a plain data type, so that the
//! gateway, the agent, the runner and the CLI agree by construction.

pub mod agent;
pub mod api;
pub mod files;
pub mod login;
pub mod ppk;
pub mod problem;
pub mod recipes;
pub mod sign;
pub mod sshkey;
pub mod validate;

/// The Backend.AI API version airlock speaks (`X-BackendAI-Version`).
pub const API_VERSION: &str = "v9.20250722";

/// `VERSION (API v…)`: the `--version` text of `airlock` and `airlockd`
/// (one workspace, one version), with the Backend.AI API version spoken.
pub fn version_line() -> &'static str {
    static LINE: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{} (API {API_VERSION})", env!("CARGO_PKG_VERSION")));
    LINE.as_str()
}

/// The version of this airlock build, as shown in the `manager` field of the
/// version handshake (`airlock 0.1.0`).
pub fn manager_version() -> String {
    format!("airlock {}", env!("CARGO_PKG_VERSION"))
}

/// Name of the cookie that carries a web session (as Backend.AI's web server).
pub const SESSION_COOKIE: &str = "AIOHTTP_SESSION";

/// The container user every session runs as.
pub const CONTAINER_USER: &str = "work";

/// The exit-signal name the runner ends a kept terminal's channel with when
/// another viewer took the shell over (`airlock-attach`): the shell lives
/// on, so the web terminal says so instead of reconnecting.
pub const TERMINAL_TAKEN_OVER: &str = "taken-over@airlock";

/// Home directory of [`CONTAINER_USER`] inside a session.
pub const CONTAINER_HOME: &str = "/home/work";

/// Container port of the in-session SSH server.
pub const SSHD_PORT: u16 = 2200;
