//! Gateway settings, resolved by the binary before anything binds.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// How the gateway behaves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Lifetime of a login cookie (`Max-Age`); the cookie is never rotated.
    pub session_max_age: Duration,
    /// Add `Secure` to every cookie set (when users reach the gateway over
    /// https).
    pub secure_cookies: bool,
    /// Failed logins one client address may make against one account before
    /// it has to wait ([`Self::login_backoff_base`], doubling per further
    /// failure).
    pub login_free_failures: u32,
    /// First wait after [`Self::login_free_failures`].
    pub login_backoff_base: Duration,
    /// Longest wait for one (account, client address).
    pub login_backoff_max: Duration,
    /// Failed logins allowed per account from all addresses together within
    /// [`Self::login_account_window`] (a short ceiling, so that a burst of
    /// wrong guesses cannot lock the owner out for long).
    pub login_failures_per_account: u32,
    /// Window of the per-account ceiling (and so its longest lockout).
    pub login_account_window: Duration,
    /// Failed logins allowed per client address (all accounts) within
    /// [`Self::login_window`].
    pub login_failures_per_address: u32,
    /// Window for the per-address counter; also when an (account, address)
    /// pair's failures are forgotten.
    pub login_window: Duration,
    /// Reverse proxies whose `X-Forwarded-For`/`-Proto`/`-Host` headers are
    /// believed (`--trusted-proxy CIDR`); from anyone else they are ignored.
    pub trusted_proxies: Vec<IpCidr>,
    /// Origins (`https://airlock.example.com`) browsers may send
    /// state-changing requests from, besides the request's own `Host`.
    pub public_origins: Vec<String>,
    /// Shared secret agents without their own credential and the gateway
    /// prove themselves with (empty: only enrolled agents may register).
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
    /// Serve HTTPS with this configuration ([`crate::tls::server_config`]);
    /// `None`: plain HTTP.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// How long audit events are kept (pruned hourly); `None` = forever.
    pub audit_retention: Option<Duration>,
    /// Where new sessions go among the nodes with room.
    pub placement: crate::agents::Placement,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            session_max_age: Duration::from_secs(7 * 24 * 3600),
            secure_cookies: false,
            login_free_failures: 5,
            login_backoff_base: Duration::from_secs(1),
            login_backoff_max: Duration::from_secs(300),
            login_failures_per_account: 30,
            login_account_window: Duration::from_secs(60),
            login_failures_per_address: 50,
            login_window: Duration::from_secs(15 * 60),
            trusted_proxies: Vec::new(),
            public_origins: Vec::new(),
            agent_token: String::new(),
            // Two missed heartbeats (agents report every 5 s), and slack.
            agent_offline_after: Duration::from_secs(12),
            default_image: "airlock/base:bookworm".to_owned(),
            default_cpu_milli: 1000,
            default_mem_bytes: 1 << 30,
            create_timeout: Duration::from_secs(300),
            default_limits: crate::quotas::Limits::default(),
            http_limits: crate::listener::HttpLimits::default(),
            tls: None,
            audit_retention: None,
            placement: crate::agents::Placement::default(),
        }
    }
}

impl GatewayConfig {
    /// Whether forwarded headers from `peer` are believed.
    pub fn forwarded_from(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|c| c.contains(peer))
    }
}

/// An address range (`10.0.0.0/8`, `::1/128`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

/// A malformed `--trusted-proxy` value.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an address or CIDR range (like 10.0.0.0/8 or ::1/128)")]
pub struct BadCidr(pub String);

impl FromStr for IpCidr {
    type Err = BadCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCidr(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for IpCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl IpCidr {
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_contains() {
        let c: IpCidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
        let one: IpCidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpCidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
    }
}
