//! `airlockd gateway` and `airlockd agent` as separate processes (the
//! multi-node shape): the tunnel goes gateway → agent over the agent's API
//! (HTTP upgrade), the WebSocket answers pings and says why it closes, and a
//! crashed agent neither orphans containers nor loses sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use airlock_testkit::docker::{self, container_of};
use airlock_testkit::{Background, Cli, bin};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http};

const TOKEN: &str = "split-test-agent-token-0123456789";

struct Nodes {
    data: tempfile::TempDir,
    label: String,
    gateway: Background,
    url: String,
    agents: Vec<(String, Background)>,
}

impl Nodes {
    /// A gateway (with the shared token `TOKEN`) and agent `node-a` on it.
    fn start() -> Self {
        let mut n = Self::gateway_only();
        n.start_agent("node-a", TOKEN);
        n
    }

    /// A gateway with no agent yet.
    fn gateway_only() -> Self {
        Self::gateway_with_env(&[])
    }

    /// [`Nodes::gateway_only`], with these environment variables.
    fn gateway_with_env(env: &[(&str, &std::path::Path)]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let label = format!(
            "airlock.test.run={}",
            data.path().file_name().unwrap().to_string_lossy()
        );
        let mut g = Command::new(bin("airlockd"));
        g.args(["gateway", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path().join("gw"))
            .args(["--agent-token", TOKEN])
            .env("AIRLOCK_ADMIN_PASSWORD", "admin-password-for-tests");
        for (k, v) in env {
            g.env(k, v);
        }
        let gateway = Background::spawn(&mut g);
        let line = gateway.wait_for("airlock gateway is running at ", Duration::from_secs(60));
        let url = line.rsplit(' ').next().unwrap().trim().to_owned();
        Nodes {
            data,
            label,
            gateway,
            url,
            agents: Vec::new(),
        }
    }

    /// `airlockd node ARGS…` against the gateway's state.
    fn node_command(&self, args: &[&str]) -> airlock_testkit::Output {
        let mut c = Command::new(bin("airlockd"));
        c.arg("node")
            .args(args)
            .arg("--data")
            .arg(self.data.path().join("gw"));
        airlock_testkit::run(&mut c, None, Duration::from_secs(60))
    }

    /// Starts agent `id` presenting `token`; returns once it is serving
    /// (whether the gateway accepted it is up to the caller to check).
    fn spawn_agent(&mut self, id: &str, token: &str) {
        self.spawn_agent_with(id, token, &[]);
    }

    /// [`Nodes::spawn_agent`] with more options.
    fn spawn_agent_with(&mut self, id: &str, token: &str, extra: &[&str]) {
        let mut a = Command::new(bin("airlockd"));
        a.args(["agent", "--gateway", &self.url, "--listen", "127.0.0.2:0"])
            .args(["--id", id, "--data"])
            .arg(self.data.path().join(format!("agent-{id}")))
            .args([
                "--container-label",
                "airlock.test=1",
                "--container-label",
                &self.label,
            ])
            .args(extra)
            // In the environment, as deploy.md says (argv is public).
            .env("AIRLOCK_AGENT_TOKEN", token);
        let agent = Background::spawn(&mut a);
        agent.wait_for("serving at", Duration::from_secs(60));
        self.agents.push((id.to_owned(), agent));
    }

    /// Starts agent `id` and waits until the gateway has heard from it.
    fn start_agent(&mut self, id: &str, token: &str) {
        self.spawn_agent(id, token);
        let agent = &self.agents.last().unwrap().1;
        agent.wait_for("registered with the gateway", Duration::from_secs(30));
    }

    fn kill_agent(&mut self, id: &str) {
        if let Some(i) = self.agents.iter().position(|(a, _)| a == id) {
            let (_, mut a) = self.agents.remove(i);
            a.signal("KILL", Duration::from_secs(10));
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.agents.clear();
        docker::remove_labelled(&self.label);
    }
}

fn info(cli: &Cli, s: &str) -> serde_json::Value {
    let out = cli.run(&["session", "info", s, "--json"], None);
    out.expect_code(0);
    serde_json::from_str(&out.stdout).unwrap()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Opens the tunnel WebSocket by hand: returns the first bytes received and
/// whether a ping got its pong, or the close code and reason.
fn raw_tunnel(url: &str, cookie: &str, session: &str) -> Result<(Vec<u8>, bool), (u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ws_url = format!(
            "{}/func/stream/session/{session}/tcpproxy?app=sshd",
            url.replacen("http", "ws", 1)
        );
        let mut req = ws_url.into_client_request().unwrap();
        req.headers_mut().insert(
            http::header::COOKIE,
            format!("AIOHTTP_SESSION={cookie}").parse().unwrap(),
        );
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async(req),
        )
        .await
        .unwrap()
        .unwrap();
        let mut banner = Vec::new();
        let mut pong = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        ws.send(Message::Ping(b"are-you-there"[..].into()))
            .await
            .unwrap();
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
            match msg.unwrap() {
                Message::Binary(b) => banner.extend_from_slice(&b),
                Message::Pong(p) => pong = &p[..] == b"are-you-there",
                Message::Close(Some(f)) => return Err((u16::from(f.code), f.reason.to_string())),
                Message::Close(None) => return Err((1005, String::new())),
                _ => {}
            }
            if pong && banner.starts_with(b"SSH-2.0-") && banner.contains(&b'\n') {
                break;
            }
        }
        Ok((banner, pong))
    })
}

