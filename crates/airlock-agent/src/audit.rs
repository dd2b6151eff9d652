//! Runner events on their way to the gateway: the container log is
//! followed (stdout only, where PID 1 copies the SSH server's output; see
//! `airlock-runner`'s `audit.rs` and docs/security.md), `AIRLOCK-AUDIT`
//! lines are parsed into a bounded queue, and [`forward`] posts them to the
//! gateway in batches with the agent token.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use airlock_proto::agent::{EVENTS_PATH, RunnerEvent, RunnerEvents, TunnelOrigin};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::runtime::{LogChunk, LogStream};

/// The line prefix the runner writes.
use airlock_proto::recipes::readiness::AUDIT_PREFIX as PREFIX;

/// Events kept while the gateway is unreachable; older ones beyond this are
/// dropped (and counted).
const MAX_QUEUED: usize = 200_000;

/// Events per request to the gateway.
const BATCH: usize = 2_000;

/// Longest accepted log line (a runner batch is far smaller).
const MAX_LINE: usize = 1 << 20;

/// How long the origin of a runner connection is remembered: events of a
/// connection are reported within seconds of it, resumed tunnels keep
/// their runner connection for the grace period.
const ORIGIN_MEMORY: Duration = Duration::from_secs(6 * 3600);

/// Runner events not yet accepted by the gateway.
#[derive(Debug, Default)]
pub struct Queue {
    events: Mutex<VecDeque<RunnerEvent>>,
    ready: Notify,
    dropped: AtomicU64,
    /// (session, our address on the runner connection) → the gateway
    /// connection that tunnel serves.
    origins: Mutex<HashMap<(String, String), (TunnelOrigin, Instant)>>,
}

impl Queue {
    /// Remembers which client connection the runner connection from
    /// `local` serves; the runner reports that address as its peer.
    pub fn record_origin(&self, session: &str, local: SocketAddr, origin: TunnelOrigin) {
        if let Ok(mut m) = self.origins.lock() {
            m.retain(|_, (_, t)| t.elapsed() < ORIGIN_MEMORY);
            m.insert(
                (session.to_owned(), local.to_string()),
                (origin, Instant::now()),
            );
        }
    }

