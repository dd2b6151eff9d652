//! Failed-login counters per account and per client address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    failures: u32,
    since: Instant,
}

/// Counts failures in fixed windows; a key with `limit` failures is locked
/// until its window ends.
#[derive(Debug)]
pub struct LoginLimiter {
    window: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl LoginLimiter {
    /// A limiter with this window.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `key` may try again, if it has reached `limit`.
    pub fn locked_for(&self, key: &str, limit: u32) -> Option<u64> {
        let now = Instant::now();
        let buckets = self.buckets.lock().ok()?;
        let b = buckets.get(key)?;
        let elapsed = now.duration_since(b.since);
        if b.failures >= limit && elapsed < self.window {
            Some((self.window - elapsed).as_secs().max(1))
        } else {
            None
        }
    }

    /// Records a failure for `key`.
    pub fn fail(&self, key: &str) {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        if buckets.len() > 100_000 {
            let window = self.window;
            buckets.retain(|_, b| now.duration_since(b.since) < window);
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            failures: 0,
            since: now,
        });
        if now.duration_since(b.since) >= self.window {
            *b = Bucket {
                failures: 0,
                since: now,
            };
        }
        b.failures += 1;
    }

    /// Forgets the failures of `key` (after a success).
    pub fn clear(&self, key: &str) {
        if let Ok(mut buckets) = self.buckets.lock() {
            buckets.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_limit_and_clears() {
        let l = LoginLimiter::new(Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.locked_for("a", 3).is_none());
            l.fail("a");
        }
        assert!(l.locked_for("a", 3).is_some());
        assert!(l.locked_for("b", 3).is_none());
        l.clear("a");
        assert!(l.locked_for("a", 3).is_none());
    }

    #[test]
    fn window_expires() {
        let l = LoginLimiter::new(Duration::from_millis(1));
        l.fail("a");
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.locked_for("a", 1).is_none());
    }
}
