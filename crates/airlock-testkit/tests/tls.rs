//! TLS, with real parts: a test CA and a server
//! certificate for 127.0.0.1/localhost made by the `openssl` command at test
//! time; `airlockd up --tls-cert --tls-key` serving HTTPS itself; our CLI
//! (REST and `wss://` tunnels) trusting the CA through `AIRLOCK_CA_FILE` in
//! `.env`, and refusing the gateway without it; the official client (both
//! versions) over https; and a real nginx from Debian's packages, configured
//! from the shipped `deploy/nginx/airlock.conf`, terminating TLS in front of
//! a plain-HTTP gateway, the tunnel's WebSocket upgrade going through it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use airlock_testkit::nginx::Nginx;
use airlock_testkit::pki::Pki;
use airlock_testkit::{Airlockd, Background, Cli, Output, bin, free_port, run};

const LONG: Duration = Duration::from_secs(300);

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn login(cli: &Cli, d: &Airlockd) -> Output {
    cli.run(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    )
}

/// `airlock session create`, then `airlock ssh S -- echo ok` through the
/// tunnel (a `wss://` WebSocket when the endpoint is https).
fn session_and_ssh(cli: &Cli, name: &str) {
    cli.run(
        &[
            "session", "create", "--name", name, "--cpu", "1", "--mem", "1g",
        ],
        None,
    )
    .expect_code(0);
    let out = run(
        &mut cli.command(&["ssh", name, "-o", "BatchMode=yes", "echo ok"]),
        None,
        LONG,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "ok", "{out:?}");
}

#[test]
fn tls_flags_come_in_pairs_and_bad_pem_is_explained() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let up = |extra: &[&str]| {
        run(
            Command::new(bin("airlockd"))
                .args([
                    "up",
                    "--listen",
                    "127.0.0.1:0",
                    "--no-build-image",
                    "--data",
                ])
                .arg(data.path())
                .args(extra)
                .env("AIRLOCK_LOG", "warn"),
            None,
            Duration::from_secs(60),
        )
    };
    let out = up(&["--tls-cert", &s(&pki.cert())]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("--tls-cert needs --tls-key"), "{out:?}");
    assert!(out.stderr.contains("hint:"), "{out:?}");
    let out = up(&["--tls-key", &s(&pki.key())]);
    assert!(out.stderr.contains("--tls-key needs --tls-cert"), "{out:?}");
    // The key where the certificate should be, and a missing key.
    let out = up(&["--tls-cert", &s(&pki.key()), "--tls-key", &s(&pki.key())]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("holds no valid PEM certificate") && out.stderr.contains("hint:"),
        "{out:?}"
    );
    let missing = pki.dir().join("missing.key");
    let out = up(&["--tls-cert", &s(&pki.cert()), "--tls-key", &s(&missing)]);
    assert!(
        out.stderr.contains("cannot read the TLS key") && out.stderr.contains("missing.key"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

#[test]
fn https_gateway_with_cli_and_official_clients() {
    let pki = Pki::new();
    let d = Airlockd::start_with(&["--tls-cert", &s(&pki.cert()), "--tls-key", &s(&pki.key())]);
    assert!(d.url.starts_with("https://127.0.0.1:"), "{}", d.url);

    // Without the CA: a clear refusal naming the endpoint, and advice.
    let stranger = Cli::new(&d.url);
    let out = login(&stranger, &d);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "error: cannot verify the TLS certificate of {}",
            d.url
        )),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("hint:") && out.stderr.contains("AIRLOCK_CA_FILE"),
        "{out:?}"
    );

    // With AIRLOCK_CA_FILE in .env: login, a session, ssh over wss://.
    let cli = Cli::new(&d.url);
    cli.write_env(&format!(
        "BACKEND_ENDPOINT={}\nBACKEND_ENDPOINT_TYPE=session\nAIRLOCK_CA_FILE={}\n",
        d.url,
        s(&pki.ca())
    ));
    login(&cli, &d).expect_code(0);
    cli.run(&["vfolder", "create", "data"], None).expect_code(0);
    session_and_ssh(&cli, "tlsdemo");

    // The same login state with .env lacking the CA: the tunnel is refused
    // too (REST and wss share one trust configuration).
    std::fs::copy(cli.dir.path().join("state/airlock/login.json"), {
        let p = stranger.dir.path().join("state/airlock");
        std::fs::create_dir_all(&p).unwrap();
        p.join("login.json")
    })
    .unwrap();
    let out = stranger.run(&["proxy", "tlsdemo"], None);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("cannot verify the TLS certificate"),
        "{out:?}"
    );

    // A plain-HTTP client on the HTTPS port gets nothing (no downgrade).
    let http = d.url.replacen("https://", "http://", 1);
    let out = run(
        Command::new("curl").args(["-sS", "--max-time", "10", &http]),
        None,
        Duration::from_secs(20),
    );
    assert_ne!(out.code, Some(0), "{out:?}");

    for venv in ["backendai-26.9", "backendai-22.9"] {
        official_client(&d, &pki, venv, "tlsdemo");
    }
}

fn venv(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap();
    let dir = target.join("venvs").join(name);
    assert!(
        dir.join("bin/backend.ai").is_file(),
        "{} is missing: run scripts/client-venvs (scripts/test does)",
        dir.display()
    );
    dir
}

