//! Quotas end to end with the built binaries: `airlockd gateway --max-…`
//! flags, `airlockd user limits`, and what the `airlock` CLI shows when a
//! limit is hit. Nothing here starts a container: the
//! session quota refuses before any node is asked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use airlock_testkit::Cli;
use airlock_testkit::process::{Background, Output, bin, run};

/// `airlockd gateway` on 127.0.0.1:0 with its own data directory.
struct Gateway {
    url: String,
    data: tempfile::TempDir,
    _proc: Background,
}

impl Gateway {
    fn start(extra: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let proc = Background::spawn(
            Command::new(bin("airlockd"))
                .args(["gateway", "--listen", "127.0.0.1:0", "--data"])
                .arg(data.path())
                .args(extra)
                .env("AIRLOCK_AGENT_TOKEN", "quota-system-test-token-0123456789")
                .env("AIRLOCK_ADMIN_PASSWORD", "admin-password-for-tests")
                .env("AIRLOCK_LOG", "info,sqlx=warn"),
        );
        let line = proc.wait_for("airlock gateway is running at ", Duration::from_secs(60));
        let url = line.split("running at ").nth(1).unwrap().trim().to_owned();
        Self {
            url,
            data,
            _proc: proc,
        }
    }

    fn admin_command(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run(
            Command::new(bin("airlockd"))
                .args(args)
                .arg("--data")
                .arg(self.data.path()),
            stdin,
            Duration::from_secs(60),
        )
    }
}

fn login(cli: &Cli, email: &str, password: &str) {
    cli.run(&["login"], Some(&format!("{email}\n{password}\n")))
        .expect_code(0);
}

#[test]
fn server_defaults_user_overrides_and_clear_errors() {
    let d = Gateway::start(&["--max-folders", "1", "--max-upload-size", "1k"]);
    d.admin_command(
        &["user", "add", "carol@example.com"],
        Some(b"carol-password\n"),
    )
    .expect_code(0);
    let cli = Cli::new(&d.url);
    login(&cli, "carol@example.com", "carol-password");

    // The server-wide folder limit.
    cli.run(&["vfolder", "create", "one"], None).expect_code(0);
    let out = cli.run(&["vfolder", "create", "two"], None);
    out.expect_code(1);
    assert!(
        out.stderr.contains("limit of 1 folders") && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );

    // The server-wide upload limit.
    let small = cli.cwd().join("small.txt");
    std::fs::write(&small, vec![b'x'; 1024]).unwrap();
    let big = cli.cwd().join("big.txt");
    // Large enough that the refusal comes while the client still sends.
    std::fs::write(&big, vec![b'y'; 8 << 20]).unwrap();
    cli.run(&["vfolder", "upload", "one", small.to_str().unwrap()], None)
        .expect_code(0);
    let out = cli.run(&["vfolder", "upload", "one", big.to_str().unwrap()], None);
    out.expect_code(1);
    assert!(
        out.stderr.contains("upload limit of 1024 bytes") && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );

    // Bad values are refused with a hint; unknown accounts too.
    let out = d.admin_command(
        &["user", "limits", "carol@example.com", "--folders", "many"],
        None,
    );
    out.expect_code(1);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    d.admin_command(&["user", "limits", "nobody@example.com"], None)
        .expect_code(1);

    // An administrator raises carol's limits; the running gateway applies
    // them to the next request.
    let out = d.admin_command(
        &[
            "user",
            "limits",
            "carol@example.com",
            "--folders",
            "3",
            "--upload-size",
            "unlimited",
            "--sessions",
            "0",
        ],
        None,
    );
    out.expect_code(0);
    assert!(out.stdout.contains("folders:     3"), "{}", out.stdout);
    let out = d.admin_command(&["user", "limits", "carol@example.com", "--json"], None);
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["folders"], 3);
    assert_eq!(v["upload_size"], "unlimited");
    assert_eq!(v["sessions"], 0);
    assert_eq!(v["tunnels"], serde_json::Value::Null);

    cli.run(&["vfolder", "create", "two"], None).expect_code(0);
    cli.run(&["vfolder", "upload", "one", big.to_str().unwrap()], None)
        .expect_code(0);
    // No sessions at all for carol: refused before any container starts.
    let out = cli.run(&["session", "create", "--name", "nope"], None);
    out.expect_code(1);
    assert!(
        out.stderr.contains("limit of 0 concurrent sessions") && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );

    // Back to the server default.
    d.admin_command(
        &[
            "user",
            "limits",
            "carol@example.com",
            "--folders",
            "default",
        ],
        None,
    )
    .expect_code(0);
    let out = cli.run(&["vfolder", "create", "three"], None);
    out.expect_code(1);
    assert!(out.stderr.contains("limit of 1 folders"), "{}", out.stderr);
}
