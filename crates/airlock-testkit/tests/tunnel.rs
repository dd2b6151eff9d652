//! The whole path: OpenSSH → airlock app / ProxyCommand →
//! WebSocket → gateway → agent → runner in a real container.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_testkit::docker::{self, container_of};
use airlock_testkit::ssh::{random_file, sha256};
use airlock_testkit::{Airlockd, Background, Cli, Output, free_port, run};

const LONG: Duration = Duration::from_secs(300);

fn login(cli: &Cli, email: &str, password: &str) {
    cli.run(&["login"], Some(&format!("{email}\n{password}\n")))
        .expect_code(0);
}

fn setup() -> (Airlockd, Cli) {
    let d = Airlockd::start();
    let cli = Cli::new(&d.url);
    login(&cli, &d.admin_email, &d.admin_password);
    (d, cli)
}

fn create(cli: &Cli, name: &str, extra: &[&str]) -> String {
    let mut a = vec![
        "session", "create", "--name", name, "--cpu", "1", "--mem", "1g", "--json",
    ];
    a.extend_from_slice(extra);
    let out = cli.run(&a, None);
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["status"], "RUNNING", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

fn info(cli: &Cli, s: &str) -> serde_json::Value {
    let out = cli.run(&["session", "info", s, "--json"], None);
    out.expect_code(0);
    serde_json::from_str(&out.stdout).unwrap()
}

/// `airlock app S sshd [-b PORT]`, waited until it listens; returns the port.
fn app(cli: &Cli, session: &str, bind: Option<&str>) -> (Background, u16) {
    let mut args = vec!["app", session, "sshd"];
    if let Some(b) = bind {
        args.extend(["-b", b]);
    }
    let bg = Background::spawn(&mut cli.command(&args));
    let line = bg.wait_for("tcp://", Duration::from_secs(60));
    let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    (bg, port)
}

/// Files for Backend.AI's guide's plain-OpenSSH flow: the session key and a
/// known_hosts with the pinned host key under `airlock-NAME`.
struct Keys {
    key: std::path::PathBuf,
    known_hosts: std::path::PathBuf,
    alias: String,
}

fn keys(cli: &Cli, session: &str) -> Keys {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = cli.dir.path().join(format!("k-{session}-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("id_container");
    cli.run(
        &["session", "key", session, "-o", key.to_str().unwrap()],
        None,
    )
    .expect_code(0);
    let known_hosts = dir.join("known_hosts");
    let hk = info(cli, session)["host_key"].as_str().unwrap().to_owned();
    std::fs::write(&known_hosts, format!("airlock-{session} {hk}\n")).unwrap();
    Keys {
        key,
        known_hosts,
        alias: format!("airlock-{session}"),
    }
}

fn opts(k: &Keys) -> Vec<String> {
    [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=30",
        "-o",
        "LogLevel=ERROR",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        "-o".into(),
        format!("UserKnownHostsFile={}", k.known_hosts.display()),
        "-o".into(),
        format!("HostKeyAlias={}", k.alias),
        "-i".into(),
        k.key.display().to_string(),
    ])
    .collect()
}

fn ssh(k: &Keys, port: u16, cmd: &str) -> Output {
    let mut c = Command::new("ssh");
    c.args(opts(k))
        .args(["-p", &port.to_string(), "work@127.0.0.1", cmd]);
    run(&mut c, None, LONG)
}

fn sftp_batch(args: &[String], batch: &str) -> Output {
    let mut c = Command::new("sftp");
    c.args(["-b", "-"]).args(args);
    run(&mut c, Some(batch.as_bytes()), LONG)
}

#[test]
fn seed_flow_through_app_proxy() {
    let (_d, cli) = setup();
    create(&cli, "demo", &[]);
    let port = free_port();
    let (_app, bound) = app(&cli, "demo", Some(&port.to_string()));
    assert_eq!(bound, port);
    let k = keys(&cli, "demo");

    let out = ssh(&k, port, "echo ok; exit 3");
    assert_eq!(out.code, Some(3), "{out:?}");
    assert_eq!(out.stdout.trim(), "ok");

    // sftp put/get of 1 GiB with checksums.
    let big = cli.cwd().join("big.bin");
    random_file(&big, 1024);
    let sum = sha256(&big);
    let back = cli.cwd().join("back.bin");
    let mut a = opts(&k);
    a.extend(["-P".into(), port.to_string(), "work@127.0.0.1".into()]);
    sftp_batch(
        &a,
        &format!(
            "put {} big.bin\nget big.bin {}\n",
            big.display(),
            back.display()
        ),
    )
    .expect_code(0);
    assert_eq!(sha256(&back), sum);
    std::fs::remove_file(&back).unwrap();

    // scp in SFTP mode and legacy mode, both ways.
    let small = cli.cwd().join("small.txt");
    std::fs::write(&small, "hello over scp\n").unwrap();
    for mode in [None, Some("-O")] {
        let mut c = Command::new("scp");
        c.args(opts(&k)).args(["-P", &port.to_string()]);
        if let Some(m) = mode {
            c.arg(m);
        }
        c.arg(&small).arg("work@127.0.0.1:/home/work/small.txt");
        run(&mut c, None, LONG).expect_code(0);
        let mut c = Command::new("scp");
        c.args(opts(&k)).args(["-P", &port.to_string()]);
        if let Some(m) = mode {
            c.arg(m);
        }
        c.arg("work@127.0.0.1:/home/work/small.txt").arg(&back);
        run(&mut c, None, LONG).expect_code(0);
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "hello over scp\n");
    }

    // rsync.
    let mut c = Command::new("rsync");
    c.args(["-a", "-e"])
        .arg(format!("ssh {} -p {port}", opts(&k).join(" ")))
        .arg(&small)
        .arg("work@127.0.0.1:rsynced.txt");
    run(&mut c, None, LONG).expect_code(0);
    ssh(&k, port, "test -f rsynced.txt").expect_code(0);

    // ssh -L to a port inside the container.
    let c = container_of(info(&cli, "demo")["id"].as_str().unwrap()).unwrap();
    docker::docker(&[
        "exec",
        "-d",
        "-u",
        "1000",
        "-w",
        "/home/work",
        &c,
        "python3",
        "-m",
        "http.server",
        "8000",
        "--bind",
        "127.0.0.1",
    ]);
    // (The local end is a Unix socket: no port to pick.)
    let local = cli.dir.path().join("fwd-8000.sock");
    let mut fwd = Command::new("ssh");
    fwd.args(opts(&k)).args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        &format!("{}:127.0.0.1:8000", local.display()),
        "-p",
        &port.to_string(),
        "work@127.0.0.1",
    ]);
    let _fwd = Background::spawn(&mut fwd);
    let start = Instant::now();
    loop {
        let out = run(
            Command::new("curl").args([
                "-sS",
                "--max-time",
                "5",
                "--unix-socket",
                local.to_str().unwrap(),
                "http://localhost/small.txt",
            ]),
            None,
            Duration::from_secs(30),
        );
        if out.stdout.contains("hello over scp") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "forward never worked: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn airlock_ssh_scp_and_session_key() {
    let (_d, cli) = setup();
    create(&cli, "demo", &[]);
    // `airlock ssh` downloads the key, pins the host key, passes args and
    // the exit code through, and cleans up.
    let out = cli.run(
        &[
            "ssh",
            "demo",
            "-o",
            "BatchMode=yes",
            "echo hi from $(hostname); exit 5",
        ],
        None,
    );
    assert_eq!(out.code, Some(5), "{out:?}");
    assert!(out.stdout.contains("hi from demo"), "{out:?}");
    // In a script (stdout not a terminal) airlock says nothing of its own.
    assert!(
        !out.stderr.contains("temporary sshd proxy"),
        "{}",
        out.stderr
    );
    // Everything after the session name is ssh's, `-v` included.
    let out = cli.run(
        &[
            "ssh",
            "demo",
            "-v",
            "-o",
            "BatchMode=yes",
            "echo",
            "verbose-ok",
        ],
        None,
    );
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "verbose-ok");
    assert!(out.stderr.contains("debug1:"), "{}", out.stderr);
    // airlock's own options come before it; --local-port is one name on
    // ssh and scp.
    let port = free_port().to_string();
    let out = cli.run(
        &[
            "ssh",
            "--local-port",
            &port,
            "-q",
            "demo",
            "-o",
            "BatchMode=yes",
            "true",
        ],
        None,
    );
    out.expect_code(0);
    // With a registered account key, that key is used (no download).
    let own = cli.home().join(".ssh/id_ed25519");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&own)
        .status()
        .unwrap();
    cli.run(&["keys", "add"], None).expect_code(0);
    let id = create(&cli, "withkey", &[]);
    let out = cli.run(&["ssh", "withkey", "-o", "BatchMode=yes", "whoami"], None);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "work");
    let _ = id;
    // airlock scp both ways.
    let f = cli.cwd().join("up.txt");
    std::fs::write(&f, "scp through airlock\n").unwrap();
    cli.run(&["scp", "up.txt", "demo:/home/work/up.txt"], None)
        .expect_code(0);
    cli.run(&["scp", "demo:up.txt", "down.txt"], None)
        .expect_code(0);
    assert_eq!(
        std::fs::read_to_string(cli.cwd().join("down.txt")).unwrap(),
        "scp through airlock\n"
    );
    // PPK for PuTTY/FileZilla/WinSCP, checked with puttygen.
    let ppk = cli.cwd().join("demo.ppk");
    cli.run(
        &[
            "session",
            "key",
            "demo",
            "--format",
            "ppk",
            "-o",
            ppk.to_str().unwrap(),
        ],
        None,
    )
    .expect_code(0);
    let text = std::fs::read_to_string(&ppk).unwrap();
    assert!(
        text.starts_with("PuTTY-User-Key-File-3: ssh-ed25519"),
        "{text}"
    );
    let out = run(
        Command::new("puttygen")
            .arg(&ppk)
            .args(["-O", "public-openssh"]),
        None,
        LONG,
    );
    out.expect_code(0);
    let k = keys(&cli, "demo");
    let pubkey = std::fs::read_to_string(k.key.with_extension("pub")).ok();
    let derived = run(
        Command::new("ssh-keygen").args(["-y", "-f"]).arg(&k.key),
        None,
        LONG,
    );
    let field = |s: &str| s.split_whitespace().nth(1).unwrap_or_default().to_owned();
    assert_eq!(field(&out.stdout), field(&derived.stdout), "{pubkey:?}");
}

