//! Tenant isolation on the network and in the container, attacked from
//! inside real sessions: a session cannot connect to
//! another session, to the host or (by rule) to link-local metadata
//! addresses; logins run without capabilities; the agent mounts nothing
//! but folders of its storage root, even for a caller with the valid token;
//! images outside the allowed list are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airlock_testkit::docker::{self, container_of, ip_of};
use airlock_testkit::{Airlockd, Background, Cli, bin, run};

fn login(cli: &Cli, email: &str, password: &str) {
    cli.run(&["login"], Some(&format!("{email}\n{password}\n")))
        .expect_code(0);
}

fn create(cli: &Cli, name: &str) -> String {
    let out = cli.run(
        &[
            "session", "create", "--cpu", "0.5", "--mem", "256m", "--json", "--name", name,
        ],
        None,
    );
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["status"], "RUNNING", "{v}\n{}", out.stderr);
    v["id"].as_str().unwrap().to_owned()
}

/// Runs `cmd` in a session over real `ssh` through the tunnel.
fn in_session(cli: &Cli, session: &str, cmd: &str) -> String {
    let out = cli.run(&["ssh", session, "-o", "BatchMode=yes", cmd], None);
    out.expect_code(0);
    out.stdout
}

/// A shell snippet printing `HOST:PORT open|closed` for a TCP connect
/// attempt with a 3 s deadline.
fn probe(host: &str, port: u16) -> String {
    format!(
        "if timeout 3 bash -c 'echo > /dev/tcp/{host}/{port}' 2>/dev/null; \
         then echo '{host}:{port} open'; else echo '{host}:{port} closed'; fi; "
    )
}

fn inspect(container: &str, format: &str) -> String {
    let out = docker::docker(&["inspect", "-f", format, container]);
    out.expect_code(0);
    out.stdout.trim().to_owned()
}

/// A TCP listener on every host address that counts connections.
fn host_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            if conn.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, hits)
}

