//! `airlock ssh` and `airlock scp`: the system's OpenSSH through a
//! temporary local proxy, with the session's host key pinned.

use std::path::{Path, PathBuf};

use airlock_proto::api::{SessionInfo, SshKeyInfo, UserSettings};
use airlock_proto::recipes;
use tokio_util::sync::CancellationToken;

use crate::args::{ScpArgs, SshArgs};
use crate::client::ApiClient;
use crate::commands::session;
use crate::error::{CliError, CliResult};
use crate::output;
use crate::state::write_private_file;
use crate::tunnel;

/// Whether airlock's own status lines are shown around an OpenSSH run: not
/// with `-q`, and not when stdout is not a terminal (scripts).
pub fn chatty(quiet: bool) -> bool {
    use std::io::IsTerminal;
    !quiet && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// The local port to try first: the preferred SSH port, else
/// [`airlock_proto::recipes::DEFAULT_LOCAL_PORT`].
pub async fn default_local_port(client: &ApiClient) -> CliResult<u16> {
    Ok(client
        .get::<UserSettings>("/user/settings")
        .await?
        .ssh_port
        .unwrap_or(airlock_proto::recipes::DEFAULT_LOCAL_PORT))
}

/// The private key to log in with.
#[derive(Debug, Clone)]
pub enum Identity {
    /// One of the user's own keys, registered on the account.
    Own(PathBuf),
    /// The session key, downloaded (0600) to this path.
    SessionKey(PathBuf),
}

impl Identity {
    /// The key file.
    pub fn path(&self) -> &Path {
        match self {
            Identity::Own(p) | Identity::SessionKey(p) => p,
        }
    }
}

/// A local private key whose public half is registered on the account
/// (the private key never leaves this machine). With `authorized`, only
/// keys among those fingerprints count (the keys a session was given).
pub async fn own_registered_key(
    client: &ApiClient,
    authorized: Option<&[String]>,
) -> CliResult<Option<PathBuf>> {
    let Some(home) = std::env::var_os("HOME") else {
        return Ok(None);
    };
    let mut registered: Vec<SshKeyInfo> = client.get("/user/ssh-keys").await?;
    if let Some(fps) = authorized {
        registered.retain(|k| fps.contains(&k.fingerprint));
    }
    if registered.is_empty() {
        return Ok(None);
    }
    let ssh = PathBuf::from(home).join(".ssh");
    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        let private = ssh.join(name);
        let public = ssh.join(format!("{name}.pub"));
        if !private.is_file() {
            continue;
        }
        let Ok(line) = std::fs::read_to_string(&public) else {
            continue;
        };
        if let Some(fp) = airlock_proto::sshkey::fingerprint(&line)
            && registered.iter().any(|k| k.fingerprint == fp)
        {
            return Ok(Some(private));
        }
    }
    Ok(None)
}

/// Everything OpenSSH needs: identity, pinned host key, alias.
pub struct Prepared {
    /// Session view.
    pub info: SessionInfo,
    /// Login key.
    pub identity: Identity,
    /// known_hosts with the pinned host key.
    pub known_hosts: PathBuf,
    /// `airlock-<name>`.
    pub alias: String,
    /// Temporary directory (removed on drop).
    _dir: tempfile::TempDir,
}

impl Prepared {
    /// OpenSSH options common to ssh and scp.
    pub fn options(&self) -> Vec<String> {
        let mut o = airlock_proto::recipes::pin_options(
            &self.info.name,
            &self.known_hosts.display().to_string(),
        );
        o.extend([
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-i".into(),
            self.identity.path().display().to_string(),
        ]);
        if matches!(self.identity, Identity::SessionKey(_)) {
            // The session key is only for this session: do not offer it to
            // an agent or other hosts.
            o.extend(["-o".into(), "AddKeysToAgent=no".into()]);
        }
        o
    }
}

