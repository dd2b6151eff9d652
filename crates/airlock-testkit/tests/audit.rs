//! The audit trail with real clients: `airlock ssh S -- cmd`, an
//! `scp` upload, an `sftp` rename and an `ssh -L` forward through
//! `airlock app`, each leaving the expected events — gateway events
//! (tunnel opened/closed with byte counts) and the runner's own (auth,
//! exec, exit, SFTP file operations) — visible to the owner and the admin,
//! not to another user; and a session's user cannot forge runner events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read as _;
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_testkit::ssh::random_file;
use airlock_testkit::{Airlockd, Background, Cli, free_port, run};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(300);

fn login(cli: &Cli, email: &str, password: &str) {
    cli.run(&["login"], Some(&format!("{email}\n{password}\n")))
        .expect_code(0);
}

fn user(d: &Airlockd, email: &str) -> Cli {
    d.add_user_with_keys(email, "password-for-tests");
    let cli = Cli::new(&d.url);
    login(&cli, email, "password-for-tests");
    cli
}

fn events(cli: &Cli, url: &str) -> Vec<Value> {
    let v = cli.get_json(url);
    v["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{url}: {v}"))
        .clone()
}

fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `url` until `done` holds for its events (runner events arrive
/// through the agent, a moment after the command finished).
fn wait_events(cli: &Cli, url: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let evs = events(cli, url);
        if done(&evs) {
            return evs;
        }
        assert!(
            Instant::now() < deadline,
            "events never arrived at {url}: {:#?}",
            kinds(&evs)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn of_kind<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["kind"] == kind).collect()
}

/// Events of one connection (the gateway's connection id).
fn of_conn<'a>(evs: &'a [Value], conn: &Value) -> Vec<&'a Value> {
    evs.iter().filter(|e| &e["conn"] == conn).collect()
}

/// The value of the first line of a Prometheus scrape starting with `name`.
fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{scrape}"))
}

fn app(cli: &Cli, session: &str) -> (Background, u16) {
    let bg = Background::spawn(&mut cli.command(&["app", session, "sshd"]));
    let line = bg.wait_for("tcp://", Duration::from_secs(60));
    let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    (bg, port)
}

fn ssh_opts(cli: &Cli, session: &str) -> Vec<String> {
    let dir = cli.dir.path().join(format!("k-{session}"));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("id_container");
    cli.run(
        &["session", "key", session, "-o", key.to_str().unwrap()],
        None,
    )
    .expect_code(0);
    let out = cli.run(&["session", "info", session, "--json"], None);
    let info: Value = serde_json::from_str(&out.stdout).unwrap();
    let kh = dir.join("known_hosts");
    std::fs::write(
        &kh,
        format!("airlock-{session} {}\n", info["host_key"].as_str().unwrap()),
    )
    .unwrap();
    [
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "IdentitiesOnly=yes",
        "ConnectTimeout=30",
        "LogLevel=ERROR",
    ]
    .iter()
    .flat_map(|o| ["-o".to_owned(), (*o).to_owned()])
    .chain([
        "-o".into(),
        format!("UserKnownHostsFile={}", kh.display()),
        "-o".into(),
        format!("HostKeyAlias=airlock-{session}"),
        "-i".into(),
        key.display().to_string(),
    ])
    .collect()
}

