//! A new user's tour of the CLI: one meaning for `ls`, hints
//! that run as printed, confirmation before destructive commands, one JSON
//! shape per object, `whoami`, honest `logout`, downloads that land where
//! uploads came from, and admin listings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use airlock_testkit::{Airlockd, Cli, Output, run};

fn login(cli: &Cli, email: &str, password: &str) -> Output {
    let out = cli.run(&["login"], Some(&format!("{email}\n{password}\n")));
    out.expect_code(0);
    out
}

/// The commands in backquotes on the `hint:` lines of `out`.
fn hinted_commands(out: &Output) -> Vec<String> {
    out.stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("hint:"))
        .flat_map(|l| {
            l.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|c| c.starts_with("airlock "))
        .collect()
}

/// Runs a hinted command as printed; it must parse (clap exits 2 on a
/// usage error) and not fail for want of an argument.
fn check_hint(cli: &Cli, command: &str) {
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = cli.run(&words, Some(""));
    assert_ne!(
        out.code,
        Some(2),
        "the hint `{command}` does not run as printed: {out:?}"
    );
    for bad in [
        "unexpected argument",
        "required arguments",
        "unrecognized subcommand",
    ] {
        assert!(!out.stderr.contains(bad), "`{command}`: {out:?}");
    }
}

#[test]
fn tour() {
    let d = Airlockd::start();
    let cli = Cli::new(&d.url);

    // The login line names the account and the endpoint; whoami agrees.
    let out = login(&cli, &d.admin_email, &d.admin_password);
    assert!(
        out.stderr.contains(&format!(
            "✓ Login succeeded: {} on {}",
            d.admin_email,
            d.url.trim_end_matches('/')
        )),
        "{}",
        out.stderr
    );
    let out = cli.run(&["whoami"], None);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), d.admin_email);
    let v: serde_json::Value =
        serde_json::from_str(&cli.run(&["whoami", "--json"], None).stdout).unwrap();
    assert_eq!(v["email"], d.admin_email.as_str());
    assert_eq!(v["role"], "admin");

    // `ls` and `list` mean the same: folders; with a NAME, its files, with
    // a header and human sizes.
    cli.run(&["vfolder", "create", "data"], None).expect_code(0);
    let created: serde_json::Value = serde_json::from_str(
        &cli.run(&["vfolder", "create", "scratch", "--json"], None)
            .stdout,
    )
    .unwrap();
    assert_eq!(created["name"], "scratch");
    let ls = cli.run(&["vfolder", "ls"], None);
    ls.expect_code(0);
    assert!(
        ls.stdout.contains("data") && ls.stdout.contains("scratch"),
        "{}",
        ls.stdout
    );
    assert_eq!(cli.run(&["vfolder", "list"], None).stdout, ls.stdout);
    let big = cli.cwd().join("big.bin");
    std::fs::write(&big, vec![7u8; 3 * 1024 * 1024 / 2]).unwrap();
    cli.run(&["vfolder", "upload", "data", "big.bin"], None)
        .expect_code(0);
    let files = cli.run(&["vfolder", "ls", "data"], None);
    files.expect_code(0);
    let header = files.stdout.lines().next().unwrap();
    for col in ["MODE", "SIZE", "MODIFIED", "NAME"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(files.stdout.contains("1.5M"), "{}", files.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&cli.run(&["vfolder", "ls", "data", "--json"], None).stdout).unwrap();
    assert_eq!(json[0]["size"], 3 * 1024 * 1024 / 2);

    // Deleting a folder asks on a terminal and refuses without one, with a
    // hint that works as printed.
    let out = cli.run(&["vfolder", "rm", "scratch"], None);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("hint: airlock vfolder rm scratch --yes"),
        "{}",
        out.stderr
    );
    assert!(cli.run(&["vfolder", "ls"], None).stdout.contains("scratch"));
    let on_tty = |answer: &str| {
        // `script` gives the command a terminal; our answer is typed into it.
        let mut c = Command::new("script");
        c.args(["-qec"])
            .arg(format!(
                "{} vfolder rm scratch",
                airlock_testkit::bin("airlock").display()
            ))
            .arg("/dev/null");
        for (k, v) in cli.command(&[]).get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.current_dir(cli.cwd());
        run(&mut c, Some(answer.as_bytes()), Duration::from_secs(60))
    };
    let out = on_tty("n\n");
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("[y/N]"), "{out:?}");
    assert!(cli.run(&["vfolder", "ls"], None).stdout.contains("scratch"));
    on_tty("y\n").expect_code(0);
    assert!(!cli.run(&["vfolder", "ls"], None).stdout.contains("scratch"));
    cli.run(&["vfolder", "rm", "data", "--yes"], None)
        .expect_code(0);

    // Every hint is a command that runs as printed.
    let mut hinted = Vec::new();
    for args in [
        vec!["vfolder", "ls", "nosuch"],
        vec!["vfolder", "rm", "nosuch", "--yes"],
        vec!["session", "info", "nosuch"],
        vec!["ssh", "nosuch", "true"],
        vec!["keys", "rm", "nosuch"],
        vec!["app", "nosuch", "jupyter"],
    ] {
        let out = cli.run(&args, None);
        assert_ne!(out.code, Some(0), "{args:?}");
        assert!(out.stderr.contains("hint:"), "{args:?}: {}", out.stderr);
        hinted.extend(hinted_commands(&out));
    }
    assert!(
        hinted.iter().any(|c| c == "airlock vfolder ls"),
        "{hinted:?}"
    );
    for c in &hinted {
        check_hint(&cli, c);
    }

    // Global options are listed once, as a group.
    let help = cli.run(&["session", "ls", "--help"], None);
    help.expect_code(0);
    assert!(help.stdout.contains("Global options:"), "{}", help.stdout);

    // Admins list everyone's sessions; others are told they cannot.
    let (ak, sk) = d.add_user_with_keys("eve@example.com", "eve-password-1");
    let _ = (ak, sk);
    let eve = Cli::new(&d.url);
    login(&eve, "eve@example.com", "eve-password-1");
    let out = eve.run(&["session", "ls", "--all-users"], None);
    out.expect_code(1);
    assert!(out.stderr.contains("administrators"), "{}", out.stderr);
    check_hint(&eve, "airlock session ls");
    let out = cli.run(&["session", "ls", "--all-users", "--json"], None);
    out.expect_code(0);

    // A second logout says there was nothing to do.
    let out = eve.run(&["logout"], None);
    out.expect_code(0);
    assert!(out.stderr.contains("Logout done"), "{}", out.stderr);
    let out = eve.run(&["logout"], None);
    out.expect_code(0);
    assert!(out.stderr.contains("Not logged in"), "{}", out.stderr);
    assert!(!out.stderr.contains("Logout done"), "{}", out.stderr);
}

