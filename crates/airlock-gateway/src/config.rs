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
        }
    }
}