#[test]
fn separate_gateway_and_agent() {
    let mut nodes = Nodes::start();
    let cli = Cli::new(&nodes.url);
    cli.run(
        &["login"],
        Some("admin@airlock.local\nadmin-password-for-tests\n"),
    )
    .expect_code(0);
    let out = cli.run(
        &[
            "session", "create", "--name", "remote", "--cpu", "0.5", "--mem", "256m",
        ],
        None,
    );
    out.expect_code(0);
    assert_eq!(info(&cli, "remote")["agent"], "node-a");

    // The whole chain through the agent's API.
    let out = cli.run(
        &[
            "ssh",
            "remote",
            "-o",
            "BatchMode=yes",
            "echo through-the-agent",
        ],
        None,
    );
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "through-the-agent");

    // The runner's audit events come through this agent, tied to the
    // client's connection: the gateway tells the agent which one a tunnel
    // serves, and the agent names it in the events.
    let events_url = format!("{}/user/events", nodes.url);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (exec, opened) = loop {
        let v = cli.get_json(&events_url);
        let evs = v["events"].as_array().cloned().unwrap_or_default();
        let exec = evs.iter().find(|e| {
            e["kind"] == "ssh.exec"
                && e["detail"]["command"]
                    .as_str()
                    .is_some_and(|c| c.contains("through-the-agent"))
        });
        if let Some(exec) = exec {
            let opened = evs
                .iter()
                .find(|e| e["kind"] == "tunnel.opened" && e["conn"] == exec["conn"])
                .cloned();
            break (exec.clone(), opened);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ssh.exec event arrived: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(exec["conn"].is_string(), "{exec}");
    assert_eq!(exec["client"], "127.0.0.1", "{exec}");
    assert!(
        opened.is_some(),
        "no tunnel.opened on {}: {exec}",
        exec["conn"]
    );

    // The raw WebSocket: SSH bytes in BINARY frames, pings answered.
    let (banner, pong) = raw_tunnel(&nodes.url, &cli.cookie(), "remote").unwrap();
    assert!(
        banner.starts_with(b"SSH-2.0-"),
        "{:?}",
        String::from_utf8_lossy(&banner)
    );
    assert!(pong, "the gateway must answer pings");

    // The agent crashes: tunnels are refused with 1013 and a reason...
    let id = info(&cli, "remote")["id"].as_str().unwrap().to_owned();
    nodes.kill_agent("node-a");
    let (code, reason) = raw_tunnel(&nodes.url, &cli.cookie(), "remote").unwrap_err();
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("unreachable"), "{reason}");
    // ...the container keeps running, and the restarted agent re-adopts it.
    assert!(container_of(&id).is_some());
    nodes.start_agent("node-a", TOKEN);
    let out = cli.run(&["ssh", "remote", "-o", "BatchMode=yes", "true"], None);
    out.expect_code(0);

    // Terminated while its agent is down: no orphan once the agent is back.
    nodes.kill_agent("node-a");
    let out = cli.run(&["session", "rm", "remote"], None);
    out.expect_code(0);
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    assert!(
        container_of(&id).is_some(),
        "the agent is down; the container is still there"
    );
    nodes.start_agent("node-a", TOKEN);
    wait_for("the orphan to be removed", Duration::from_secs(60), || {
        container_of(&id).is_none()
    });
    wait_for(
        "the session to be TERMINATED",
        Duration::from_secs(30),
        || info(&cli, &id)["status"] == "TERMINATED",
    );
}