#[test]
fn session_files_keep_their_relative_path_and_ls_shows_age() {
    let d = Airlockd::start();
    let cli = Cli::new(&d.url);
    login(&cli, &d.admin_email, &d.admin_password);
    let out = cli.run(
        &[
            "session", "create", "--name", "tour", "--cpu", "0.5", "--mem", "256m", "--json",
        ],
        None,
    );
    out.expect_code(0);
    let created: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(created["name"], "tour");
    assert!(created.get("sessionId").is_none(), "{created}");

    let ls = cli.run(&["session", "ls"], None);
    ls.expect_code(0);
    assert!(
        ls.stdout.lines().next().unwrap().contains("AGE"),
        "{}",
        ls.stdout
    );
    let row = ls.stdout.lines().find(|l| l.starts_with("tour")).unwrap();
    assert!(
        row.split_whitespace()
            .any(|w| w.ends_with('s') && w[..w.len() - 1].parse::<u64>().is_ok()),
        "{row}"
    );

    std::fs::create_dir_all(cli.cwd().join("tree")).unwrap();
    std::fs::write(cli.cwd().join("tree/a.txt"), "same path both ways\n").unwrap();
    cli.run(&["session", "upload", "tour", "tree/a.txt"], None)
        .expect_code(0);
    let dest = cli.cwd().join("back");
    cli.run(
        &[
            "session",
            "download",
            "tour",
            "tree/a.txt",
            "--dest",
            dest.to_str().unwrap(),
        ],
        None,
    )
    .expect_code(0);
    assert_eq!(
        std::fs::read_to_string(dest.join("tree/a.txt")).unwrap(),
        "same path both ways\n"
    );

    // A terminated session's hint says what to do now, not "wait".
    cli.run(&["session", "rm", "tour"], None).expect_code(0);
    let id = created["id"].as_str().unwrap();
    let out = cli.run(&["ssh", id, "true"], None);
    out.expect_code(1);
    assert!(!out.stderr.contains("wait until"), "{}", out.stderr);
    assert!(
        out.stderr.contains("airlock session create --name tour"),
        "{}",
        out.stderr
    );
    for c in hinted_commands(&out) {
        assert!(c.starts_with("airlock session create"), "{c}");
    }
}
