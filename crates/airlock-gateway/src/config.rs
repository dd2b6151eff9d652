//! Gateway settings, resolved by the binary before anything binds.

use std::time::Duration;

/// How the gateway behaves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Lifetime of a login cookie (`Max-Age`); the cookie is never rotated.
    pub session_max_age: Duration,
    /// Add `Secure` to cookies (when users reach the gateway over https).
    pub secure_cookies: bool,
    /// Failed logins allowed per account within [`Self::login_window`].
    pub login_failures_per_account: u32,
    /// Failed logins allowed per client address within [`Self::login_window`].
    pub login_failures_per_address: u32,
    /// Window for the failed-login counters (and the lockout length).
    pub login_window: Duration,
    /// Trust `X-Forwarded-For` / `X-Forwarded-Proto` (behind a reverse proxy).
    pub trust_forwarded: bool,
    /// Shared secret agents and the gateway prove themselves with (empty:
    /// no agent may register).
    pub agent_token: String,
    /// An agent silent for this long is offline.
    pub agent_offline_after: Duration,
    /// Image used when a create request names none.
    pub default_image: String,
    /// CPU millicores of a session by default.
    pub default_cpu_milli: i64,
    /// Memory of a session by default.
    pub default_mem_bytes: i64,
    /// How long `POST /session` waits for a session to be ready.
    pub create_timeout: Duration,
    /// Quotas of accounts an administrator has not given their own.
    pub default_limits: crate::quotas::Limits,
    /// Header-read timeout and connection caps.
    pub http_limits: crate::listener::HttpLimits,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            session_max_age: Duration::from_secs(7 * 24 * 3600),
            secure_cookies: false,
            login_failures_per_account: 5,
            login_failures_per_address: 20,
            login_window: Duration::from_secs(15 * 60),
            trust_forwarded: false,
            agent_token: String::new(),
            agent_offline_after: Duration::from_secs(20),
            default_image: "airlock/base:bookworm".to_owned(),
            default_cpu_milli: 1000,
            default_mem_bytes: 1 << 30,
            create_timeout: Duration::from_secs(300),
            default_limits: crate::quotas::Limits::default(),
            http_limits: crate::listener::HttpLimits::default(),
        }
    }
}