#[test]
fn sessions_reach_neither_each_other_nor_the_host() {
    assert!(docker::available(), "these tests need Docker");
    let d = Airlockd::start_with(&["--allowed-images", "airlock/*"]);
    let alice = Cli::new(&d.url);
    login(&alice, &d.admin_email, &d.admin_password);
    d.admin_command(&["user", "add", "bob@example.com"], Some(b"bob-password\n"))
        .expect_code(0);
    let bob = Cli::new(&d.url);
    login(&bob, "bob@example.com", "bob-password");

    // An image outside the allowed list is refused, clearly (before the
    // engine is even asked whether it has it).
    let out = bob.run(
        &[
            "session",
            "create",
            "--name",
            "nope",
            "--image",
            "busybox:latest",
        ],
        None,
    );
    out.expect_code(1);
    assert!(
        out.stderr.contains("busybox:latest") && out.stderr.contains("not allowed"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);

    let a = container_of(&create(&alice, "alpha")).unwrap();
    let b = container_of(&create(&bob, "bravo")).unwrap();

    // Both on the session network, whose bridge is fenced in.
    for c in [&a, &b] {
        let nets = inspect(c, "{{json .NetworkSettings.Networks}}");
        assert!(nets.contains("\"airlock-sessions\""), "{nets}");
    }
    let b_ip = ip_of(&b);
    let a_ip = ip_of(&a);
    let gateway_ip = inspect(&a, "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}");
    assert!(!gateway_ip.is_empty() && !b_ip.is_empty());
    let docker0 = docker::docker(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    ])
    .stdout
    .trim()
    .to_owned();

    // A listener on every host address: reachable from the host itself…
    let (port, hits) = host_listener();
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the control connection");

    // …but not from a session; nor is the other user's session. The
    // session's own SSH server answers the same probe (so it can succeed).
    let mut script = probe("127.0.0.1", 2200);
    script.push_str(&probe(&a_ip, 2200));
    script.push_str(&probe(&b_ip, 2200));
    script.push_str(&probe(&gateway_ip, port));
    if !docker0.is_empty() {
        script.push_str(&probe(&docker0, port));
    }
    let out = in_session(&alice, "alpha", &script);
    assert!(out.contains("127.0.0.1:2200 open"), "{out}");
    assert!(out.contains(&format!("{a_ip}:2200 open")), "{out}");
    assert!(out.contains(&format!("{b_ip}:2200 closed")), "{out}");
    assert!(
        out.contains(&format!("{gateway_ip}:{port} closed")),
        "{out}"
    );
    if !docker0.is_empty() {
        assert!(out.contains(&format!("{docker0}:{port} closed")), "{out}");
    }
    // The other direction too.
    let out = in_session(&bob, "bravo", &probe(&a_ip, 2200));
    assert!(out.contains(&format!("{a_ip}:2200 closed")), "{out}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a session reached a host listener"
    );

    // Link-local (cloud metadata) is dropped by rule; no traffic is sent
    // there, the rule and its jump are checked instead.
    let bridge = docker::docker(&[
        "network",
        "inspect",
        "airlock-sessions",
        "-f",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
    ])
    .stdout
    .trim()
    .to_owned();
    assert_eq!(bridge, "airlock0");
    let rules = run(
        Command::new("iptables").args(["-w", "-S", "AIRLOCK-FORWARD"]),
        None,
        Duration::from_secs(30),
    );
    rules.expect_code(0);
    assert!(
        rules
            .stdout
            .contains("-A AIRLOCK-FORWARD -d 169.254.0.0/16 -j DROP"),
        "{}",
        rules.stdout
    );
    for (chain, target) in [
        ("DOCKER-USER", "AIRLOCK-FORWARD"),
        ("INPUT", "AIRLOCK-INPUT"),
    ] {
        run(
            Command::new("iptables").args(["-w", "-C", chain, "-i", &bridge, "-j", target]),
            None,
            Duration::from_secs(30),
        )
        .expect_code(0);
    }

    // Logins have no capabilities and cannot gain any.
    let status = in_session(
        &alice,
        "alpha",
        "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status",
    );
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapPrm:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let host_config = inspect(&a, "{{json .HostConfig}}");
    let hc: serde_json::Value = serde_json::from_str(&host_config).unwrap();
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]), "{hc}");
    assert!(
        hc["SecurityOpt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "no-new-privileges"),
        "{hc}"
    );
    assert_eq!(hc["LogConfig"]["Type"], "json-file", "{hc}");
    assert_eq!(hc["LogConfig"]["Config"]["max-size"], "10m", "{hc}");
    assert!(hc["PidsLimit"].as_i64().unwrap() > 0, "{hc}");
    assert!(hc["Memory"].as_i64().unwrap() > 0, "{hc}");
}

const TOKEN: &str = "isolation-test-agent-token-0123456789";

/// `airlockd gateway` + `airlockd agent --storage` with a known token, so
/// the test can call the agent API the way only the gateway should.
struct Split {
    data: tempfile::TempDir,
    label: String,
    _gateway: Background,
    agent: Background,
    agent_url: String,
}

impl Split {
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
        let mut a = Command::new(bin("airlockd"));
        a.args(["agent", "--gateway", &url, "--token", TOKEN])
            .args(["--listen", "127.0.0.1:0", "--id", "node-iso", "--data"])
            .arg(data.path().join("agent"))
            .arg("--storage")
            .arg(data.path().join("gw/vfolders"))
            .args([
                "--container-label",
                "airlock.test=1",
                "--container-label",
                &label,
            ]);
        let agent = Background::spawn(&mut a);
        let line = agent.wait_for("serving at ", Duration::from_secs(60));
        let agent_url = line
            .split("serving at ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .trim()
            .to_owned();
        Split {
            data,
            label,
            _gateway: gateway,
            agent,
            agent_url,
        }
    }

    /// POSTs a create request with the valid token; returns (status, body).
    fn create(&self, session_id: &str, host_path: &str, container_path: &str) -> (u16, String) {
        let body = serde_json::json!({
            "session_id": session_id,
            "session_name": "probe",
            "owner_id": "attacker",
            "image": "airlock/base:bookworm",
            "cpu": 0.5,
            "mem_bytes": 268_435_456u64,
            "mounts": [{"host_path": host_path, "container_path": container_path, "read_only": false}],
            "authorized_keys": [],
        });
        let out = run(
            Command::new("curl").args([
                "-sS",
                "--max-time",
                "30",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-H",
                &format!("Authorization: Bearer {TOKEN}"),
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &body.to_string(),
                &format!("{}/v1/sessions", self.agent_url),
            ]),
            None,
            Duration::from_secs(40),
        );
        out.expect_code(0);
        let (text, code) = out.stdout.trim_end().rsplit_once('\n').unwrap();
        (code.parse().unwrap(), text.to_owned())
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        docker::remove_labelled(&self.label);
    }
}

