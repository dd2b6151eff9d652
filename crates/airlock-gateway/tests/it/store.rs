//! The store on SQLite, and on PostgreSQL when `AIRLOCK_TEST_POSTGRES_URL`
//! points at a server (CI starts one): the same portable SQL must work on
//! both.

use airlock_gateway::Store;
use airlock_gateway::store::{
    AgentRow, Drain, MountRecord, NewSession, NewUser, Role, Status, Usage,
};
use airlock_proto::sshkey::parse_public_key;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILGDGCepR3g7zolW5aQ2fg/uizIPWnjMnm53e8FOcNb1 me@laptop";

async fn exercise(store: &Store) {
    // Accounts.
    let (u, kp) = store
        .create_user(NewUser {
            email: "a@example.com",
            password: "password-a",
            role: Role::User,
        })
        .await
        .unwrap();
    // Emails are unique regardless of case.
    assert!(
        store
            .create_user(NewUser {
                email: "A@Example.com",
                password: "x-password",
                role: Role::User
            })
            .await
            .is_err()
    );
    assert_eq!(
        store
            .user_by_email("A@EXAMPLE.COM")
            .await
            .unwrap()
            .unwrap()
            .id,
        u.id
    );
    assert_eq!(
        store
            .check_password("a@example.com", "password-a")
            .await
            .unwrap()
            .unwrap()
            .id,
        u.id
    );
    assert!(
        store
            .check_password("a@example.com", "nope")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .keypair(&kp.access_key)
            .await
            .unwrap()
            .unwrap()
            .user_id,
        u.id
    );
    let token = store.create_web_session(&u.id, 60).await.unwrap();
    assert_eq!(
        store.web_session_user(&token).await.unwrap().unwrap().id,
        u.id
    );
    store.delete_web_session(&token).await.unwrap();
    assert!(store.web_session_user(&token).await.unwrap().is_none());

    // Settings and keys.
    store.set_ssh_port(&u.id, Some(10022)).await.unwrap();
    assert_eq!(store.settings(&u.id).await.unwrap().ssh_port, Some(10022));
    store.set_ssh_port(&u.id, None).await.unwrap();
    assert_eq!(store.settings(&u.id).await.unwrap().ssh_port, None);
    let k = parse_public_key(KEY).unwrap();
    store.add_ssh_key(&u.id, "laptop", &k).await.unwrap();
    assert!(store.add_ssh_key(&u.id, "again", &k).await.is_err());
    assert_eq!(
        store
            .remove_ssh_key(&u.id, &k.fingerprint)
            .await
            .unwrap()
            .unwrap()
            .name,
        "laptop"
    );

    // Agents, sessions, folders.
    store
        .upsert_agent(&AgentRow {
            id: "n1".into(),
            url: "http://n1".into(),
            version: "0".into(),
            cpu_milli: 4000,
            mem_bytes: 8 << 30,
            gpus: 2,
            load_milli: 1500,
            mem_available: 4 << 30,
            last_seen: 0,
            draining: false,
            credential: None,
        })
        .await
        .unwrap();
    assert_eq!(store.online_agents(60_000).await.unwrap().len(), 1);
    // A second heartbeat updates the row.
    store
        .upsert_agent(&AgentRow {
            id: "n1".into(),
            url: "http://n1:2".into(),
            version: "1".into(),
            cpu_milli: 4000,
            mem_bytes: 8 << 30,
            gpus: 2,
            load_milli: 1500,
            mem_available: 4 << 30,
            last_seen: 0,
            draining: false,
            credential: None,
        })
        .await
        .unwrap();
    let agents = store.online_agents(60_000).await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].url, "http://n1:2");
    // A drain survives heartbeats.
    assert!(
        store
            .set_agent_draining("n1", Drain::Drained)
            .await
            .unwrap()
    );
    store
        .upsert_agent(&AgentRow {
            url: "http://n1:3".into(),
            ..agents[0].clone()
        })
        .await
        .unwrap();
    assert!(store.agent("n1").await.unwrap().unwrap().draining);
    assert!(
        !store
            .set_agent_draining("nope", Drain::Drained)
            .await
            .unwrap()
    );
    // Enrolment: an agent's own credential comes with its row; enrolling
    // again replaces it; revoking removes it.
    assert!(
        store
            .agent("n1")
            .await
            .unwrap()
            .unwrap()
            .credential
            .is_none()
    );
    let first = store.enroll_agent("n1").await.unwrap();
    assert!(first.expose().starts_with("airlock-agent-") && first.expose().len() > 40);
    assert_eq!(
        store.agent("n1").await.unwrap().unwrap().credential,
        Some(first.clone())
    );
    let second = store.enroll_agent("n1").await.unwrap();
    assert_ne!(first, second);
    assert_eq!(store.agent_credential("n1").await.unwrap(), Some(second));
    assert!(!format!("{:?}", store.agent("n1").await.unwrap()).contains("airlock-agent-"));
    assert_eq!(store.enrollments().await.unwrap().len(), 1);
    assert!(store.revoke_agent("n1").await.unwrap());
    assert!(!store.revoke_agent("n1").await.unwrap());
    assert!(store.agent_credential("n1").await.unwrap().is_none());
    let f = store.insert_folder(&u.id, "data", "local").await.unwrap();
    assert!(store.insert_folder(&u.id, "data", "local").await.is_err());
    let mounts = [MountRecord {
        folder_id: f.id.clone(),
        name: f.name.clone(),
    }];
    let s = store
        .insert_session(NewSession {
            name: "demo",
            user_id: &u.id,
            image: "img",
            cpu_milli: 1000,
            mem_bytes: 1 << 30,
            gpus: 1,
            mounts: &mounts,
            agent_id: "n1",
            key_fingerprints: std::slice::from_ref(&k.fingerprint),
        })
        .await
        .unwrap();
    assert_eq!(s.status, Status::Preparing);
    assert_eq!(s.key_fingerprints, std::slice::from_ref(&k.fingerprint));
    // A second live session with the name is refused...
    assert!(
        store
            .insert_session(NewSession {
                name: "demo",
                user_id: &u.id,
                image: "img",
                cpu_milli: 1000,
                mem_bytes: 1 << 30,
                gpus: 0,
                mounts: &[],
                agent_id: "n1",
                key_fingerprints: &[],
            })
            .await
            .is_err()
    );
    assert_eq!(s.gpus, 1);
    let n1 = store.agent("n1").await.unwrap().unwrap();
    assert_eq!(
        (n1.gpus, n1.load_milli, n1.mem_available),
        (2, 1500, 4 << 30)
    );
    assert_eq!(
        store.agent_usage("n1").await.unwrap(),
        Usage {
            cpu_milli: 1000,
            mem_bytes: 1 << 30,
            gpus: 1
        }
    );
    assert!(
        store
            .set_running(&s.id, Some("ssh-ed25519 AAAA"), Some("cid"))
            .await
            .unwrap()
    );
    assert_eq!(store.live_sessions_mounting(&f.id).await.unwrap().len(), 1);
    assert!(
        store
            .set_status(&s.id, Status::Terminated, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_status(&s.id, Status::Error, Some("late"))
            .await
            .unwrap()
    );
    let s = store.session(&s.id).await.unwrap().unwrap();
    assert_eq!(s.status, Status::Terminated);
    assert!(s.terminated_at.is_some());
    // ...but the name is free once it is terminated.
    assert_eq!(store.sessions_named(&u.id, "demo").await.unwrap().len(), 1);
    assert_eq!(store.agent_usage("n1").await.unwrap(), Usage::default());
    store.rename_folder(&f.id, "renamed").await.unwrap();
    assert_eq!(
        store
            .folder_named(&u.id, "renamed")
            .await
            .unwrap()
            .unwrap()
            .id,
        f.id
    );
    events(store, &u.id).await;
}

