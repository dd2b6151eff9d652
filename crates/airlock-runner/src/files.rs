//! `airlock-runner files …`: file transfer inside a session, run by the
//! agent (`docker exec`) as the session user, so permissions are the user's
//! own and every path is confined to the home directory.
//!
//! - `stat PATH…`: checks paths (exit 3 not found, 4 permission denied, 2
//!   invalid or escaping) and prints JSON.
//! - `pack PATH`: writes a tar of PATH (top-level entry = its base name,
//!   directories recursive, symlinks kept as links, modes kept) to stdout.
//! - `unpack`: reads the framed upload stream (`airlock_proto::files`) from
//!   stdin; each file is written to a temporary name and renamed into place
//!   only when complete, so an interrupted upload never looks finished.
//! - `ls PATH`: JSON listing (Backend.AI's `session ls` shape).
//! - `mv SRC DST`: renames SRC to DST (which must not exist yet; its
//!   directory must); a symbolic link is renamed itself, never followed.
//! - `rm PATH`: removes a file, a link (not its target) or a directory with
//!   everything in it (links inside are removed, never followed).
//! - `mkdir PATH`: creates one directory (its parent must exist).
//!
//! `mv`, `rm` and `mkdir` work on the last component of a path: its
//! directory must resolve inside the home, and the home itself is refused.
//!
//! Every path is resolved beneath an open handle of the home, and the work
//! is done on descriptors, by [`airlock_beneath`] (the one home of path
//! confinement, shared with the gateway's folder I/O) with
//! [`Links::FollowBeneath`]: links that stay inside the home are followed,
//! links that lead out (or are absolute) are refused, and the folders
//! mounted in the home are reachable. Special files are never opened.

use std::io::{BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use airlock_beneath::{
    Entry, FsError, Kind, Links, MkdirOptions, NewFile, Node, RelPath, Removal, Tree,
};
use airlock_proto::agent::FileEntry;
use airlock_proto::files::{self as frames, FileHeader};
use airlock_proto::validate::mode_string;

/// A failed file operation; [`FilesError::exit_code`] tells the agent what
/// kind.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Bad or escaping path.
    #[error("{0}")]
    Invalid(String),
    /// Not there.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// Not allowed.
    #[error("{0}: permission denied")]
    Permission(String),
    /// Anything else.
    #[error("{0}")]
    Io(String),
}

impl FilesError {
    /// Process exit code (2 invalid, 3 not found, 4 permission, 1 other).
    pub fn exit_code(&self) -> i32 {
        match self {
            FilesError::Invalid(_) => 2,
            FilesError::NotFound(_) => 3,
            FilesError::Permission(_) => 4,
            FilesError::Io(_) => 1,
        }
    }

    /// What went wrong with `path` (as the user wrote it) inside `home`.
    fn from_fs(e: FsError, path: &str, home: &Home) -> Self {
        match e {
            FsError::NotFound(_) => FilesError::NotFound(path.to_owned()),
            FsError::PermissionDenied(_) => FilesError::Permission(path.to_owned()),
            FsError::Escape(_) => FilesError::Invalid(format!(
                "{path:?} leads outside {} (through a link that leaves it, an absolute link, or across file systems)",
                home.shown
            )),
            FsError::Io(e) => FilesError::Io(format!("{path}: {e}")),
            other => FilesError::Invalid(other.to_string()),
        }
    }

    fn write(e: &std::io::Error) -> Self {
        FilesError::Io(e.to_string())
    }
}

/// The home, open: every path is resolved beneath it.
struct Home {
    tree: Tree,
    shown: String,
}

impl Home {
    fn open(root: &Path) -> Result<Self, FilesError> {
        let shown = root.display().to_string();
        let tree = Tree::open_path(root, Links::FollowBeneath).map_err(|e| match e {
            FsError::NotFound(_) => FilesError::NotFound(shown.clone()),
            FsError::PermissionDenied(_) => FilesError::Permission(shown.clone()),
            e => FilesError::Io(format!("{shown}: {e}")),
        })?;
        Ok(Self { tree, shown })
    }

    /// `user_path` (absolute under the home, or relative to it), checked.
    fn rel(&self, user_path: &str) -> Result<RelPath, FilesError> {
        let rel = frames::confine(user_path, &self.shown).map_err(FilesError::Invalid)?;
        RelPath::new(&rel).map_err(|e| FilesError::Invalid(e.to_string()))
    }

