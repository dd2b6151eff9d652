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
    agent: Option<Background>,
}

impl Nodes {
    fn start() -> Self {
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
        let gateway = Background::spawn(&mut g);
        let line = gateway.wait_for("airlock gateway is running at ", Duration::from_secs(60));
        let url = line.rsplit(' ').next().unwrap().trim().to_owned();
        let mut n = Nodes {
            data,
            label,
            gateway,
            url,
            agent: None,
        };
        n.start_agent();
        n
    }

    fn start_agent(&mut self) {
        let mut a = Command::new(bin("airlockd"));
        a.args([
            "agent",
            "--gateway",
            &self.url,
            "--token",
            TOKEN,
            "--listen",
            "127.0.0.2:0",
        ])
        .args(["--id", "node-a", "--data"])
        .arg(self.data.path().join("agent"))
        .args([
            "--container-label",
            "airlock.test=1",
            "--container-label",
            &self.label,
        ]);
        let agent = Background::spawn(&mut a);
        agent.wait_for("serving at", Duration::from_secs(60));
        self.agent = Some(agent);
        // Wait until the gateway has heard from it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.gateway.output().contains("registered") && Instant::now() < deadline {
            if self
                .agent
                .as_ref()
                .unwrap()
                .output()
                .contains("registered with the gateway")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.signal("KILL", Duration::from_secs(10));
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.agent.take();
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
    nodes.kill_agent();
    let (code, reason) = raw_tunnel(&nodes.url, &cli.cookie(), "remote").unwrap_err();
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("unreachable"), "{reason}");
    // ...the container keeps running, and the restarted agent re-adopts it.
    assert!(container_of(&id).is_some());
    nodes.start_agent();
    let out = cli.run(&["ssh", "remote", "-o", "BatchMode=yes", "true"], None);
    out.expect_code(0);

    // Terminated while its agent is down: no orphan once the agent is back.
    nodes.kill_agent();
    let out = cli.run(&["session", "rm", "remote"], None);
    out.expect_code(0);
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    assert!(
        container_of(&id).is_some(),
        "the agent is down; the container is still there"
    );
    nodes.start_agent();
    wait_for("the orphan to be removed", Duration::from_secs(60), || {
        container_of(&id).is_none()
    });
    wait_for(
        "the session to be TERMINATED",
        Duration::from_secs(30),
        || info(&cli, &id)["status"] == "TERMINATED",
    );
}