#[test]
fn agent_mounts_nothing_outside_its_storage_root() {
    assert!(docker::available(), "these tests need Docker");
    let s = Split::start();
    let root = std::fs::canonicalize(s.data.path().join("gw/vfolders")).unwrap();
    let folder = root.join("0123456789abcdef");
    std::fs::create_dir(&folder).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("evil-link")).unwrap();
    let outside = s.data.path().join("outside");
    std::fs::create_dir(&outside).unwrap();

    let folder_path = folder.display().to_string();
    let attacks = [
        ("/etc".to_owned(), "/home/work/data"),
        ("/".to_owned(), "/home/work/data"),
        (
            root.join("evil-link").display().to_string(),
            "/home/work/data",
        ),
        (outside.display().to_string(), "/home/work/data"),
        (format!("{folder_path}/../../outside"), "/home/work/data"),
        (root.display().to_string(), "/home/work/data"),
        (folder_path.clone(), "/etc/cron.d"),
        (folder_path.clone(), "/home/work/../../etc"),
        (folder_path.clone(), "/opt/airlock"),
    ];
    for (i, (host, inside)) in attacks.iter().enumerate() {
        let id = format!("{:08x}-0000-4000-8000-{i:012x}", std::process::id());
        let (code, body) = s.create(&id, host, inside);
        assert_eq!(code, 403, "{host} -> {inside} must be refused: {body}");
        assert!(body.contains("hint"), "{body}");
        assert!(
            container_of(&id).is_none(),
            "no container for a refused request"
        );
    }
    let log = s.agent.output();
    assert!(log.contains("refused a mount"), "{log}");
    assert!(log.contains("/etc"), "the refusal names the path: {log}");

    // Control: the same request with a folder of the storage root is
    // accepted (so the refusals above are about the paths).
    let id = &format!("{:08x}-0000-4000-8000-00000000ffff", std::process::id());
    let (code, body) = s.create(id, &folder_path, "/home/work/data");
    assert_eq!(code, 202, "{body}");
    // (Listed, then inspected: a container being replaced between the two
    // is looked up again.)
    let deadline = Instant::now() + Duration::from_secs(60);
    let mounts = loop {
        if let Some(c) = container_of(id) {
            let out = docker::docker(&["inspect", "-f", "{{json .Mounts}}", &c]);
            if out.success() {
                break out.stdout.trim().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the control container never appeared"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(mounts.contains(&folder_path), "{mounts}");
    assert!(mounts.contains("/home/work/data"), "{mounts}");
    // The runner and the folder, nothing else of the host.
    let n: serde_json::Value = serde_json::from_str(&mounts).unwrap();
    assert_eq!(n.as_array().unwrap().len(), 2, "{mounts}");
}

#[test]
fn agent_refuses_to_start_without_its_firewall_unless_told() {
    assert!(docker::available(), "these tests need Docker");
    let data = tempfile::tempdir().unwrap();
    // No iptables to be found: the agent must not serve sessions unfenced.
    let empty_path = data.path().join("empty-bin");
    std::fs::create_dir(&empty_path).unwrap();
    let agent = |extra: &[&str]| {
        let mut c = Command::new(bin("airlockd"));
        c.args(["agent", "--gateway", "http://127.0.0.1:9", "--token", TOKEN])
            .args(["--listen", "127.0.0.1:0", "--id", "node-nofw", "--data"])
            .arg(data.path().join("agent"))
            .args(extra)
            .env("PATH", &empty_path);
        c
    };
    let out = run(&mut agent(&[]), None, Duration::from_secs(60));
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("error: cannot set up the session firewall"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint:") && out.stderr.contains("--no-firewall"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("serving at"), "{}", out.stdout);

    // The operator accepts the risk explicitly: it starts, and says so.
    let started = Background::spawn(&mut agent(&["--no-firewall"]));
    started.wait_for("serving at", Duration::from_secs(60));
    started.wait_for("firewall is OFF", Duration::from_secs(10));
}