#[test]
fn config_ssh_proxycommand_and_host_key_changes() {
    let (_d, cli) = setup();
    create(&cli, "demo", &[]);
    let ssh_dir = cli.home().join(".ssh");
    let out = cli.run(&["config-ssh", "--dry-run"], None);
    out.expect_code(0);
    assert!(out.stdout.contains("+Host airlock-*"), "{}", out.stdout);
    assert!(out.stdout.contains("+airlock-demo ssh-"), "{}", out.stdout);
    // The laptop's agent is not forwarded unless asked for, with the risk said.
    assert!(out.stdout.contains("+  ForwardAgent no"), "{}", out.stdout);
    assert!(!out.stdout.contains("ForwardAgent yes"), "{}", out.stdout);
    let fwd = cli.run(&["config-ssh", "--dry-run", "--forward-agent"], None);
    fwd.expect_code(0);
    assert!(fwd.stdout.contains("+  ForwardAgent yes"), "{}", fwd.stdout);
    assert!(fwd.stderr.contains("SSH keys"), "{}", fwd.stderr);
    assert!(
        !ssh_dir.join("airlock/config").exists(),
        "dry run must not write"
    );
    std::fs::write(ssh_dir.join("config"), "Host example\n  User me\n").unwrap();
    cli.run(&["config-ssh"], None).expect_code(0);
    let cfg = std::fs::read_to_string(ssh_dir.join("config")).unwrap();
    assert!(cfg.starts_with("Include "), "{cfg}");
    assert!(cfg.contains("Host example"));
    assert!(ssh_dir.join("config.airlock-backup").exists());
    cli.run(&["config-ssh"], None).expect_code(0);
    let again = std::fs::read_to_string(ssh_dir.join("config")).unwrap();
    assert_eq!(
        again.matches("Include ").count(),
        1,
        "the Include is added once"
    );

    let f = [
        "-F".to_owned(),
        ssh_dir.join("config").display().to_string(),
    ];
    let with_env = |c: &mut Command| {
        c.env("HOME", cli.home())
            .env("XDG_STATE_HOME", cli.dir.path().join("state"))
            .env("NO_COLOR", "1");
    };
    let mut c = Command::new("ssh");
    c.args(&f)
        .args(["-o", "BatchMode=yes", "airlock-demo", "echo via-proxy"]);
    with_env(&mut c);
    let out = run(&mut c, None, LONG);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "via-proxy");

    // sftp 1 GiB both ways through ProxyCommand, scp both modes, rsync.
    let big = cli.cwd().join("big.bin");
    random_file(&big, 1024);
    let sum = sha256(&big);
    let back = cli.cwd().join("back.bin");
    let mut c = Command::new("sftp");
    c.args(&f).args(["-b", "-", "airlock-demo"]);
    with_env(&mut c);
    run(
        &mut c,
        Some(
            format!(
                "put {} big.bin\nget big.bin {}\n",
                big.display(),
                back.display()
            )
            .as_bytes(),
        ),
        LONG,
    )
    .expect_code(0);
    assert_eq!(sha256(&back), sum);
    for mode in [None, Some("-O")] {
        let mut c = Command::new("scp");
        c.args(&f);
        if let Some(m) = mode {
            c.arg(m);
        }
        c.arg(&big).arg("airlock-demo:copy.bin");
        with_env(&mut c);
        run(&mut c, None, LONG).expect_code(0);
    }
    let mut c = Command::new("rsync");
    c.args([
        "-a",
        "-e",
        &format!("ssh -F {}", ssh_dir.join("config").display()),
    ])
    .arg(&big)
    .arg("airlock-demo:rsync.bin");
    with_env(&mut c);
    run(&mut c, None, LONG).expect_code(0);

    // A session created after config-ssh works without running it again;
    // its host key is pinned on first use, then held.
    create(&cli, "later", &[]);
    let mut c = Command::new("ssh");
    c.args(&f)
        .args(["-o", "BatchMode=yes", "airlock-later", "echo later-ok"]);
    with_env(&mut c);
    let out = run(&mut c, None, LONG);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "later-ok");
    let pins = std::fs::read_to_string(ssh_dir.join("airlock/known_hosts")).unwrap();
    let later_key = info(&cli, "later")["host_key"].as_str().unwrap().to_owned();
    assert!(
        pins.contains(&format!("airlock-later {}", later_key.trim())),
        "{pins}"
    );
    let key = ssh_dir.join("airlock/airlock-later.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Re-created with the same name: the pinned key no longer matches, and
    // the proxy says so instead of connecting.
    cli.run(&["session", "rm", "demo"], None).expect_code(0);
    create(&cli, "demo", &[]);
    let mut c = Command::new("ssh");
    c.args(&f)
        .args(["-o", "BatchMode=yes", "airlock-demo", "true"]);
    with_env(&mut c);
    let out = run(&mut c, None, LONG);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("host key of session \"demo\" changed"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("airlock config-ssh"), "{}", out.stderr);
    cli.run(&["config-ssh"], None).expect_code(0);
    let mut c = Command::new("ssh");
    c.args(&f)
        .args(["-o", "BatchMode=yes", "airlock-demo", "true"]);
    with_env(&mut c);
    run(&mut c, None, LONG).expect_code(0);
}

