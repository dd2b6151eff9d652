//! `airlock-runner init`: prepare the account, keys and state of a session.
//!
//! Every path is taken relative to `root` (normally `/`) so the whole step can
//! be exercised against a temporary directory.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

use crate::error::{Error, Result};
use crate::keys;
use crate::passwd::{self, GroupEntry, PasswdEntry};

/// The session account name.
pub const USER: &str = airlock_proto::CONTAINER_USER;
/// Home directory of the session account (inside the container).
pub const HOME: &str = airlock_proto::CONTAINER_HOME;
/// The runner's own state directory (inside the container).
pub const STATE_DIR: &str = "/var/lib/airlock";

/// Inputs of the init step.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Prefix for every path touched.
    pub root: PathBuf,
    /// uid of `work`.
    pub uid: u32,
    /// gid of `work`.
    pub gid: u32,
    /// Account public keys (OpenSSH lines, newline separated).
    pub account_keys: String,
    /// Folder mount points (absolute container paths, e.g.
    /// `/home/work/data`); root-owned ones are given to `work` so the
    /// session user can write into its folders.
    pub mounts: Vec<String>,
}

/// What init produced.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The per-session host public key, as an OpenSSH line.
    pub host_public_key: String,
    /// Number of keys in the merged authorized list.
    pub authorized_count: usize,
    /// Shell chosen for `work`.
    pub shell: String,
}

/// Paths used by init and the container-mode sshd, relative to a root.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<root>/home/work`.
    pub home: PathBuf,
    /// `<root>/var/lib/airlock`.
    pub state: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Self {
        Layout {
            home: under(root, HOME),
            state: under(root, STATE_DIR),
        }
    }

    /// Session private key path.
    pub fn id_container(&self) -> PathBuf {
        self.home.join("id_container")
    }

    /// Merged authorized keys.
    pub fn authorized_keys(&self) -> PathBuf {
        self.state.join("authorized_keys")
    }

    /// Host private key.
    pub fn host_key(&self) -> PathBuf {
        self.state.join("host_key")
    }

    /// The user's own (possibly mounted) authorized_keys.
    pub fn user_authorized_keys(&self) -> PathBuf {
        self.home.join(".ssh/authorized_keys")
    }
}

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Run the init step.
pub fn run(opts: &InitOptions) -> Result<InitReport> {
    let root = &opts.root;
    let layout = Layout::new(root);
    let shell = ensure_account(opts)?;

    // Home.
    std::fs::create_dir_all(&layout.home).map_err(|e| Error::path("create", &layout.home, e))?;
    chown(&layout.home, opts.uid, opts.gid);
    keys::set_mode(&layout.home, 0o755)?;
    for m in &opts.mounts {
        let p = root.join(m.trim_start_matches('/'));
        if let Ok(meta) = std::fs::metadata(&p)
            && meta.is_dir()
            && std::os::unix::fs::MetadataExt::uid(&meta) == 0
        {
            chown(&p, opts.uid, opts.gid);
        }
    }

    // Session key: keep an existing one (re-run), else generate.
    let id_path = layout.id_container();
    let session_key = match keys::read_private_key(&id_path) {
        Ok(k) => k,
        Err(_) => {
            let k = keys::generate_ed25519("work@airlock-session")?;
            keys::write_private_key(&id_path, &k)?;
            k
        }
    };
    keys::set_mode(&id_path, 0o600)?;
    chown(&id_path, opts.uid, opts.gid);
    let id_pub = layout.home.join("id_container.pub");
    keys::write_public_key(&id_pub, session_key.public_key())?;
    chown(&id_pub, opts.uid, opts.gid);

    // State dir: root-owned 0755.
    std::fs::create_dir_all(&layout.state).map_err(|e| Error::path("create", &layout.state, e))?;
    keys::set_mode(&layout.state, 0o755)?;

    // Merged authorized keys.
    let mut merged: Vec<ssh_key::PublicKey> = vec![session_key.public_key().clone()];
    let account = keys::parse_authorized(
        &opts.account_keys,
        "AIRLOCK_AUTHORIZED_KEYS",
        &mut |src, n, why| {
            tracing::warn!("{src} line {n}: skipping malformed key: {why}");
        },
    );
    let mounted = keys::read_authorized_file(&layout.user_authorized_keys());
    for k in account.into_iter().chain(mounted) {
        if !merged.iter().any(|m| keys::same_key(m, &k)) {
            merged.push(k);
        }
    }
    let mut text = String::new();
    for k in &merged {
        text.push_str(&k.to_openssh()?);
        text.push('\n');
    }
    keys::write_file_mode(&layout.authorized_keys(), text.as_bytes(), 0o644)?;

    // Host key: per session; kept on re-run.
    let host_path = layout.host_key();
    let host_key = match keys::read_private_key(&host_path) {
        Ok(k) => k,
        Err(_) => {
            let k = keys::generate_ed25519("airlock-host-key")?;
            keys::write_private_key(&host_path, &k)?;
            k
        }
    };
    keys::set_mode(&host_path, 0o600)?;
    chown(&host_path, opts.uid, opts.gid);
    let host_pub = layout.state.join("host_key.pub");
    keys::write_public_key(&host_pub, host_key.public_key())?;

    Ok(InitReport {
        host_public_key: host_key.public_key().to_openssh()?,
        authorized_count: merged.len(),
        shell,
    })
}

