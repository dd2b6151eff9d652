//! What operators and shell users rely on:
//! `airlock completion`, `--version` of both binaries, `airlock status`
//! against a real gateway (logged out, logged in, login ended, api keys,
//! gateway down), and the systemd units in `deploy/systemd/`. Nothing here
//! starts a container: the gateway runs alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use airlock_proto::API_VERSION;
use airlock_testkit::Cli;
use airlock_testkit::process::{Background, Output, bin, refusing_addr, run};

const ADMIN: &str = "admin@airlock.local";
const ADMIN_PASSWORD: &str = "admin-password-for-ops-tests";

/// `airlockd gateway` on 127.0.0.1:0 with its own data directory.
struct Gateway {
    url: String,
    data: tempfile::TempDir,
    proc: Background,
}

impl Gateway {
    fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let proc = Background::spawn(
            Command::new(bin("airlockd"))
                .args(["gateway", "--listen", "127.0.0.1:0", "--data"])
                .arg(data.path())
                .env("AIRLOCK_AGENT_TOKEN", "ops-system-test-token-0123456789")
                .env("AIRLOCK_ADMIN_PASSWORD", ADMIN_PASSWORD)
                .env("AIRLOCK_LOG", "info,sqlx=warn"),
        );
        let line = proc.wait_for("airlock gateway is running at ", Duration::from_secs(60));
        let url = line.split("running at ").nth(1).unwrap().trim().to_owned();
        Self { url, data, proc }
    }

    fn admin_command(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run(
            Command::new(bin("airlockd"))
                .args(args)
                .arg("--data")
                .arg(self.data.path()),
            stdin,
            Duration::from_secs(60),
        )
    }
}

fn status_json(cli: &Cli, code: i32) -> serde_json::Value {
    let out = cli.run(&["status", "--json"], None);
    out.expect_code(code);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out:?}"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_owned()
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    // No .env and no gateway: completion needs neither.
    let cli = Cli::empty();
    for shell in ["bash", "zsh", "fish"] {
        let out = cli.run(&["completion", shell], None);
        out.expect_code(0);
        assert!(
            out.stdout.contains("airlock") && out.stdout.contains("config-ssh"),
            "{shell}: {}",
            out.stdout
        );
        assert!(out.stderr.is_empty(), "{shell}: {}", out.stderr);
    }
    let bash = cli.run(&["completion", "bash"], None);
    let script = cli.cwd().join("airlock.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    // Bash parses it …
    run(
        Command::new("bash").arg("-n").arg(&script),
        None,
        Duration::from_secs(30),
    )
    .expect_code(0);
    // … and sourcing it registers a completion function for `airlock`.
    let out = run(
        Command::new("bash")
            .arg("-c")
            .arg("source \"$1\" && complete -p airlock")
            .arg("bash")
            .arg(&script),
        None,
        Duration::from_secs(30),
    );
    out.expect_code(0);
    assert!(
        out.stdout.contains("-F _airlock") && out.stdout.trim_end().ends_with(" airlock"),
        "{out:?}"
    );
    // The function completes subcommands.
    let out = run(
        Command::new("bash")
            .arg("-c")
            .arg(
                "source \"$1\"; COMP_WORDS=(airlock sta); COMP_CWORD=1; COMP_LINE='airlock sta'; \
                 COMP_POINT=${#COMP_LINE}; _airlock airlock sta airlock; printf '%s\\n' \"${COMPREPLY[@]}\"",
            )
            .arg("bash")
            .arg(&script),
        None,
        Duration::from_secs(30),
    );
    out.expect_code(0);
    assert!(out.stdout.lines().any(|l| l == "status"), "{out:?}");

    // An unknown shell is refused with the choices.
    let out = cli.run(&["completion", "tcsh"], None);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("bash") && out.stderr.contains("fish"),
        "{}",
        out.stderr
    );
}

#[test]
fn version_of_both_binaries_names_the_api_version() {
    let version = env!("CARGO_PKG_VERSION");
    for (name, mut cmd) in [
        ("airlock", Cli::empty().command(&["--version"])),
        ("airlockd", {
            let mut c = Command::new(bin("airlockd"));
            c.arg("--version");
            c
        }),
    ] {
        let out = run(&mut cmd, None, Duration::from_secs(30));
        out.expect_code(0);
        assert_eq!(
            out.stdout.trim(),
            format!("{name} {version} (API {API_VERSION})"),
            "{out:?}"
        );
    }
}

