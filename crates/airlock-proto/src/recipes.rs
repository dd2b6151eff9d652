//! How OpenSSH clients reach a session: the one place that builds the host
//! alias, the pinned `known_hosts` line, the `Host` block that
//! `airlock config-ssh` writes and the command lines the web dialog and
//! `airlock app` print. The CLI and the web UI both call these, so what the
//! dialog shows is what the CLI does.

/// The local port a proxy listens on when none is asked for and the user
/// has no preferred SSH port (`-b 9922` in Backend.AI's guide). Taken: a random free
/// port is used instead, and said so.
pub const DEFAULT_LOCAL_PORT: u16 = 9922;

/// How the default local port is chosen, in one sentence (CLI help, the
/// settings command and page).
pub const LOCAL_PORT_RULE: &str = "your preferred SSH port if you set one, else 9922; if that port is taken, a random free port (said in one line)";

/// Where a local proxy (`airlock app`, `airlock ssh`) listens: loopback
/// only, so nobody else on the user's network reaches the session.
pub const LOCAL_HOST: &str = "127.0.0.1";

/// `work@127.0.0.1`: the destination an SSH client gives to reach a session
/// through a local proxy.
pub fn local_destination() -> String {
    format!("{}@{LOCAL_HOST}", crate::CONTAINER_USER)
}

/// Prefix of every session's SSH host alias.
pub const ALIAS_PREFIX: &str = "airlock-";

/// The host alias of a session (`airlock-NAME`): the `Host` name in SSH
/// configs and the name its host key is pinned under.
pub fn alias(session: &str) -> String {
    format!("{ALIAS_PREFIX}{session}")
}

/// The session named by an alias (`airlock-NAME` → `NAME`).
pub fn session_of_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(ALIAS_PREFIX).filter(|s| !s.is_empty())
}

/// The `known_hosts` line that pins a session's host key under its alias.
pub fn known_hosts_line(session: &str, host_key: &str) -> String {
    format!("{} {}", alias(session), host_key.trim())
}

/// Quotes a path or word for an OpenSSH config line (only when needed).
pub fn quote(word: &str) -> String {
    if word.contains([' ', '\t', '"']) {
        format!("\"{}\"", word.replace('"', "\\\""))
    } else {
        word.to_owned()
    }
}

/// What `airlock config-ssh` writes: one `Host airlock-*` block, so a
/// session created later works without running it again.
#[derive(Debug, Clone)]
pub struct HostBlock<'a> {
    /// The `airlock` program (absolute path, or `airlock` for display).
    pub airlock: &'a str,
    /// The directory that holds the env file, the pins and session keys
    /// (`~/.ssh/airlock`).
    pub dir: &'a str,
    /// The user's own private keys registered on the account, tried first.
    pub own_keys: &'a [String],
    /// `ForwardAgent yes` (off by default).
    pub forward_agent: bool,
}

impl HostBlock<'_> {
    /// File holding the endpoint (and keys in api mode) for the proxy.
    pub fn env_file(&self) -> String {
        format!("{}/airlock.env", self.dir)
    }

    /// File holding the pinned host keys.
    pub fn known_hosts(&self) -> String {
        format!("{}/known_hosts", self.dir)
    }

    /// The session key file of a host (`%n` in the block).
    pub fn session_key(&self, alias: &str) -> String {
        format!("{}/{alias}.key", self.dir)
    }

    /// The block's text.
    ///
    /// `%n` is the alias as typed (`airlock-NAME`). The proxy pins the
    /// gateway's host key for a session it has not seen in `known_hosts`
    /// and refuses a key that changed; it writes the session key to
    /// `DIR/airlock-NAME.key` before relaying a byte, so both exist before
    /// OpenSSH checks the host key or authenticates.
    pub fn render(&self) -> String {
        let mut b = format!("Host {ALIAS_PREFIX}*\n  User {}\n", crate::CONTAINER_USER);
        b.push_str(&format!(
            "  ProxyCommand {} --env-file {} proxy --ssh-alias %n --known-hosts {} --session-key {}\n",
            quote(self.airlock),
            quote(&self.env_file()),
            quote(&self.known_hosts()),
            quote(&self.session_key("%n")),
        ));
        for k in self.own_keys {
            b.push_str(&format!("  IdentityFile {}\n", quote(k)));
        }
        b.push_str(&format!(
            "  IdentityFile {}\n  IdentitiesOnly yes\n",
            quote(&self.session_key("%n"))
        ));
        b.push_str(&format!(
            "  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  ForwardAgent {}\n  ServerAliveInterval 30\n",
            quote(&self.known_hosts()),
            if self.forward_agent { "yes" } else { "no" },
        ));
        b
    }
}

/// The OpenSSH options (`-o K=V` pairs) that make `ssh`/`scp`/`sftp` accept
/// exactly the session's pinned host key from `known_hosts` (a file holding
/// [`known_hosts_line`]), whatever host and port they connect to.
pub fn pin_options(session: &str, known_hosts: &str) -> Vec<String> {
    [
        format!("HostKeyAlias={}", alias(session)),
        format!("UserKnownHostsFile={known_hosts}"),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_owned(), o])
    .collect()
}

