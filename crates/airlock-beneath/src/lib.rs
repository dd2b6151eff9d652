//! Work on a directory tree that someone else writes, without ever leaving it.
//!
//! Two kinds of tree are worked on this way: storage folders, written by
//! sessions and read and written by the gateway as root, and a session's
//! home, worked on by the runner (`airlock-runner files …`) for `session
//! download/upload`. Every entry is hostile at every instant: it may be, or
//! may become between two system calls, a symbolic link to anywhere, a
//! FIFO, a socket, a device node, or a directory where a file was. A path
//! that is resolved twice (checked, then used) is a way out of the tree,
//! so this crate is the only code that touches such trees, and it follows
//! three rules:
//!
//! 1. **Resolve beneath a handle.** A user path is resolved relative to an
//!    open directory handle of the tree's root with `openat2(2)` and
//!    `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the kernel refuses `..`
//!    escapes and absolute links atomically with the lookup. What else is
//!    refused is the tree's [`Links`] policy: storage folders
//!    ([`Links::Refuse`]) add `RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`, so no
//!    link is followed at any component and no mount is crossed; a home
//!    ([`Links::FollowBeneath`]) follows links that stay beneath it (dotfile
//!    links) and crosses into the folders mounted in it. (On kernels without
//!    `openat2`, before Linux 5.6, both are kept by walking one component at
//!    a time with `O_NOFOLLOW` from the held handle, which follows no link
//!    and crosses no mount; `..` is refused textually before either.) We use
//!    `rustix` for the system calls: it wraps `openat2`, the `*at` family and
//!    `getdents` without `unsafe` in our code. `cap-std` was considered, but
//!    it follows symbolic links that stay inside the directory, and storage
//!    folders want none followed at all.
//! 2. **Then work on descriptors, never on the path again.** Files are
//!    opened `O_NONBLOCK | O_CLOEXEC` and `fstat`ed; anything but a regular
//!    file or a directory is refused (a FIFO never blocks a worker: it is
//!    not read). New files are created as unnamed `O_TMPFILE` inodes in the
//!    resolved directory (or, where the file system lacks them, with
//!    `O_EXCL` under a random hidden name) and written through that
//!    descriptor; they get a name only when complete, by `linkat` +
//!    `renameat` relative to a freshly resolved directory handle. Ownership
//!    and mode are set with `fchown`/`fchmod`.
//! 3. **Deletes and walks go by descriptors**: `unlinkat` and `openat`
//!    relative to held directory handles, directories opened `O_NOFOLLOW |
//!    O_DIRECTORY`, a mount point is never crossed by a delete, and a
//!    symbolic link is removed or archived, not followed.
//!
//! All calls here block; async callers run them on a blocking pool.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    AtFlags, Dir, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Stat, fchmod, fchown, fstat,
    linkat, mkdirat, openat, openat2, readlinkat, renameat, renameat_with, statat, unlinkat,
};
use rustix::io::Errno;

pub mod names;

/// Why an operation inside a folder was refused.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// `..`, NUL, an empty name where one is needed.
    #[error("{0}")]
    Invalid(String),
    /// Nothing there.
    #[error("{0:?} does not exist")]
    NotFound(String),
    /// A symbolic link at some component (never followed).
    #[error("{0:?} is or passes through a symbolic link; links inside folders are not followed")]
    Symlink(String),
    /// Leaves the folder (a mount point, or an escape the kernel caught).
    #[error("{0:?} leads outside the folder")]
    Escape(String),
    /// A component that should be a directory is not.
    #[error("{0:?} is not a directory")]
    NotADirectory(String),
    /// A file was wanted.
    #[error("{0:?} is a directory")]
    IsADirectory(String),
    /// A FIFO, socket or device node: listed, never opened.
    #[error(
        "{path:?} is a {kind}, not a regular file; airlock does not read or write special files"
    )]
    Special {
        /// The user's path.
        path: String,
        /// `fifo`, `socket`, `char-device`, `block-device`.
        kind: &'static str,
    },
    /// Already there.
    #[error("{0:?} already exists")]
    Exists(String),
    /// A directory with entries.
    #[error("{0:?} is a directory that is not empty")]
    NotEmpty(String),
    /// The file system said no.
    #[error("{0:?}: permission denied")]
    PermissionDenied(String),
    /// Anything else.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl FsError {
    fn from_errno(e: Errno, path: &str) -> Self {
        match e {
            Errno::NOENT => Self::NotFound(path.to_owned()),
            Errno::LOOP => Self::Symlink(path.to_owned()),
            Errno::XDEV => Self::Escape(path.to_owned()),
            Errno::NOTDIR => Self::NotADirectory(path.to_owned()),
            Errno::ISDIR => Self::IsADirectory(path.to_owned()),
            Errno::EXIST => Self::Exists(path.to_owned()),
            Errno::NOTEMPTY => Self::NotEmpty(path.to_owned()),
            Errno::ACCESS | Errno::PERM => Self::PermissionDenied(path.to_owned()),
            other => Self::Io(other.into()),
        }
    }
}

type Result<T> = std::result::Result<T, FsError>;

/// A user path inside a folder, checked textually: relative, no `..`, no
/// NUL. The empty path is the folder root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath {
    parts: Vec<CString>,
    shown: String,
}