#[test]
fn real_clients_leave_the_expected_events() {
    let d = Airlockd::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    // The port the metrics listener bound, from its log line.
    let metrics_port = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = d.log();
            if let Some(port) = log
                .lines()
                .filter(|l| l.contains("serving Prometheus metrics"))
                .find_map(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "no metrics address logged:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let admin = Cli::new(&d.url);
    login(&admin, &d.admin_email, &d.admin_password);
    let alice = user(&d, "alice@example.com");
    let bob = user(&d, "bob@example.com");
    let out = alice.run(
        &[
            "session", "create", "--name", "audit1", "--cpu", "1", "--mem", "1g", "--json",
        ],
        None,
    );
    out.expect_code(0);
    let sid = serde_json::from_str::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = format!("{}/user/events", d.url);
    let all = format!("{}/admin/events?session={sid}", d.url);

    // Account and session events so far.
    let evs = wait_events(&alice, &mine, |e| {
        kinds(e).contains(&"session.started".to_owned())
    });
    let k = kinds(&evs);
    for want in ["login.ok", "session.created", "session.started"] {
        assert!(k.contains(&want.to_owned()), "{want} missing: {k:?}");
    }
    let login_ev = of_kind(&evs, "login.ok")[0];
    assert_eq!(login_ev["client"], "127.0.0.1");
    assert_eq!(login_ev["user"], "alice@example.com");

    // 1. `airlock ssh S -- cmd`.
    let out = alice.run(&["ssh", "audit1", "--", "echo", "audited"], None);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "audited");
    let evs = wait_events(&admin, &all, |e| {
        !of_kind(e, "ssh.exit").is_empty() && !of_kind(e, "tunnel.closed").is_empty()
    });
    let exec = of_kind(&evs, "ssh.exec");
    assert_eq!(exec.len(), 1, "{:#?}", kinds(&evs));
    assert_eq!(exec[0]["detail"]["command"], "echo audited");
    let conn = exec[0]["conn"].clone();
    assert!(
        conn.is_string(),
        "runner events tied to the connection: {:#}",
        exec[0]
    );
    // Exactly these (gateway and runner clocks are the same here, but
    // events within one millisecond have no defined order).
    let mut one: Vec<String> = of_conn(&evs, &conn)
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(one[0], "tunnel.opened");
    one.sort();
    assert_eq!(
        one,
        [
            "ssh.auth",
            "ssh.exec",
            "ssh.exit",
            "tunnel.closed",
            "tunnel.opened"
        ],
        "events of one `airlock ssh`"
    );
    let by_kind = |k: &str| {
        *of_conn(&evs, &conn)
            .iter()
            .find(|e| e["kind"] == k)
            .unwrap()
    };
    assert_eq!(by_kind("tunnel.opened")["detail"]["client"], "airlock");
    assert_eq!(by_kind("ssh.auth")["detail"]["key"], "session key");
    assert!(
        by_kind("ssh.auth")["detail"]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
    assert_eq!(by_kind("ssh.exit")["detail"]["status"], 0);
    let closed = by_kind("tunnel.closed");
    assert!(closed["detail"]["bytes_up"].as_u64().unwrap() > 1000);
    assert!(closed["detail"]["bytes_down"].as_u64().unwrap() > 1000);
    assert!(closed["detail"]["duration_ms"].is_u64());
    for e in of_conn(&evs, &conn) {
        assert_eq!(e["user"], "alice@example.com", "{e:#}");
        assert_eq!(e["session"], "audit1");
        assert_eq!(e["client"], "127.0.0.1", "{e:#}");
    }

    // 2. scp upload of 3 MiB and 3. an sftp rename, through `airlock app`.
    let (_app, port) = app(&alice, "audit1");
    let opts = ssh_opts(&alice, "audit1");
    let file = alice.cwd().join("up.bin");
    random_file(&file, 3);
    let size = 3 * 1024 * 1024u64;
    let mut scp = Command::new("scp");
    scp.args(&opts)
        .args(["-P", &port.to_string()])
        .arg(&file)
        .arg("work@127.0.0.1:/home/work/up.bin");
    run(&mut scp, None, LONG).expect_code(0);
    let mut sftp = Command::new("sftp");
    sftp.args(["-b", "-"])
        .args(&opts)
        .args(["-P", &port.to_string(), "work@127.0.0.1"]);
    run(
        &mut sftp,
        Some(b"rename /home/work/up.bin /home/work/moved.bin\n"),
        LONG,
    )
    .expect_code(0);
    let evs = wait_events(&alice, &mine, |e| !of_kind(e, "sftp.rename").is_empty());
    let writes = of_kind(&evs, "sftp.write");
    assert_eq!(writes.len(), 1, "{:#?}", kinds(&evs));
    assert_eq!(writes[0]["detail"]["path"], "/home/work/up.bin");
    assert_eq!(writes[0]["detail"]["size"], size);
    let ren = of_kind(&evs, "sftp.rename")[0];
    assert_eq!(ren["detail"]["from"], "/home/work/up.bin");
    assert_eq!(ren["detail"]["to"], "/home/work/moved.bin");
    // The scp connection's tunnel carried the file up (± SSH framing).
    let evs = wait_events(&alice, &mine, |e| {
        let w = of_kind(e, "sftp.write");
        w.len() == 1
            && e.iter()
                .any(|x| x["kind"] == "tunnel.closed" && x["conn"] == w[0]["conn"])
    });
    let w = of_kind(&evs, "sftp.write")[0].clone();
    let up = of_conn(&evs, &w["conn"])
        .into_iter()
        .find(|e| e["kind"] == "tunnel.closed")
        .unwrap()["detail"]["bytes_up"]
        .as_u64()
        .unwrap();
    assert!(
        (size..size + 256 * 1024).contains(&up),
        "bytes up {up} for a {size}-byte upload"
    );

    // Metrics after a real transfer (a separate listener).
    let scrape = || {
        run(
            Command::new("curl").args([
                "-sS",
                "--max-time",
                "20",
                &format!("http://127.0.0.1:{metrics_port}/metrics"),
            ]),
            None,
            Duration::from_secs(30),
        )
        .stdout
    };
    const DOWN: &str = "airlock_tunnel_bytes_total{direction=\"down\"}";
    // The byte counters are live: an open tunnel counts what it carried so
    // far, not only once it ends.
    let before = metric(&scrape(), DOWN);
    let mut live = Command::new("ssh");
    live.args(&opts).args([
        "-p",
        &port.to_string(),
        "work@127.0.0.1",
        "head -c 4194304 /dev/zero | tr '\\0' a | fold -w 1024; echo; echo sent-all; sleep 120",
    ]);
    let mut live = Background::spawn(&mut live);
    live.wait_for("sent-all", LONG);
    let m = scrape();
    assert!(
        metric(&m, DOWN) - before >= 4194304.0,
        "4 MiB went down an open tunnel; {DOWN} went from {before} to {}",
        metric(&m, DOWN)
    );
    assert!(metric(&m, "airlock_tunnels_open") >= 1.0, "{m}");
    live.signal("KILL", Duration::from_secs(10));

    let m = scrape();
    let value = |line_start: &str| metric(&m, line_start);
    assert!(value("airlock_tunnel_bytes_total{direction=\"up\"}") >= size as f64);
    assert!(value("airlock_tunnel_bytes_total{direction=\"down\"}") > 0.0);
    assert!(value("airlock_tunnel_duration_seconds_count") >= 2.0);
    assert!(value("airlock_logins_total{result=\"ok\"}") >= 3.0);
    assert_eq!(value("airlock_sessions{state=\"RUNNING\"}"), 1.0);
    assert_eq!(value("airlock_agents_online"), 1.0);
    assert!(
        m.lines()
            .any(|l| l.starts_with("airlock_http_requests_total")
                && l.contains("route=\"/user/events\"")
                && l.contains("status=\"200\"")),
        "{m}"
    );
    // The public listener does not serve it.
    let public = run(
        Command::new("curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}/metrics", d.url),
        ]),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(public.stdout, "404");

    // 4. A local forward (-L) to the runner's own port inside the session.
    // (The local end is a Unix socket: no port to pick.)
    let fwd_dir = tempfile::tempdir().unwrap();
    let lsock = fwd_dir.path().join("fwd.sock");
    let mut fwd = Command::new("ssh");
    fwd.args(&opts).args([
        "-o",
        "ExitOnForwardFailure=yes",
        "-p",
        &port.to_string(),
        "-L",
        &format!("{}:127.0.0.1:2200", lsock.display()),
        "work@127.0.0.1",
        "sleep 20",
    ]);
    let mut fwd = Background::spawn(&mut fwd);
    let deadline = Instant::now() + Duration::from_secs(30);
    let banner = loop {
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&lsock) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf)
                && n > 0
            {
                break String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        assert!(Instant::now() < deadline, "the forward never worked");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(banner.starts_with("SSH-2.0-"), "{banner}");
    let evs = wait_events(&alice, &mine, |e| !of_kind(e, "ssh.forward").is_empty());
    let f = of_kind(&evs, "ssh.forward")[0];
    assert_eq!(f["detail"]["direction"], "local");
    assert_eq!(f["detail"]["destination"], "127.0.0.1:2200");
    assert_eq!(f["detail"]["ok"], true);
    let _ = fwd.signal("TERM", Duration::from_secs(10));

    // A session's user cannot reach the server's output or memory, and a
    // line that looks like the audit channel printed by a command is just
    // output.
    let probe = "for p in /proc/$PPID/fd/ /proc/1/fd/; do \
                 if ls $p >/dev/null 2>&1; then echo OPEN $p; fi; done; \
                 for p in /proc/$PPID/environ /proc/$PPID/mem /proc/1/environ; do \
                 if head -c1 $p >/dev/null 2>&1; then echo OPEN $p; fi; done; \
                 echo 'AIRLOCK-AUDIT {\"events\":[{\"at\":1,\"kind\":\"ssh.exec\",\"peer\":\"x\",\"detail\":{\"command\":\"FORGED\"}}]}'; \
                 echo 'AIRLOCK-AUDIT {\"events\":[]}' > /proc/$PPID/fd/1 2>/dev/null && echo WROTE; true";
    let out = alice.run(&["ssh", "audit1", "--", probe], None);
    out.expect_code(0);
    assert!(out.stdout.contains("AIRLOCK-AUDIT"), "{out:?}");
    assert!(!out.stdout.contains("OPEN"), "{out:?}");
    assert!(!out.stdout.contains("WROTE"), "{out:?}");
    let evs = wait_events(&alice, &mine, |e| {
        of_kind(e, "ssh.exec").iter().any(|x| {
            x["detail"]["command"]
                .as_str()
                .unwrap_or("")
                .contains("/proc/1/fd")
                && e.iter()
                    .any(|y| y["kind"] == "ssh.exit" && y["conn"] == x["conn"])
        })
    });
    assert!(
        !evs.iter().any(|e| e["detail"]["command"] == "FORGED"),
        "a forged event was believed"
    );

    // Visibility: the owner and the admin see the session's events; another
    // user sees none of them, even asking for them.
    let bobs = events(
        &bob,
        &format!("{}/user/events?user=alice@example.com", d.url),
    );
    assert!(!bobs.is_empty(), "bob sees his own login");
    assert!(
        bobs.iter().all(|e| e["user"] == "bob@example.com"),
        "{bobs:#?}"
    );
    let out = run(
        Command::new("curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Cookie: AIOHTTP_SESSION={}", bob.cookie()),
            &all,
        ]),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(out.stdout, "403");
    let admin_view = events(&admin, &all);
    assert!(admin_view.len() >= 10, "{:#?}", kinds(&admin_view));

    // `airlockd audit` reads the same trail as JSON lines.
    let out = d.admin_command(&["audit", "--session", "audit1", "--json"], None);
    out.expect_code(0);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|e| e["kind"] == "sftp.rename"));
    assert!(lines.iter().all(|e| e["session"] == "audit1"));
    let out = d.admin_command(
        &["audit", "--user", "bob@example.com", "--since", "1h"],
        None,
    );
    out.expect_code(0);
    assert!(out.stdout.contains("login.ok"), "{out:?}");
    assert!(!out.stdout.contains("alice"), "{out:?}");
    let out = d.admin_command(&["audit", "--since", "soon"], None);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("hint:"), "{out:?}");

    // Terminating is recorded with who did it.
    alice.run(&["session", "rm", "audit1"], None).expect_code(0);
    let evs = events(&alice, &mine);
    let t = of_kind(&evs, "session.terminated");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["detail"]["by"], "alice@example.com");
}