/// Posts a heartbeat for `agent_id` presenting `token`; the HTTP status.
fn heartbeat_as(url: &str, agent_id: &str, token: &str) -> String {
    let body = serde_json::json!({
        "agent_id": agent_id, "url": "http://127.0.0.9:1", "version": "test",
        "cpu": 1.0, "mem_bytes": 1u64 << 30, "containers": [], "partial": true,
    });
    let out = airlock_testkit::run(
        Command::new("curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
            "-H",
            "content-type: application/json",
            "-H",
            &format!("authorization: Bearer {token}"),
            "--data-binary",
            &body.to_string(),
            &format!("{url}/agent/v1/heartbeat"),
        ]),
        None,
        Duration::from_secs(30),
    );
    out.stdout
}

/// Two nodes (ids of their own: agents with one id share containers on
/// this one Docker engine, and `separate_gateway_and_agent` runs beside
/// this test), each enrolled with its own token: sessions on
/// either, placement by --node and around a drained node, one node's token
/// refused for the other, the shared token refused for an enrolled node, a
/// node's death leaving the other's sessions alone, and revocation.
#[test]
fn two_enrolled_nodes() {
    let mut nodes = Nodes::gateway_only();
    let enroll = |nodes: &Nodes, id: &str| {
        let out = nodes.node_command(&["enroll", id]);
        out.expect_code(0);
        let token = out.stdout.trim().to_owned();
        assert!(token.starts_with("airlock-agent-"), "{}", out.stdout);
        token
    };
    let token_east = enroll(&nodes, "east");
    let token_west = enroll(&nodes, "west");
    assert_ne!(token_east, token_west);
    let list = nodes.node_command(&["list", "--json"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("east") && !list.stdout.contains(&token_east),
        "{}",
        list.stdout
    );

    // The shared token no longer works for an enrolled id...
    nodes.spawn_agent("west", TOKEN);
    // The agent says why, once the gateway's refusal reached it.
    nodes.agents[0].1.wait_for(
        "the gateway refused this agent's token",
        Duration::from_secs(30),
    );
    assert!(
        nodes
            .gateway
            .output()
            .contains("refused a heartbeat with a wrong agent token"),
        "{}",
        nodes.gateway.output()
    );
    nodes.kill_agent("west");
    // ...nor does one node's token for the other.
    assert_eq!(heartbeat_as(&nodes.url, "east", &token_west), "401");
    assert_eq!(heartbeat_as(&nodes.url, "east", TOKEN), "401");
    // Each with its own: both register.
    nodes.start_agent("east", &token_east);
    nodes.start_agent("west", &token_west);

    let cli = Cli::new(&nodes.url);
    cli.run(
        &["login"],
        Some("admin@airlock.local\nadmin-password-for-tests\n"),
    )
    .expect_code(0);
    let create = |name: &str, node: Option<&str>| {
        let mut args = vec![
            "session", "create", "--name", name, "--cpu", "0.25", "--mem", "128m",
        ];
        if let Some(n) = node {
            args.extend(["--node", n]);
        }
        cli.run(&args, None).expect_code(0);
        info(&cli, name)["agent"].as_str().unwrap().to_owned()
    };
    assert_eq!(create("on-east", Some("east")), "east");
    assert_eq!(create("on-west", Some("west")), "west");
    let cluster = cli.get_json(&format!("{}/admin/cluster", nodes.url));
    let agents = cluster["agents"].as_array().unwrap();
    assert!(
        agents.len() == 2 && agents.iter().all(|a| a["enrolled"] == true),
        "{cluster}"
    );
    // Each heartbeat says how busy the node is.
    assert!(
        agents
            .iter()
            .all(|a| a["mem_available"].as_u64().is_some_and(|m| m > 0) && a["load1"].is_f64()),
        "{cluster}"
    );
    // GPUs: neither node has one (no nvidia-smi here), so they say so and
    // a session that asks for one is refused with the reason.
    assert!(agents.iter().all(|a| a["gpus"] == 0), "{cluster}");
    let out = cli.run(
        &["session", "create", "--name", "trainer", "--gpus", "1"],
        None,
    );
    assert!(!out.success());
    assert!(
        out.stderr.contains("no online node has a GPU") && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );
    // The gateway reaches each node with that node's token.
    for s in ["on-east", "on-west"] {
        let out = cli.run(
            &["ssh", s, "-o", "BatchMode=yes", "echo", "hi-from", s],
            None,
        );
        out.expect_code(0);
        assert_eq!(out.stdout.trim(), format!("hi-from {s}"));
    }

    // A drained node takes no new session; the other does.
    cli.run(&["admin", "node", "drain", "west"], None)
        .expect_code(0);
    assert_eq!(create("placed", None), "east");
    let out = cli.run(
        &[
            "session", "create", "--name", "pinned", "--node", "west", "--cpu", "0.25",
        ],
        None,
    );
    assert!(!out.success());
    assert!(out.stderr.contains("drained"), "{}", out.stderr);
    cli.run(&["admin", "node", "undrain", "west"], None)
        .expect_code(0);

    // east dies: its sessions are unreachable, west's are untouched.
    nodes.kill_agent("east");
    let (code, reason) = raw_tunnel(&nodes.url, &cli.cookie(), "on-east").unwrap_err();
    assert_eq!(code, 1013, "{reason}");
    // Within two heartbeats and a bit (--agent-offline-after 12 s), its
    // sessions say so, with the reason.
    wait_for(
        "on-east to show its node as unreachable",
        Duration::from_secs(40),
        || info(&cli, "on-east")["node_unreachable"] == true,
    );
    let east = info(&cli, "on-east");
    assert!(
        east["status_info"]
            .as_str()
            .is_some_and(|i| i.contains("east is unreachable")),
        "{east}"
    );
    assert_eq!(info(&cli, "on-west")["node_unreachable"], false);
    let ls = cli.run(&["session", "ls"], None);
    ls.expect_code(0);
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.starts_with("on-east") && l.contains("UNREACHABLE")),
        "{}",
        ls.stdout
    );
    let out = cli.run(
        &[
            "ssh",
            "on-west",
            "-o",
            "BatchMode=yes",
            "echo",
            "still-here",
        ],
        None,
    );
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "still-here");

    // Revoked: west's token is refused from now on.
    nodes.node_command(&["revoke", "west"]).expect_code(0);
    assert_eq!(heartbeat_as(&nodes.url, "west", &token_west), "401");
    let out = nodes.node_command(&["revoke", "west"]);
    assert!(!out.success());
    assert!(out.stderr.contains("not enrolled"), "{}", out.stderr);
    let audit = cli.get_json(&format!("{}/admin/events", nodes.url));
    let events = audit["events"].as_array().unwrap();
    for (kind, node) in [
        ("node.enrolled", "east"),
        ("node.enrolled", "west"),
        ("node.drained", "west"),
        ("node.revoked", "west"),
    ] {
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == kind && e["detail"]["node"] == node),
            "no {kind} of {node} in the audit trail: {audit}"
        );
    }
}

