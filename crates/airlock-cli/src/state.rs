//! Local state under the XDG state directory (`~/.local/state/airlock`):
//! the login cookie, bound to the endpoint it was issued by. Files are 0600,
//! the directory 0700.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

/// The saved login.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Login {
    /// Endpoint the cookie belongs to; it is never sent anywhere else.
    pub endpoint: String,
    /// Value of the session cookie.
    pub cookie: String,
    /// Who logged in.
    pub username: String,
    /// Expiry (epoch seconds), if the server gave one.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// `$AIRLOCK_STATE_DIR`, else `$XDG_STATE_HOME/airlock`, else
    /// `~/.local/state/airlock`.
    pub fn locate() -> CliResult<Self> {
        if let Some(d) = std::env::var_os("AIRLOCK_STATE_DIR") {
            return Ok(Self { dir: d.into() });
        }
        if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            return Ok(Self {
                dir: PathBuf::from(d).join("airlock"),
            });
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| CliError::new("HOME is not set").hint("set HOME or XDG_STATE_HOME"))?;
        Ok(Self {
            dir: PathBuf::from(home).join(".local/state/airlock"),
        })
    }

    /// A state directory at `dir` (tests).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn ensure(&self) -> CliResult<()> {
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| {
                    CliError::new(format!("cannot create {}: {e}", self.dir.display()))
                        .hint("set AIRLOCK_STATE_DIR to a writable directory")
                })?;
        }
        Ok(())
    }

    fn login_path(&self) -> PathBuf {
        self.dir.join("login.json")
    }

    /// The saved login, if any (a corrupt file counts as none).
    pub fn login(&self) -> Option<Login> {
        let data = std::fs::read(self.login_path()).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Saves a login (0600, atomically).
    pub fn save_login(&self, login: &Login) -> CliResult<()> {
        let data = serde_json::to_vec_pretty(login)
            .map_err(|e| CliError::new(format!("cannot encode the login state: {e}")))?;
        self.write_private("login.json", &data)
    }

    /// Forgets the saved login.
    pub fn clear_login(&self) -> CliResult<()> {
        match std::fs::remove_file(self.login_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `name` in the state directory with mode 0600 via a temp file.
    pub fn write_private(&self, name: &str, data: &[u8]) -> CliResult<()> {
        self.ensure()?;
        write_private_file(&self.dir.join(name), data)
    }
}

/// Writes a file readable only by its owner (0600), atomically.
pub fn write_private_file(path: &Path, data: &[u8]) -> CliResult<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::new(format!("cannot write {}: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateDir::at(dir.path().join("state"));
        assert!(st.login().is_none());
        let login = Login {
            endpoint: "http://x".into(),
            cookie: "c".into(),
            username: "u".into(),
            expires_at: None,
        };
        st.save_login(&login).unwrap();
        let mode = std::fs::metadata(st.path().join("login.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(st.path()).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        assert_eq!(st.login().unwrap().cookie, "c");
        st.clear_login().unwrap();
        assert!(st.login().is_none());
        st.clear_login().unwrap();
    }
}
