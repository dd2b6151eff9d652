//! The cluster on one machine: `scripts/cluster up`, `check`,
//! `down`, as a person runs them. A user in their own network namespace
//! reaches only the gateway, the gateway (with PostgreSQL in its own
//! namespace) reaches the two agents' APIs but no session container, and
//! every user flow works through that: login, sessions on either node,
//! `airlock ssh`/`scp`, `config-ssh` + `ssh`/`rsync`, `app -b` + `ssh -p`,
//! folders on both nodes, session file transfer, the web UI in Chromium
//! and the official client. Each check the script prints must be there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use airlock_testkit::{Output, bin, run};

/// The script with this test's own names, addresses and state.
struct Cluster {
    prefix: String,
    dir: PathBuf,
}

impl Cluster {
    fn command(&self, verb: &str) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster");
        let mut c = Command::new(script);
        c.arg(verb)
            .env("AIRLOCK_CLUSTER_PREFIX", &self.prefix)
            .env("AIRLOCK_CLUSTER_NET", "10.239")
            .env("AIRLOCK_CLUSTER_DIR", &self.dir)
            .env("AIRLOCK_CLUSTER_LABEL", "airlock.test=1")
            .env("AIRLOCKD", bin("airlockd"))
            .env("AIRLOCK", bin("airlock"));
        for (k, _) in std::env::vars() {
            if k.starts_with("BACKEND_") {
                c.env_remove(k);
            }
        }
        c
    }

    fn run(&self, verb: &str, limit: Duration) -> Output {
        run(&mut self.command(verb), None, limit)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.run("down", Duration::from_secs(120));
        if !out.success() {
            eprintln!("scripts/cluster down: {}\n{}", out.stdout, out.stderr);
        }
    }
}

#[test]
fn a_cluster_on_one_machine() {
    let cluster = Cluster {
        prefix: format!("alt{}", std::process::id() % 10_000),
        dir: std::env::temp_dir().join(format!("airlock-cluster-test-{}", std::process::id())),
    };
    let up = cluster.run("up", Duration::from_secs(300));
    assert!(
        up.success(),
        "scripts/cluster up:\n{}\n{}",
        up.stdout,
        up.stderr
    );
    let check = cluster.run("check", Duration::from_secs(600));
    assert!(
        check.success(),
        "scripts/cluster check:\n{}\n{}",
        check.stdout,
        check.stderr
    );
    for needle in [
        "ok: the user cannot reach node",
        "ok: the user cannot reach the database",
        "ok: the gateway cannot reach a session container",
        "ok: the user cannot reach a session container",
        "reaches its session's SSH server",
        "-a cannot reach node",
        "-b cannot reach node",
        "with a route to",
        "cannot open a connection to its node",
        "ok: a session on node",
        "(shared storage)",
        "ok: airlock scp",
        "ok: config-ssh, then plain ssh",
        "ok: rsync to",
        "sshd -b 9922, then ssh -p 9922",
        "ok: session upload and download",
        "ok: Chromium logs in to the web UI and lists the sessions on both nodes",
        "ok: the web UI's SSH/SFTP page",
        "ok: backend.ai app",
        "ok: backend.ai login in session mode",
        "checks passed",
    ] {
        assert!(
            check.stdout.contains(needle),
            "{needle:?} is not among the checks:\n{}",
            check.stdout
        );
    }
    assert!(!check.stdout.contains("skipped"), "{}", check.stdout);
}