/// Checks the session, picks the identity, and pins the host key in a
/// private temporary directory.
pub async fn prepare(client: &ApiClient, session_name: &str) -> CliResult<Prepared> {
    let info = session::get_running(client, session_name).await?;
    let host_key = info.host_key.clone().ok_or_else(|| {
        CliError::new(format!(
            "the gateway has no host key for session {:?}",
            info.name
        ))
        .hint("the session may still be starting; try again in a moment")
    })?;
    let dir = tempfile::Builder::new()
        .prefix("airlock-ssh-")
        .tempdir()
        .map_err(|e| CliError::new(format!("cannot create a temporary directory: {e}")))?;
    let alias = airlock_proto::recipes::alias(&info.name);
    let known_hosts = dir.path().join("known_hosts");
    let pin = airlock_proto::recipes::known_hosts_line(&info.name, &host_key);
    write_private_file(&known_hosts, format!("{pin}\n").as_bytes())?;
    let identity = match own_registered_key(client, Some(&info.key_fingerprints)).await? {
        Some(p) => Identity::Own(p),
        None => {
            let key = session::fetch_file(client, &info.name, "id_container").await?;
            let path = dir.path().join("id_container");
            write_private_file(&path, &key)?;
            Identity::SessionKey(path)
        }
    };
    Ok(Prepared {
        info,
        identity,
        known_hosts,
        alias,
        _dir: dir,
    })
}

/// A temporary local proxy for one OpenSSH run.
pub struct TempProxy {
    /// Local port.
    pub port: u16,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TempProxy {
    /// Starts it on `port` (or the preferred port, else 9922; a random one
    /// if that is taken), saying so unless `quiet`.
    pub async fn start(
        client: &ApiClient,
        session_name: &str,
        port: Option<u16>,
        quiet: bool,
    ) -> CliResult<Self> {
        let wanted = match port {
            Some(p) => p,
            None => default_local_port(client).await?,
        };
        let (listener, choice) = tunnel::bind_local(None, Some(wanted)).await?;
        let port = listener.local_addr()?.port();
        if chatty(quiet) {
            if let tunnel::PortChoice::Fallback(p) = choice {
                output::info(&format!("port {p} is in use; using {port} instead"));
            }
            output::info(&format!(
                "running a temporary sshd proxy at localhost:{port} ..."
            ));
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(tunnel::accept_loop(
            client.clone(),
            session_name.to_owned(),
            listener,
            stop.clone(),
        ));
        Ok(Self { port, stop, task })
    }

    /// Stops accepting and closes open tunnels.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}

/// Runs an OpenSSH program to completion; returns its exit code.
async fn run_openssh(program: &str, args: &[String]) -> CliResult<u8> {
    tracing::debug!(program, ?args, "running OpenSSH");
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            CliError::new(format!("cannot run {program}: {e}"))
                .hint("install the OpenSSH client (e.g. apt install openssh-client)")
        })?;
    // Ctrl-C reaches ssh directly (same terminal); we only wait for it.
    let status = loop {
        tokio::select! {
            s = child.wait() => break s?,
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        _ => 1,
    })
}

/// `airlock ssh [--local-port PORT] [-q] SESSION [ssh args…]`.
pub async fn ssh(client: &ApiClient, args: SshArgs) -> CliResult<()> {
    let (opts, rest) = split_ssh_args(args.ssh_args());
    let quiet = args.quiet;
    through_proxy(client, args.session(), args.port, quiet, "ssh", |port| {
        let mut a = vec!["-p".to_owned(), port.to_string()];
        a.extend(opts);
        a.push(recipes::local_destination());
        a.extend(rest);
        a
    })
    .await
}

/// Prepares the session, starts a temporary proxy, runs `program` with the
/// prepared options plus `args(port)`, and passes its exit code on.
async fn through_proxy(
    client: &ApiClient,
    session: &str,
    port: Option<u16>,
    quiet: bool,
    program: &str,
    args: impl FnOnce(u16) -> Vec<String>,
) -> CliResult<()> {
    let prepared = prepare(client, session).await?;
    let proxy = TempProxy::start(client, &prepared.info.name, port, quiet).await?;
    let mut all = prepared.options();
    all.extend(args(proxy.port));
    let code = run_openssh(program, &all).await?;
    proxy.stop().await;
    drop(prepared);
    if code == 0 {
        Ok(())
    } else {
        Err(CliError::silent(code))
    }
}

/// Splits user arguments into ssh options (before the destination) and the
/// remote command. Options that take a value consume the next word.
pub fn split_ssh_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    const WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";
    let mut opts = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        opts.push(a.clone());
        let flag = a.chars().nth(1).unwrap_or(' ');
        if a.len() == 2 && WITH_VALUE.contains(flag) && i + 1 < args.len() {
            opts.push(args[i + 1].clone());
            i += 1;
        }
        i += 1;
    }
    (opts, args[i..].to_vec())
}