impl RelPath {
    /// Checks `path` (leading `/` and `.` components are ignored).
    pub fn new(path: &str) -> Result<Self> {
        if path.contains('\0') {
            return Err(FsError::Invalid(format!("{path:?} contains a NUL byte")));
        }
        let mut parts = Vec::new();
        for c in Path::new(path).components() {
            match c {
                // `path` is a string: each component is one; escaped
                // bytes (see [`names`]) are turned back into bytes.
                Component::Normal(p) => parts.push(
                    CString::new(names::unescape(p.to_str().unwrap_or_default()))
                        .map_err(|_| FsError::Invalid(format!("{path:?} contains a NUL byte")))?,
                ),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    return Err(FsError::Invalid(format!(
                        "{path:?} contains '..'; paths must stay inside the folder"
                    )));
                }
            }
        }
        let shown = parts
            .iter()
            .map(|p| names::escape(p.as_bytes()))
            .collect::<Vec<_>>()
            .join("/");
        Ok(Self { parts, shown })
    }

    /// The folder root itself.
    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The normalised path (`a/b/c`), for messages and records.
    pub fn as_str(&self) -> &str {
        &self.shown
    }

    /// The last component.
    pub fn file_name(&self) -> Option<&CStr> {
        self.parts.last().map(CString::as_c_str)
    }

    /// The path without its last component.
    pub fn parent(&self) -> Self {
        let n = self.parts.len().saturating_sub(1);
        let parts = self.parts[..n].to_vec();
        let shown = parts
            .iter()
            .map(|p| names::escape(p.as_bytes()))
            .collect::<Vec<_>>()
            .join("/");
        Self { parts, shown }
    }

    fn joined(&self) -> PathBuf {
        self.parts
            .iter()
            .map(|p| OsStr::from_bytes(p.as_bytes()))
            .collect()
    }
}

/// What a folder entry is. Only files and directories are ever opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (listed, never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A UNIX socket.
    Socket,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
}

impl Kind {
    fn of(st: &Stat) -> Self {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Self::Dir,
            FileType::RegularFile => Self::File,
            FileType::Symlink => Self::Symlink,
            FileType::Fifo => Self::Fifo,
            FileType::Socket => Self::Socket,
            FileType::CharacterDevice => Self::CharDevice,
            FileType::BlockDevice | FileType::Unknown => Self::BlockDevice,
        }
    }

    /// The name used in listings (`dir`, `file`, `symlink`, `fifo`,
    /// `socket`, `char-device`, `block-device`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dir => "dir",
            Self::File => "file",
            Self::Symlink => "symlink",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::CharDevice => "char-device",
            Self::BlockDevice => "block-device",
        }
    }
}

/// One entry of a listing (from `fstatat` without following links).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's name ([`names::escape`]d: any bytes survive).
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits and type, as in `st_mode`.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Status change time, seconds since the epoch.
    pub ctime: i64,
    /// Access time, seconds since the epoch.
    pub atime: i64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Entry {
    fn new(name: String, st: &Stat) -> Self {
        Self {
            name,
            kind: Kind::of(st),
            size: u64::try_from(st.st_size).unwrap_or(0),
            mode: st.st_mode,
            mtime: st.st_mtime,
            ctime: st.st_ctime,
            atime: st.st_atime,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }
}

/// Names that unfinished uploads (on file systems without `O_TMPFILE`)
/// carry; hidden from listings.
pub const UPLOAD_MARK: &str = ".airlock-upload-";

/// Which symbolic links a lookup beneath a [`Tree`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// None, at any component, and no mount is crossed: storage folders,
    /// which sessions write and the gateway works on as root.
    Refuse,
    /// Those that stay beneath the root (the kernel checks every step;
    /// absolute links are refused), and mounts beneath it are crossed: a
    /// session's home, worked on by its own user, where dotfile links and
    /// mounted folders are normal. A link at the last component of a
    /// delete, rename or [`Tree::stat`] is still the link itself.
    FollowBeneath,
}

impl Links {
    fn resolve_flags(self) -> ResolveFlags {
        let beneath = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);
        match self {
            Self::Refuse => beneath
                .union(ResolveFlags::NO_SYMLINKS)
                .union(ResolveFlags::NO_XDEV),
            Self::FollowBeneath => beneath,
        }
    }
}

/// An open tree root: every operation resolves beneath it.
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
    dev: u64,
    owner: Option<(u32, u32)>,
    links: Links,
}

