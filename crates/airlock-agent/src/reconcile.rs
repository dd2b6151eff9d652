//! Reconciliation: what the agent knows about its sessions plus what the
//! engine lists becomes the container states it reports to the gateway.
//!
//! [`reconcile`] is a function of plain data (no engine, no clock): the
//! agent gathers the listing and what it needs to know about individual
//! containers first (`Agent::report`, through the [`crate::runtime`]
//! seam), then calls it under its lock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use airlock_proto::agent::{ContainerPhase, ContainerReport};

use crate::runtime::{Container, ContainerState};

/// How long a failed creation is still reported before it is forgotten.
pub(crate) const FAILED_MEMORY: Duration = Duration::from_secs(600);

/// What the agent knows about one session.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) phase: ContainerPhase,
    /// Why it failed (for `Failed`).
    pub(crate) reason: Option<String>,
    /// The runner's host key, once it is ready.
    pub(crate) host_key: Option<String>,
    /// Its container, once created.
    pub(crate) container_id: Option<String>,
    /// When `phase` last changed.
    pub(crate) since: Instant,
    /// UUIDs of the GPUs it holds while preparing or running.
    pub(crate) gpus: Vec<String>,
}

impl Entry {
    /// A session whose container is being created.
    pub(crate) fn preparing(now: Instant) -> Self {
        Self {
            phase: ContainerPhase::Preparing,
            reason: None,
            host_key: None,
            container_id: None,
            since: now,
            gpus: Vec::new(),
        }
    }
}

/// One listed container and what was found out about it.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    /// As listed.
    pub(crate) container: Container,
    /// For a stopped container: its inspection (`None`: it vanished
    /// between the listing and the inspection).
    pub(crate) state: Option<ContainerState>,
    /// For a running container the agent has no entry for: the host key
    /// found in its log or state directory.
    pub(crate) host_key: Option<String>,
}

/// Why a stopped container stopped, in words for its owner (`None`: it
/// vanished).
pub(crate) fn exit_reason(state: Option<&ContainerState>) -> String {
    match state {
        Some(s) if s.oom_killed => "the container ran out of memory and was killed".to_owned(),
        Some(s) if s.exit_code == 137 => {
            "the container was killed (SIGKILL) outside airlock".to_owned()
        }
        Some(s) => format!(
            "the container stopped unexpectedly (exit code {})",
            s.exit_code
        ),
        None => "the container disappeared".to_owned(),
    }
}