/// The official client's `backend.ai app S sshd -b PORT` (from
/// `scripts/client-venvs`): its tunnel is recorded as the official
/// client's, and the SSH command inside it is tied to that connection.
#[test]
fn official_client_app_connection_is_recorded() {
    let exe = std::env::current_exe().unwrap();
    let venv = exe
        .parent()
        .and_then(std::path::Path::parent)
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("venvs/backendai-26.9");
    assert!(
        venv.join("bin/backend.ai").is_file(),
        "{} is missing: run scripts/client-venvs (scripts/test does)",
        venv.display()
    );
    let d = Airlockd::start();
    let admin = Cli::new(&d.url);
    login(&admin, &d.admin_email, &d.admin_password);
    admin
        .run(
            &[
                "session", "create", "--name", "official", "--cpu", "1", "--mem", "1g",
            ],
            None,
        )
        .expect_code(0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "BACKEND_ENDPOINT_TYPE=session\nBACKEND_ENDPOINT={}\n",
            d.url
        ),
    )
    .unwrap();
    let ba = |args: &[&str]| {
        let mut c = Command::new("setsid");
        c.arg(venv.join("bin/backend.ai"))
            .args(args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("NO_COLOR", "1")
            .env("PYTHONWARNINGS", "ignore");
        for (k, _) in std::env::vars() {
            if k.starts_with("BACKEND_") || k.starts_with("AIRLOCK_") {
                c.env_remove(k);
            }
        }
        c
    };
    run(
        &mut ba(&["login"]),
        Some(format!("{}\n{}\n", d.admin_email, d.admin_password).as_bytes()),
        LONG,
    )
    .expect_code(0);
    let port = free_port();
    let app = Background::spawn(&mut ba(&[
        "app",
        "official",
        "sshd",
        "-b",
        &port.to_string(),
    ]));
    app.wait_for(&format!("tcp://127.0.0.1:{port}"), Duration::from_secs(60));
    let opts = ssh_opts(&admin, "official");
    let mut ssh = Command::new("ssh");
    ssh.args(&opts).args([
        "-p",
        &port.to_string(),
        "work@127.0.0.1",
        "echo via-official",
    ]);
    let out = run(&mut ssh, None, LONG);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "via-official");
    let url = format!("{}/admin/events?session=official", d.url);
    let evs = wait_events(&admin, &url, |e| {
        e.iter().any(|x| x["kind"] == "ssh.exit") && e.iter().any(|x| x["kind"] == "tunnel.closed")
    });
    let exec = of_kind(&evs, "ssh.exec")[0];
    assert_eq!(exec["detail"]["command"], "echo via-official");
    let opened = of_conn(&evs, &exec["conn"])
        .into_iter()
        .find(|e| e["kind"] == "tunnel.opened")
        .unwrap_or_else(|| panic!("no tunnel for the exec: {evs:#?}"));
    assert_eq!(opened["detail"]["client"], "backend.ai", "{opened:#}");
    drop(app);
}