#[test]
fn status_logged_out_logged_in_ended_and_gateway_down() {
    let mut g = Gateway::start();
    let cli = Cli::new(&g.url);

    // Logged out: reachable, who the server is, and the hint.
    let out = cli.run(&["status"], None);
    out.expect_code(0);
    assert!(out.stdout.contains(&g.url), "{}", out.stdout);
    assert!(out.stdout.contains("type session"), "{}", out.stdout);
    assert!(
        out.stdout.contains("✓ Gateway:     reachable in ")
            && out
                .stdout
                .contains(&format!("airlock {}", env!("CARGO_PKG_VERSION")))
            && out.stdout.contains(API_VERSION),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("not logged in") && out.stdout.contains("airlock login"),
        "{}",
        out.stdout
    );
    let j = status_json(&cli, 0);
    assert_eq!(j["endpoint"], g.url.trim_end_matches('/'));
    assert_eq!(j["endpoint_type"], "session");
    assert_eq!(j["gateway"]["reachable"], true);
    assert_eq!(j["gateway"]["api_version"], API_VERSION);
    assert!(j["gateway"]["latency_ms"].is_u64(), "{j}");
    assert_eq!(j["login"]["state"], "not-logged-in");
    assert!(
        j["config_file"].as_str().unwrap().ends_with("/work/.env"),
        "{j}"
    );

    // Logged in.
    cli.run(&["login"], Some(&format!("{ADMIN}\n{ADMIN_PASSWORD}\n")))
        .expect_code(0);
    let out = cli.run(&["status"], None);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains(&format!("✓ Login:       logged in as {ADMIN} (admin)")),
        "{}",
        out.stdout
    );
    let j = status_json(&cli, 0);
    assert_eq!(j["login"]["state"], "logged-in");
    assert_eq!(j["login"]["user"], ADMIN);
    assert_eq!(j["login"]["role"], "admin");

    // The server ends the login (a password change does): the saved
    // cookie no longer counts, and status says so instead of "logged in".
    g.admin_command(
        &["user", "passwd", ADMIN],
        Some(b"another-admin-password\n"),
    )
    .expect_code(0);
    let out = cli.run(&["status"], None);
    out.expect_code(0);
    assert!(
        out.stdout.contains("has expired or was ended") && out.stdout.contains("airlock login"),
        "{}",
        out.stdout
    );
    assert_eq!(status_json(&cli, 0)["login"]["state"], "expired");

    // api mode: the keypair is checked with a signed request.
    let added = g.admin_command(
        &["user", "add", "dora@example.com"],
        Some(b"dora-password\n"),
    );
    added.expect_code(0);
    let key = |label: &str| {
        added
            .stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in {added:?}"))
            .trim()
            .to_owned()
    };
    let (access, secret) = (key("access key:"), key("secret key:"));
    let api = Cli::empty();
    api.write_env(&format!(
        "BACKEND_ENDPOINT={}\nBACKEND_ENDPOINT_TYPE=api\nBACKEND_ACCESS_KEY={access}\nBACKEND_SECRET_KEY={secret}\n",
        g.url
    ));
    let j = status_json(&api, 0);
    assert_eq!(j["endpoint_type"], "api");
    assert_eq!(j["login"]["state"], "keys-accepted", "{j}");
    assert_eq!(j["login"]["access_key"], access.as_str());
    assert!(
        !j.to_string().contains(&secret),
        "the secret key is shown: {j}"
    );
    api.write_env(&format!(
        "BACKEND_ENDPOINT={}\nBACKEND_ENDPOINT_TYPE=api\nBACKEND_ACCESS_KEY={access}\nBACKEND_SECRET_KEY=wrong{secret}\n",
        g.url
    ));
    assert_eq!(status_json(&api, 0)["login"]["state"], "keys-refused");

    // Gateway down: non-zero, one error and a hint, the rest still shown.
    cli.run(
        &["login"],
        Some(&format!("{ADMIN}\nanother-admin-password\n")),
    )
    .expect_code(0);
    g.proc.signal("TERM", Duration::from_secs(30));
    let out = cli.run(&["status"], None);
    out.expect_code(1);
    assert!(
        out.stdout.contains("✗ Gateway:     unreachable"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("saved login of {ADMIN} (not checked")),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("error: cannot reach the airlock gateway")
            && out.stderr.contains("hint: "),
        "{}",
        out.stderr
    );
    let j = status_json(&cli, 1);
    assert_eq!(j["gateway"]["reachable"], false);
    assert!(j["gateway"]["error"].is_string(), "{j}");
    assert_eq!(j["login"]["state"], "unknown");

    // Nothing ever listened there: the same, without a saved login.
    let (_bound, addr) = refusing_addr().unwrap();
    let nowhere = Cli::new(&format!("http://{addr}"));
    let out = nowhere.run(&["status"], None);
    out.expect_code(1);
    assert!(out.stdout.contains("not logged in"), "{}", out.stdout);
}

