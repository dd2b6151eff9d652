//! The built `airlock` binary against a running `airlockd up`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;

use airlock_testkit::{Airlockd, Cli};

fn login(cli: &Cli, d: &Airlockd) {
    let out = cli.run(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    );
    out.expect_code(0);
    assert!(out.stderr.contains("✓ Login succeeded:"), "{}", out.stderr);
}

#[test]
fn login_settings_keys_logout() {
    let d = Airlockd::start();
    let cli = Cli::new(&d.url);

    // Prompts exactly like Backend.AI's guide, answers read from stdin.
    let out = cli.run(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    );
    out.expect_code(0);
    assert!(out.stderr.contains("User ID: "), "{}", out.stderr);
    assert!(out.stderr.contains("Password: "), "{}", out.stderr);
    assert!(out.stderr.contains("✓ Login succeeded:"));
    // The state file is private.
    let state = cli.dir.path().join("state/airlock/login.json");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(state.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert!(
        !std::fs::read_to_string(&state)
            .unwrap()
            .contains(&d.admin_password)
    );

    // Preferred port round trip.
    cli.run(&["settings"], None).expect_code(0);
    let out = cli.run(&["settings", "--ssh-port", "10022"], None);
    out.expect_code(0);
    let out = cli.run(&["settings"], None);
    out.expect_code(0);
    assert!(
        out.stdout.contains("Preferred SSH port: 10022"),
        "{}",
        out.stdout
    );
    let out = cli.run(&["settings", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ssh_port"], 10022);
    let out = cli.run(&["settings", "--ssh-port", "80"], None);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("error: preferred SSH port 80 is out of range"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint:") && out.stderr.contains("10000"),
        "{}",
        out.stderr
    );
    let out = cli.run(&["settings"], None);
    assert!(out.stdout.contains("10022"), "80 must not have been stored");
    cli.run(&["settings", "--ssh-port", "0"], None)
        .expect_code(0);
    let out = cli.run(&["settings"], None);
    assert!(out.stdout.contains("not set"), "{}", out.stdout);

    // Keys: default ~/.ssh/id_ed25519.pub, list with fingerprint, remove.
    let key = cli.home().join(".ssh/id_ed25519");
    let kg = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(kg.success());
    let out = cli.run(&["keys", "add"], None);
    out.expect_code(0);
    assert!(
        out.stderr.contains("Added key \"me@laptop\""),
        "{}",
        out.stderr
    );
    let fp = airlock_testkit::ssh::fingerprint(&key.with_extension("pub"));
    let out = cli.run(&["keys", "ls"], None);
    out.expect_code(0);
    assert!(
        out.stdout.contains(&fp),
        "ls must show {fp}: {}",
        out.stdout
    );
    let out = cli.run(&["keys", "ls", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v[0]["fingerprint"], fp.as_str());
    // A private key is refused with a hint, a malformed one too.
    let out = cli.run(&["keys", "add", key.to_str().unwrap()], None);
    out.expect_code(1);
    assert!(
        out.stderr.contains("private key") && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );
    let out = cli.run(&["keys", "add", "-"], Some("ssh-ed25519 garbage\n"));
    out.expect_code(1);
    assert!(
        out.stderr.contains("error:") && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );
    cli.run(&["keys", "rm", "me@laptop"], None).expect_code(0);
    let out = cli.run(&["keys", "ls"], None);
    assert!(!out.stdout.contains(&fp));
    let out = cli.run(&["keys", "rm", "me@laptop"], None);
    out.expect_code(1);
    assert!(out.stderr.contains("hint:"));

    // Logout forgets the cookie; later calls say so.
    let out = cli.run(&["logout"], None);
    out.expect_code(0);
    assert!(out.stderr.contains("✓ Logout done:"));
    assert!(!state.exists());
    let out = cli.run(&["settings"], None);
    out.expect_code(1);
    assert!(
        out.stderr.contains("error: you are not logged in"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: run `airlock login`"),
        "{}",
        out.stderr
    );
}

#[test]
fn login_failure_prints_the_reason() {
    let d = Airlockd::start();
    let cli = Cli::new(&d.url);
    let out = cli.run(
        &["login"],
        Some(&format!("{}\nwrong-password\n", d.admin_email)),
    );
    out.expect_code(1);
    assert!(out.stderr.contains("✗ Login failed."), "{}", out.stderr);
    assert!(
        out.stderr.contains("Invalid email or password"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn error_cases_are_one_line_with_a_hint() {
    let d = Airlockd::start();
    let check = |out: airlock_testkit::Output, needle: &str| {
        assert_ne!(out.code, Some(0), "{out:?}");
        assert!(
            out.stderr.contains(&format!("error: {needle}")),
            "{needle}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("hint: "), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"));
    };

    // Unreachable endpoint (nothing listens on a port we just freed).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cli = Cli::new(&format!("http://127.0.0.1:{port}"));
    check(
        cli.run(&["settings"], None),
        "cannot reach the airlock gateway",
    );

    // Wrong endpoint type values.
    let cli = Cli::empty();
    cli.write_env(&format!(
        "BACKEND_ENDPOINT={}\nBACKEND_ENDPOINT_TYPE=web\n",
        d.url
    ));
    check(
        cli.run(&["settings"], None),
        "BACKEND_ENDPOINT_TYPE must be",
    );
    cli.write_env(&format!(
        "BACKEND_ENDPOINT={}\nBACKEND_ENDPOINT_TYPE=api\n",
        d.url
    ));
    check(
        cli.run(&["settings"], None),
        "BACKEND_ENDPOINT_TYPE=api needs",
    );

    // Malformed .env (found from a subdirectory).
    let cli = Cli::empty();
    cli.write_env("BACKEND_ENDPOINT=http://127.0.0.1:1\nthis line is broken\n");
    let sub = cli.cwd().join("deeper/still");
    std::fs::create_dir_all(&sub).unwrap();
    let mut cmd = cli.command(&["settings"]);
    cmd.current_dir(&sub);
    check(
        airlock_testkit::run(&mut cmd, None, std::time::Duration::from_secs(60)),
        "malformed .env file",
    );

    // An endpoint that is not an airlock gateway.
    let cli = Cli::new(&format!("{}/not-here", d.url));
    check(
        cli.run(&["login"], Some("a@b\npw\n")),
        &format!("{}/not-here does not look like an airlock", d.url),
    );

    // Expired/revoked cookie: the password changes on the server.
    let cli = Cli::new(&d.url);
    login(&cli, &d);
    cli.run(&["settings"], None).expect_code(0);
    d.admin_command(
        &["user", "passwd", &d.admin_email],
        Some(b"another-password\n"),
    )
    .expect_code(0);
    check(cli.run(&["settings"], None), "your login has expired");
}

#[test]
fn api_mode_signs_requests() {
    let d = Airlockd::start();
    let (ak, sk) = d.add_user_with_keys("alice@example.com", "alice-password");
    assert_eq!(ak.len(), 20);
    assert_eq!(sk.len(), 40);
    let cli = Cli::empty();
    cli.write_env(&format!(
        "BACKEND_ENDPOINT={}\nBACKEND_ENDPOINT_TYPE=api\nBACKEND_ACCESS_KEY={ak}\nBACKEND_SECRET_KEY={sk}\n",
        d.url
    ));
    cli.run(&["settings", "--ssh-port", "12345"], None)
        .expect_code(0);
    let out = cli.run(&["settings"], None);
    assert!(out.stdout.contains("12345"), "{}", out.stdout);
    // A wrong secret is rejected with a hint about the keys.
    cli.write_env(&format!(
        "BACKEND_ENDPOINT={}\nBACKEND_ENDPOINT_TYPE=api\nBACKEND_ACCESS_KEY={ak}\nBACKEND_SECRET_KEY={}\n",
        d.url,
        "x".repeat(40)
    ));
    let out = cli.run(&["settings"], None);
    out.expect_code(1);
    assert!(
        out.stderr.contains("rejected the request signature"),
        "{}",
        out.stderr
    );
    // Login is refused in api mode, with a hint.
    let out = cli.run(&["login"], Some("a\nb\n"));
    out.expect_code(1);
    assert!(
        out.stderr.contains("BACKEND_ENDPOINT_TYPE=session"),
        "{}",
        out.stderr
    );
}

#[test]
fn airlockd_user_commands() {
    let d = Airlockd::start();
    d.admin_command(
        &["user", "add", "bob@example.com", "--admin"],
        Some(b"bob-password\n"),
    )
    .expect_code(0);
    let out = d.admin_command(&["user", "add", "bob@example.com"], Some(b"bob-password\n"));
    out.expect_code(1);
    assert!(
        out.stderr.contains("already exists") && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );
    let out = d.admin_command(&["user", "add", "not-an-email"], Some(b"whatever-pw\n"));
    out.expect_code(1);
    let out = d.admin_command(&["user", "add", "short@example.com"], Some(b"short\n"));
    out.expect_code(1);
    assert!(out.stderr.contains("too short"), "{}", out.stderr);
    let out = d.admin_command(&["user", "list", "--json"], None);
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let emails: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(emails, ["admin@airlock.local", "bob@example.com"]);
    assert_eq!(v[1]["role"], "admin");
    // The new account can log in through the CLI.
    let cli = Cli::new(&d.url);
    let out = cli.run(&["login"], Some("bob@example.com\nbob-password\n"));
    out.expect_code(0);
    d.admin_command(
        &["user", "passwd", "nobody@example.com"],
        Some(b"whatever-pw\n"),
    )
    .expect_code(1);

    // In a directory without state, admin commands refuse instead of
    // creating ./airlock-data and listing nobody.
    let empty = tempfile::tempdir().unwrap();
    let out = airlock_testkit::process::run(
        std::process::Command::new(airlock_testkit::process::bin("airlockd"))
            .args(["user", "list"])
            .env_remove("AIRLOCK_DATA")
            .current_dir(empty.path()),
        None,
        std::time::Duration::from_secs(30),
    );
    out.expect_code(1);
    assert!(
        out.stderr.contains("error: no airlock state in") && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );
    assert!(!empty.path().join("airlock-data").exists());
}
