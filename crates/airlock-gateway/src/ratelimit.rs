//! Failed-login accounting: per (account, client address) exponential
//! backoff, a short per-account ceiling and a per-address ceiling.
//!
//! Every attempt is charged *before* the password is checked, under one
//! lock ([`LoginLimiter::begin`]), so N concurrent wrong guesses cost N
//! attempts and none slips past a limit while others are being verified. A
//! success refunds its own charge and forgets the (account, address) pair.
//!
//! The real owner is never locked out for long by someone else: the backoff
//! is per client address, and the per-account ceiling (all addresses
//! together) only ever blocks for [`LoginPolicy::account_window`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::GatewayConfig;

/// The limits, from [`GatewayConfig`].
#[derive(Debug, Clone)]
pub struct LoginPolicy {
    /// Failures per (account, address) before backoff starts.
    pub free_failures: u32,
    /// First backoff.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Failures per account (all addresses) within `account_window`.
    pub per_account: u32,
    /// Window of the per-account ceiling.
    pub account_window: Duration,
    /// Failures per address (all accounts) within `window`.
    pub per_address: u32,
    /// Window of the per-address ceiling; pairs idle this long are forgotten.
    pub window: Duration,
}

impl From<&GatewayConfig> for LoginPolicy {
    fn from(c: &GatewayConfig) -> Self {
        Self {
            free_failures: c.login_free_failures,
            backoff_base: c.login_backoff_base,
            backoff_max: c.login_backoff_max,
            per_account: c.login_failures_per_account,
            account_window: c.login_account_window,
            per_address: c.login_failures_per_address,
            window: c.login_window,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pair {
    failures: u32,
    last: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    count: u32,
    since: Instant,
}

#[derive(Debug, Default)]
struct Buckets {
    pairs: HashMap<(String, IpAddr), Pair>,
    accounts: HashMap<String, Window>,
    addresses: HashMap<IpAddr, Window>,
}

/// Why an attempt was refused before checking the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Seconds until a new attempt may succeed in passing the limiter.
    pub retry_after: u64,
    /// Which limit: `"client"`, `"account"` or `"address"`.
    pub scope: &'static str,
}

/// A charged attempt; pass it to [`LoginLimiter::succeeded`] when the
/// password was right (a wrong one needs nothing: it is already counted).
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    account: String,
    client: IpAddr,
}

/// Failed-login accounting, in memory (one gateway process).
#[derive(Debug)]
pub struct LoginLimiter {
    policy: LoginPolicy,
    buckets: Mutex<Buckets>,
}

fn secs_until(now: Instant, at: Instant) -> u64 {
    let d = at.saturating_duration_since(now);
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl LoginLimiter {
    /// A limiter with this policy.
    pub fn new(policy: LoginPolicy) -> Self {
        Self {
            policy,
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// The backoff after `failures` failures of one pair (`None`: free).
    fn backoff(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.policy.free_failures)?;
        let factor = 1u32.checked_shl(over.min(30)).unwrap_or(u32::MAX);
        Some(
            self.policy
                .backoff_base
                .saturating_mul(factor)
                .min(self.policy.backoff_max),
        )
    }

    /// Charges one attempt for `account` from `client`, or says how long to
    /// wait. Atomic: the check and the charge happen under one lock.
    pub fn begin(&self, account: &str, client: IpAddr) -> Result<Attempt, Refused> {
        let now = Instant::now();
        let account = account.to_lowercase();
        let client = client.to_canonical();
        let p = &self.policy;
        let mut guard = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let b: &mut Buckets = &mut guard;
        if b.pairs.len() + b.accounts.len() + b.addresses.len() > 100_000 {
            let (window, account_window, max) = (p.window, p.account_window, p.backoff_max);
            b.pairs
                .retain(|_, v| now.duration_since(v.last) < window.max(max));
            b.accounts
                .retain(|_, v| now.duration_since(v.since) < account_window);
            b.addresses
                .retain(|_, v| now.duration_since(v.since) < window);
        }
        // The pair's backoff.
        let key = (account.clone(), client);
        if let Some(pair) = b.pairs.get(&key).copied() {
            if now.duration_since(pair.last) >= p.window.max(p.backoff_max) {
                b.pairs.remove(&key);
            } else if let Some(wait) = self.backoff(pair.failures) {
                let until = pair.last + wait;
                if now < until {
                    return Err(Refused {
                        retry_after: secs_until(now, until),
                        scope: "client",
                    });
                }
            }
        }
        // The ceilings.
        for (scope, window, limit) in [
            ("account", p.account_window, p.per_account),
            ("address", p.window, p.per_address),
        ] {
            let w = if scope == "account" {
                b.accounts.get(&account).copied()
            } else {
                b.addresses.get(&client).copied()
            };
            if let Some(w) = w
                && now.duration_since(w.since) < window
                && w.count >= limit
            {
                return Err(Refused {
                    retry_after: secs_until(now, w.since + window),
                    scope,
                });
            }
        }
        // Charge.
        let pair = b.pairs.entry(key).or_insert(Pair {
            failures: 0,
            last: now,
        });
        pair.failures = pair.failures.saturating_add(1);
        pair.last = now;
        for (window, w) in [
            (
                p.account_window,
                b.accounts.entry(account.clone()).or_insert(Window {
                    count: 0,
                    since: now,
                }),
            ),
            (
                p.window,
                b.addresses.entry(client).or_insert(Window {
                    count: 0,
                    since: now,
                }),
            ),
        ] {
            if now.duration_since(w.since) >= window {
                *w = Window {
                    count: 0,
                    since: now,
                };
            }
            w.count = w.count.saturating_add(1);
        }
        Ok(Attempt { account, client })
    }

    /// The password was right: refund the charge and forget the pair.
    pub fn succeeded(&self, attempt: Attempt) {
        let mut b = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        b.pairs.remove(&(attempt.account.clone(), attempt.client));
        if let Some(w) = b.accounts.get_mut(&attempt.account) {
            w.count = w.count.saturating_sub(1);
        }
        if let Some(w) = b.addresses.get_mut(&attempt.client) {
            w.count = w.count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LoginPolicy {
        LoginPolicy {
            free_failures: 3,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            per_account: 8,
            account_window: Duration::from_secs(60),
            per_address: 100,
            window: Duration::from_secs(60),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pair_backs_off_after_free_failures_and_doubles() {
        let l = LoginLimiter::new(policy());
        for _ in 0..3 {
            let _ = l.begin("a@x", ip("10.0.0.1")).unwrap();
        }
        let r = l.begin("A@x", ip("10.0.0.1")).unwrap_err();
        assert_eq!(r.scope, "client");
        // Another client is not affected; nor another account.
        let _ = l.begin("a@x", ip("10.0.0.2")).unwrap();
        let _ = l.begin("b@x", ip("10.0.0.1")).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let _ = l.begin("a@x", ip("10.0.0.1")).unwrap();
        // Now 4 failures: 400 ms.
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.begin("a@x", ip("10.0.0.1")).is_err());
        std::thread::sleep(Duration::from_millis(200));
        let ok = l.begin("a@x", ip("10.0.0.1")).unwrap();
        l.succeeded(ok);
        // Success forgets the pair.
        for _ in 0..3 {
            let _ = l.begin("a@x", ip("10.0.0.1")).unwrap();
        }
    }

    #[test]
    fn account_ceiling_is_short_and_counts_all_clients() {
        let mut p = policy();
        p.account_window = Duration::from_millis(300);
        let l = LoginLimiter::new(p);
        for i in 0..8 {
            let _ = l.begin("a@x", ip(&format!("10.0.1.{i}"))).unwrap();
        }
        let r = l.begin("a@x", ip("10.9.9.9")).unwrap_err();
        assert_eq!(r.scope, "account");
        assert!(r.retry_after <= 1);
        std::thread::sleep(Duration::from_millis(350));
        let _ = l.begin("a@x", ip("10.9.9.9")).unwrap();
    }

    #[test]
    fn address_ceiling_spans_accounts() {
        let mut p = policy();
        p.per_address = 4;
        let l = LoginLimiter::new(p);
        for i in 0..4 {
            let _ = l.begin(&format!("u{i}@x"), ip("10.0.0.1")).unwrap();
        }
        assert_eq!(
            l.begin("other@x", ip("10.0.0.1")).unwrap_err().scope,
            "address"
        );
        let _ = l.begin("other@x", ip("10.0.0.2")).unwrap();
    }
}
