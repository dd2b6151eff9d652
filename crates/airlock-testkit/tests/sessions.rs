//! Compute sessions on the real Docker engine: lifecycle, the
//! runner inside, folders, file transfer, isolation, re-adoption.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use airlock_testkit::docker::{self, container_of, ip_of};
use airlock_testkit::ssh::{SshClient, random_file, sha256};
use airlock_testkit::{Airlockd, Background, Cli};

fn login(cli: &Cli, email: &str, password: &str) {
    cli.run(&["login"], Some(&format!("{email}\n{password}\n")))
        .expect_code(0);
}

fn admin(d: &Airlockd) -> Cli {
    let cli = Cli::new(&d.url);
    login(&cli, &d.admin_email, &d.admin_password);
    cli
}

fn info(cli: &Cli, s: &str) -> serde_json::Value {
    let out = cli.run(&["session", "info", s, "--json"], None);
    out.expect_code(0);
    serde_json::from_str(&out.stdout).unwrap()
}

fn create(cli: &Cli, args: &[&str]) -> serde_json::Value {
    let mut a = vec![
        "session", "create", "--cpu", "0.5", "--mem", "256m", "--json",
    ];
    a.extend_from_slice(args);
    let out = cli.run(&a, None);
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["status"], "RUNNING", "{v}\n{}", out.stderr);
    v
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Downloads id_container with the CLI into `dir` and returns its path.
fn download_key(cli: &Cli, session: &str) -> std::path::PathBuf {
    let dest = cli.dir.path().join(format!("keys-{session}"));
    let out = cli.run(
        &[
            "session",
            "download",
            session,
            "id_container",
            "--dest",
            dest.to_str().unwrap(),
        ],
        None,
    );
    out.expect_code(0);
    assert!(out.stderr.contains("Downloaded to"), "{}", out.stderr);
    let key = dest.join("id_container");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "id_container must arrive 0600");
    key
}

