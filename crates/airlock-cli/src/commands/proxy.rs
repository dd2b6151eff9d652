//! `airlock proxy SESSION`: stdin/stdout ⇄ the session's SSH server, for
//! OpenSSH's `ProxyCommand`. stdout carries SSH bytes only; everything else
//! goes to stderr.

use std::path::Path;

use airlock_tunnel::relay;

use crate::args::ProxyArgs;
use crate::client::ApiClient;
use crate::commands::session;
use crate::error::{CliError, CliResult};
use crate::tunnel;

/// Host keys pinned for `alias` in a known_hosts file.
pub fn pinned_keys(known_hosts: &Path, alias: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(known_hosts) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let hosts = parts.next()?;
            let kind = parts.next()?;
            let key = parts.next()?;
            hosts
                .split(',')
                .any(|h| h == alias)
                .then(|| format!("{kind} {key}"))
        })
        .collect()
}

fn key_body(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the bridge.
pub async fn run(client: &ApiClient, args: ProxyArgs) -> CliResult<()> {
    if let (Some(kh), Some(alias)) = (&args.known_hosts, &args.alias) {
        let pinned = pinned_keys(kh, alias);
        let info = session::get(client, &args.session).await?;
        if let Some(current) = info.host_key.as_deref().map(key_body)
            && !pinned.is_empty()
            && !pinned.contains(&current)
        {
            let old = pinned
                .first()
                .and_then(|p| airlock_proto::sshkey::fingerprint(p))
                .unwrap_or_default();
            return Err(CliError::new(format!(
                "the host key of session {:?} changed: {} pinned {old}, the gateway now reports {} (the session was re-created, or something is wrong)",
                info.name,
                kh.display(),
                info.host_key_fingerprint.unwrap_or_default()
            ))
            .hint("if you re-created the session, run `airlock config-ssh` to pin its new key"));
        }
        if info.status != "RUNNING" {
            return Err(
                CliError::new(format!("session {:?} is {}", info.name, info.status)).hint(
                    "start it again with `airlock session create`, then `airlock config-ssh`",
                ),
            );
        }
    }
    let ws = tunnel::open(client, &args.session).await?;
    let io = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let stats = relay(ws, io).await;
    if let Some(msg) = tunnel::explain_close(&stats.close) {
        return Err(CliError::new(msg));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_pinned_keys_by_alias() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, "airlock-demo ssh-ed25519 AAAA1\nairlock-other ssh-ed25519 BBBB\nx,airlock-demo ssh-rsa CCCC c\n").unwrap();
        assert_eq!(
            pinned_keys(&kh, "airlock-demo"),
            ["ssh-ed25519 AAAA1", "ssh-rsa CCCC"]
        );
        assert!(pinned_keys(&kh, "nope").is_empty());
        assert_eq!(key_body("ssh-ed25519 AAAA comment"), "ssh-ed25519 AAAA");
    }
}