/// The directives the units must keep (they are the point of shipping them).
const HARDENING: &[&str] = &[
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "Restart=on-failure",
    "LimitNOFILE=",
    "StateDirectory=",
    "CapabilityBoundingSet=",
];

/// Variables airlockd reads that are no flag (so `--help` does not name
/// them).
const NOT_FLAGS: &[&str] = &["AIRLOCK_LOG", "AIRLOCK_ADMIN_PASSWORD"];

#[test]
fn systemd_units_are_hardened_and_verify() {
    let dir = workspace_root().join("deploy/systemd");
    let units = [
        (
            "airlock-gateway.service",
            "/etc/airlock/gateway.env",
            "gateway",
        ),
        ("airlock-agent.service", "/etc/airlock/agent.env", "agent"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let airlockd = bin("airlockd");
    for (name, env_file, verb) in units {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        for d in HARDENING {
            assert!(text.lines().any(|l| l.starts_with(d)), "{name} lacks {d}");
        }
        assert!(
            text.lines()
                .any(|l| l == format!("EnvironmentFile={env_file}")),
            "{name} does not read {env_file}"
        );
        let exec = format!("ExecStart=/usr/local/bin/airlockd {verb}");
        assert!(text.lines().any(|l| l == exec), "{name}: no {exec:?}");
        // No secret on a command line (ps shows it) or in the unit.
        assert!(
            !text.contains("--agent-token") && !text.contains("--token"),
            "{name}"
        );
        // The environment the unit sets is what airlockd really reads: the
        // subcommand's --help names each variable.
        let help = run(
            Command::new(&airlockd).args([verb, "--help"]),
            None,
            Duration::from_secs(30),
        );
        help.expect_code(0);
        // --help wraps lines, maybe inside `[env: …]`.
        let help_text = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        // Every AIRLOCK_* name the unit sets or its comments suggest.
        let vars: std::collections::BTreeSet<&str> = text
            .match_indices("AIRLOCK_")
            .map(|(i, _)| {
                let rest = &text[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .filter(|k| !NOT_FLAGS.contains(k))
            .collect();
        assert!(vars.len() >= 3, "{name}: {vars:?}");
        for var in vars {
            assert!(
                help_text.contains(&format!("env: {var}="))
                    || help_text.contains(&format!("env: {var}]")),
                "{name} sets {var}, which `airlockd {verb}` does not read:\n{}",
                help.stdout
            );
        }
        // For systemd-analyze: the binary must exist where ExecStart says.
        let local = text.replace("/usr/local/bin/airlockd", airlockd.to_str().unwrap());
        std::fs::write(tmp.path().join(name), local).unwrap();
    }
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("systemd-analyze is not installed: only the static checks ran");
        return;
    }
    let out = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(units.iter().map(|(n, _, _)| tmp.path().join(n))),
        None,
        Duration::from_secs(60),
    );
    // Unknown keys and bad values are only warnings (exit 0): any output
    // about our units is a defect.
    out.expect_code(0);
    let about_us: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|l| l.contains("airlock-"))
        .collect();
    assert!(
        about_us.is_empty(),
        "systemd-analyze verify:\n{}",
        out.stderr
    );
}