#[test]
fn create_run_ssh_and_remove() {
    assert!(docker::available(), "these tests need Docker");
    let d = Airlockd::start();
    let cli = admin(&d);
    let created = create(&cli, &["--name", "demo", "--env", "MY_VAR=hello world"]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["service_ports"][0]["name"], "sshd");
    // One JSON shape per object: `create --json` is `info --json`.
    let info_out = cli.run(&["session", "info", "demo", "--json"], None);
    let shown: serde_json::Value = serde_json::from_str(&info_out.stdout).unwrap();
    assert_eq!(created, shown);

    // Inside: user work, id_container 0600, no published ports.
    let c = container_of(&id).expect("a container labelled with the session");
    let out = docker::exec(&c, &["id", "work"]);
    assert!(out.stdout.contains("uid=1000(work)"), "{out:?}");
    let out = docker::exec(&c, &["stat", "-c", "%a %U", "/home/work/id_container"]);
    assert_eq!(out.stdout.trim(), "600 work");
    let ports = docker::docker(&["port", &c]);
    assert!(
        ports.stdout.trim().is_empty(),
        "no host ports may be published: {}",
        ports.stdout
    );
    let labels = docker::docker(&["inspect", "-f", "{{json .Config.Labels}}", &c]);
    assert!(
        labels.stdout.contains("\"airlock.owner\""),
        "{}",
        labels.stdout
    );

    // The runner answers on the container address with the session key,
    // and its host key is the one the gateway recorded.
    let s = info(&cli, "demo");
    assert_eq!(s["status"], "RUNNING");
    let host_key = s["host_key"].as_str().unwrap().to_owned();
    let key = download_key(&cli, "demo");
    let ssh = SshClient::with_key(&key);
    let ip = ip_of(&c);
    ssh.pin(&ip, 2200, &host_key);
    let out = ssh.ssh(&ip, 2200, "whoami; echo $HOME; hostname");
    out.expect_code(0);
    assert!(
        out.stdout.starts_with("work\n/home/work\ndemo"),
        "{}",
        out.stdout
    );
    // The session's variables reach SSH logins; airlock's own do not.
    let out = ssh.ssh(&ip, 2200, "echo \"[$MY_VAR]\"; env");
    out.expect_code(0);
    assert!(out.stdout.starts_with("[hello world]\n"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("AIRLOCK_AUTHORIZED_KEYS"),
        "{}",
        out.stdout
    );

    // Listing and info.
    let out = cli.run(&["session", "ls"], None);
    assert!(
        out.stdout.contains("demo") && out.stdout.contains("RUNNING"),
        "{}",
        out.stdout
    );
    // The log without the runner's internal lines; --tail; -f follows
    // until the session ends.
    let out = cli.run(&["session", "logs", "demo"], None);
    out.expect_code(0);
    assert!(!out.stdout.contains("AIRLOCK-"), "{}", out.stdout);
    let live_log = out.stdout.clone();
    assert!(!live_log.trim().is_empty(), "the runner logs its start");
    let out = cli.run(&["session", "logs", "demo", "--tail", "1"], None);
    out.expect_code(0);
    assert_eq!(
        out.stdout.trim_end(),
        live_log.trim_end().lines().last().unwrap(),
        "--tail 1 is the last line"
    );
    let mut follow = Background::spawn(&mut cli.command(&["session", "logs", "-f", &id]));
    let first = live_log.lines().next().unwrap().to_owned();
    follow.wait_for(&first, Duration::from_secs(30));
    assert_eq!(follow.try_wait(), None, "-f keeps following");

    // Variables airlock owns, or malformed ones, are refused up front.
    for bad in ["PATH=/tmp", "1X=y", "NOEQUALS"] {
        let out = cli.run(&["session", "create", "--env", bad], None);
        out.expect_code(1);
        assert!(
            out.stderr.contains("error:") && out.stderr.contains("hint:"),
            "{bad}: {}",
            out.stderr
        );
    }

    // A second live session with the same name is refused.
    let out = cli.run(&["session", "create", "--name", "demo"], None);
    out.expect_code(1);
    assert!(
        out.stderr.contains("already have a live session"),
        "{}",
        out.stderr
    );

    cli.run(&["session", "rm", "demo"], None).expect_code(0);
    wait_for("the container to go", Duration::from_secs(30), || {
        container_of(&id).is_none()
    });
    assert_eq!(info(&cli, &id)["status"], "TERMINATED");
    wait_for(
        "logs -f to end with the session",
        Duration::from_secs(30),
        || follow.try_wait().is_some(),
    );
    // The log outlives the container.
    let out = cli.run(&["session", "logs", &id], None);
    out.expect_code(0);
    assert!(out.stdout.contains(&first), "{}", out.stdout);
    let out = cli.run(&["session", "ls"], None);
    assert!(!out.stdout.contains("demo"), "{}", out.stdout);
    let out = cli.run(&["session", "ls", "--all"], None);
    assert!(out.stdout.contains("TERMINATED"), "{}", out.stdout);
    // The name is free again.
    create(&cli, &["--name", "demo"]);
}

#[test]
fn missing_image_is_a_clear_error() {
    let d = Airlockd::start();
    let cli = admin(&d);
    let out = cli.run(
        &[
            "session",
            "create",
            "--name",
            "noimg",
            "--image",
            "no/such:image",
        ],
        None,
    );
    out.expect_code(1);
    assert!(
        out.stderr.contains("no/such:image") && out.stderr.contains("not available"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    let out = cli.run(&["session", "ls", "--all", "--json"], None);
    assert_eq!(out.stdout.trim(), "[]");
}

#[test]
fn folders_outlive_sessions_and_dot_ssh_is_honoured() {
    let d = Airlockd::start();
    let cli = admin(&d);
    cli.run(&["vfolder", "create", "data"], None).expect_code(0);
    cli.run(&["vfolder", "create", ".ssh"], None).expect_code(0);
    // The user's own key in .ssh/authorized_keys (uploaded through the CLI).
    let mine = SshClient::new();
    let ak = cli.dir.path().join("authorized_keys");
    std::fs::write(&ak, format!("{}\n", mine.public_key())).unwrap();
    cli.run(&["vfolder", "upload", ".ssh", ak.to_str().unwrap()], None)
        .expect_code(0);

    let s1 = create(&cli, &["--name", "first", "--mount", "data"]);
    let c1 = container_of(s1["id"].as_str().unwrap()).unwrap();
    let host_key = info(&cli, "first")["host_key"].as_str().unwrap().to_owned();
    // The .ssh key logs in, and id_container exists anyway.
    let ip = ip_of(&c1);
    mine.pin(&ip, 2200, &host_key);
    let out = mine.ssh(
        &ip,
        2200,
        "echo 'kept across sessions' > ~/data/note.txt; ls -la ~/.ssh ~/id_container",
    );
    out.expect_code(0);
    assert!(out.stdout.contains("authorized_keys"), "{}", out.stdout);
    let key = download_key(&cli, "first");
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("OPENSSH PRIVATE KEY")
    );
    // `session download` reaches into a folder mounted in the home, and
    // through a link that stays inside the home.
    mine.ssh(&ip, 2200, "ln -s data/note.txt ~/note-link")
        .expect_code(0);
    let back = cli.dir.path().join("back");
    for p in ["data/note.txt", "note-link"] {
        cli.run(
            &[
                "session",
                "download",
                "first",
                p,
                "--dest",
                back.to_str().unwrap(),
            ],
            None,
        )
        .expect_code(0);
    }
    // (A download keeps the path below the home.)
    for name in ["data/note.txt", "note-link"] {
        let text = std::fs::read_to_string(back.join(name)).unwrap();
        assert_eq!(text.trim(), "kept across sessions", "{name}");
    }
    cli.run(&["session", "rm", "first"], None).expect_code(0);

    // The file is in the folder after termination...
    let out = cli.run(&["vfolder", "ls", "data"], None);
    assert!(out.stdout.contains("note.txt"), "{}", out.stdout);
    // ...and in the next session.
    let s2 = create(&cli, &["--name", "second", "--mount", "data"]);
    let c2 = container_of(s2["id"].as_str().unwrap()).unwrap();
    let out = docker::exec(&c2, &["cat", "/home/work/data/note.txt"]);
    assert_eq!(out.stdout.trim(), "kept across sessions");
    let out = docker::exec(&c2, &["stat", "-c", "%U", "/home/work/data"]);
    assert_eq!(out.stdout.trim(), "work");
    // A mounted folder cannot be deleted.
    let out = cli.run(&["vfolder", "rm", "data"], None);
    out.expect_code(1);
    assert!(out.stderr.contains("mounted in session"), "{}", out.stderr);
}

#[test]
fn upload_download_round_trip_200mib() {
    let d = Airlockd::start();
    let cli = admin(&d);
    create(&cli, &["--name", "files"]);
    let src = cli.cwd().join("big.bin");
    random_file(&src, 200);
    let sum = sha256(&src);
    let out = cli.run(&["session", "upload", "files", "big.bin"], None);
    out.expect_code(0);
    let dest = cli.dir.path().join("back");
    cli.run(
        &[
            "session",
            "download",
            "files",
            "big.bin",
            "--dest",
            dest.to_str().unwrap(),
        ],
        None,
    )
    .expect_code(0);
    assert_eq!(sha256(&dest.join("big.bin")), sum);

    // Folder transfer of the same file, streamed both ways.
    cli.run(&["vfolder", "create", "bulk"], None).expect_code(0);
    cli.run(&["vfolder", "upload", "bulk", src.to_str().unwrap()], None)
        .expect_code(0);
    let dest2 = cli.dir.path().join("back2");
    cli.run(
        &[
            "vfolder",
            "download",
            "bulk",
            "big.bin",
            "--dest",
            dest2.to_str().unwrap(),
        ],
        None,
    )
    .expect_code(0);
    assert_eq!(sha256(&dest2.join("big.bin")), sum);
}

#[test]
fn traversal_and_symlink_escapes_are_refused() {
    let d = Airlockd::start();
    let cli = admin(&d);
    let s = create(&cli, &["--name", "escape"]);
    let c = container_of(s["id"].as_str().unwrap()).unwrap();
    docker::exec(&c, &["ln", "-s", "/etc", "/home/work/etc-link"]).expect_code(0);
    for bad in [
        "../etc/passwd",
        "/etc/passwd",
        "etc-link/passwd",
        "a/../../etc/shadow",
    ] {
        let out = cli.run(
            &["session", "download", "escape", bad, "--dest", "out"],
            None,
        );
        out.expect_code(1);
        assert!(out.stderr.contains("error:"), "{bad}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"));
    }
    let out = cli.run(&["session", "download", "escape", "nope.txt"], None);
    out.expect_code(1);
    assert!(out.stderr.contains("no such file"), "{}", out.stderr);
    // A FIFO is refused, never opened (opening one would hang the runner).
    docker::exec(&c, &["mkfifo", "/home/work/pipe"]).expect_code(0);
    let out = cli.run(&["session", "download", "escape", "pipe"], None);
    out.expect_code(1);
    assert!(out.stderr.contains("fifo"), "{}", out.stderr);
    // Uploads through the link are refused too.
    std::fs::write(cli.cwd().join("x.txt"), "x").unwrap();
    std::fs::create_dir_all(cli.cwd().join("etc-link")).unwrap();
    std::fs::write(cli.cwd().join("etc-link/evil"), "x").unwrap();
    let out = cli.run(&["session", "upload", "escape", "etc-link/evil"], None);
    out.expect_code(1);
    let out = docker::exec(&c, &["test", "-e", "/etc/evil"]);
    assert_ne!(
        out.code,
        Some(0),
        "nothing may be written outside /home/work"
    );
    // Folder paths too.
    cli.run(&["vfolder", "create", "box"], None).expect_code(0);
    let out = cli.run(
        &[
            "vfolder",
            "download",
            "box",
            "../../etc/passwd",
            "--dest",
            "o",
        ],
        None,
    );
    out.expect_code(1);
}

#[test]
fn other_users_cannot_see_or_touch_my_sessions() {
    let d = Airlockd::start();
    let cli = admin(&d);
    let s = create(&cli, &["--name", "mine"]);
    let id = s["id"].as_str().unwrap().to_owned();
    d.admin_command(&["user", "add", "eve@example.com"], Some(b"eve-password\n"))
        .expect_code(0);
    let eve = Cli::new(&d.url);
    login(&eve, "eve@example.com", "eve-password");
    let out = eve.run(&["session", "ls", "--all", "--json"], None);
    assert_eq!(out.stdout.trim(), "[]");
    for target in ["mine", id.as_str()] {
        let out = eve.run(&["session", "info", target], None);
        out.expect_code(1);
        assert!(out.stderr.contains("no session"), "{}", out.stderr);
        eve.run(&["session", "rm", target], None).expect_code(1);
        eve.run(&["session", "download", target, "id_container"], None)
            .expect_code(1);
    }
    assert_eq!(info(&cli, "mine")["status"], "RUNNING");
    // Folders too.
    cli.run(&["vfolder", "create", "private"], None)
        .expect_code(0);
    let out = eve.run(&["vfolder", "list", "--json"], None);
    assert_eq!(out.stdout.trim(), "[]");
    eve.run(&["vfolder", "rm", "private"], None).expect_code(1);
}

#[test]
fn restart_readopts_and_outside_kill_is_reported() {
    let d = Airlockd::start();
    let cli = admin(&d);
    let s = create(&cli, &["--name", "survivor"]);
    let id = s["id"].as_str().unwrap().to_owned();
    let victim = create(&cli, &["--name", "victim"]);
    let victim_id = victim["id"].as_str().unwrap().to_owned();
    // A crash of airlockd (gateway and agent) leaves the containers running.
    let d = d.restart();
    let cli2 = Cli::new(&d.url);
    login(&cli2, &d.admin_email, &d.admin_password);
    assert_eq!(info(&cli2, "survivor")["status"], "RUNNING");
    let key = download_key(&cli2, "survivor");
    let c = container_of(&id).unwrap();
    let ssh = SshClient::with_key(&key);
    let ip = ip_of(&c);
    ssh.pin(
        &ip,
        2200,
        info(&cli2, "survivor")["host_key"].as_str().unwrap(),
    );
    ssh.ssh(&ip, 2200, "true").expect_code(0);

    // Killed behind airlock's back: ERROR with a reason.
    let vc = container_of(&victim_id).unwrap();
    docker::docker(&["kill", &vc]).expect_code(0);
    wait_for(
        "the session to be marked failed",
        Duration::from_secs(30),
        || info(&cli2, &victim_id)["status"] == "ERROR",
    );
    let reason = info(&cli2, &victim_id)["status_info"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("killed") || reason.contains("stopped"),
        "{reason}"
    );
    // Removed behind airlock's back: ERROR too, and rm cleans up.
    docker::docker(&["rm", "-f", &c]).expect_code(0);
    wait_for("the removal to be noticed", Duration::from_secs(30), || {
        info(&cli2, &id)["status"] == "ERROR"
    });
    cli2.run(&["session", "rm", &victim_id], None)
        .expect_code(0);
    wait_for(
        "the killed container to be removed",
        Duration::from_secs(30),
        || container_of(&victim_id).is_none(),
    );
}
