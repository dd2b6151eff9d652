//! `airlock-runner init --root DIR` against a temporary root, then serving
//! the produced state and logging in with the produced keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn init(root: &Path, uid: u32, keys: &str) -> Output {
    run_timeout(
        Command::new(BIN)
            .args(["init", "--root"])
            .arg(root)
            .env("LOCAL_USER_ID", uid.to_string())
            .env("LOCAL_GROUP_ID", uid.to_string())
            .env("AIRLOCK_AUTHORIZED_KEYS", keys)
            .stdin(Stdio::null()),
        Duration::from_secs(60),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn is_root() -> bool {
    whoami() == "root"
}

#[test]
fn init_fresh_root_creates_account_and_keys() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let o = init(r, 2345, "");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("work:x:2345:2345::/home/work:/bin/sh\n"),
        "{passwd}"
    );
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    assert!(group.contains("work:x:2345:\n"), "{group}");
    assert!(
        !r.join("etc/shadow").exists(),
        "no shadow created when absent"
    );
    let id = r.join("home/work/id_container");
    assert_eq!(mode(&id), 0o600);
    assert_eq!(mode(&r.join("home/work")), 0o755);
    assert_eq!(mode(&r.join("var/lib/airlock")), 0o755);
    assert_eq!(mode(&r.join("var/lib/airlock/host_key")), 0o600);
    if is_root() {
        assert_eq!(std::fs::metadata(&id).unwrap().uid(), 2345);
        assert_eq!(std::fs::metadata(r.join("home/work")).unwrap().uid(), 2345);
        assert_eq!(
            std::fs::metadata(r.join("var/lib/airlock/host_key"))
                .unwrap()
                .uid(),
            2345
        );
        assert_eq!(
            std::fs::metadata(r.join("var/lib/airlock")).unwrap().uid(),
            0
        );
    }
    // The private key is a valid OpenSSH key (ssh-keygen -y derives the public half).
    let y = run_timeout(
        Command::new("ssh-keygen").arg("-y").arg("-f").arg(&id),
        Duration::from_secs(20),
    );
    assert!(y.status.success(), "{}", text(&y.stderr));
    let ak = std::fs::read_to_string(r.join("var/lib/airlock/authorized_keys")).unwrap();
    let pubkey = text(&y.stdout);
    assert!(ak.contains(pubkey.split_whitespace().nth(1).unwrap()));
    // Host key line on stdout matches host_key.pub.
    let out = text(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("AIRLOCK-HOST-KEY "))
        .unwrap();
    let hk = std::fs::read_to_string(r.join("var/lib/airlock/host_key.pub")).unwrap();
    assert_eq!(
        line.strip_prefix("AIRLOCK-HOST-KEY ").unwrap().trim(),
        hk.trim()
    );
}

#[test]
fn init_reuses_existing_uid_account_and_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::write(r.join("bin/bash"), b"").unwrap();
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nubuntu:x:1000:\n").unwrap();
    std::fs::write(
        r.join("etc/shadow"),
        "root:*:19000:0:99999:7:::\nubuntu:$6$hash:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::fs::set_permissions(r.join("etc/shadow"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let o = init(r, 1000, "");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    assert_eq!(
        passwd,
        "root:x:0:0:root:/root:/bin/bash\nwork:x:1000:1000:Ubuntu:/home/work:/bin/bash\n"
    );
    let shadow = std::fs::read_to_string(r.join("etc/shadow")).unwrap();
    assert!(shadow.contains("work:!:19000:"), "{shadow}");
    assert!(
        !shadow.contains("$6$hash"),
        "password must be locked: {shadow}"
    );
    assert_eq!(mode(&r.join("etc/shadow")), 0o640);
    // gid 1000 is taken by `ubuntu`: reused, no duplicate gid added.
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    assert_eq!(group.matches(":1000:").count(), 1, "{group}");
    let id1 = std::fs::read(r.join("home/work/id_container")).unwrap();
    let hk1 = std::fs::read(r.join("var/lib/airlock/host_key")).unwrap();
    // Re-run: nothing changes.
    let o = init(r, 1000, "");
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_to_string(r.join("etc/passwd")).unwrap(),
        passwd
    );
    assert_eq!(
        std::fs::read(r.join("home/work/id_container")).unwrap(),
        id1
    );
    assert_eq!(
        std::fs::read(r.join("var/lib/airlock/host_key")).unwrap(),
        hk1
    );
}

/// id_container (0600) logs in; a mounted `.ssh/authorized_keys` is honoured
/// (also lines added later) and left byte-identical; account keys from
/// AIRLOCK_AUTHORIZED_KEYS work; malformed lines are skipped.
#[test]
fn init_state_serves_logins_and_leaves_mounted_keys_untouched() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let keys = tempfile::tempdir().unwrap();
    let account = keys.path().join("account");
    let mounted = keys.path().join("mounted");
    let later = keys.path().join("later");
    keygen(&account);
    keygen(&mounted);
    keygen(&later);
    let ssh_dir = r.join("home/work/.ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let ak_user = ssh_dir.join("authorized_keys");
    let original = format!(
        "# my keys\n{}",
        std::fs::read_to_string(mounted.with_extension("pub")).unwrap()
    );
    std::fs::write(&ak_user, &original).unwrap();
    std::fs::set_permissions(&ak_user, std::fs::Permissions::from_mode(0o644)).unwrap();
    let account_line = std::fs::read_to_string(account.with_extension("pub")).unwrap();
    let o = init(r, 1000, &format!("{account_line}\nthis is not a key\n"));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("skipping malformed key"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read_to_string(&ak_user).unwrap(), original);
    assert_eq!(mode(&ak_user), 0o644);
    let id = r.join("home/work/id_container");
    assert!(
        id.exists(),
        "id_container must exist even with a mounted .ssh"
    );
    let merged = std::fs::read_to_string(r.join("var/lib/airlock/authorized_keys")).unwrap();
    assert_eq!(merged.lines().count(), 3, "{merged}");

    let state = r.join("var/lib/airlock");
    let s = Server::start_with(ServerOpts {
        home: Some(r.join("home/work")),
        authorized_keys: Some(state.join("authorized_keys")),
        host_key: Some(state.join("host_key")),
        ..Default::default()
    });
    // The pinned host key is the one init printed.
    let printed = text(&o.stdout);
    let kh = std::fs::read_to_string(&s.known_hosts).unwrap();
    assert!(kh.ends_with(printed.trim().strip_prefix("AIRLOCK-HOST-KEY ").unwrap()));
    for key in [&id, &account, &mounted] {
        let o = run_timeout(
            s.ssh_with_key(key).arg(s.dest()).arg("echo in"),
            Duration::from_secs(60),
        );
        assert_ok(&o, &format!("login with {}", key.display()), &s);
        assert_eq!(text(&o.stdout), "in\n");
    }
    // Not authorized yet, then added to the user's own file: read at auth time.
    let o = run_timeout(
        s.ssh_with_key(&later).arg(s.dest()).arg("true"),
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(255));
    let with_later = format!(
        "{original}{}",
        std::fs::read_to_string(later.with_extension("pub")).unwrap()
    );
    std::fs::write(&ak_user, &with_later).unwrap();
    let o = run_timeout(
        s.ssh_with_key(&later).arg(s.dest()).arg("true"),
        Duration::from_secs(60),
    );
    assert_ok(&o, "login with a key added later", &s);
    assert_eq!(std::fs::read_to_string(&ak_user).unwrap(), with_later);
}