    fn push(&self, mut batch: Vec<RunnerEvent>) {
        if batch.is_empty() {
            return;
        }
        if let Ok(m) = self.origins.lock() {
            for e in &mut batch {
                e.origin = m
                    .get(&(e.session_id.clone(), e.peer.clone()))
                    .map(|(o, _)| o.clone());
            }
        }
        if let Ok(mut q) = self.events.lock() {
            q.extend(batch);
            while q.len() > MAX_QUEUED {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.ready.notify_one();
    }

    fn take(&self, n: usize) -> Vec<RunnerEvent> {
        match self.events.lock() {
            Ok(mut q) => {
                let n = n.min(q.len());
                q.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        }
    }

    fn put_back(&self, batch: Vec<RunnerEvent>) {
        if let Ok(mut q) = self.events.lock() {
            for e in batch.into_iter().rev() {
                q.push_front(e);
            }
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Parses one `AIRLOCK-AUDIT {"events":[…]}` line of `session_id`'s
/// runner; anything else is `None`.
pub fn parse_line(session_id: &str, line: &str) -> Option<Vec<RunnerEvent>> {
    #[derive(serde::Deserialize)]
    struct Line {
        events: Vec<Raw>,
    }
    #[derive(serde::Deserialize)]
    struct Raw {
        at: i64,
        kind: String,
        #[serde(default)]
        peer: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    let body = line.strip_prefix(PREFIX)?;
    let parsed: Line = serde_json::from_str(body).ok()?;
    Some(
        parsed
            .events
            .into_iter()
            .map(|r| RunnerEvent {
                session_id: session_id.to_owned(),
                at: r.at,
                kind: r.kind,
                peer: r.peer,
                detail: r.detail,
                origin: None,
            })
            .collect(),
    )
}

/// Follows a container log until it ends (the container stopped) or
/// `shutdown`, queueing the runner's events. `pending` is what the caller
/// already read of the current stdout line. The caller spawns it (see
/// `Agent::spawn`).
pub async fn follow(
    queue: Arc<Queue>,
    session_id: String,
    mut logs: LogStream,
    mut pending: String,
    shutdown: CancellationToken,
) {
    loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = logs.next() => c,
        };
        let message = match chunk {
            Some(Ok(LogChunk::Stdout(message))) => message,
            Some(Ok(_)) => continue,
            _ => return,
        };
        pending.push_str(&String::from_utf8_lossy(&message));
        while let Some(pos) = pending.find('\n') {
            let line: String = pending.drain(..=pos).collect();
            if let Some(events) = parse_line(&session_id, line.trim_end()) {
                queue.push(events);
            }
        }
        if pending.len() > MAX_LINE {
            pending.clear();
        }
    }
}

/// Posts queued events to the gateway until `shutdown` (then once more).
pub async fn forward(
    queue: Arc<Queue>,
    client: reqwest::Client,
    gateway_url: String,
    agent_id: String,
    token: String,
    shutdown: CancellationToken,
) {
    let url = format!("{}{EVENTS_PATH}", gateway_url.trim_end_matches('/'));
    let mut failing = false;
    loop {
        let stopping = shutdown.is_cancelled();
        loop {
            let events = queue.take(BATCH);
            if events.is_empty() {
                break;
            }
            let body = RunnerEvents {
                agent_id: agent_id.clone(),
                events,
            };
            let sent = client
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => failing = false,
                other => {
                    if !failing {
                        let why = match other {
                            Ok(r) => format!("the gateway answered {}", r.status()),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(error = %why, "cannot send audit events to the gateway; retrying");
                        failing = true;
                    }
                    queue.put_back(body.events);
                    break;
                }
            }
        }
        if stopping {
            return;
        }
        let wait = if failing {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(60)
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = queue.ready.notified() => {
                // Gather a little more before sending.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_get_the_origin_of_their_runner_connection_only_from_us() {
        let q = Queue::default();
        let origin = TunnelOrigin {
            conn: "c1".into(),
            client: "192.0.2.7".into(),
        };
        q.record_origin("s1", "10.0.0.1:4000".parse().unwrap(), origin.clone());
        // A runner cannot claim an origin: the field is not read from it.
        let line = r#"AIRLOCK-AUDIT {"events":[{"at":1,"kind":"ssh.exec","peer":"10.0.0.1:4000","origin":{"conn":"forged","client":"x"}},{"at":2,"kind":"ssh.exec","peer":"10.0.0.1:4001"}]}"#;
        q.push(parse_line("s1", line).unwrap());
        let got = q.take(10);
        assert_eq!(got[0].origin.as_ref(), Some(&origin));
        assert_eq!(got[1].origin, None);
    }

    #[test]
    fn parses_runner_lines() {
        let line = r#"AIRLOCK-AUDIT {"events":[{"at":5,"kind":"ssh.exec","peer":"172.18.0.1:4000","detail":{"command":"id"}}]}"#;
        let got = parse_line("s1", line).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].session_id, "s1");
        assert_eq!(got[0].kind, "ssh.exec");
        assert_eq!(got[0].detail["command"], "id");
        assert!(parse_line("s1", "AIRLOCK-READY").is_none());
        assert!(parse_line("s1", "AIRLOCK-AUDIT {not json").is_none());
    }

    #[test]
    fn queue_is_bounded_and_keeps_order() {
        let q = Queue::default();
        let ev = |i: i64| RunnerEvent {
            session_id: "s".into(),
            at: i,
            kind: "ssh.exec".into(),
            peer: String::new(),
            detail: serde_json::Value::Null,
            origin: None,
        };
        q.push((0..5).map(ev).collect());
        let first = q.take(2);
        assert_eq!(first.iter().map(|e| e.at).collect::<Vec<_>>(), [0, 1]);
        q.put_back(first);
        assert_eq!(
            q.take(10).iter().map(|e| e.at).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        q.push((0..(MAX_QUEUED as i64 + 3)).map(ev).collect());
        assert_eq!(q.dropped(), 3);
    }
}