#[test]
fn ports_preferred_taken_and_explicit_taken() {
    let (_d, cli) = setup();
    create(&cli, "demo", &[]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    // Explicit -b on a taken port: an error with a hint.
    let out = cli.run(&["app", "demo", "sshd", "-b", &busy_port.to_string()], None);
    out.expect_code(1);
    assert!(
        out.stderr.contains("error: cannot listen on"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    // Preferred port free: used as is.
    let free = free_port();
    cli.run(&["settings", "--ssh-port", &free.to_string()], None)
        .expect_code(0);
    let (bg, port) = app(&cli, "demo", None);
    assert_eq!(port, free);
    drop(bg);
    // Preferred port taken: a random port, said in one line.
    cli.run(&["settings", "--ssh-port", &busy_port.to_string()], None)
        .expect_code(0);
    let (bg, port) = app(&cli, "demo", None);
    assert_ne!(port, busy_port);
    let line = bg.wait_for("is in use", Duration::from_secs(10));
    assert!(
        line.contains(&busy_port.to_string()) && line.contains(&port.to_string()),
        "{line}"
    );
    let k = keys(&cli, "demo");
    ssh(&k, port, "true").expect_code(0);
}

#[test]
fn other_users_are_refused_and_terminated_sessions_end_transfers() {
    let (d, cli) = setup();
    create(&cli, "demo", &[]);
    d.admin_command(&["user", "add", "eve@example.com"], Some(b"eve-password\n"))
        .expect_code(0);
    let eve = Cli::new(&d.url);
    login(&eve, "eve@example.com", "eve-password");
    let id = info(&cli, "demo")["id"].as_str().unwrap().to_owned();
    for target in ["demo", id.as_str()] {
        let out = eve.run(&["proxy", target], Some(""));
        out.expect_code(1);
        assert!(out.stderr.contains("no session"), "{}", out.stderr);
        assert!(
            out.stdout.is_empty(),
            "proxy stdout must carry SSH bytes only"
        );
    }

    // A download in flight when the session is terminated fails, no hang.
    let (_app, port) = app(&cli, "demo", None);
    let k = keys(&cli, "demo");
    ssh(&k, port, "head -c 1500M /dev/urandom > big.bin").expect_code(0);
    let mut c = Command::new("scp");
    c.args(opts(&k))
        .args([
            "-l",
            "80000",
            "-P",
            &port.to_string(),
            "work@127.0.0.1:big.bin",
        ])
        .arg(cli.cwd().join("partial.bin"));
    let mut transfer = Background::spawn(&mut c);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        transfer.try_wait().is_none(),
        "the transfer ended too early: {}",
        transfer.output()
    );
    cli.run(&["session", "rm", "demo"], None).expect_code(0);
    let start = Instant::now();
    let code = loop {
        if let Some(code) = transfer.try_wait() {
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "scp hung after the session ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(code, Some(0), "an interrupted transfer must fail");
}

fn active_tunnels(cli: &Cli, d: &Airlockd) -> u64 {
    cli.get_json(&format!("{}/admin/tunnels", d.url))["active"]
        .as_u64()
        .unwrap()
}

#[test]
fn fifty_parallel_connections_and_no_stray_tunnels() {
    let (d, cli) = setup();
    create(&cli, "demo", &[]);
    let (mut app_proc, port) = app(&cli, "demo", None);
    let k = keys(&cli, "demo");
    let children: Vec<_> = (0..50)
        .map(|_| {
            let mut c = Command::new("ssh");
            c.args(opts(&k))
                .args(["-p", &port.to_string(), "work@127.0.0.1", "true"]);
            std::thread::spawn(move || run(&mut c, None, LONG))
        })
        .collect();
    for (i, h) in children.into_iter().enumerate() {
        let out = h.join().unwrap();
        assert_eq!(out.code, Some(0), "connection {i}: {out:?}");
    }
    // A long-lived connection, then the proxy is killed hard.
    let mut c = Command::new("ssh");
    c.args(opts(&k))
        .args(["-p", &port.to_string(), "work@127.0.0.1", "sleep 120"]);
    let _held = Background::spawn(&mut c);
    let start = Instant::now();
    while active_tunnels(&cli, &d) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the tunnel never showed up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    app_proc.signal("KILL", Duration::from_secs(10));
    let start = Instant::now();
    while active_tunnels(&cli, &d) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a stray tunnel stayed open on the gateway"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ctrl_c_stops_the_local_proxy_cleanly() {
    let (_d, cli) = setup();
    create(&cli, "demo", &[]);
    let (mut bg, port) = app(&cli, "demo", None);
    let code = bg.signal("INT", Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", bg.output());
    assert!(bg.output().contains("has terminated"), "{}", bg.output());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port must be closed"
    );
}