/// The commands for a local proxy on `port` and the session key saved as
/// `id_container` with the host key in `known_hosts` (the web dialog and
/// `airlock app`).
#[derive(Debug, Clone)]
pub struct LocalCommands {
    /// `airlock app NAME sshd -b PORT`.
    pub proxy: String,
    /// `ssh …`.
    pub ssh: String,
    /// `scp …` (upload of FILE to the home directory).
    pub scp: String,
    /// `sftp …`.
    pub sftp: String,
}

/// Builds [`LocalCommands`].
pub fn local_commands(session: &str, port: u16) -> LocalCommands {
    let alias = alias(session);
    let dest = local_destination();
    let home = crate::CONTAINER_HOME;
    // (The dialog's short form: known_hosts and id_container are the files
    // the user just saved; see [`pin_options`] for the full set.)
    let pin = format!("-o HostKeyAlias={alias} -o UserKnownHostsFile=known_hosts");
    LocalCommands {
        proxy: format!("airlock app {session} sshd -b {port}"),
        ssh: format!("ssh -i id_container -p {port} {pin} {dest}"),
        scp: format!("scp -P {port} -i id_container {pin} FILE {dest}:{home}/"),
        sftp: format!("sftp -P {port} -i id_container {pin} {dest}"),
    }
}

/// Lines the runner prints on stdout for its agent; not part of what users
/// see as the session's log.
pub mod readiness {
    /// `AIRLOCK-HOST-KEY <openssh public key>`: the session's host key.
    pub const HOST_KEY_PREFIX: &str = "AIRLOCK-HOST-KEY ";
    /// `AIRLOCK-READY`: the SSH server is listening.
    pub const READY: &str = "AIRLOCK-READY";
    /// `AIRLOCK-LISTENING <addr>`: the SSH server's own line to PID 1.
    pub const LISTENING_PREFIX: &str = "AIRLOCK-LISTENING ";
    /// `AIRLOCK-AUDIT {"events":[…]}`: a batch of the runner's audit events,
    /// read by the agent from the container log (see docs/security.md).
    pub const AUDIT_PREFIX: &str = "AIRLOCK-AUDIT ";

    /// The host key announced on `line`, if it is the host-key line.
    pub fn host_key(line: &str) -> Option<&str> {
        line.strip_prefix(HOST_KEY_PREFIX)
    }

    /// Whether `line` is one of these internal lines.
    pub fn is_internal(line: &str) -> bool {
        let l = line.trim_end_matches(['\r', '\n']);
        l == READY
            || l.starts_with(HOST_KEY_PREFIX)
            || l.starts_with(LISTENING_PREFIX)
            || l.starts_with(AUDIT_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_options_pin_the_alias_only() {
        let o = pin_options("demo", "/tmp/kh");
        assert_eq!(
            o.join(" "),
            "-o HostKeyAlias=airlock-demo -o UserKnownHostsFile=/tmp/kh \
             -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes"
        );
    }

    #[test]
    fn aliases_round_trip() {
        assert_eq!(alias("demo"), "airlock-demo");
        assert_eq!(session_of_alias("airlock-demo"), Some("demo"));
        assert_eq!(session_of_alias("airlock-airlock-x"), Some("airlock-x"));
        assert_eq!(session_of_alias("airlock-"), None);
        assert_eq!(session_of_alias("demo"), None);
    }

    #[test]
    fn known_hosts_line_is_alias_and_key() {
        assert_eq!(
            known_hosts_line("demo", "ssh-ed25519 AAAA\n"),
            "airlock-demo ssh-ed25519 AAAA"
        );
    }

    #[test]
    fn block_pins_and_names_keys() {
        let own = vec!["/home/u/.ssh/id_ed25519".to_owned()];
        let b = HostBlock {
            airlock: "/usr/local/bin/airlock",
            dir: "/home/u/.ssh/airlock",
            own_keys: &own,
            forward_agent: false,
        }
        .render();
        assert!(b.starts_with("Host airlock-*\n  User work\n"), "{b}");
        assert!(b.contains("ProxyCommand /usr/local/bin/airlock --env-file /home/u/.ssh/airlock/airlock.env proxy --ssh-alias %n --known-hosts /home/u/.ssh/airlock/known_hosts --session-key /home/u/.ssh/airlock/%n.key\n"), "{b}");
        let own_at = b.find("IdentityFile /home/u/.ssh/id_ed25519").unwrap();
        let session_at = b.find("IdentityFile /home/u/.ssh/airlock/%n.key").unwrap();
        assert!(own_at < session_at);
        assert!(b.contains("StrictHostKeyChecking yes\n  ForwardAgent no\n"));
        assert!(quote("/a b/c").starts_with('"'));
    }

    #[test]
    fn readiness_lines_are_recognised() {
        assert!(readiness::is_internal("AIRLOCK-READY\n"));
        assert!(readiness::is_internal("AIRLOCK-HOST-KEY ssh-ed25519 AAAA"));
        assert!(!readiness::is_internal("hello AIRLOCK-READY"));
        assert!(readiness::is_internal("AIRLOCK-AUDIT {\"events\":[]}"));
        assert_eq!(readiness::host_key("AIRLOCK-HOST-KEY k"), Some("k"));
    }
}