/// `airlock scp [options] SRC… DST` with `SESSION:PATH` for the remote side.
pub async fn scp(client: &ApiClient, args: ScpArgs) -> CliResult<()> {
    let mut session: Option<String> = None;
    let mut rewritten = Vec::new();
    let mut options_done = false;
    let mut i = 0;
    let mut passthrough = Vec::new();
    const WITH_VALUE: &str = "cDFiJloPSX";
    while i < args.args.len() {
        let a = &args.args[i];
        if !options_done && a.starts_with('-') && a.len() > 1 {
            passthrough.push(a.clone());
            let flag = a.chars().nth(1).unwrap_or(' ');
            if a.len() == 2 && WITH_VALUE.contains(flag) && i + 1 < args.args.len() {
                passthrough.push(args.args[i + 1].clone());
                i += 1;
            }
            i += 1;
            continue;
        }
        options_done = true;
        match remote_part(a) {
            Some((s, path)) => {
                if session.as_deref().is_some_and(|cur| cur != s) {
                    return Err(
                        CliError::new("all remote paths must be in the same session")
                            .hint("copy between sessions through your machine or a shared folder"),
                    );
                }
                session = Some(s.to_owned());
                rewritten.push(format!("{}:{path}", recipes::local_destination()));
            }
            None => rewritten.push(a.clone()),
        }
        i += 1;
    }
    let session = session.ok_or_else(|| {
        CliError::new("no remote path: name one as SESSION:PATH")
            .hint("e.g. airlock scp data.csv demo:/home/work/data/")
    })?;
    if rewritten.len() < 2 {
        return Err(CliError::new("scp needs a source and a destination")
            .hint("e.g. airlock scp demo:results.txt ."));
    }
    // scp's own -q (no progress meter) quiets airlock's lines too.
    let quiet = passthrough.iter().any(|a| {
        a.starts_with('-')
            && !a.starts_with("--")
            && a[1..].chars().all(|c| c.is_ascii_alphanumeric())
            && a.contains('q')
    });
    through_proxy(client, &session, args.port, quiet, "scp", |port| {
        let mut a = vec!["-P".to_owned(), port.to_string()];
        a.extend(passthrough);
        a.extend(rewritten);
        a
    })
    .await
}

/// `SESSION:PATH` → (SESSION, PATH); local paths (with a `/` before the
/// colon, or `./x:y`) are not remote.
fn remote_part(arg: &str) -> Option<(&str, &str)> {
    let (s, p) = arg.split_once(':')?;
    if s.is_empty() || s.contains('/') || s.starts_with('.') {
        return None;
    }
    airlock_proto::validate::check_session_name(s).ok()?;
    Some((s, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn splits_ssh_arguments() {
        let (o, r) = split_ssh_args(&v(&["-o", "BatchMode=yes", "echo", "hi"]));
        assert_eq!(o, v(&["-o", "BatchMode=yes"]));
        assert_eq!(r, v(&["echo", "hi"]));
        let (o, r) = split_ssh_args(&v(&["-L", "8080:localhost:80", "-N"]));
        assert_eq!(o, v(&["-L", "8080:localhost:80", "-N"]));
        assert!(r.is_empty());
        let (o, r) = split_ssh_args(&v(&["-t", "--", "ls", "-la"]));
        assert_eq!(o, v(&["-t"]));
        assert_eq!(r, v(&["ls", "-la"]));
    }

    #[test]
    fn remote_paths() {
        assert_eq!(
            remote_part("demo:/home/work/x"),
            Some(("demo", "/home/work/x"))
        );
        assert_eq!(remote_part("demo:"), Some(("demo", "")));
        assert_eq!(remote_part("./a:b"), None);
        assert_eq!(remote_part("/tmp/a:b"), None);
        assert_eq!(remote_part("file.txt"), None);
    }
}