/// The audit trail: append in batches, filter by user (id or email),
/// session (id or name), time, position; newest-N limits; pruning by age.
async fn events(store: &Store, uid: &str) {
    use airlock_gateway::store::{EventFilter, NewEvent};
    let ev = |at: i64, kind: &str, user: Option<&str>, session: Option<&str>| NewEvent {
        at,
        kind: kind.to_owned(),
        user_id: user.map(str::to_owned),
        user: user.map(|u| format!("{u}@mail")),
        client: Some("192.0.2.1".to_owned()),
        session_id: session.map(|s| format!("id-{s}")),
        session: session.map(str::to_owned),
        conn: Some("c1".to_owned()),
        detail: serde_json::json!({"path": "a b/ü.txt", "size": 5_000_000_000u64}),
    };
    store
        .append_events(&[
            ev(1_000, "login.ok", Some(uid), None),
            ev(2_000, "tunnel.opened", Some(uid), Some("demo")),
            ev(2_000, "tunnel.closed", Some(uid), Some("demo")),
            ev(3_000, "login.failed", Some("other"), None),
            ev(4_000, "login.failed", None, None),
        ])
        .await
        .unwrap();
    let all = store.events(&EventFilter::default()).await.unwrap();
    let kinds: Vec<&str> = all.iter().map(|e| e.what.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "login.ok",
            "tunnel.opened",
            "tunnel.closed",
            "login.failed",
            "login.failed"
        ]
    );
    assert_eq!(all[1].what.detail["size"], 5_000_000_000u64);
    assert_eq!(all[1].what.detail["path"], "a b/ü.txt");
    assert_eq!(all[1].time, "1970-01-01T00:00:02Z");
    let mine = |f: EventFilter| async move { store.events(&f).await.unwrap() };
    assert_eq!(
        mine(EventFilter {
            user: Some(uid.to_owned()),
            ..Default::default()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        mine(EventFilter {
            user: Some("other@mail".to_owned()),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    for s in ["demo", "id-demo"] {
        let got = mine(EventFilter {
            session: Some(s.to_owned()),
            ..Default::default()
        })
        .await;
        assert_eq!(got.len(), 2, "{s}");
    }
    let since = mine(EventFilter {
        since: Some(3_000),
        ..Default::default()
    })
    .await;
    assert_eq!(since.len(), 2);
    let tail = mine(EventFilter {
        after_id: Some(all[2].id.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(tail, all[3..].to_vec());
    let newest = mine(EventFilter {
        limit: Some(2),
        ..Default::default()
    })
    .await;
    assert_eq!(newest, all[3..].to_vec());
    assert_eq!(store.prune_events(2_500).await.unwrap(), 3);
    assert_eq!(
        store.events(&EventFilter::default()).await.unwrap().len(),
        2
    );
    // A runner-sized batch: several multi-row statements, order kept.
    let batch: Vec<NewEvent> = (0..250)
        .map(|i| ev(10_000 + i, "sftp.write", Some(uid), Some("big")))
        .collect();
    store.append_events(&batch).await.unwrap();
    let got = store
        .events(&EventFilter {
            session: Some("big".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 250);
    assert!(got.windows(2).all(|w| w[0].what.at < w[1].what.at));
}

#[tokio::test]
async fn store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
    exercise(&store).await;
}

#[tokio::test]
async fn store_on_postgres() {
    let Ok(url) = std::env::var("AIRLOCK_TEST_POSTGRES_URL") else {
        eprintln!("AIRLOCK_TEST_POSTGRES_URL is not set: PostgreSQL not tested here");
        return;
    };
    // A fresh database per run.
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let db = format!("airlock_test_{}", std::process::id());
    let mut admin = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    let store = Store::open(&format!("{base}/{db}")).await.unwrap();
    exercise(&store).await;
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db}")))
        .execute(&mut admin)
        .await
        .unwrap();
}
