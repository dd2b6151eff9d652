//! The README's quick start, verbatim, the way a newcomer runs it: a fresh
//! clone of this repository in a temporary directory, `scripts/up` in that
//! clone with the default (relative) data directory, the administrator
//! password it prints, `.env` + `airlock login`, a folder, a session that
//! mounts it, `airlock ssh`, `airlock scp`, and the web UI's sessions page in
//! a real browser.
//!
//! Two things differ from a person's run, both through the environment so
//! that every command stays as the README prints it: the gateway listens on
//! a free port (`AIRLOCK_LISTEN=127.0.0.1:0`, tests bind port 0) and the
//! session containers carry the test labels (`AIRLOCK_CONTAINER_LABELS`) so
//! they are removed even when the test fails. The build reuses the cargo
//! target directory of this run (`CARGO_TARGET_DIR`), as CI sets it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use airlock_testkit::browser::Browser;
use airlock_testkit::docker;
use airlock_testkit::{Background, run};

/// The repository this test belongs to.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Removes the run's containers however the test ends.
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        docker::remove_labelled(&self.0);
    }
}

/// `airlock ARGS` as the newcomer runs it: from the clone, with the CLI
/// that `scripts/up` built and named.
fn airlock(cli: &Path, cwd: &Path, home: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut c = Command::new(cli);
    c.args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("BACKEND_") || k.starts_with("AIRLOCK_") {
            c.env_remove(k);
        }
    }
    let out = run(&mut c, stdin.map(str::as_bytes), Duration::from_secs(120));
    assert!(
        out.success(),
        "airlock {}: {}\n{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out.stdout
}

#[test]
fn readme_quick_start_on_a_fresh_clone() {
    assert!(docker::available(), "this test needs Docker");
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("airlock");
    let out = run(
        Command::new("git")
            .args(["clone", "--quiet"])
            .arg(repo_root())
            .arg(&clone),
        None,
        Duration::from_secs(120),
    );
    assert!(out.success(), "git clone: {out:?}");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let run_label = format!(
        "airlock.test.run=quickstart-{}",
        tmp.path().file_name().unwrap().to_string_lossy()
    );
    let _containers = Containers(run_label.clone());

    // 1. `scripts/up` (README, "Quick start"), in the clone, defaults.
    let mut up_cmd = Command::new("setsid");
    up_cmd
        .arg("scripts/up")
        .current_dir(&clone)
        .env_remove("AIRLOCK_ADMIN_PASSWORD")
        .env_remove("AIRLOCK_DATA")
        .env("AIRLOCK_LISTEN", "127.0.0.1:0")
        .env(
            "AIRLOCK_CONTAINER_LABELS",
            format!("airlock.test=1,{run_label}"),
        );
    let up = Background::spawn(&mut up_cmd);
    // A cold release build on two cores takes a while.
    let line = up.wait_for("airlock is running at ", Duration::from_secs(40 * 60));
    let url = line
        .split("airlock is running at ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let sessions = up.wait_for("  sessions: ", Duration::from_secs(10));
    assert!(
        sessions.contains("ready"),
        "sessions must be able to start: {sessions}\n{}",
        up.output()
    );
    let password = up
        .wait_for("  password: ", Duration::from_secs(10))
        .split("password: ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    // The data directory is the default one, inside the clone, and what
    // reaches Docker is absolute.
    assert!(clone.join("airlock-data").is_dir(), "{}", up.output());
    let cli_line = up.wait_for("The CLI is at ", Duration::from_secs(1));
    let cli_path = cli_line.split("The CLI is at ").nth(1).unwrap().trim();
    let cli = if Path::new(cli_path).is_absolute() {
        PathBuf::from(cli_path)
    } else {
        clone.join(cli_path)
    };

    // 2. "Using the CLI": `.env`, then the commands as printed.
    std::fs::write(
        clone.join(".env"),
        format!("BACKEND_ENDPOINT={url}\nBACKEND_ENDPOINT_TYPE=session\n"),
    )
    .unwrap();
    let a = |args: &[&str], stdin: Option<&str>| airlock(&cli, &clone, &home, args, stdin);
    a(
        &["login"],
        Some(&format!("admin@airlock.local\n{password}\n")),
    );
    a(&["vfolder", "create", "data"], None);
    a(
        &["session", "create", "--name", "demo", "--mount", "data"],
        None,
    );
    let out = a(
        &["ssh", "demo", "--", "echo", "hello-from", "$(hostname)"],
        None,
    );
    assert!(out.contains("hello-from demo"), "{out}");
    std::fs::write(clone.join("results.csv"), "a,b\n1,2\n").unwrap();
    a(&["scp", "results.csv", "demo:/home/work/data/"], None);
    let out = a(
        &["ssh", "demo", "--", "cat", "/home/work/data/results.csv"],
        None,
    );
    assert_eq!(out, "a,b\n1,2\n");

    // 3. The web UI's sessions page, in a real browser.
    let b = Browser::start("quickstart", &url, Duration::from_secs(120));
    b.goto("/ui/login");
    b.fill("#email", "admin@airlock.local");
    b.fill("#password", &password);
    b.click("form button[type=submit]");
    b.wait_until("the login to finish", Duration::from_secs(30), |b| {
        !b.path().starts_with("/ui/login")
    });
    b.goto("/ui/sessions");
    b.wait_text("main", "demo", Duration::from_secs(30));
    b.wait_text("main", "RUNNING", Duration::from_secs(30));
    drop(b);

    // 4. `airlock session rm demo`: the folder and its files stay.
    a(&["session", "rm", "demo"], None);
    let out = a(&["vfolder", "ls", "data"], None);
    assert!(out.contains("results.csv"), "{out}");
    drop(up);
}
