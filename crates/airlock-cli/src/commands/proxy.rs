//! `airlock proxy SESSION`: stdin/stdout ⇄ the session's SSH server, for
//! OpenSSH's `ProxyCommand`. stdout carries SSH bytes only; everything else
//! goes to stderr.

use std::path::Path;

use crate::args::ProxyArgs;
use crate::client::ApiClient;
use crate::commands::session;
use crate::error::{CliError, CliResult};
use crate::state::write_private_file;
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

/// Appends a pin to a known_hosts file (created 0600).
fn pin(known_hosts: &Path, line: &str) -> CliResult<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(known_hosts)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", known_hosts.display())))?;
    writeln!(f, "{line}")?;
    Ok(())
}

/// Runs the bridge.
pub async fn run(client: &ApiClient, args: ProxyArgs) -> CliResult<()> {
    let (session, alias) = match (&args.ssh_alias, &args.session) {
        (Some(a), _) => {
            let s = airlock_proto::recipes::session_of_alias(a).ok_or_else(|| {
                CliError::new(format!("{a:?} is not an airlock host alias (airlock-NAME)")).hint(
                    "connect with `ssh airlock-NAME`, NAME being a session of `airlock session ls`",
                )
            })?;
            (s.to_owned(), Some(a.clone()))
        }
        (None, Some(s)) => (s.clone(), args.alias.clone()),
        (None, None) => {
            return Err(CliError::new("name a session").hint("airlock proxy SESSION"));
        }
    };
    if let Some(kh) = &args.known_hosts {
        let alias = alias
            .clone()
            .unwrap_or_else(|| airlock_proto::recipes::alias(&session));
        let pinned = pinned_keys(kh, &alias);
        let info = session::get(client, &session).await?;
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
        let info = session::get_running(client, &info.name).await?;
        // First connection through the `Host airlock-*` block: pin what the
        // gateway recorded, before a byte reaches ssh (which reads the file
        // only after the key exchange, so the pin is there in time).
        if pinned.is_empty()
            && args.ssh_alias.is_some()
            && let Some(key) = &info.host_key
        {
            pin(
                kh,
                &airlock_proto::recipes::known_hosts_line(&info.name, key),
            )?;
        }
    }
    if let Some(path) = &args.session_key {
        // Written before the tunnel opens: ssh loads it when it
        // authenticates, after the key exchange.
        let key = session::fetch_file(client, &session, "id_container").await?;
        write_private_file(path, &key)?;
    }
    // Resumable when the gateway offers it: a broken connection to the
    // gateway is re-established under ssh, which does not notice.
    tunnel::run(client, &session, tokio::io::stdin(), tokio::io::stdout()).await
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