/// `airlock session upload` / `download` (through the gateway, not SSH)
/// leave one event per file with its path and size, on the owner's trail
/// and the admin's view, never another user's; `airlock admin cluster`
/// shows an open tunnel's bytes while it runs; `airlock admin user
/// disable|enable` works for administrators; everyone else gets a clear
/// error.
#[test]
fn session_transfers_and_the_admin_cli() {
    let d = Airlockd::start();
    let admin = Cli::new(&d.url);
    login(&admin, &d.admin_email, &d.admin_password);
    let alice = user(&d, "alice@example.com");
    let bob = user(&d, "bob@example.com");
    let out = alice.run(
        &[
            "session", "create", "--name", "xfer", "--cpu", "1", "--mem", "1g", "--json",
        ],
        None,
    );
    out.expect_code(0);
    let sid = serde_json::from_str::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Two files up, one down.
    let a: Vec<u8> = (0..123_457u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(alice.cwd().join("a.bin"), &a).unwrap();
    std::fs::create_dir_all(alice.cwd().join("sub")).unwrap();
    std::fs::write(alice.cwd().join("sub/b.txt"), b"hello").unwrap();
    alice
        .run(&["session", "upload", "xfer", "a.bin", "sub/b.txt"], None)
        .expect_code(0);
    alice
        .run(
            &["session", "download", "xfer", "a.bin", "--dest", "out"],
            None,
        )
        .expect_code(0);
    assert_eq!(std::fs::read(alice.cwd().join("out/a.bin")).unwrap(), a);

    let mine = format!("{}/user/events?session={sid}", d.url);
    let evs = events(&alice, &mine);
    let mut ups: Vec<(String, u64)> = of_kind(&evs, "session.upload")
        .iter()
        .map(|e| {
            (
                e["detail"]["path"].as_str().unwrap().to_owned(),
                e["detail"]["size"].as_u64().unwrap(),
            )
        })
        .collect();
    ups.sort();
    assert_eq!(
        ups,
        [
            ("/home/work/a.bin".to_owned(), 123_457),
            ("/home/work/sub/b.txt".to_owned(), 5)
        ],
        "{evs:#?}"
    );
    let downs = of_kind(&evs, "session.download");
    assert_eq!(downs.len(), 1, "{evs:#?}");
    assert_eq!(downs[0]["detail"]["path"], "/home/work/a.bin");
    assert_eq!(downs[0]["detail"]["size"], 123_457);
    for e in of_kind(&evs, "session.upload").into_iter().chain(downs) {
        assert_eq!(e["user"], "alice@example.com", "{e:#}");
        assert_eq!(e["session"], "xfer");
        assert_eq!(e["client"], "127.0.0.1");
        assert!(e["conn"].is_string(), "{e:#}");
    }
    // The admin sees them; bob does not, even asking by session.
    let all = events(&admin, &format!("{}/admin/events?session={sid}", d.url));
    assert_eq!(of_kind(&all, "session.upload").len(), 2);
    assert_eq!(of_kind(&all, "session.download").len(), 1);
    let bobs = events(&bob, &format!("{}/user/events?session={sid}", d.url));
    assert!(bobs.is_empty(), "{bobs:#?}");

    // An open tunnel's bytes, live: ssh prints 1 MiB, then stays connected.
    let (_app, port) = app(&alice, "xfer");
    let opts = ssh_opts(&alice, "xfer");
    let mut ssh = Command::new("ssh");
    ssh.args(&opts).args([
        "-p",
        &port.to_string(),
        "work@127.0.0.1",
        "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo SENT; sleep 120",
    ]);
    let mut ssh = Background::spawn(&mut ssh);
    ssh.wait_for("SENT", Duration::from_secs(60));
    let out = admin.run(&["admin", "cluster", "--json"], None);
    out.expect_code(0);
    let c: Value = serde_json::from_str(&out.stdout).unwrap();
    let t = c["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["session_name"] == "xfer")
        .unwrap_or_else(|| panic!("no tunnel for xfer: {c:#}"));
    assert!(t["bytes_down"].as_u64().unwrap() > 1_048_576, "{t:#}");
    assert!(t["bytes_up"].as_u64().unwrap() > 0, "{t:#}");
    assert_eq!(t["user"], "alice@example.com");
    assert_eq!(t["client"], "airlock");
    assert_eq!(t["client_addr"], "127.0.0.1");
    assert!(
        c["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == sid.as_str() && s["owner"] == "alice@example.com"),
        "{c:#}"
    );
    assert!(
        c["agents"].as_array().is_some_and(|a| !a.is_empty()),
        "{c:#}"
    );
    let out = admin.run(&["admin", "cluster"], None);
    out.expect_code(0);
    for want in [
        "AGENTS",
        "SESSIONS",
        "TUNNELS",
        "xfer",
        "alice@example.com",
        &sid,
    ] {
        assert!(out.stdout.contains(want), "{want} missing:\n{}", out.stdout);
    }
    let _ = ssh.signal("TERM", Duration::from_secs(10));

    // Not for users: a clear error with a hint, nothing done.
    for args in [
        &["admin", "cluster"][..],
        &["admin", "user", "disable", "bob@example.com"][..],
    ] {
        let out = alice.run(args, None);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr
                .contains("error: `airlock admin` needs an administrator account"),
            "{out:?}"
        );
        assert!(out.stderr.contains("hint: "), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    bob.run(&["session", "ls"], None).expect_code(0);

    // An administrator disables and enables an account (audited).
    admin
        .run(&["admin", "user", "disable", "bob@example.com"], None)
        .expect_code(0);
    let out = bob.run(&["session", "ls"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let out = admin.run(&["admin", "user", "disable", "nobody@example.com"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("hint:"), "{out:?}");
    admin
        .run(&["admin", "user", "enable", "bob@example.com"], None)
        .expect_code(0);
    login(&bob, "bob@example.com", "password-for-tests");
    bob.run(&["session", "ls"], None).expect_code(0);
    let evs = events(
        &admin,
        &format!("{}/admin/events?user=bob@example.com", d.url),
    );
    let k = kinds(&evs);
    let dis = k.iter().position(|x| x == "user.disabled").unwrap();
    let en = k.iter().position(|x| x == "user.enabled").unwrap();
    assert!(dis < en, "{k:?}");
    assert_eq!(evs[dis]["detail"]["by"], d.admin_email.as_str());

    // The admin terminates alice's session by id (on alice's trail, by whom).
    admin.run(&["session", "rm", &sid], None).expect_code(0);
    let evs = events(&alice, &mine);
    let t = of_kind(&evs, "session.terminated");
    assert_eq!(t.len(), 1, "{evs:#?}");
    assert_eq!(t[0]["detail"]["by"], d.admin_email.as_str());
}
