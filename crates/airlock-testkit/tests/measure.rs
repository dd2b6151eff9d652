//! `airlock ping` and `airlock speedtest` against a real session (issue
//! 13): plain and `--json` output, and clear errors (no such session,
//! someone else's session, a bad duration).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_testkit::{Airlockd, Cli};

fn login(cli: &Cli, email: &str, password: &str) {
    cli.run(&["login"], Some(&format!("{email}\n{password}\n")))
        .expect_code(0);
}

fn json(out: &airlock_testkit::Output) -> serde_json::Value {
    out.expect_code(0);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn positive(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"));
    assert!(x > 0.0, "{key} = {x} in {v}");
    x
}

#[test]
fn ping_and_speedtest_plain_json_and_errors() {
    let d = Airlockd::start();
    let cli = Cli::new(&d.url);
    login(&cli, &d.admin_email, &d.admin_password);
    let out = cli.run(
        &[
            "session", "create", "--name", "demo", "--cpu", "1", "--mem", "1g", "--json",
        ],
        None,
    );
    out.expect_code(0);

    // ping --json: every hop, every round.
    let v = json(&cli.run(&["ping", "demo", "-c", "2", "--json"], None));
    assert_eq!(v["session"], "demo");
    assert_eq!(v["agent"], "embedded", "{v}");
    assert!(
        v["runner_banner"].as_str().unwrap().starts_with("SSH-2.0-"),
        "{v}"
    );
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{v}");
    for r in rounds {
        positive(r, "cli_gateway_ms");
        positive(r, "agent_runner_connect_ms");
        positive(r, "agent_runner_banner_ms");
        let open = positive(r, "tunnel_open_ms");
        let banner = positive(r, "ssh_banner_ms");
        assert!(banner >= open, "the banner comes after the tunnel: {r}");
        // The embedded agent is in the gateway's process: no hop to time.
        assert!(r["gateway_agent_ms"].is_null(), "{r}");
    }
    for key in ["cli_gateway_ms", "ssh_banner_ms", "agent_runner_connect_ms"] {
        let s = &v["summary"][key];
        assert!(
            s["min"].as_f64().unwrap() <= s["avg"].as_f64().unwrap()
                && s["avg"].as_f64().unwrap() <= s["max"].as_f64().unwrap(),
            "{key}: {s}"
        );
    }
    assert!(v["summary"]["gateway_agent_ms"].is_null(), "{v}");

    // ping, plain.
    let out = cli.run(&["ping", "demo", "-c", "1"], None);
    out.expect_code(0);
    eprintln!("{}", out.stdout);
    assert!(out.stdout.starts_with("PING demo "), "{}", out.stdout);
    assert!(out.stdout.contains("round 1: "), "{}", out.stdout);
    assert!(
        out.stdout.contains("SSH banner (end to end)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("in-process"), "{}", out.stdout);

    // speedtest --json, both directions.
    let v = json(&cli.run(&["speedtest", "demo", "-t", "2s", "--json"], None));
    assert_eq!(v["session"], "demo");
    assert_eq!(v["duration_secs"], 2);
    let results = v["results"].as_array().unwrap();
    let dirs: Vec<&str> = results
        .iter()
        .map(|r| r["direction"].as_str().unwrap())
        .collect();
    assert_eq!(dirs, ["down", "up"], "{v}");
    for r in results {
        // At least a MiB in two seconds on any working link.
        assert!(r["bytes"].as_u64().unwrap() > 1 << 20, "{r}");
        positive(r, "seconds");
        positive(r, "mbits_per_sec");
    }

    // speedtest, plain, one direction.
    let out = cli.run(&["speedtest", "demo", "-t", "1", "--direction", "up"], None);
    out.expect_code(0);
    eprintln!("{}", out.stdout);
    assert!(out.stdout.starts_with("up "), "{}", out.stdout);
    assert!(out.stdout.contains("Mbit/s"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);

    // Errors: no such session, a bad duration, a bad count.
    for args in [
        &["ping", "nosuch"][..],
        &["ping", "nosuch", "--json"],
        &["speedtest", "nosuch", "-t", "1"],
    ] {
        let out = cli.run(args, None);
        assert_ne!(out.code, Some(0), "{args:?}: {out:?}");
        assert!(out.stderr.contains("error:"), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("no session"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    let out = cli.run(&["speedtest", "demo", "-t", "99s"], None);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("invalid duration"), "{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    let out = cli.run(&["ping", "demo", "-c", "0"], None);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("--count"), "{}", out.stderr);

    // Someone else's session is not there for them.
    d.admin_command(&["user", "add", "eve@example.com"], Some(b"eve-password\n"))
        .expect_code(0);
    let eve = Cli::new(&d.url);
    login(&eve, "eve@example.com", "eve-password");
    for args in [&["ping", "demo"][..], &["speedtest", "demo", "-t", "1"]] {
        let out = eve.run(args, None);
        assert_ne!(out.code, Some(0), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("no session"),
            "{args:?}: {}",
            out.stderr
        );
    }
}
