//! Where folder contents live. The default [`HostStorage`] keeps each folder
//! as a directory under the data directory; agents bind-mount those
//! directories into sessions (for several nodes, the root must be a shared
//! filesystem mounted at the same path everywhere). Other backends implement
//! [`FolderStorage`].

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use airlock_beneath::{FsError, Tree};
use rustix::fs::{AtFlags, Mode, OFlags};

/// A storage backend for folders.
pub trait FolderStorage: Send + Sync + std::fmt::Debug {
    /// The host name recorded with folders (`local`).
    fn host(&self) -> &str;
    /// Creates the folder's directory (if missing) and returns its path on
    /// the host.
    fn create(&self, id: &str) -> Result<PathBuf, FsError>;
    /// The folder's directory on the host, for bind mounts only: folder
    /// contents are never reached through it (see [`FolderStorage::open`]).
    fn path(&self, id: &str) -> PathBuf;
    /// An open handle of the folder's directory, beneath which all folder
    /// I/O is resolved. Blocking.
    fn open(&self, id: &str) -> Result<Tree, FsError>;
    /// Deletes the folder and its contents (walking with descriptors, never
    /// following a link). Blocking.
    fn delete(&self, id: &str) -> Result<(), FsError>;
}

/// Folders as directories under a root.
#[derive(Debug, Clone)]
pub struct HostStorage {
    root: PathBuf,
    /// The root directory, opened once: folders are looked up beneath it.
    root_fd: Arc<OwnedFd>,
    uid: u32,
    gid: u32,
}

impl HostStorage {
    /// Storage under `root`; files are owned by `uid:gid`.
    pub fn new(root: impl Into<PathBuf>, uid: u32, gid: u32) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let root = root.canonicalize()?;
        let root_fd = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            root,
            root_fd: Arc::new(root_fd),
            uid,
            gid,
        })
    }

    fn check_id(id: &str) -> Result<(), FsError> {
        // Folder ids are UUIDs the server made; anything else is a bug or
        // an attack, never a path.
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(FsError::Invalid(format!("{id:?} is not a folder id")));
        }
        Ok(())
    }
}

impl FolderStorage for HostStorage {
    fn host(&self) -> &str {
        "local"
    }

    fn create(&self, id: &str) -> Result<PathBuf, FsError> {
        Self::check_id(id)?;
        match rustix::fs::mkdirat(self.root_fd.as_fd(), id, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(FsError::Io(e.into())),
        }
        let dir = self.open(id)?;
        dir.chown_root();
        Ok(self.path(id))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn open(&self, id: &str) -> Result<Tree, FsError> {
        Self::check_id(id)?;
        Tree::open(self.root_fd.as_fd(), id, (self.uid, self.gid))
    }

    fn delete(&self, id: &str) -> Result<(), FsError> {
        let dir = match self.open(id) {
            Ok(d) => d,
            Err(FsError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        dir.clear()?;
        match rustix::fs::unlinkat(self.root_fd.as_fd(), id, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(FsError::Io(e.into())),
        }
    }
}