/// `psql URL -c SQL`.
fn psql(url: &str, sql: &str) -> airlock_testkit::Output {
    airlock_testkit::run(
        Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql]),
        None,
        Duration::from_secs(60),
    )
}

/// A fresh PostgreSQL database, dropped at the end.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create(admin_url: &str, name: &str) -> Self {
        psql(admin_url, &format!("DROP DATABASE IF EXISTS {name}")).expect_code(0);
        psql(admin_url, &format!("CREATE DATABASE {name}")).expect_code(0);
        let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
        Database {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
            url: format!("{base}/{name}"),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Debian's nginx with `deploy/nginx/airlock-replicas.conf`, rendered for
/// these replicas; its URL.
fn balancer(replicas: [&str; 2]) -> (airlock_testkit::nginx::Nginx, String) {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/nginx/airlock-replicas.conf");
    let port = airlock_testkit::free_port();
    let conf = airlock_testkit::nginx::render(
        &example,
        &[
            ("listen 80;", format!("listen 127.0.0.1:{port};")),
            ("server 10.0.0.11:8090", format!("server {}", replicas[0])),
            ("server 10.0.0.12:8090", format!("server {}", replicas[1])),
        ],
    );
    (
        airlock_testkit::nginx::Nginx::start(&conf, port),
        format!("http://127.0.0.1:{port}"),
    )
}

/// `airlockd gateway` replica `n` on the shared database and storage.
fn replica(dir: &std::path::Path, n: u32, database_url: &str) -> (Background, String) {
    let mut g = Command::new(bin("airlockd"));
    g.args(["gateway", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join(format!("gw{n}")))
        .arg("--storage")
        .arg(dir.join("storage"))
        .args([
            "--trusted-proxy",
            "127.0.0.1",
            "--max-connections-per-ip",
            "unlimited",
        ])
        .env("AIRLOCK_DATABASE_URL", database_url)
        .env("AIRLOCK_AGENT_TOKEN", TOKEN)
        .env("AIRLOCK_ADMIN_PASSWORD", "admin-password-for-tests");
    let gw = Background::spawn(&mut g);
    let line = gw.wait_for("airlock gateway is running at ", Duration::from_secs(60));
    let url = line.rsplit(' ').next().unwrap().trim().to_owned();
    (gw, url)
}

/// Two gateway replicas on one PostgreSQL behind Debian's nginx:
/// a login through one is good at the other, a tunnel that loses its
/// replica mid-way resumes through the other and the command never
/// notices, the survivor keeps serving, and a restarted replica finds every
/// session and folder in the database.
#[test]
fn two_gateways_on_postgres_behind_nginx() {
    let Ok(admin_url) = std::env::var("AIRLOCK_TEST_POSTGRES_URL") else {
        eprintln!(
            "AIRLOCK_TEST_POSTGRES_URL is not set: the PostgreSQL replicas are not tested here"
        );
        return;
    };
    let db = Database::create(
        &admin_url,
        &format!("airlock_replicas_{}", std::process::id()),
    );
    let dir = tempfile::tempdir().unwrap();
    let label = format!(
        "airlock.test.run={}",
        dir.path().file_name().unwrap().to_string_lossy()
    );
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            docker::remove_labelled(&self.0);
        }
    }
    let _cleanup = Cleanup(label.clone());
    // One after the other: the first creates the schema and the admin.
    let (gw1, url1) = replica(dir.path(), 1, &db.url);
    let (gw2, url2) = replica(dir.path(), 2, &db.url);
    let (_nginx, lb_url) = balancer([
        url1.trim_start_matches("http://"),
        url2.trim_start_matches("http://"),
    ]);
    // The agent reports to the balancer, like the users.
    let mut a = Command::new(bin("airlockd"));
    a.args(["agent", "--gateway", &lb_url, "--listen", "127.0.0.2:0"])
        .args(["--id", "replicated", "--data"])
        .arg(dir.path().join("agent"))
        .arg("--storage")
        .arg(dir.path().join("storage"))
        .args([
            "--container-label",
            "airlock.test=1",
            "--container-label",
            &label,
        ])
        .env("AIRLOCK_AGENT_TOKEN", TOKEN);
    let agent = Background::spawn(&mut a);
    agent.wait_for("registered with the gateway", Duration::from_secs(60));

    let cli = Cli::new(&lb_url);
    cli.run(
        &["login"],
        Some("admin@airlock.local\nadmin-password-for-tests\n"),
    )
    .expect_code(0);
    cli.run(&["vfolder", "create", "kept"], None).expect_code(0);
    cli.run(
        &[
            "session",
            "create",
            "--name",
            "replicated",
            "--cpu",
            "0.25",
            "--mem",
            "128m",
            "-m",
            "kept",
        ],
        None,
    )
    .expect_code(0);
    // The login is good at each replica directly: the tunnel opens at both.
    for url in [&url1, &url2] {
        let (banner, _) = raw_tunnel(url, &cli.cookie(), "replicated").unwrap();
        assert!(banner.starts_with(b"SSH-2.0-"), "{url}");
    }

    // A command runs while the replica carrying its tunnel is killed.
    let mut gws = [Some(gw1), Some(gw2)];
    let urls = [url1, url2];
    let opened = |gws: &[Option<Background>; 2], i: usize| {
        gws[i]
            .as_ref()
            .map_or(0, |g| g.output().matches("tunnel opened").count())
    };
    let before = [opened(&gws, 0), opened(&gws, 1)];
    let mut long = Background::spawn(&mut cli.command(&[
        "ssh",
        "replicated",
        "-o",
        "BatchMode=yes",
        "for i in $(seq 1 40); do echo line-$i; sleep 0.1; done; echo finished",
    ]));
    long.wait_for("line-3", Duration::from_secs(60));
    let serving = (0..2)
        .find(|&i| opened(&gws, i) > before[i])
        .expect("neither replica opened the tunnel");
    let other = 1 - serving;
    let mut lost = gws[serving].take().unwrap();
    lost.signal("KILL", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(120);
    let code = loop {
        if let Some(code) = long.try_wait() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "the command did not finish:\n{}",
            long.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = long.output();
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    for i in 1..=40 {
        let want = format!("line-{i}");
        assert!(lines.contains(&want.as_str()), "{want} lost:\n{out}");
    }
    assert!(lines.contains(&"finished"), "{out}");
    assert!(
        opened(&gws, other) > before[other],
        "the surviving replica did not carry the resumed tunnel:\n{}",
        gws[other].as_ref().unwrap().output()
    );
    let survivor_url = &urls[other];

    // The survivor keeps serving through the balancer.
    let out = cli.run(
        &[
            "ssh",
            "replicated",
            "-o",
            "BatchMode=yes",
            "echo",
            "after-the-loss",
        ],
        None,
    );
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "after-the-loss");
    let listed = cli.get_json(&format!("{survivor_url}/folders"));
    assert!(listed.to_string().contains("kept"), "{listed}");

    // The lost replica restarts on the same database: everything is there.
    let n = u32::try_from(serving).unwrap() + 1;
    let (_back, back_url) = replica(dir.path(), n, &db.url);
    let info = cli.get_json(&format!("{back_url}/session/replicated"));
    assert!(info.to_string().contains("RUNNING"), "{info}");
    let folders = cli.get_json(&format!("{back_url}/folders"));
    assert!(folders.to_string().contains("kept"), "{folders}");
    let (banner, _) = raw_tunnel(&back_url, &cli.cookie(), "replicated").unwrap();
    assert!(banner.starts_with(b"SSH-2.0-"));
    drop(agent);
}

/// An agent serving its API over HTTPS (`--tls-cert`, `--tls-key`): the
/// gateway, trusting the issuer through `SSL_CERT_FILE`, creates sessions,
/// opens tunnels and reads logs through it; plain HTTP gets nothing.
#[test]
fn agent_api_over_tls() {
    let pki = airlock_testkit::pki::Pki::new();
    let ca = pki.ca();
    let mut nodes = Nodes::gateway_with_env(&[("SSL_CERT_FILE", ca.as_path())]);
    let (cert, key) = (pki.cert(), pki.key());
    nodes.spawn_agent_with(
        "tls-node",
        TOKEN,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let agent = &nodes.agents[0].1;
    let line = agent.wait_for("serving at https://", Duration::from_secs(30));
    let agent_url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .trim_end_matches(',')
        .to_owned();
    agent.wait_for("registered with the gateway", Duration::from_secs(30));

    let cli = Cli::new(&nodes.url);
    cli.run(
        &["login"],
        Some("admin@airlock.local\nadmin-password-for-tests\n"),
    )
    .expect_code(0);
    cli.run(
        &[
            "session", "create", "--name", "over-tls", "--cpu", "0.25", "--mem", "128m",
        ],
        None,
    )
    .expect_code(0);
    let out = cli.run(
        &[
            "ssh",
            "over-tls",
            "-o",
            "BatchMode=yes",
            "echo",
            "through-tls",
        ],
        None,
    );
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "through-tls");
    cli.run(&["session", "logs", "over-tls"], None)
        .expect_code(0);

    // The API is TLS only, and still wants the token.
    let curl = |args: &[&str]| {
        airlock_testkit::run(
            Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .args(args),
            None,
            Duration::from_secs(20),
        )
    };
    let plain = curl(&[&agent_url.replacen("https://", "http://", 1)]);
    assert_ne!(plain.stdout, "401", "plain HTTP was answered: {plain:?}");
    let tls = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        &format!("{agent_url}/v1/images"),
    ]);
    assert_eq!(tls.stdout, "401", "{tls:?}");
}