/// The official client over https, trusting the test CA through the
/// standard variables (`SSL_CERT_FILE` for Python's ssl/aiohttp,
/// `REQUESTS_CA_BUNDLE` for requests).
fn official_client(d: &Airlockd, pki: &Pki, venv_name: &str, session: &str) {
    let venv = venv(venv_name);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("home/.ssh")).unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "BACKEND_ENDPOINT_TYPE=session\nBACKEND_ENDPOINT={}\n",
            d.url
        ),
    )
    .unwrap();
    let command = |program: &str, args: &[&str]| {
        let mut c = Command::new("setsid");
        let path = format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.arg(program)
            .args(args)
            .current_dir(dir.path())
            .env("PATH", path)
            .env("HOME", dir.path().join("home"))
            .env("NO_COLOR", "1")
            .env("PYTHONWARNINGS", "ignore")
            .env("SSL_CERT_FILE", pki.ca())
            .env("REQUESTS_CA_BUNDLE", pki.ca());
        for (k, _) in std::env::vars() {
            if k.starts_with("BACKEND_") || k.starts_with("AIRLOCK_") {
                c.env_remove(k);
            }
        }
        c
    };
    let ba = |args: &[&str], stdin: Option<&str>| {
        let out = run(
            &mut command("backend.ai", args),
            stdin.map(str::as_bytes),
            LONG,
        );
        assert_eq!(
            out.code,
            Some(0),
            "{venv_name}: backend.ai {args:?} failed:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(!out.stderr.contains("Traceback"), "{}", out.stderr);
        out
    };
    let out = ba(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("Login succeeded"),
        "{venv_name}: {out:?}"
    );
    let out = ba(&["ps"], None);
    assert!(out.stdout.contains(session), "{venv_name}: {out:?}");
    let out = ba(&["vfolder", "list"], None);
    assert!(out.stdout.contains("data"), "{venv_name}: {out:?}");
    ba(&["session", "download", session, "id_container"], None);
    // Folder transfers: the upload/download URLs handed out are https too.
    let name = format!("up-{venv_name}.txt");
    std::fs::write(dir.path().join(&name), format!("hello from {venv_name}\n")).unwrap();
    ba(&["vfolder", "upload", "data", &name], None);
    std::fs::remove_file(dir.path().join(&name)).unwrap();
    ba(&["vfolder", "download", "data", &name], None);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(&name)).unwrap(),
        format!("hello from {venv_name}\n")
    );

    let port = free_port();
    let mut app = Background::spawn(&mut command(
        "backend.ai",
        &["app", session, "sshd", "-b", &port.to_string()],
    ));
    app.wait_for(&format!("tcp://127.0.0.1:{port}"), Duration::from_secs(60));
    let out = run(
        &mut command(
            "ssh",
            &[
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-i",
                "./id_container",
                "-p",
                &port.to_string(),
                "work@127.0.0.1",
                "echo ok",
            ],
        ),
        None,
        LONG,
    );
    assert_eq!(out.code, Some(0), "{venv_name}: {out:?}\n{}", app.output());
    assert_eq!(out.stdout.trim(), "ok", "{venv_name}: {out:?}");
    std::thread::sleep(Duration::from_secs(1));
    app.signal("INT", Duration::from_secs(20));
}

/// `deploy/nginx/airlock.conf`, rendered with these ports, certificate and
/// upstream, in a real nginx.
fn nginx(pki: &Pki, https_port: u16, upstream: &str) -> Nginx {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/airlock.conf");
    let http_port = free_port();
    let conf = airlock_testkit::nginx::render(
        &example,
        &[
            (
                "listen 443 ssl;",
                format!("listen 127.0.0.1:{https_port} ssl;"),
            ),
            ("listen [::]:443 ssl;", String::new()),
            ("listen 80;", format!("listen 127.0.0.1:{http_port};")),
            ("listen [::]:80;", String::new()),
            ("/etc/ssl/airlock/fullchain.pem", s(&pki.cert())),
            ("/etc/ssl/airlock/privkey.pem", s(&pki.key())),
            ("http://127.0.0.1:8090", format!("http://{upstream}")),
        ],
    );
    Nginx::start(&conf, https_port)
}

#[test]
fn tunnel_through_nginx_terminating_tls() {
    let pki = Pki::new();
    let d = Airlockd::start_with(&[
        "--trusted-proxy",
        "127.0.0.1/32",
        "--max-connections-per-ip",
        "unlimited",
    ]);
    assert!(d.url.starts_with("http://127.0.0.1:"), "{}", d.url);
    let upstream = d.url.trim_start_matches("http://").to_owned();
    let port = free_port();
    let _nginx = nginx(&pki, port, &upstream);
    let url = format!("https://127.0.0.1:{port}");
    let cli = Cli::empty();
    cli.write_env(&format!(
        "BACKEND_ENDPOINT={url}\nBACKEND_ENDPOINT_TYPE=session\nAIRLOCK_CA_FILE={}\n",
        s(&pki.ca())
    ));
    login(&cli, &d).expect_code(0);
    session_and_ssh(&cli, "behindproxy");
    let out = cli.run(&["session", "list"], None);
    out.expect_code(0);
    assert!(out.stdout.contains("behindproxy"), "{out:?}");
}
