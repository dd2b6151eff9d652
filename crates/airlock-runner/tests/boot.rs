//! `airlock-runner boot` as a container entrypoint, simulated with a private
//! mount namespace (copies of /etc, an empty /home and /var/lib), as root.
//! Skipped when not root or when `unshare` is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn boot_inits_drops_privileges_serves_and_forwards_sigterm() {
    if whoami() != "root" {
        eprintln!("skipped: needs root");
        return;
    }
    let probe = Command::new("unshare")
        .args(["--mount", "--fork", "true"])
        .status();
    if !probe.map(|s| s.success()).unwrap_or(false) {
        eprintln!("skipped: unshare --mount not permitted");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let o = Command::new("cp")
        .arg("-a")
        .arg("/etc")
        .arg(r.join("etc"))
        .status()
        .unwrap();
    assert!(o.success());
    std::fs::create_dir(r.join("home")).unwrap();
    let key = r.join("client");
    keygen(&key);
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let script = format!(
        "mount --make-rprivate / && mount --bind {r}/etc /etc && mount --bind {r}/home /home \
         && mount -t tmpfs tmpfs /var/lib && cd / && exec {BIN} boot --listen 127.0.0.1:0",
        r = r.display()
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--fork", "bash", "-c", &script])
        .env("AIRLOCK_AUTHORIZED_KEYS", pubkey.trim())
        .env("LOCAL_USER_ID", "1500")
        .env("LOCAL_GROUP_ID", "1500")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let unshare_pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let _g = Guard(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut host_key = None;
    let mut port = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = rx.recv_timeout(left).expect("boot never became ready");
        if let Some(k) = l.strip_prefix("AIRLOCK-HOST-KEY ") {
            host_key = Some(k.to_string());
        }
        // The port the SSH server bound (we asked for port 0).
        if let Some(addr) = l.strip_prefix("AIRLOCK-LISTENING ") {
            port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        }
        if l == "AIRLOCK-READY" {
            break;
        }
    }
    let port = port.expect("boot announced no AIRLOCK-LISTENING address");
    let kh = r.join("known_hosts");
    std::fs::write(&kh, format!("[127.0.0.1]:{port} {}\n", host_key.unwrap())).unwrap();
    let ssh = |k: &std::path::Path| {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-i"])
            .arg(k)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", kh.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-p",
            ])
            .arg(port.to_string())
            .arg("work@127.0.0.1")
            .stdin(Stdio::null());
        c
    };
    let o = run_timeout(
        ssh(&key).arg("id -u; id -g; id -G; echo $HOME; pwd"),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "1500\n1500\n1500\n/home/work\n/home/work\n"
    );
    let id = r.join("home/work/id_container");
    let o = run_timeout(
        ssh(&id).arg("echo via-session-key"),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // SIGTERM to the entrypoint reaches the sshd and boot exits.
    let boot_pid = text(
        &Command::new("pgrep")
            .args(["-P", &unshare_pid.to_string()])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    assert!(!boot_pid.is_empty());
    let k = Command::new("kill")
        .args(["-TERM", &boot_pid])
        .status()
        .unwrap();
    assert!(k.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{boot_pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{boot_pid}/stat")).unwrap_or_default();
        if stat.contains(") Z ") {
            break;
        }
        assert!(Instant::now() < deadline, "boot did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}
