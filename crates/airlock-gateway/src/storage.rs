//! Where folder contents live. The default [`HostStorage`] keeps each folder
//! as a directory under the data directory; agents bind-mount those
//! directories into sessions (for several nodes, the root must be a shared
//! filesystem mounted at the same path everywhere). Other backends implement
//! [`FolderStorage`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// A storage backend for folders.
pub trait FolderStorage: Send + Sync + std::fmt::Debug {
    /// The host name recorded with folders (`local`).
    fn host(&self) -> &str;
    /// Creates the folder's directory and returns its path on the host.
    fn create(&self, id: &str) -> std::io::Result<PathBuf>;
    /// The folder's directory on the host.
    fn path(&self, id: &str) -> PathBuf;
    /// Deletes the folder and its contents.
    fn delete(&self, id: &str) -> std::io::Result<()>;
    /// uid/gid that files written through the API are given (the session
    /// user's, so they stay writable inside sessions).
    fn owner(&self) -> (u32, u32);
}

/// Folders as directories under a root.
#[derive(Debug, Clone)]
pub struct HostStorage {
    root: PathBuf,
    uid: u32,
    gid: u32,
}

impl HostStorage {
    /// Storage under `root`; files are owned by `uid:gid`.
    pub fn new(root: impl Into<PathBuf>, uid: u32, gid: u32) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let root = root.canonicalize()?;
        Ok(Self { root, uid, gid })
    }
}

impl FolderStorage for HostStorage {
    fn host(&self) -> &str {
        "local"
    }

    fn create(&self, id: &str) -> std::io::Result<PathBuf> {
        let p = self.path(id);
        std::fs::create_dir_all(&p)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        chown_quiet(&p, self.uid, self.gid);
        Ok(p)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn delete(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.path(id)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn owner(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }
}

/// Gives `path` to `uid:gid` if we may (we run as root in `airlockd up`);
/// otherwise leaves it (a non-root gateway owns what it writes).
pub fn chown_quiet(path: &Path, uid: u32, gid: u32) {
    if let Err(e) = std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        tracing::debug!(path = %path.display(), error = %e, "chown failed");
    }
}

/// Why a path inside a folder was refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// `..`, absolute path, NUL.
    #[error("{0}")]
    Invalid(String),
    /// A symlink leads out of the folder.
    #[error("{0:?} leads outside the folder (through a symbolic link)")]
    Escape(String),
    /// Not there.
    #[error("{0:?} does not exist")]
    NotFound(String),
    /// Other I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Normalises a user path relative to a folder root: no `..`, no absolute
/// paths, no NUL; returns the relative components.
pub fn relative(path: &str) -> Result<PathBuf, PathError> {
    if path.contains('\0') {
        return Err(PathError::Invalid(format!("{path:?} contains a NUL byte")));
    }
    let mut out = PathBuf::new();
    for c in Path::new(path.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(PathError::Invalid(format!(
                    "{path:?} contains '..'; paths must stay inside the folder"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// Resolves an existing path inside `root`, refusing symlink escapes.
pub fn resolve_existing(root: &Path, path: &str) -> Result<PathBuf, PathError> {
    let rel = relative(path)?;
    let full = root.join(&rel);
    let canon = full.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PathError::NotFound(path.to_owned()),
        _ => PathError::Io(e),
    })?;
    let root = root.canonicalize()?;
    if canon.starts_with(&root) {
        Ok(canon)
    } else {
        Err(PathError::Escape(path.to_owned()))
    }
}

/// Resolves a path to be created inside `root`: its parent must exist (or
/// is created) inside the root, and the final component must not be a
/// symlink.
pub fn resolve_new(root: &Path, path: &str, create_parents: bool) -> Result<PathBuf, PathError> {
    let rel = relative(path)?;
    let name = rel
        .file_name()
        .ok_or_else(|| PathError::Invalid(format!("{path:?} does not name a file")))?
        .to_owned();
    let parent_rel = rel.parent().unwrap_or(Path::new(""));
    let root_canon = root.canonicalize()?;
    let mut parent = root_canon.clone();
    for c in parent_rel.components() {
        parent.push(c);
        match std::fs::symlink_metadata(&parent) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = parent.canonicalize()?;
                if !target.starts_with(&root_canon) {
                    return Err(PathError::Escape(path.to_owned()));
                }
                parent = target;
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(PathError::Invalid(format!(
                    "{} is a file, not a directory",
                    parent.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create_parents => {
                std::fs::create_dir(&parent)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PathError::NotFound(parent_rel.display().to_string()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let target = parent.join(name);
    if let Ok(m) = std::fs::symlink_metadata(&target)
        && m.file_type().is_symlink()
    {
        let t = target
            .canonicalize()
            .map_err(|_| PathError::Escape(path.to_owned()))?;
        if !t.starts_with(&root_canon) {
            return Err(PathError::Escape(path.to_owned()));
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("in")).unwrap();
        assert!(resolve_existing(root, "a.txt").is_ok());
        assert!(resolve_existing(root, "/a.txt").is_ok());
        assert!(resolve_existing(root, "in").is_ok());
        assert!(matches!(
            resolve_existing(root, "out/passwd"),
            Err(PathError::Escape(_))
        ));
        assert!(matches!(
            resolve_existing(root, "../x"),
            Err(PathError::Invalid(_))
        ));
        assert!(matches!(
            resolve_existing(root, "nope"),
            Err(PathError::NotFound(_))
        ));
        assert!(resolve_new(root, "sub/dir/f", true).is_ok());
        assert!(root.join("sub/dir").is_dir());
        assert!(matches!(
            resolve_new(root, "out/evil", true),
            Err(PathError::Escape(_))
        ));
        assert!(matches!(
            resolve_new(root, "x/y", false),
            Err(PathError::NotFound(_))
        ));
    }
}