    /// Like [`Home::rel`], refusing the home itself (for `mv`, `rm`, `mkdir`).
    fn rel_below(&self, user_path: &str) -> Result<RelPath, FilesError> {
        let rel = self.rel(user_path)?;
        if rel.is_root() {
            return Err(FilesError::Invalid(format!(
                "{user_path:?} is the home directory {} itself",
                self.shown
            )));
        }
        Ok(rel)
    }

    fn err<'a>(&'a self, path: &'a str) -> impl Fn(FsError) -> FilesError + 'a {
        move |e| FilesError::from_fs(e, path, self)
    }
}

/// Renames `from` to `to` (both inside `root`); `to` must not exist yet.
/// A symbolic link is renamed itself.
pub fn mv(root: &Path, from: &str, to: &str) -> Result<(), FilesError> {
    let home = Home::open(root)?;
    let src = home.rel_below(from)?;
    let dst = home.rel_below(to)?;
    home.tree.rename(&src, &dst).map_err(|e| match e {
        FsError::Exists(_) => FilesError::Invalid(format!(
            "{to:?} already exists; remove it first or pick another name"
        )),
        FsError::NotFound(p) if p == dst.parent().as_str() => FilesError::NotFound(to.to_owned()),
        e => FilesError::from_fs(e, from, &home),
    })
}

/// Removes `path`: a file or link itself, or a directory and everything
/// in it (links inside are removed, not followed; mounts are not crossed).
pub fn rm(root: &Path, path: &str) -> Result<(), FilesError> {
    let home = Home::open(root)?;
    let rel = home.rel_below(path)?;
    home.tree
        .remove(&rel, Removal::Tree)
        .map_err(home.err(path))
}

/// Creates the directory `path` (its parent must exist).
pub fn mkdir(root: &Path, path: &str) -> Result<(), FilesError> {
    let home = Home::open(root)?;
    let rel = home.rel_below(path)?;
    let opts = MkdirOptions {
        parents: false,
        exist_ok: false,
    };
    match home.tree.mkdir(&rel, opts) {
        Err(FsError::Exists(_)) => Err(FilesError::Invalid(format!("{path:?} already exists"))),
        r => r.map(drop).map_err(home.err(path)),
    }
}

/// Checks paths and prints `[{"path","kind","size"}]`.
pub fn stat(root: &Path, paths: &[String], out: &mut impl Write) -> Result<(), FilesError> {
    let home = Home::open(root)?;
    let mut list = Vec::new();
    for p in paths {
        let rel = home.rel(p)?;
        let e = home.tree.stat_target(&rel).map_err(home.err(p))?;
        let kind = match e.kind {
            Kind::Dir => "dir",
            Kind::File => "file",
            k => {
                return Err(FilesError::Invalid(format!(
                    "{p:?} is a {}, not a regular file; airlock does not read special files",
                    k.as_str()
                )));
            }
        };
        list.push(serde_json::json!({"path": p, "kind": kind, "size": e.size}));
    }
    writeln!(out, "{}", serde_json::Value::Array(list)).map_err(|e| FilesError::write(&e))
}

/// Writes a tar of `path` to `out`: its top-level entry is the path's last
/// component (`home` for the home itself), directories are recursive,
/// links are archived as links and modes, owners and times are kept.
/// Special files are left out (and named on stderr).
pub fn pack(root: &Path, path: &str, out: impl Write) -> Result<(), FilesError> {
    let home = Home::open(root)?;
    let rel = home.rel(path)?;
    let top = rel.file_name().map_or_else(
        || Path::new("home").to_owned(),
        |n| Path::new(std::ffi::OsStr::from_bytes(n.to_bytes())).to_owned(),
    );
    let mut b = tar::Builder::new(out);
    let mut visit = |p: &Path, e: &Entry, node: Node| -> Result<(), FsError> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode & 0o7777);
        h.set_uid(u64::from(e.uid));
        h.set_gid(u64::from(e.gid));
        h.set_mtime(u64::try_from(e.mtime).unwrap_or(0));
        match node {
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty())?;
            }
            Node::File(f) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(e.size);
                b.append_data(&mut h, p, Exact::new(f, e.size, p))?;
            }
            Node::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, p, std::ffi::OsStr::from_bytes(&target))?;
            }
            Node::Special => {
                eprintln!(
                    "airlock-runner: left out {} ({}): special files are not packed",
                    p.display(),
                    e.kind.as_str()
                );
            }
        }
        Ok(())
    };
    home.tree
        .walk(&rel, &top, &mut visit)
        .map_err(home.err(path))?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| FilesError::write(&e))
}