fn chown(path: &Path, uid: u32, gid: u32) {
    if let Err(e) = nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))) {
        tracing::warn!("chown {} to {uid}:{gid}: {e}", path.display());
    }
}

/// Ensure the `work` user and group exist with the wanted ids; returns its shell.
fn ensure_account(opts: &InitOptions) -> Result<String> {
    let root = &opts.root;
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| Error::path("create", &etc, e))?;

    // Group.
    let gpath = passwd::group_path(root);
    let mut groups = read_lines(&gpath)?;
    let parsed: Vec<Option<GroupEntry>> = groups.iter().map(|l| GroupEntry::parse(l)).collect();
    let work_idx = parsed
        .iter()
        .position(|g| g.as_ref().is_some_and(|g| g.name == USER));
    let gid_taken_by_other = parsed.iter().any(|g| {
        g.as_ref()
            .is_some_and(|g| g.gid == opts.gid && g.name != USER)
    });
    match work_idx {
        Some(i) => {
            if let Some(mut g) = parsed[i].clone()
                && g.gid != opts.gid
                && !gid_taken_by_other
            {
                g.gid = opts.gid;
                groups[i] = g.to_line();
            }
        }
        None => {
            if !gid_taken_by_other {
                groups.push(
                    GroupEntry {
                        name: USER.to_string(),
                        passwd: "x".to_string(),
                        gid: opts.gid,
                        members: String::new(),
                    }
                    .to_line(),
                );
            }
        }
    }
    write_lines(&gpath, &groups, 0o644)?;

    // User.
    let ppath = passwd::passwd_path(root);
    let mut users = read_lines(&ppath)?;
    let parsed: Vec<Option<PasswdEntry>> = users.iter().map(|l| PasswdEntry::parse(l)).collect();
    let by_name = parsed
        .iter()
        .position(|u| u.as_ref().is_some_and(|u| u.name == USER));
    let by_uid = parsed
        .iter()
        .position(|u| u.as_ref().is_some_and(|u| u.uid == opts.uid && u.uid != 0));
    let mut renamed_from: Option<String> = None;
    let shell;
    match (by_name, by_uid) {
        (Some(i), _) => {
            let mut u = parsed[i].clone().unwrap_or_else(|| new_user(opts, ""));
            shell = passwd::usable_shell(root, Some(&u.shell));
            u.uid = opts.uid;
            u.gid = opts.gid;
            u.home = HOME.to_string();
            u.shell = shell.clone();
            users[i] = u.to_line();
        }
        (None, Some(i)) => {
            // Another account owns the uid (e.g. `ubuntu` in Ubuntu images): rename it.
            let mut u = parsed[i].clone().unwrap_or_else(|| new_user(opts, ""));
            renamed_from = Some(u.name.clone());
            shell = passwd::usable_shell(root, Some(&u.shell));
            u.name = USER.to_string();
            u.gid = opts.gid;
            u.home = HOME.to_string();
            u.shell = shell.clone();
            users[i] = u.to_line();
        }
        (None, None) => {
            shell = passwd::usable_shell(root, None);
            users.push(new_user(opts, &shell).to_line());
        }
    }
    write_lines(&ppath, &users, 0o644)?;

    // Shadow, only if the image has one: a locked password.
    let spath = root.join("etc/shadow");
    if spath.exists() {
        let mut lines = read_lines(&spath)?;
        let mut found = false;
        for l in lines.iter_mut() {
            let mut f: Vec<String> = l.split(':').map(str::to_string).collect();
            if f.len() < 2 {
                continue;
            }
            if f[0] == USER || renamed_from.as_deref() == Some(f[0].as_str()) {
                f[0] = USER.to_string();
                f[1] = "!".to_string();
                *l = f.join(":");
                found = true;
            }
        }
        if !found {
            let days = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() / 86400)
                .unwrap_or(0);
            lines.push(format!("{USER}:!:{days}:0:99999:7:::"));
        }
        let mode = file_mode(&spath).unwrap_or(0o640);
        write_lines(&spath, &lines, mode)?;
    }
    Ok(shell)
}

fn new_user(opts: &InitOptions, shell: &str) -> PasswdEntry {
    PasswdEntry {
        name: USER.to_string(),
        passwd: "x".to_string(),
        uid: opts.uid,
        gid: opts.gid,
        gecos: String::new(),
        home: HOME.to_string(),
        shell: shell.to_string(),
    }
}

fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.lines().map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::path("read", path, e)),
    }
}

fn write_lines(path: &Path, lines: &[String], default_mode: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let mode = file_mode(path).unwrap_or(default_mode);
    let owner = std::fs::metadata(path).ok().map(|m| (m.uid(), m.gid()));
    let mut text = lines.join("\n");
    text.push('\n');
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    keys::write_file_mode(path, text.as_bytes(), mode)?;
    if let Some((uid, gid)) = owner {
        chown(path, uid, gid);
    }
    Ok(())
}