impl Tree {
    /// Opens the storage folder `name` (one component, no links) inside
    /// the storage root `parent`, with [`Links::Refuse`]. Files and
    /// directories created through it are given to `owner` (uid, gid).
    pub fn open(parent: BorrowedFd<'_>, name: &str, owner: (u32, u32)) -> Result<Self> {
        let fd = openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::from_errno(e, name))?;
        let dev = fstat(&fd).map_err(std::io::Error::from)?.st_dev;
        Ok(Self {
            fd,
            dev,
            owner: Some(owner),
            links: Links::Refuse,
        })
    }

    /// Opens the directory at `path` (a trusted path: links on the way to
    /// it are followed) as a tree root. What is created through it keeps
    /// the calling process's owner.
    pub fn open_path(path: &Path, links: Links) -> Result<Self> {
        let shown = path.display().to_string();
        let fd = openat(
            rustix::fs::CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::from_errno(e, &shown))?;
        let dev = fstat(&fd).map_err(std::io::Error::from)?.st_dev;
        Ok(Self {
            fd,
            dev,
            owner: None,
            links,
        })
    }

    /// Opens `rel` with `flags`, resolved beneath the root under the
    /// tree's [`Links`] policy. `EAGAIN` (a concurrent rename during
    /// resolution) is retried.
    fn resolve(&self, rel: &RelPath, flags: OFlags, mode: Mode) -> Result<OwnedFd> {
        let flags = match self.links {
            Links::Refuse => flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Links::FollowBeneath => flags | OFlags::CLOEXEC,
        };
        let path = rel.joined();
        let path: &Path = if rel.is_root() { Path::new(".") } else { &path };
        for _ in 0..8 {
            match openat2(&self.fd, path, flags, mode, self.links.resolve_flags()) {
                Ok(fd) => return Ok(fd),
                Err(Errno::AGAIN) => continue,
                Err(Errno::NOSYS) => return self.walk_components(rel, flags, mode),
                Err(e) => return Err(FsError::from_errno(e, rel.as_str())),
            }
        }
        Err(FsError::Io(std::io::Error::other(format!(
            "{:?} kept changing while it was looked up; try again",
            rel.as_str()
        ))))
    }

    /// The `openat2`-less fallback: one component at a time, each opened
    /// `O_NOFOLLOW` relative to the previous handle, never crossing a mount
    /// (whatever the [`Links`] policy: without `openat2`, following a link
    /// safely would mean resolving it by hand).
    fn walk_components(&self, rel: &RelPath, flags: OFlags, mode: Mode) -> Result<OwnedFd> {
        let flags = flags | OFlags::NOFOLLOW;
        let err = |e| FsError::from_errno(e, rel.as_str());
        let Some((last, dirs)) = rel.parts.split_last() else {
            return openat(&self.fd, c".", flags, mode).map_err(err);
        };
        let mut cur: Option<OwnedFd> = None;
        for d in dirs {
            let base = cur.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd);
            let next = openat(
                base,
                d.as_c_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err)?;
            if fstat(&next).map_err(err)?.st_dev != self.dev {
                return Err(FsError::Escape(rel.as_str().to_owned()));
            }
            cur = Some(next);
        }
        let base = cur.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd);
        let fd = openat(base, last.as_c_str(), flags, mode).map_err(err)?;
        if fstat(&fd).map_err(err)?.st_dev != self.dev {
            return Err(FsError::Escape(rel.as_str().to_owned()));
        }
        Ok(fd)
    }

    /// A handle of the directory `rel`.
    fn dir(&self, rel: &RelPath, access: Access) -> Result<OwnedFd> {
        let access = match access {
            Access::Read => OFlags::RDONLY,
            Access::Path => OFlags::PATH,
        };
        match self.resolve(rel, access | OFlags::DIRECTORY, Mode::empty()) {
            // `O_DIRECTORY | O_NOFOLLOW` on a link at the last component
            // says "not a directory": name the real reason.
            Err(FsError::NotADirectory(p))
                if self.links == Links::Refuse
                    && self.stat(rel).is_ok_and(|e| e.kind == Kind::Symlink) =>
            {
                Err(FsError::Symlink(p))
            }
            other => other,
        }
    }

    /// What `rel` is, without following a link at its last component.
    pub fn stat(&self, rel: &RelPath) -> Result<Entry> {
        let Some(name) = rel.file_name() else {
            let st = fstat(&self.fd).map_err(std::io::Error::from)?;
            return Ok(Entry::new(String::new(), &st));
        };
        let parent = self.dir(&rel.parent(), Access::Path)?;
        let st = statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FsError::from_errno(e, rel.as_str()))?;
        Ok(Entry::new(names::escape(name.to_bytes()), &st))
    }

    /// What `rel` leads to: like [`Tree::stat`], but a link at the last
    /// component is followed under the tree's [`Links`] policy (a tree that
    /// refuses links describes the link itself). A file or directory is also opened
    /// for reading, so that one the caller may not read says so here.
    pub fn stat_target(&self, rel: &RelPath) -> Result<Entry> {
        let name = rel
            .file_name()
            .map(|n| names::escape(n.to_bytes()))
            .unwrap_or_default();
        let fd = self.resolve(rel, OFlags::PATH, Mode::empty())?;
        let st = fstat(&fd).map_err(std::io::Error::from)?;
        let entry = Entry::new(name, &st);
        if matches!(entry.kind, Kind::File | Kind::Dir) {
            let fd = self.resolve(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
            let now = fstat(&fd).map_err(std::io::Error::from)?;
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                return Err(changed(rel.as_str()));
            }
        }
        Ok(entry)
    }

    /// Walks `rel` (followed under the tree's policy) and, for a directory,
    /// everything beneath it, calling `visit` for each entry (parents
    /// before children, names in byte order) with its path: `top`, then
    /// `top/child/…`. Files come open for reading; links are read, never
    /// followed; special files are named, never opened. With
    /// [`Links::Refuse`], a mount is not crossed.
    pub fn walk(
        &self,
        rel: &RelPath,
        top: &Path,
        visit: &mut dyn FnMut(&Path, &Entry, Node) -> Result<()>,
    ) -> Result<()> {
        let name = top
            .file_name()
            .map(|n| names::escape(n.as_bytes()))
            .unwrap_or_default();
        let fd = self.resolve(rel, OFlags::PATH, Mode::empty())?;
        let st = fstat(&fd).map_err(std::io::Error::from)?;
        let entry = Entry::new(name, &st);
        match entry.kind {
            Kind::Dir => {
                let dir = self.dir(rel, Access::Read)?;
                self.walk_dir(&dir, &st, top, &entry, visit, 0)
            }
            Kind::File => {
                let (file, _) = self.open_read(rel)?;
                let st = fstat(&file).map_err(std::io::Error::from)?;
                visit(top, &Entry::new(entry.name, &st), Node::File(file))
            }
            Kind::Symlink => {
                let parent = self.dir(&rel.parent(), Access::Path)?;
                let target = rel
                    .file_name()
                    .map(|n| readlinkat(&parent, n, Vec::new()))
                    .transpose()
                    .map_err(|e| FsError::from_errno(e, rel.as_str()))?
                    .unwrap_or_default();
                visit(top, &entry, Node::Link(target.into_bytes()))
            }
            _ => visit(top, &entry, Node::Special),
        }
    }

    fn walk_dir(
        &self,
        dir: &OwnedFd,
        st: &Stat,
        path: &Path,
        entry: &Entry,
        visit: &mut dyn FnMut(&Path, &Entry, Node) -> Result<()>,
        depth: usize,
    ) -> Result<()> {
        let shown = names::escape(path.as_os_str().as_bytes());
        if depth >= MAX_DEPTH {
            return Err(FsError::Invalid(format!(
                "{shown:?} is nested more than {MAX_DEPTH} levels deep"
            )));
        }
        let now = fstat(dir).map_err(std::io::Error::from)?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(changed(&shown));
        }
        if self.links == Links::Refuse && now.st_dev != self.dev {
            return Err(FsError::Escape(shown.clone()));
        }
        visit(path, entry, Node::Dir)?;
        let err = |e| FsError::from_errno(e, &shown);
        let mut names = Vec::new();
        let mut d = Dir::new(dir.try_clone()?).map_err(err)?;
        while let Some(ent) = d.read() {
            let ent = ent.map_err(err)?;
            let n = ent.file_name();
            if n.to_bytes() != b"." && n.to_bytes() != b".." {
                names.push(n.to_owned());
            }
        }
        names.sort();
        for n in names {
            let child = path.join(OsStr::from_bytes(n.to_bytes()));
            let shown = names::escape(child.as_os_str().as_bytes());
            // Gone since it was listed: skip it, as `tar` would.
            let Ok(cst) = statat(dir, n.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let e = Entry::new(names::escape(n.as_bytes()), &cst);
            let open = |flags: OFlags| {
                openat(
                    dir,
                    n.as_c_str(),
                    flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| FsError::from_errno(e, &shown))
            };
            match e.kind {
                Kind::Dir => {
                    let fd = open(OFlags::RDONLY | OFlags::DIRECTORY)?;
                    self.walk_dir(&fd, &cst, &child, &e, visit, depth + 1)?;
                }
                Kind::File => {
                    let fd = open(OFlags::RDONLY | OFlags::NONBLOCK)?;
                    let now = fstat(&fd).map_err(std::io::Error::from)?;
                    if (now.st_dev, now.st_ino) != (cst.st_dev, cst.st_ino) {
                        return Err(changed(&shown));
                    }
                    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(std::io::Error::from)?;
                    let e = Entry::new(e.name, &now);
                    visit(&child, &e, Node::File(File::from(fd)))?;
                }
                Kind::Symlink => {
                    let target = readlinkat(dir, n.as_c_str(), Vec::new())
                        .map_err(|e| FsError::from_errno(e, &shown))?;
                    visit(&child, &e, Node::Link(target.into_bytes()))?;
                }
                _ => visit(&child, &e, Node::Special)?,
            }
        }
        Ok(())
    }

    /// Renames `from` to `to`, whose directory must exist and which must
    /// not. A link at either last component is the link itself.
    pub fn rename(&self, from: &RelPath, to: &RelPath) -> Result<()> {
        let (Some(src), Some(dst)) = (from.file_name(), to.file_name()) else {
            return Err(FsError::Invalid(
                "refusing to move the root or over it".into(),
            ));
        };
        let src_dir = self.dir(&from.parent(), Access::Path)?;
        let dst_dir = self.dir(&to.parent(), Access::Path)?;
        statat(&src_dir, src, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FsError::from_errno(e, from.as_str()))?;
        if statat(&dst_dir, dst, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            return Err(FsError::Exists(to.as_str().to_owned()));
        }
        let into_itself = || {
            FsError::Invalid(format!(
                "cannot move {:?} into itself ({:?})",
                from.as_str(),
                to.as_str()
            ))
        };
        match renameat_with(&src_dir, src, &dst_dir, dst, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            // Either a directory into itself, or a file system without
            // RENAME_NOREPLACE (checked above, then, without the atomicity).
            Err(Errno::INVAL) => match renameat(&src_dir, src, &dst_dir, dst) {
                Ok(()) => Ok(()),
                Err(Errno::INVAL) => Err(into_itself()),
                Err(e) => Err(FsError::from_errno(e, from.as_str())),
            },
            Err(Errno::EXIST) => Err(FsError::Exists(to.as_str().to_owned())),
            Err(e) => Err(FsError::from_errno(e, from.as_str())),
        }
    }

    /// Lists a directory (directories first, then by name); a file lists
    /// as itself. Unfinished uploads are hidden; special files are listed
    /// with their kind.
    pub fn list(&self, rel: &RelPath) -> Result<Vec<Entry>> {
        let fd = match self.dir(rel, Access::Read) {
            Ok(fd) => fd,
            Err(FsError::NotADirectory(_)) => return Ok(vec![self.stat(rel)?]),
            Err(e) => return Err(e),
        };
        let err = |e| FsError::from_errno(e, rel.as_str());
        let mut out = Vec::new();
        let mut dir = Dir::new(fd.try_clone().map_err(FsError::Io)?).map_err(err)?;
        while let Some(ent) = dir.read() {
            let ent = ent.map_err(err)?;
            let name = ent.file_name();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let shown = names::escape(name.to_bytes());
            if shown.contains(UPLOAD_MARK) {
                continue;
            }
            // Gone between getdents and fstatat: skip it, as `ls` would.
            if let Ok(st) = statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                out.push(Entry::new(shown, &st));
            }
        }
        out.sort_by(|a, b| (a.kind != Kind::Dir, &a.name).cmp(&(b.kind != Kind::Dir, &b.name)));
        Ok(out)
    }

    /// Opens a regular file for reading; refuses directories, links and
    /// special files (a FIFO is opened non-blocking and never read).
    pub fn open_read(&self, rel: &RelPath) -> Result<(File, u64)> {
        if rel.is_root() {
            return Err(FsError::IsADirectory(String::new()));
        }
        let fd = self.resolve(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let st = fstat(&fd).map_err(std::io::Error::from)?;
        match Kind::of(&st) {
            Kind::File => {}
            Kind::Dir => return Err(FsError::IsADirectory(rel.as_str().to_owned())),
            k => {
                return Err(FsError::Special {
                    path: rel.as_str().to_owned(),
                    kind: k.as_str(),
                });
            }
        }
        // Regular files ignore O_NONBLOCK; clear it anyway so that readers
        // see ordinary blocking semantics.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(std::io::Error::from)?;
        Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0)))
    }

    /// Reads a small regular file whole; `None` when it is missing, not a
    /// regular file, or larger than `max` bytes.
    pub fn read_small(&self, rel: &RelPath, max: u64) -> Result<Option<Vec<u8>>> {
        use std::io::Read;
        match self.open_read(rel) {
            Ok((f, len)) if len <= max => {
                let mut buf = Vec::new();
                f.take(max + 1).read_to_end(&mut buf)?;
                Ok((buf.len() as u64 <= max).then_some(buf))
            }
            Ok(_)
            | Err(
                FsError::NotFound(_)
                | FsError::Special { .. }
                | FsError::IsADirectory(_)
                | FsError::Symlink(_),
            ) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the directory `rel` (and, with `parents`, the missing
    /// directories above it). `Ok(false)` when it existed and `exist_ok`.
    pub fn mkdir(&self, rel: &RelPath, opts: MkdirOptions) -> Result<bool> {
        let MkdirOptions { parents, exist_ok } = opts;
        let Some(name) = rel.file_name() else {
            return if exist_ok {
                Ok(false)
            } else {
                Err(FsError::Exists(String::new()))
            };
        };
        let parent = if parents {
            self.make_dirs(&rel.parent())?
        } else {
            self.dir(&rel.parent(), Access::Path)?
        };
        match self.mkdir_in(&parent, name, rel.as_str()) {
            Ok(()) => Ok(true),
            Err(FsError::Exists(p)) => {
                let is_dir = statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| Kind::of(&st) == Kind::Dir);
                if exist_ok && is_dir {
                    Ok(false)
                } else {
                    Err(FsError::Exists(p))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `mkdirat` + hand the new directory to the folder's owner (through a
    /// descriptor of the directory just made, never by name again).
    fn mkdir_in(&self, parent: &OwnedFd, name: &CStr, shown: &str) -> Result<()> {
        mkdirat(parent, name, Mode::from_raw_mode(0o755))
            .map_err(|e| FsError::from_errno(e, shown))?;
        if let Ok(fd) = openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            self.give(&fd);
        }
        Ok(())
    }

    /// Resolves the directory `rel`, creating missing components (owned by
    /// the folder's owner); a link or file in the way is an error.
    fn make_dirs(&self, rel: &RelPath) -> Result<OwnedFd> {
        match self.dir(rel, Access::Path) {
            Ok(fd) => return Ok(fd),
            Err(FsError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let mut cur = RelPath::new("")?;
        for part in &rel.parts {
            let parent = self.dir(&cur, Access::Path)?;
            cur.parts.push(part.clone());
            cur.shown = if cur.shown.is_empty() {
                names::escape(part.as_bytes())
            } else {
                format!("{}/{}", cur.shown, names::escape(part.as_bytes()))
            };
            match self.mkdir_in(&parent, part, cur.as_str()) {
                Ok(()) | Err(FsError::Exists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.dir(rel, Access::Path)
    }

    /// Gives the folder root itself to the folder's owner.
    pub fn chown_root(&self) {
        self.give(&self.fd);
    }

    /// Gives an inode we created to the folder's owner. A gateway that
    /// does not run as root owns what it writes; that is not an error.
    fn give(&self, fd: &OwnedFd) {
        let Some((uid, gid)) = self.owner else {
            return;
        };
        if let Err(e) = fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        ) {
            tracing::debug!(error = %e, "fchown failed");
        }
    }

    /// Starts a new file at `rel`: its directory is resolved (created when
    /// missing), and an unnamed file is made there. The bytes go to
    /// [`NewFile::file`]; nothing appears at `rel` until [`NewFile::commit`].
    pub fn create(&self, rel: &RelPath, mode: u32) -> Result<NewFile> {
        let Some(name) = rel.file_name() else {
            return Err(FsError::IsADirectory(String::new()));
        };
        let parent = self.make_dirs(&rel.parent())?;
        if let Ok(st) = statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
            && Kind::of(&st) == Kind::Dir
        {
            return Err(FsError::IsADirectory(rel.as_str().to_owned()));
        }
        let err = |e| FsError::from_errno(e, rel.as_str());
        let mode = Mode::from_raw_mode(mode & 0o777);
        let (fd, tmp_name) = match openat(
            &parent,
            c".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => (fd, None),
            // No O_TMPFILE here (e.g. NFS): a hidden name made with O_EXCL,
            // so a link planted under that name is never written through.
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
                let tmp = hidden_name(name);
                let fd = openat(
                    &parent,
                    tmp.as_c_str(),
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::RDWR
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(err)?;
                (fd, Some(tmp))
            }
            Err(e) => return Err(err(e)),
        };
        let ino = fstat(&fd).map_err(std::io::Error::from)?;
        Ok(NewFile {
            file: File::from(fd),
            ino: (ino.st_dev, ino.st_ino),
            tmp: tmp_name.map(|t| (parent, t)),
            rel: rel.clone(),
            mode,
        })
    }

    /// Removes a file, link, special file or (with [`Removal::Tree`],
    /// non-empty) directory. Links are removed, never followed; mounts are
    /// not crossed.
    pub fn remove(&self, rel: &RelPath, what: Removal) -> Result<()> {
        let Some(name) = rel.file_name() else {
            return Err(FsError::Invalid(
                "refusing to delete the folder root; delete the folder instead".into(),
            ));
        };
        let parent = self.dir(&rel.parent(), Access::Read)?;
        // The device of the directory it is in (the root's, unless links
        // or mounts beneath a home led elsewhere): a delete never crosses
        // from there into another file system.
        let dev = fstat(&parent).map_err(std::io::Error::from)?.st_dev;
        remove_entry(&parent, name, dev, what, rel.as_str(), 0)
    }

    /// Removes everything inside the root (for deleting a whole folder).
    pub fn clear(&self) -> Result<()> {
        clear_dir(&self.fd, self.dev, "", 0)
    }
}

/// What [`Tree::walk`] met.
#[derive(Debug)]
pub enum Node {
    /// A directory (its entries follow).
    Dir,
    /// A regular file, open for reading.
    File(File),
    /// A symbolic link and its target, as stored.
    Link(Vec<u8>),
    /// A FIFO, socket or device node (not opened).
    Special,
}

fn changed(shown: &str) -> FsError {
    FsError::Io(std::io::Error::other(format!(
        "{shown:?} changed while it was read; try again"
    )))
}

/// How a directory handle is opened.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// `O_PATH`: to resolve beneath it, not to list it.
    Path,
    /// Readable: to list it.
    Read,
}

/// What [`Tree::remove`] may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// A file, link, special file or empty directory.
    Entry,
    /// A directory with everything in it, too.
    Tree,
}

/// How [`Tree::mkdir`] treats missing parents and an existing directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MkdirOptions {
    /// Create missing parent directories.
    pub parents: bool,
    /// An existing directory is no error.
    pub exist_ok: bool,
}

/// How deep a recursive delete goes before it gives up (each level holds
/// one descriptor).
const MAX_DEPTH: usize = 256;

fn remove_entry(
    parent: &OwnedFd,
    name: &CStr,
    dev: u64,
    what: Removal,
    shown: &str,
    depth: usize,
) -> Result<()> {
    let err = |e| FsError::from_errno(e, shown);
    let st = statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
    if Kind::of(&st) != Kind::Dir {
        return unlinkat(parent, name, AtFlags::empty()).map_err(err);
    }
    if st.st_dev != dev {
        return Err(FsError::Escape(shown.to_owned()));
    }
    if what == Removal::Tree {
        let fd = openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        clear_dir(&fd, dev, shown, depth)?;
    }
    unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(err)
}

fn clear_dir(fd: &OwnedFd, dev: u64, shown: &str, depth: usize) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(FsError::Invalid(format!(
            "{shown:?} is nested more than {MAX_DEPTH} levels deep; delete its contents from inside a session"
        )));
    }
    let err = |e| FsError::from_errno(e, shown);
    if fstat(fd).map_err(err)?.st_dev != dev {
        return Err(FsError::Escape(shown.to_owned()));
    }
    let mut dir = Dir::new(fd.try_clone()?).map_err(err)?;
    let mut names = Vec::new();
    while let Some(ent) = dir.read() {
        let ent = ent.map_err(err)?;
        let n = ent.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    for n in names {
        let child = format!("{shown}/{}", names::escape(n.as_bytes()));
        match remove_entry(
            fd,
            &n,
            dev,
            Removal::Tree,
            child.trim_start_matches('/'),
            depth + 1,
        ) {
            // Removed by someone else meanwhile: that is what we wanted.
            Ok(()) | Err(FsError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn hidden_name(name: &CStr) -> CString {
    let mut v = b".".to_vec();
    v.extend_from_slice(name.to_bytes());
    v.extend_from_slice(UPLOAD_MARK.as_bytes());
    v.extend_from_slice(format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff).as_bytes());
    // Built from a name without NUL and hex digits: cannot contain NUL.
    CString::new(v).unwrap_or_default()
}

/// A file being written: unnamed until [`NewFile::commit`].
#[derive(Debug)]
pub struct NewFile {
    file: File,
    ino: (u64, u64),
    /// Where the hidden named temporary lives, when `O_TMPFILE` was not
    /// available.
    tmp: Option<(OwnedFd, CString)>,
    rel: RelPath,
    mode: Mode,
}

impl NewFile {
    /// The descriptor to write to.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path it will have.
    pub fn rel(&self) -> &RelPath {
        &self.rel
    }

    /// Gives the file its owner and mode and its name at `rel`, replacing
    /// a file (or link) there, never a directory. The directory is resolved
    /// afresh beneath the folder root.
    pub fn commit(self, folder: &Tree) -> Result<()> {
        let shown = self.rel.as_str().to_owned();
        let err = |e| FsError::from_errno(e, &shown);
        let name = self
            .rel
            .file_name()
            .ok_or_else(|| FsError::IsADirectory(String::new()))?
            .to_owned();
        folder.give(&OwnedFd::from(self.file.try_clone()?));
        fchmod(&self.file, self.mode).map_err(err)?;
        self.file.sync_all()?;
        let parent = folder.make_dirs(&self.rel.parent())?;
        let (from_dir, from_name) = match self.tmp {
            Some((dir, tmp)) => {
                // The hidden name is in a directory the user can write: make
                // sure it is still our inode before moving it into place.
                let st = statat(&dir, tmp.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
                if (st.st_dev, st.st_ino) != self.ino {
                    return Err(FsError::Io(std::io::Error::other(format!(
                        "the temporary file of {shown:?} was replaced while it was uploaded"
                    ))));
                }
                (dir, tmp)
            }
            None => {
                // Give the unnamed inode a hidden name next to its target
                // (through /proc/self/fd, which needs no privilege for
                // O_TMPFILE files), then rename it over the target.
                let tmp = hidden_name(&name);
                let proc = format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&self.file)
                );
                linkat(
                    rustix::fs::CWD,
                    proc.as_str(),
                    &parent,
                    tmp.as_c_str(),
                    AtFlags::SYMLINK_FOLLOW,
                )
                .map_err(err)?;
                let dir = parent.try_clone()?;
                (dir, tmp)
            }
        };
        match renameat(&from_dir, from_name.as_c_str(), &parent, name.as_c_str()) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = unlinkat(&from_dir, from_name.as_c_str(), AtFlags::empty());
                Err(err(e))
            }
        }
    }

    /// Throws the unfinished file away.
    pub fn discard(self) {
        if let Some((dir, tmp)) = &self.tmp
            && statat(dir, tmp.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| (st.st_dev, st.st_ino) == self.ino)
        {
            let _ = unlinkat(dir, tmp.as_c_str(), AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("f")).unwrap();
        let root = File::open(dir.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir.path()).unwrap();
        let owner = (m.uid(), m.gid());
        let f = Tree::open(root.as_fd(), "f", owner).unwrap();
        (dir, f)
    }

    fn rel(p: &str) -> RelPath {
        RelPath::new(p).unwrap()
    }

    #[test]
    fn names_that_are_not_utf8_are_listed_escaped_and_found_by_that_name() {
        let (dir, f) = setup();
        let raw = OsStr::from_bytes(b"caf\xe9 \xff.txt");
        std::fs::write(dir.path().join("f").join(raw), "bytes").unwrap();
        let listed = f.list(&rel("")).unwrap();
        assert_eq!(listed.len(), 1);
        let name = listed[0].name.clone();
        assert_eq!(names::unescape(&name), raw.as_bytes(), "{name:?}");
        assert!(!name.contains('\u{FFFD}'), "{name:?}");
        let (mut file, size) = f.open_read(&rel(&name)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), size), ("bytes", 5));
        assert_eq!(f.stat(&rel(&name)).unwrap().name, name);
        let moved = format!("{name}.old");
        f.rename(&rel(&name), &rel(&moved)).unwrap();
        assert!(
            dir.path()
                .join("f")
                .join(OsStr::from_bytes(b"caf\xe9 \xff.txt.old"))
                .exists()
        );
        f.remove(&rel(&moved), Removal::Entry).unwrap();
        assert!(f.list(&rel("")).unwrap().is_empty());
    }

    #[test]
    fn paths_are_checked_textually() {
        assert!(matches!(RelPath::new("../x"), Err(FsError::Invalid(_))));
        assert!(matches!(
            RelPath::new("a/../../x"),
            Err(FsError::Invalid(_))
        ));
        assert!(matches!(RelPath::new("a\0b"), Err(FsError::Invalid(_))));
        assert_eq!(rel("/a/./b/").as_str(), "a/b");
        assert!(rel("").is_root());
        assert!(rel("/").is_root());
    }

    #[test]
    fn no_link_is_followed_anywhere() {
        let (dir, f) = setup();
        let root = dir.path().join("f");
        std::fs::write(dir.path().join("secret"), "host").unwrap();
        std::fs::write(root.join("a.txt"), "x").unwrap();
        symlink(dir.path(), root.join("out")).unwrap();
        symlink("a.txt", root.join("in")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        assert!(f.open_read(&rel("a.txt")).is_ok());
        assert!(matches!(
            f.open_read(&rel("out/secret")),
            Err(FsError::Symlink(_))
        ));
        assert!(matches!(f.open_read(&rel("in")), Err(FsError::Symlink(_))));
        assert!(matches!(f.list(&rel("out")), Err(FsError::Symlink(_))));
        assert!(matches!(
            f.create(&rel("out/new"), 0o644),
            Err(FsError::Symlink(_))
        ));
        assert!(matches!(
            f.mkdir(
                &rel("out/x"),
                MkdirOptions {
                    parents: true,
                    exist_ok: false
                }
            ),
            Err(FsError::Symlink(_))
        ));
        assert!(matches!(
            f.remove(&rel("out/secret"), Removal::Entry),
            Err(FsError::Symlink(_))
        ));
        // Removing the link removes the link, not its target.
        f.remove(&rel("out"), Removal::Tree).unwrap();
        assert!(dir.path().join("secret").exists());
        let kinds: Vec<_> = f
            .list(&rel(""))
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("d".to_owned(), Kind::Dir),
                ("a.txt".to_owned(), Kind::File),
                ("in".to_owned(), Kind::Symlink)
            ]
        );
    }

    #[test]
    fn special_files_are_listed_never_opened() {
        let (dir, f) = setup();
        let fifo = dir.path().join("f/pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // Would block forever if it were opened for reading without
        // O_NONBLOCK, or read.
        let e = f.open_read(&rel("pipe")).unwrap_err();
        assert!(matches!(e, FsError::Special { kind: "fifo", .. }), "{e}");
        assert_eq!(f.read_small(&rel("pipe"), 100).unwrap(), None);
        let l = f.list(&rel("")).unwrap();
        assert_eq!(l[0].kind, Kind::Fifo);
        f.remove(&rel("pipe"), Removal::Entry).unwrap();
    }

    #[test]
    fn new_files_appear_only_when_committed() {
        let (dir, f) = setup();
        let nf = f.create(&rel("sub/dir/file.txt"), 0o640).unwrap();
        nf.file().write_all(b"hello").unwrap();
        assert!(!dir.path().join("f/sub/dir/file.txt").exists());
        assert!(f.list(&rel("sub/dir")).unwrap().is_empty());
        nf.commit(&f).unwrap();
        let (mut file, len) = f.open_read(&rel("sub/dir/file.txt")).unwrap();
        let mut s = String::new();
        file.read_to_string(&mut s).unwrap();
        assert_eq!((s.as_str(), len), ("hello", 5));
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(dir.path().join("f/sub/dir/file.txt")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        // Replaces a file, and a link (not its target), never a directory.
        std::fs::write(dir.path().join("victim"), "keep").unwrap();
        symlink(dir.path().join("victim"), dir.path().join("f/l")).unwrap();
        let nf = f.create(&rel("l"), 0o644).unwrap();
        nf.file().write_all(b"new").unwrap();
        nf.commit(&f).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("victim")).unwrap(),
            "keep"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("f/l")).unwrap(),
            "new"
        );
        assert!(matches!(
            f.create(&rel("sub"), 0o644),
            Err(FsError::IsADirectory(_))
        ));
        // A discarded file leaves nothing behind.
        let nf = f.create(&rel("gone"), 0o644).unwrap();
        nf.discard();
        assert!(!dir.path().join("f/gone").exists());
    }

    #[test]
    fn mkdir_and_recursive_remove() {
        let (dir, f) = setup();
        assert!(
            f.mkdir(
                &rel("a/b/c"),
                MkdirOptions {
                    parents: true,
                    exist_ok: false
                }
            )
            .unwrap()
        );
        assert!(
            !f.mkdir(
                &rel("a/b/c"),
                MkdirOptions {
                    parents: true,
                    exist_ok: true
                }
            )
            .unwrap()
        );
        assert!(matches!(
            f.mkdir(
                &rel("a/b/c"),
                MkdirOptions {
                    parents: true,
                    exist_ok: false
                }
            ),
            Err(FsError::Exists(_))
        ));
        assert!(matches!(
            f.mkdir(
                &rel("x/y"),
                MkdirOptions {
                    parents: false,
                    exist_ok: false
                }
            ),
            Err(FsError::NotFound(_))
        ));
        std::fs::write(dir.path().join("f/a/b/c/file"), "x").unwrap();
        std::fs::write(dir.path().join("canary"), "keep").unwrap();
        symlink(dir.path(), dir.path().join("f/a/b/up")).unwrap();
        assert!(matches!(
            f.remove(&rel("a"), Removal::Entry),
            Err(FsError::NotEmpty(_))
        ));
        f.remove(&rel("a"), Removal::Tree).unwrap();
        assert!(!dir.path().join("f/a").exists());
        assert!(dir.path().join("canary").exists());
        assert!(matches!(
            f.remove(&rel(""), Removal::Tree),
            Err(FsError::Invalid(_))
        ));
        f.mkdir(
            &rel("z"),
            MkdirOptions {
                parents: false,
                exist_ok: false,
            },
        )
        .unwrap();
        f.clear().unwrap();
        assert!(f.list(&rel("")).unwrap().is_empty());
        assert!(dir.path().join("f").is_dir());
    }

    #[test]
    fn a_home_follows_links_that_stay_beneath_it() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("d/e")).unwrap();
        std::fs::write(dir.path().join("secret"), "host").unwrap();
        std::fs::write(home.join("d/e/f"), "x").unwrap();
        symlink("d/e", home.join("in")).unwrap();
        symlink("..", home.join("up")).unwrap();
        symlink(dir.path(), home.join("abs")).unwrap();
        let t = Tree::open_path(&home, Links::FollowBeneath).unwrap();
        assert_eq!(t.stat_target(&rel("in/f")).unwrap().kind, Kind::File);
        assert_eq!(t.stat_target(&rel("in")).unwrap().kind, Kind::Dir);
        // `stat` and deletes see the link itself.
        assert_eq!(t.stat(&rel("in")).unwrap().kind, Kind::Symlink);
        for out in ["up/secret", "abs/secret", "up", "abs"] {
            assert!(
                matches!(t.stat_target(&rel(out)), Err(FsError::Escape(_))),
                "{out}"
            );
        }
        assert!(matches!(
            t.create(&rel("up/new"), 0o644),
            Err(FsError::Escape(_))
        ));
        t.remove(&rel("up"), Removal::Tree).unwrap();
        assert!(dir.path().join("secret").exists());
    }

    #[test]
    fn rename_neither_replaces_nor_follows() {
        let (dir, f) = setup();
        let root = dir.path().join("f");
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("a"), "a").unwrap();
        std::fs::write(root.join("b"), "b").unwrap();
        symlink(dir.path(), root.join("out")).unwrap();
        assert!(matches!(
            f.rename(&rel("a"), &rel("b")),
            Err(FsError::Exists(_))
        ));
        assert!(matches!(
            f.rename(&rel("d"), &rel("d/x")),
            Err(FsError::Invalid(_))
        ));
        assert!(matches!(
            f.rename(&rel("a"), &rel("out/a")),
            Err(FsError::Symlink(_))
        ));
        assert!(matches!(
            f.rename(&rel(""), &rel("x")),
            Err(FsError::Invalid(_))
        ));
        f.rename(&rel("out"), &rel("d/link")).unwrap();
        assert!(
            std::fs::symlink_metadata(root.join("d/link"))
                .unwrap()
                .is_symlink()
        );
        f.rename(&rel("a"), &rel("d/a")).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("d/a")).unwrap(), "a");
    }

    #[test]
    fn walk_opens_files_reads_links_and_names_the_rest() {
        let (dir, f) = setup();
        let root = dir.path().join("f");
        std::fs::create_dir_all(root.join("t/u")).unwrap();
        std::fs::write(root.join("t/u/file"), "12345").unwrap();
        symlink("/etc/passwd", root.join("t/link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("t/pipe"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let mut seen = Vec::new();
        f.walk(&rel("t"), Path::new("top"), &mut |p, e, node| {
            let what = match node {
                Node::Dir => "dir".to_owned(),
                Node::File(mut file) => {
                    let mut s = String::new();
                    file.read_to_string(&mut s).unwrap();
                    format!("file {} {s}", e.size)
                }
                Node::Link(t) => format!("link {}", String::from_utf8(t).unwrap()),
                Node::Special => format!("special {}", e.kind.as_str()),
            };
            seen.push(format!("{} {what}", p.display()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                "top dir",
                "top/link link /etc/passwd",
                "top/pipe special fifo",
                "top/u dir",
                "top/u/file file 5 12345",
            ]
        );
        // A tree that refuses links walks a link as the link itself.
        let mut kinds = Vec::new();
        f.walk(&rel("t/link"), Path::new("x"), &mut |_, e, node| {
            kinds.push((e.kind, matches!(node, Node::Link(_))));
            Ok(())
        })
        .unwrap();
        assert_eq!(kinds, vec![(Kind::Symlink, true)]);
    }
}
