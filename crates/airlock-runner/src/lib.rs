//! airlock-runner: the in-session SSH/SFTP server.
//!
//! One static binary that works inside any Linux image: `init` prepares the
//! `work` account, the session key and the host key; `sshd` serves SSH (exec,
//! shell, pty, in-process SFTP, legacy scp, forwarding, agent forwarding) on
//! russh; `boot` is a PID-1 entrypoint that does both; invoked as `scp` the
//! binary is a legacy scp server.

pub mod audit;
pub mod boot;
pub mod eow;
pub mod error;
pub mod files;
pub mod forward;
pub mod init;
pub mod keys;
pub mod passwd;
pub mod queue;
pub mod resolve;
pub mod scp;
pub mod server;
pub mod session;
pub mod sftp;
pub mod speedtest;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
use server::{ServerSettings, Tuning};

fn session_path_env() -> String {
    match std::env::var("PATH") {
        Ok(p) if !p.is_empty() => p,
        _ => server::DEFAULT_PATH.to_string(),
    }
}

/// Variables of the runner's environment that sessions must not inherit:
/// airlock's own, those every login sets itself, and `LANG` (passed as
/// [`ServerSettings::lang`]).
fn private_var(name: &str) -> bool {
    use airlock_proto::validate::{is_airlock_env, is_login_env};
    is_airlock_env(name) || is_login_env(name) || matches!(name, "LANG" | "HOSTNAME" | "_")
}

/// The container environment handed on to sessions (image `ENV`, the
/// session's `--env` variables).
pub fn container_env() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::env::vars().filter(|(k, _)| !private_var(k)).collect();
    v.sort();
    v
}

fn session_lang() -> String {
    match std::env::var("LANG") {
        Ok(l) if !l.is_empty() => l,
        _ => "C.UTF-8".to_string(),
    }
}

/// This executable's path.
pub fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// Settings for standalone mode: serve as the current user.
pub fn standalone_settings(
    home: &Path,
    authorized_keys: &Path,
    host_key: &Path,
    tuning: Tuning,
) -> Result<ServerSettings> {
    let uid = nix::unistd::getuid().as_raw();
    let entry = passwd::user_by_uid(uid);
    let user = match &entry {
        Some(e) => e.name.clone(),
        None => std::env::var("USER").unwrap_or_else(|_| uid.to_string()),
    };
    let shell = passwd::usable_shell(Path::new("/"), entry.as_ref().map(|e| e.shell.as_str()));
    let home = std::fs::canonicalize(home).map_err(|e| Error::path("home", home, e))?;
    let host_key = keys::load_or_generate_host_key(host_key)?;
    Ok(settings_for(
        user,
        home,
        shell,
        authorized_keys.to_path_buf(),
        host_key,
        Vec::new(),
        tuning,
    ))
}

/// The settings of a server for `user`: the session's authorized keys
/// (`merged`, then the user's own `~/.ssh/authorized_keys`), the
/// environment every login gets.
fn settings_for(
    user: String,
    home: PathBuf,
    shell: String,
    merged: PathBuf,
    host_key: ssh_key::PrivateKey,
    base_env: Vec<(String, String)>,
    tuning: Tuning,
) -> ServerSettings {
    ServerSettings {
        user,
        authorized_keys: vec![merged, home.join(".ssh/authorized_keys")],
        home,
        shell,
        host_key,
        path_env: session_path_env(),
        lang: session_lang(),
        base_env,
        self_exe: self_exe(),
        tuning,
    }
}

/// Settings for container mode: user `work` from `/etc/passwd`, state from
/// `state_dir`. Returns the settings and work's (uid, gid).
pub fn container_settings(state_dir: &Path, tuning: Tuning) -> Result<(ServerSettings, u32, u32)> {
    let entry = passwd::user_by_name(init::USER).ok_or_else(|| {
        Error::Invalid(format!(
            "user {:?} not found in /etc/passwd (run `airlock-runner init` first)",
            init::USER
        ))
    })?;
    let home = PathBuf::from(&entry.home);
    let shell = passwd::usable_shell(Path::new("/"), Some(&entry.shell));
    let host_key = keys::read_private_key(&state_dir.join("host_key"))?;
    Ok((
        settings_for(
            entry.name.clone(),
            home,
            shell,
            state_dir.join("authorized_keys"),
            host_key,
            container_env(),
            tuning,
        ),
        entry.uid,
        entry.gid,
    ))
}

/// Drop root privileges to `uid`/`gid` (call before starting any threads).
pub fn drop_privileges(uid: u32, gid: u32) -> Result<()> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    setgroups(&[]).map_err(|e| Error::sys("setgroups", e))?;
    setgid(Gid::from_raw(gid)).map_err(|e| Error::sys("setgid", e))?;
    setuid(Uid::from_raw(uid)).map_err(|e| Error::sys("setuid", e))?;
    Ok(())
}