/// Reads exactly `len` bytes of a file, or fails: a file that shrinks while
/// it is packed must not leave a short, corrupt tar entry.
struct Exact<R> {
    inner: std::io::Take<R>,
    left: u64,
    shown: String,
}

impl<R: Read> Exact<R> {
    fn new(inner: R, len: u64, path: &Path) -> Self {
        Self {
            inner: inner.take(len),
            left: len,
            shown: path.display().to_string(),
        }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was packed; try again", self.shown),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn read_frame(input: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<u8>, FilesError> {
    let mut h = [0u8; 5];
    match input.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(FilesError::Io(e.to_string())),
    }
    let (tag, len) = frames::parse_header(h);
    if len > frames::MAX_FRAME {
        return Err(FilesError::Invalid(format!(
            "frame of {len} bytes is too large"
        )));
    }
    buf.resize(len, 0);
    input
        .read_exact(buf)
        .map_err(|_| FilesError::Io("the upload was interrupted".into()))?;
    Ok(Some(tag))
}

/// A file being received: unnamed until its END frame.
struct Partial {
    file: NewFile,
    path: String,
    size: u64,
}

/// Receives a framed upload into `root`; prints `{"files":[{path,size}]}`.
/// Each file is written to an unnamed file and named only when complete,
/// replacing a file or link there (never writing through a link).
pub fn unpack(root: &Path, input: impl Read, out: &mut impl Write) -> Result<(), FilesError> {
    let home = Home::open(root)?;
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let mut buf = Vec::with_capacity(frames::MAX_FRAME);
    let mut current: Option<Partial> = None;
    let mut done = Vec::new();
    let result = (|| -> Result<(), FilesError> {
        loop {
            let Some(tag) = read_frame(&mut input, &mut buf)? else {
                return Err(FilesError::Io(
                    "the upload ended before it was complete; nothing partial was kept".into(),
                ));
            };
            match tag {
                frames::START => {
                    if current.is_some() {
                        return Err(FilesError::Invalid(
                            "a file started before the previous ended".into(),
                        ));
                    }
                    let h: FileHeader = serde_json::from_slice(&buf)
                        .map_err(|e| FilesError::Invalid(format!("bad file header: {e}")))?;
                    let rel = home.rel(&h.path)?;
                    if rel.is_root() {
                        return Err(FilesError::Invalid(format!(
                            "{:?} does not name a file",
                            h.path
                        )));
                    }
                    let file = home.tree.create(&rel, h.mode).map_err(home.err(&h.path))?;
                    current = Some(Partial {
                        file,
                        path: h.path,
                        size: 0,
                    });
                }
                frames::DATA => {
                    let p = current
                        .as_mut()
                        .ok_or_else(|| FilesError::Invalid("data outside a file".into()))?;
                    p.file
                        .file()
                        .write_all(&buf)
                        .map_err(|e| FilesError::Io(format!("{}: {e}", p.path)))?;
                    p.size += buf.len() as u64;
                }
                frames::END => {
                    let p = current.take().ok_or_else(|| {
                        FilesError::Invalid("end of a file that never started".into())
                    })?;
                    p.file.commit(&home.tree).map_err(home.err(&p.path))?;
                    done.push(serde_json::json!({"path": p.path, "size": p.size}));
                }
                frames::FINISH => return Ok(()),
                other => return Err(FilesError::Invalid(format!("unknown frame type {other}"))),
            }
        }
    })();
    if let Some(p) = current {
        p.file.discard();
    }
    result?;
    writeln!(out, "{}", serde_json::json!({"files": done})).map_err(|e| FilesError::write(&e))
}

