//! PuTTY's `psftp` (Debian putty-tools) through the whole chain:
//! `airlock app S sshd -b PORT` and `airlock proxy S` as psftp's
//! `-proxycmd`, uploading and downloading 1 GiB with checksums. psftp
//! pipelines many WRITEs and runs a small receive window — the engine of
//! FileZilla and WinSCP — and used to stall the runner within a few MiB.
//! Through `airlock proxy` it also hung in a third of the runs: psftp
//! writes its proxy pipe in blocking mode, and the resumable tunnel's
//! receiver waited on stdout with the ACKs that would free its reader
//! queued behind (fixed in airlock-tunnel's resume.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_testkit::docker::{self, container_of};
use airlock_testkit::ssh::{fingerprint, random_file, sha256};
use airlock_testkit::{Airlockd, Background, Cli, Output, bin, free_port, run};

/// Size of the transferred file.
const MIB: u64 = 1024;
/// Deadline for one psftp run (a put and a get of 1 GiB).
const DEADLINE: Duration = Duration::from_secs(600);

fn setup() -> (Airlockd, Cli) {
    let d = Airlockd::start();
    let cli = Cli::new(&d.url);
    cli.run(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    )
    .expect_code(0);
    (d, cli)
}

/// psftp's `-hostkey` fingerprint of the session's host key, and the
/// session key converted to PuTTY's format.
fn putty_credentials(cli: &Cli, session: &str) -> (String, PathBuf, String) {
    let out = cli.run(&["session", "info", session, "--json"], None);
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let dir = cli.dir.path().join("putty");
    std::fs::create_dir_all(&dir).unwrap();
    let hk = dir.join("host_key.pub");
    std::fs::write(&hk, format!("{}\n", v["host_key"].as_str().unwrap())).unwrap();
    let key = dir.join("id_container");
    cli.run(
        &["session", "key", session, "-o", key.to_str().unwrap()],
        None,
    )
    .expect_code(0);
    let ppk = dir.join("key.ppk");
    let mut c = Command::new("puttygen");
    c.arg(&key)
        .args(["-O", "private", "-o"])
        .arg(&ppk)
        .env("HOME", cli.home());
    run(&mut c, None, Duration::from_secs(30)).expect_code(0);
    (fingerprint(&hk), ppk, v["id"].as_str().unwrap().to_owned())
}

/// A psftp command in the CLI's environment (so a `-proxycmd` running
/// `airlock` finds the login), put `big` as `remote`, get it back to `back`.
fn psftp(cli: &Cli, hostkey: &str, ppk: &Path, target: &[&str], batch: &str) -> (Output, f64) {
    let file = cli.dir.path().join("putty/batch");
    std::fs::write(&file, batch).unwrap();
    let mut c = Command::new("psftp");
    c.args([
        "-batch", "-noagent", "-hostkey", hostkey, "-l", "work", "-i",
    ])
    .arg(ppk)
    .arg("-b")
    .arg(&file)
    .args(target)
    .current_dir(cli.cwd())
    .env("HOME", cli.home())
    .env("XDG_STATE_HOME", cli.dir.path().join("state"))
    .env("NO_COLOR", "1");
    let t = Instant::now();
    let out = run(&mut c, None, DEADLINE);
    (out, t.elapsed().as_secs_f64())
}

fn container_sha256(container: &str, path: &str) -> String {
    let out = docker::exec(container, &["sha256sum", path]);
    assert!(out.success(), "sha256sum in the container: {out:?}");
    out.stdout.split_whitespace().next().unwrap().to_owned()
}

#[test]
fn psftp_1g_put_and_get_through_app_and_proxy() {
    let (_d, cli) = setup();
    let out = cli.run(
        &[
            "session", "create", "--name", "demo", "--cpu", "1", "--mem", "1g", "--json",
        ],
        None,
    );
    out.expect_code(0);
    let (hostkey, ppk, id) = putty_credentials(&cli, "demo");
    let container = container_of(&id).unwrap();
    let big = cli.cwd().join("big.bin");
    random_file(&big, MIB);
    let sum = sha256(&big);
    let back = cli.cwd().join("back.bin");

    // 1. `airlock app demo sshd -b PORT`, psftp to the local port.
    let port = free_port();
    let mut app =
        Background::spawn(&mut cli.command(&["app", "demo", "sshd", "-b", &port.to_string()]));
    app.wait_for("tcp://", Duration::from_secs(60));
    let (out, secs) = psftp(
        &cli,
        &hostkey,
        &ppk,
        &["-P", &port.to_string(), "127.0.0.1"],
        &format!(
            "put {} via-app.bin\nget via-app.bin {}\n",
            big.display(),
            back.display()
        ),
    );
    out.expect_code(0);
    eprintln!("psftp via app: put+get {MIB} MiB in {secs:.1} s");
    assert_eq!(
        container_sha256(&container, "/home/work/via-app.bin"),
        sum,
        "upload through `airlock app` differs"
    );
    assert_eq!(sha256(&back), sum, "download through `airlock app` differs");
    std::fs::remove_file(&back).unwrap();
    let _ = app.signal("INT", Duration::from_secs(10));

    // 2. `airlock proxy demo` as psftp's -proxycmd.
    let proxycmd = format!("{} proxy demo", bin("airlock").display());
    let (out, secs) = psftp(
        &cli,
        &hostkey,
        &ppk,
        &["-proxycmd", &proxycmd, "airlock-demo"],
        &format!(
            "put {} via-proxy.bin\nget via-proxy.bin {}\n",
            big.display(),
            back.display()
        ),
    );
    out.expect_code(0);
    eprintln!("psftp via proxy: put+get {MIB} MiB in {secs:.1} s");
    assert_eq!(
        container_sha256(&container, "/home/work/via-proxy.bin"),
        sum,
        "upload through `airlock proxy` differs"
    );
    assert_eq!(
        sha256(&back),
        sum,
        "download through `airlock proxy` differs"
    );
}
