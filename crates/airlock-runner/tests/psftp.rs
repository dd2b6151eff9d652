//! The runner's SFTP server against PuTTY's `psftp` (Debian putty-tools): the
//! client that pipelines many WRITEs and runs a small receive window — the
//! engine FileZilla and WinSCP users run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Size of the uploaded and downloaded file.
const SIZE: usize = 1 << 30;
/// Deadline for the whole transfer (well under a minute when it works).
const DEADLINE: Duration = Duration::from_secs(300);

fn psftp_available() -> bool {
    Command::new("psftp")
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `SHA256:…` fingerprint of a public key file, as psftp's `-hostkey` takes it.
fn fingerprint(pubkey: &Path) -> String {
    let o = run_timeout(
        Command::new("ssh-keygen").arg("-lf").arg(pubkey),
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "ssh-keygen -lf: {}", text(&o.stderr));
    text(&o.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

#[test]
fn psftp_put_and_get_1g_with_checksums() {
    assert!(
        psftp_available(),
        "psftp is required (apt-get install putty-tools)"
    );
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // psftp writes its state under $HOME; keep it in the test's directory.
    let phome = dir.path().join("phome");
    std::fs::create_dir(&phome).unwrap();
    let ppk = dir.path().join("key.ppk");
    let o = run_timeout(
        Command::new("puttygen")
            .arg(&s.key)
            .args(["-O", "private", "-o"])
            .arg(&ppk)
            .env("HOME", &phome)
            .stdin(Stdio::null()),
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "puttygen: {}", text(&o.stderr));
    let hostkey = fingerprint(&s.dir.path().join("host_key.pub"));

    let big = dir.path().join("big.bin");
    random_file(&big, SIZE);
    let back = dir.path().join("back.bin");
    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} up.bin\nget up.bin {}\n",
            big.display(),
            back.display()
        ),
    )
    .unwrap();
    let o = run_timeout(
        Command::new("psftp")
            .args(["-batch", "-noagent", "-hostkey", &hostkey, "-i"])
            .arg(&ppk)
            .args(["-P", &s.port.to_string(), "-b"])
            .arg(&batch)
            .arg(s.dest())
            .env("HOME", &phome)
            .stdin(Stdio::null()),
        DEADLINE,
    );
    assert_ok(&o, "psftp put/get", &s);
    assert!(
        same_file(&big, &s.home.join("up.bin")),
        "uploaded file differs"
    );
    assert!(same_file(&big, &back), "downloaded file differs");
}