/// Lists a directory (or describes one file) as JSON [`FileEntry`]s,
/// sorted by name; entries are not followed (a link lists as a link).
pub fn ls(root: &Path, path: &str, out: &mut impl Write) -> Result<(), FilesError> {
    let home = Home::open(root)?;
    let rel = home.rel(path)?;
    let entry = |e: Entry| FileEntry {
        filename: e.name,
        mode: mode_string(e.mode),
        size: e.size,
        ctime: e.ctime as f64,
        mtime: e.mtime as f64,
        atime: e.atime as f64,
    };
    let target = home.tree.stat_target(&rel).map_err(home.err(path))?;
    let list: Vec<FileEntry> = if target.kind == Kind::Dir {
        let mut l = home.tree.list(&rel).map_err(home.err(path))?;
        l.sort_by(|a, b| a.name.cmp(&b.name));
        l.into_iter().map(entry).collect()
    } else {
        vec![entry(target)]
    };
    let text = serde_json::to_string(&list).map_err(|e| FilesError::Io(e.to_string()))?;
    writeln!(out, "{text}").map_err(|e| FilesError::write(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Whether `p` resolves inside the home (through `stat`).
    fn resolve(root: &Path, p: &str) -> Result<(), FilesError> {
        stat(root, &[p.to_owned()], &mut Vec::new())
    }

    fn upload(files: &[(&str, &[u8])], finish: bool) -> Vec<u8> {
        let mut v = Vec::new();
        for (p, data) in files {
            let h = serde_json::to_vec(&FileHeader {
                path: (*p).into(),
                mode: 0o600,
            })
            .unwrap();
            v.extend(frames::frame(frames::START, &h));
            v.extend(frames::frame(frames::DATA, data));
            v.extend(frames::frame(frames::END, &[]));
        }
        if finish {
            v.extend(frames::frame(frames::FINISH, &[]));
        }
        v
    }

    #[test]
    fn unpack_writes_complete_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut out = Vec::new();
        unpack(
            root,
            &upload(&[("a/b.txt", b"hello"), ("c", b"x")], true)[..],
            &mut out,
        )
        .unwrap();
        assert_eq!(std::fs::read(root.join("a/b.txt")).unwrap(), b"hello");
        let mode = std::fs::metadata(root.join("c"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Cut off: the last file must not appear.
        let mut data = upload(&[("d.txt", b"partial data")], false);
        data.truncate(data.len() - 5);
        assert!(unpack(root, &data[..], &mut Vec::new()).is_err());
        assert!(!root.join("d.txt").exists());
        let leftovers: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("airlock-upload"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn confinement() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        std::fs::write(root.join("f"), "x").unwrap();
        assert!(matches!(
            resolve(root, "escape/passwd"),
            Err(FilesError::Invalid(_))
        ));
        assert!(matches!(
            resolve(root, "../etc"),
            Err(FilesError::Invalid(_))
        ));
        assert!(matches!(
            resolve(root, "/etc/passwd"),
            Err(FilesError::Invalid(_))
        ));
        assert!(matches!(
            resolve(root, "nope"),
            Err(FilesError::NotFound(_))
        ));
        assert!(resolve(root, "f").is_ok());
        let bad = upload(&[("escape/x", b"no")], true);
        assert!(matches!(
            unpack(root, &bad[..], &mut Vec::new()),
            Err(FilesError::Invalid(_))
        ));
        let bad = upload(&[("../x", b"no")], true);
        assert!(unpack(root, &bad[..], &mut Vec::new()).is_err());
    }

    #[test]
    fn pack_keeps_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("id_container"), "key").unwrap();
        std::fs::set_permissions(
            root.join("id_container"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let mut tarball = Vec::new();
        pack(root, "id_container", &mut tarball).unwrap();
        let mut ar = tar::Archive::new(&tarball[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("id_container"));
        assert_eq!(e.header().mode().unwrap() & 0o777, 0o600);
    }

    #[test]
    fn mv_renames_without_following_or_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/a.txt"), "a").unwrap();
        std::fs::write(root.join("b.txt"), "b").unwrap();
        mv(root, "d/a.txt", "/home/x").unwrap_err();
        mv(root, "d/a.txt", "c.txt").unwrap();
        assert_eq!(std::fs::read(root.join("c.txt")).unwrap(), b"a");
        assert!(matches!(
            mv(root, "c.txt", "b.txt"),
            Err(FilesError::Invalid(_))
        ));
        assert_eq!(std::fs::read(root.join("b.txt")).unwrap(), b"b");
        assert!(matches!(
            mv(root, "nope", "x"),
            Err(FilesError::NotFound(_))
        ));
        assert!(matches!(mv(root, "d", "d/e"), Err(FilesError::Invalid(_))));
        assert!(matches!(mv(root, ".", "x"), Err(FilesError::Invalid(_))));
        assert!(matches!(
            mv(root, "b.txt", "../b.txt"),
            Err(FilesError::Invalid(_))
        ));
        assert!(matches!(
            mv(root, "b.txt", "missing/b.txt"),
            Err(FilesError::NotFound(_))
        ));
        // A link is renamed itself; one leading out is no way out.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        mv(root, "out", "link").unwrap();
        assert!(
            std::fs::symlink_metadata(root.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(matches!(
            mv(root, "link/secret", "s"),
            Err(FilesError::Invalid(_))
        ));
        assert!(matches!(
            mv(root, "b.txt", "link/b.txt"),
            Err(FilesError::Invalid(_))
        ));
        assert!(outside.path().join("secret").exists());
    }

    #[test]
    fn rm_removes_trees_but_not_what_links_point_to() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "k").unwrap();
        std::fs::create_dir_all(root.join("t/u")).unwrap();
        std::fs::write(root.join("t/u/f"), "f").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("t/out")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("top")).unwrap();
        rm(root, "top").unwrap();
        assert!(!root.join("top").exists());
        assert!(matches!(
            rm(root, "t/out/keep"),
            Err(FilesError::Invalid(_))
        ));
        rm(root, "t").unwrap();
        assert!(!root.join("t").exists());
        assert!(outside.path().join("keep").exists());
        let home = root.display().to_string();
        for home in ["", ".", "./", home.as_str()] {
            assert!(
                matches!(rm(root, home), Err(FilesError::Invalid(_))),
                "{home:?}"
            );
        }
        assert!(matches!(rm(root, "../x"), Err(FilesError::Invalid(_))));
        assert!(matches!(rm(root, "gone"), Err(FilesError::NotFound(_))));
        assert!(root.exists());
    }

    #[test]
    fn mkdir_makes_one_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        mkdir(root, "a").unwrap();
        assert!(root.join("a").is_dir());
        assert!(matches!(mkdir(root, "a"), Err(FilesError::Invalid(_))));
        assert!(matches!(mkdir(root, "x/y"), Err(FilesError::NotFound(_))));
        assert!(matches!(mkdir(root, "../z"), Err(FilesError::Invalid(_))));
    }

    #[test]
    fn links_inside_the_home_are_followed_links_out_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::write(root.join("data/sub/f.txt"), "inside").unwrap();
        std::os::unix::fs::symlink("data/sub", root.join("rel-in")).unwrap();
        std::os::unix::fs::symlink("../../", root.join("data/up")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("abs-out")).unwrap();
        assert!(resolve(root, "rel-in/f.txt").is_ok());
        let mut out = Vec::new();
        ls(root, "rel-in", &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("f.txt"));
        for bad in ["data/up", "data/up/etc/passwd", "abs-out/secret"] {
            let e = resolve(root, bad).unwrap_err();
            assert!(matches!(e, FilesError::Invalid(_)), "{bad}: {e}");
            assert!(e.to_string().contains("leads outside"), "{e}");
        }
        let bad = upload(&[("abs-out/new", b"no")], true);
        assert!(matches!(
            unpack(root, &bad[..], &mut Vec::new()),
            Err(FilesError::Invalid(_))
        ));
        assert!(!outside.path().join("new").exists());
        // Packing through a link inside packs what it leads to; a link met
        // inside the tree is archived as a link, never followed.
        let mut tarball = Vec::new();
        pack(root, "data", &mut tarball).unwrap();
        let mut ar = tar::Archive::new(&tarball[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let kind = e.header().entry_type();
            seen.push((e.path().unwrap().display().to_string(), kind));
        }
        assert_eq!(
            seen,
            vec![
                ("data".to_owned(), tar::EntryType::Directory),
                ("data/sub".to_owned(), tar::EntryType::Directory),
                ("data/sub/f.txt".to_owned(), tar::EntryType::Regular),
                ("data/up".to_owned(), tar::EntryType::Symlink),
            ]
        );
    }

    #[test]
    fn special_files_are_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), "x").unwrap();
        nix::unistd::mkfifo(
            &root.join("d/pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        // Either would block forever if the FIFO were opened or read.
        let e = resolve(root, "d/pipe").unwrap_err();
        assert!(e.to_string().contains("fifo"), "{e}");
        let mut tarball = Vec::new();
        pack(root, "d", &mut tarball).unwrap();
        let mut ar = tar::Archive::new(&tarball[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["d", "d/f"]);
    }

    #[test]
    fn an_upload_replaces_a_link_and_never_writes_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "keep").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), root.join("l")).unwrap();
        let data = upload(&[("l", b"new")], true);
        unpack(root, &data[..], &mut Vec::new()).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.path().join("victim")).unwrap(),
            "keep"
        );
        assert!(
            !std::fs::symlink_metadata(root.join("l"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(root.join("l")).unwrap(), "new");
    }
}