/// The reports for one heartbeat, updating `entries`: stopped containers
/// mark their sessions `Exited`, failed creations older than
/// [`FAILED_MEMORY`] are forgotten, and sessions whose container vanished
/// are reported `Removed` once and forgotten. `listed_at` is when the
/// listing was taken (entries that changed since may be missing from it);
/// `now` is the present.
pub(crate) fn reconcile(
    entries: &mut HashMap<String, Entry>,
    observed: Vec<Observed>,
    listed_at: Instant,
    now: Instant,
) -> Vec<ContainerReport> {
    let mut reports = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for o in observed {
        let c = o.container;
        seen.insert(c.session_id.clone());
        let entry = entries.get_mut(&c.session_id);
        let preparing = entry
            .as_ref()
            .is_some_and(|e| e.phase == ContainerPhase::Preparing);
        let (phase, reason, host_key) = if preparing {
            // Created but not ready (or not even started) yet: the creating
            // task reports the outcome (ready or Failed), not this listing.
            (ContainerPhase::Preparing, None, None)
        } else if c.running {
            match entry {
                Some(e) => (ContainerPhase::Running, None, e.host_key.clone()),
                // Not ours (any more): the gateway decides.
                None => (ContainerPhase::Running, None, o.host_key),
            }
        } else {
            if let Some(e) = entry
                && e.phase != ContainerPhase::Exited
            {
                e.phase = ContainerPhase::Exited;
                e.since = now;
            }
            (
                ContainerPhase::Exited,
                Some(exit_reason(o.state.as_ref())),
                None,
            )
        };
        reports.push(ContainerReport {
            session_id: c.session_id,
            phase,
            reason,
            host_key,
            container_id: Some(c.id),
        });
    }
    entries.retain(|_, e| {
        !(e.phase == ContainerPhase::Failed && now.duration_since(e.since) > FAILED_MEMORY)
    });
    let mut gone = Vec::new();
    for (id, e) in entries.iter() {
        if seen.contains(id) {
            continue;
        }
        match e.phase {
            ContainerPhase::Preparing | ContainerPhase::Failed => reports.push(ContainerReport {
                session_id: id.clone(),
                phase: e.phase,
                reason: e.reason.clone(),
                host_key: None,
                container_id: e.container_id.clone(),
            }),
            // Changed after the listing was taken: report next time.
            _ if e.since >= listed_at => {}
            // Known but no longer on the engine: removed behind our back.
            _ => {
                reports.push(ContainerReport {
                    session_id: id.clone(),
                    phase: ContainerPhase::Removed,
                    reason: Some("the container was removed outside airlock".into()),
                    host_key: None,
                    container_id: e.container_id.clone(),
                });
                gone.push(id.clone());
            }
        }
    }
    for id in gone {
        entries.remove(&id);
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(session: &str, running: bool) -> Container {
        Container {
            id: format!("c-{session}"),
            session_id: session.to_owned(),
            running,
            gpus: Vec::new(),
        }
    }

    fn running(session: &str) -> Observed {
        Observed {
            container: container(session, true),
            state: None,
            host_key: None,
        }
    }

    fn stopped(session: &str, state: Option<ContainerState>) -> Observed {
        Observed {
            container: container(session, false),
            state,
            host_key: None,
        }
    }

    fn exited(code: i64, oom: bool) -> Option<ContainerState> {
        Some(ContainerState {
            exit_code: code,
            oom_killed: oom,
            ..ContainerState::default()
        })
    }

    fn entry(phase: ContainerPhase, since: Instant) -> Entry {
        Entry {
            phase,
            reason: None,
            host_key: Some("ssh-ed25519 KEY".into()),
            container_id: Some("c-old".into()),
            since,
            gpus: Vec::new(),
        }
    }

    /// `(t0, listing taken, now)`, ten minutes apart.
    fn clock() -> (Instant, Instant, Instant) {
        let t0 = Instant::now();
        (
            t0,
            t0 + Duration::from_secs(600),
            t0 + Duration::from_secs(601),
        )
    }

    fn one(reports: &[ContainerReport], session: &str) -> ContainerReport {
        let mut found = reports.iter().filter(|r| r.session_id == session);
        let r = found.next().cloned();
        assert!(found.next().is_none(), "{session} reported twice");
        r.unwrap_or_else(|| panic!("{session} not reported: {reports:?}"))
    }

    #[test]
    fn running_sessions_report_their_host_key() {
        let (t0, listed, now) = clock();
        let mut entries = HashMap::from([("s1".to_owned(), entry(ContainerPhase::Running, t0))]);
        let reports = reconcile(&mut entries, vec![running("s1")], listed, now);
        assert_eq!(reports.len(), 1);
        let r = one(&reports, "s1");
        assert_eq!(r.phase, ContainerPhase::Running);
        assert_eq!(r.host_key.as_deref(), Some("ssh-ed25519 KEY"));
        assert_eq!(r.reason, None);
        // The listing's container id, not the remembered one.
        assert_eq!(r.container_id.as_deref(), Some("c-s1"));
        assert_eq!(entries["s1"].phase, ContainerPhase::Running);
    }

    #[test]
    fn containers_being_prepared_stay_preparing() {
        let (t0, listed, now) = clock();
        let mut entries = HashMap::from([
            ("up".to_owned(), Entry::preparing(t0)),
            ("created".to_owned(), Entry::preparing(t0)),
            ("unlisted".to_owned(), Entry::preparing(t0)),
        ]);
        let reports = reconcile(
            &mut entries,
            vec![running("up"), stopped("created", exited(0, false))],
            listed,
            now,
        );
        assert_eq!(reports.len(), 3);
        for s in ["up", "created", "unlisted"] {
            let r = one(&reports, s);
            assert_eq!(r.phase, ContainerPhase::Preparing, "{s}");
            assert_eq!((r.reason, r.host_key), (None, None), "{s}");
            assert_eq!(entries[s].phase, ContainerPhase::Preparing, "{s}");
        }
    }

    #[test]
    fn stopped_containers_say_why() {
        let (t0, listed, now) = clock();
        let mut entries = HashMap::from([
            ("code".to_owned(), entry(ContainerPhase::Running, t0)),
            ("oom".to_owned(), entry(ContainerPhase::Running, t0)),
            ("killed".to_owned(), entry(ContainerPhase::Running, t0)),
            ("vanished".to_owned(), entry(ContainerPhase::Running, t0)),
        ]);
        let reports = reconcile(
            &mut entries,
            vec![
                stopped("code", exited(3, false)),
                stopped("oom", exited(137, true)),
                stopped("killed", exited(137, false)),
                stopped("vanished", None),
            ],
            listed,
            now,
        );
        let reason = |s: &str| one(&reports, s).reason.unwrap_or_default();
        assert_eq!(
            reason("code"),
            "the container stopped unexpectedly (exit code 3)"
        );
        assert_eq!(
            reason("oom"),
            "the container ran out of memory and was killed"
        );
        assert_eq!(
            reason("killed"),
            "the container was killed (SIGKILL) outside airlock"
        );
        assert_eq!(reason("vanished"), "the container disappeared");
        for s in ["code", "oom", "killed", "vanished"] {
            let r = one(&reports, s);
            assert_eq!(r.phase, ContainerPhase::Exited);
            assert_eq!(r.host_key, None, "a stopped container has no key to offer");
            assert_eq!(entries[s].phase, ContainerPhase::Exited);
            assert_eq!(entries[s].since, now);
        }
    }

    #[test]
    fn an_exited_session_keeps_its_time() {
        let (t0, listed, now) = clock();
        let mut entries = HashMap::from([("s".to_owned(), entry(ContainerPhase::Exited, t0))]);
        let reports = reconcile(
            &mut entries,
            vec![stopped("s", exited(1, false))],
            listed,
            now,
        );
        assert_eq!(one(&reports, "s").phase, ContainerPhase::Exited);
        assert_eq!(entries["s"].since, t0);
    }

    #[test]
    fn containers_the_agent_does_not_know_are_reported_for_the_gateway() {
        // Orphans: labelled for this agent, but no session entry (left by
        // an earlier run, or their session was destroyed meanwhile).
        let (_, listed, now) = clock();
        let mut entries = HashMap::new();
        let mut orphan = running("orphan");
        orphan.host_key = Some("ssh-ed25519 SCANNED".into());
        let reports = reconcile(
            &mut entries,
            vec![orphan, stopped("dead", exited(2, false))],
            listed,
            now,
        );
        let r = one(&reports, "orphan");
        assert_eq!(r.phase, ContainerPhase::Running);
        assert_eq!(r.host_key.as_deref(), Some("ssh-ed25519 SCANNED"));
        let r = one(&reports, "dead");
        assert_eq!(r.phase, ContainerPhase::Exited);
        assert_eq!(
            r.reason.as_deref(),
            Some("the container stopped unexpectedly (exit code 2)")
        );
        assert!(entries.is_empty(), "reporting adopts nothing");
    }

    #[test]
    fn missing_containers_are_reported_removed_once() {
        let (t0, listed, now) = clock();
        let mut entries = HashMap::from([
            ("gone".to_owned(), entry(ContainerPhase::Running, t0)),
            ("gone-exited".to_owned(), entry(ContainerPhase::Exited, t0)),
            // Became ready after the listing was taken: not "removed".
            ("fresh".to_owned(), entry(ContainerPhase::Running, listed)),
        ]);
        let reports = reconcile(&mut entries, Vec::new(), listed, now);
        for s in ["gone", "gone-exited"] {
            let r = one(&reports, s);
            assert_eq!(r.phase, ContainerPhase::Removed);
            assert_eq!(
                r.reason.as_deref(),
                Some("the container was removed outside airlock")
            );
            assert_eq!(r.container_id.as_deref(), Some("c-old"));
            assert!(!entries.contains_key(s));
        }
        assert!(reports.iter().all(|r| r.session_id != "fresh"));
        assert!(entries.contains_key("fresh"));
        // The next listing has it; the removed ones are not reported again.
        let again = reconcile(&mut entries, vec![running("fresh")], now, now);
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(one(&again, "fresh").phase, ContainerPhase::Running);
    }

    #[test]
    fn failed_creations_are_reported_then_forgotten() {
        let (t0, listed, now) = clock();
        let failed = |since| Entry {
            phase: ContainerPhase::Failed,
            reason: Some("the image is broken".into()),
            host_key: None,
            container_id: None,
            since,
            gpus: Vec::new(),
        };
        let mut entries = HashMap::from([
            ("recent".to_owned(), failed(listed)),
            ("old".to_owned(), failed(t0)),
        ]);
        let reports = reconcile(&mut entries, Vec::new(), listed, now);
        assert_eq!(reports.len(), 1, "{reports:?}");
        let r = one(&reports, "recent");
        assert_eq!(r.phase, ContainerPhase::Failed);
        assert_eq!(r.reason.as_deref(), Some("the image is broken"));
        assert!(!entries.contains_key("old"));
        assert!(entries.contains_key("recent"));
    }
}
