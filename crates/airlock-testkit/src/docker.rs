//! Docker helpers for tests (the docker CLI is fine in test code; the
//! product itself only uses the Engine API).

use std::process::Command;
use std::time::Duration;

use crate::process::{Output, run};

/// Runs `docker ARGS`.
pub fn docker(args: &[&str]) -> Output {
    run(
        Command::new("docker").args(args),
        None,
        Duration::from_secs(120),
    )
}

/// The container of a session (by the `airlock.session` label).
pub fn container_of(session_id: &str) -> Option<String> {
    let out = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=airlock.session={session_id}"),
    ]);
    out.stdout
        .lines()
        .next()
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

/// A container's IP address.
pub fn ip_of(container: &str) -> String {
    let out = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        container,
    ]);
    out.stdout.trim().to_owned()
}

/// `docker exec` as root.
pub fn exec(container: &str, cmd: &[&str]) -> Output {
    let mut args = vec!["exec", container];
    args.extend_from_slice(cmd);
    docker(&args)
}

/// Removes every container carrying `label` (`key=value`).
pub fn remove_labelled(label: &str) {
    let out = docker(&["ps", "-aq", "--filter", &format!("label={label}")]);
    let ids: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        docker(&args);
    }
}

/// Whether the Docker engine answers.
pub fn available() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
