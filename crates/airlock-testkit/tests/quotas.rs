//! Quotas end to end with the built binaries: `airlockd up --max-…` flags,
//! `airlockd user limits`, and what the `airlock` CLI shows when a limit is
//! hit (issue 11, point 8).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_testkit::{Airlockd, Cli};

fn login(cli: &Cli, email: &str, password: &str) {
    cli.run(&["login"], Some(&format!("{email}\n{password}\n")))
        .expect_code(0);
}

#[test]
fn server_defaults_user_overrides_and_clear_errors() {
    let d = Airlockd::start_with(&["--max-folders", "1", "--max-upload-size", "1k"]);
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
    std::fs::write(&big, vec![b'y'; 4096]).unwrap();
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
