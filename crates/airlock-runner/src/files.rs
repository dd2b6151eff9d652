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

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

    fn io(path: &str, e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => FilesError::NotFound(path.to_owned()),
            std::io::ErrorKind::PermissionDenied => FilesError::Permission(path.to_owned()),
            _ => FilesError::Io(format!("{path}: {e}")),
        }
    }
}

fn home_str(root: &Path) -> String {
    root.display().to_string()
}

/// Resolves an existing path inside `root`, refusing `..`, absolute paths
/// elsewhere, and symlinks that lead out.
pub fn resolve(root: &Path, user_path: &str) -> Result<PathBuf, FilesError> {
    let rel = frames::confine(user_path, &home_str(root)).map_err(FilesError::Invalid)?;
    let full = root.join(&rel);
    let canon = full
        .canonicalize()
        .map_err(|e| FilesError::io(user_path, &e))?;
    let root_canon = root
        .canonicalize()
        .map_err(|e| FilesError::io(&home_str(root), &e))?;
    if !canon.starts_with(&root_canon) {
        return Err(FilesError::Invalid(format!(
            "{user_path:?} leads outside {} through a symbolic link",
            root.display()
        )));
    }
    Ok(canon)
}

/// The canonical directory that holds `user_path` (resolved inside
/// `root`, like [`resolve`]) and the path's last component, which is not
/// followed. Refuses the home itself.
fn resolve_last(root: &Path, user_path: &str) -> Result<(PathBuf, String), FilesError> {
    let rel = frames::confine(user_path, &home_str(root)).map_err(FilesError::Invalid)?;
    let (dir, name) = match rel.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None if rel.is_empty() => {
            return Err(FilesError::Invalid(format!(
                "{user_path:?} is the home directory {} itself",
                root.display()
            )));
        }
        None => ("", rel.as_str()),
    };
    let parent = if dir.is_empty() {
        root.canonicalize()
            .map_err(|e| FilesError::io(&home_str(root), &e))?
    } else {
        resolve(root, dir)?
    };
    if !parent.is_dir() {
        return Err(FilesError::Invalid(format!("{dir:?} is not a directory")));
    }
    Ok((parent, name.to_owned()))
}

/// Renames `from` to `to` (both inside `root`); `to` must not exist yet.
/// A symbolic link is renamed itself.
pub fn mv(root: &Path, from: &str, to: &str) -> Result<(), FilesError> {
    let (src_dir, src_name) = resolve_last(root, from)?;
    let (dst_dir, dst_name) = resolve_last(root, to)?;
    let src = src_dir.join(&src_name);
    let dst = dst_dir.join(&dst_name);
    let meta = std::fs::symlink_metadata(&src).map_err(|e| FilesError::io(from, &e))?;
    match std::fs::symlink_metadata(&dst) {
        Ok(_) => {
            return Err(FilesError::Invalid(format!(
                "{to:?} already exists; remove it first or pick another name"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FilesError::io(to, &e)),
    }
    if meta.is_dir() && dst.starts_with(&src) {
        return Err(FilesError::Invalid(format!(
            "cannot move {from:?} into itself ({to:?})"
        )));
    }
    std::fs::rename(&src, &dst).map_err(|e| FilesError::io(from, &e))
}

/// Removes `path`: a file or link itself, or a directory and everything
/// in it (links inside are removed, not followed).
pub fn rm(root: &Path, path: &str) -> Result<(), FilesError> {
    let (dir, name) = resolve_last(root, path)?;
    let full = dir.join(&name);
    let meta = std::fs::symlink_metadata(&full).map_err(|e| FilesError::io(path, &e))?;
    if meta.is_dir() {
        // std's remove_dir_all works beneath a directory handle and never
        // follows links.
        std::fs::remove_dir_all(&full)
    } else {
        std::fs::remove_file(&full)
    }
    .map_err(|e| FilesError::io(path, &e))
}

/// Creates the directory `path` (its parent must exist).
pub fn mkdir(root: &Path, path: &str) -> Result<(), FilesError> {
    let (dir, name) = resolve_last(root, path)?;
    match std::fs::create_dir(dir.join(&name)) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(FilesError::Invalid(format!("{path:?} already exists")))
        }
        r => r.map_err(|e| FilesError::io(path, &e)),
    }
}

/// Checks paths and prints `[{"path","kind","size"}]`.
pub fn stat(root: &Path, paths: &[String], out: &mut impl Write) -> Result<(), FilesError> {
    let mut list = Vec::new();
    for p in paths {
        let full = resolve(root, p)?;
        let meta = std::fs::metadata(&full).map_err(|e| FilesError::io(p, &e))?;
        if meta.is_dir() {
            std::fs::read_dir(&full).map_err(|e| FilesError::io(p, &e))?;
        } else {
            File::open(&full).map_err(|e| FilesError::io(p, &e))?;
        }
        list.push(serde_json::json!({
            "path": p,
            "kind": if meta.is_dir() { "dir" } else { "file" },
            "size": meta.len(),
        }));
    }
    writeln!(out, "{}", serde_json::Value::Array(list)).map_err(|e| FilesError::Io(e.to_string()))
}

/// Writes a tar of `path` to `out`.
pub fn pack(root: &Path, path: &str, out: impl Write) -> Result<(), FilesError> {
    let full = resolve(root, path)?;
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "home".to_owned());
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let meta = std::fs::metadata(&full).map_err(|e| FilesError::io(path, &e))?;
    let r = if meta.is_dir() {
        b.append_dir_all(&name, &full)
    } else {
        let mut f = File::open(&full).map_err(|e| FilesError::io(path, &e))?;
        b.append_file(&name, &mut f)
    };
    r.map_err(|e| FilesError::io(path, &e))?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| FilesError::Io(e.to_string()))
}

/// Creates the parent directories of `rel` inside `root` and returns the
/// (canonical) parent.
fn prepare_parent(root: &Path, rel: &str) -> Result<PathBuf, FilesError> {
    let root_canon = root
        .canonicalize()
        .map_err(|e| FilesError::io(&home_str(root), &e))?;
    let mut dir = root_canon.clone();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                let t = dir.canonicalize().map_err(|e| FilesError::io(rel, &e))?;
                if !t.starts_with(&root_canon) {
                    return Err(FilesError::Invalid(format!(
                        "{rel:?} leads outside {} through a symbolic link",
                        root.display()
                    )));
                }
                dir = t;
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(FilesError::Invalid(format!(
                    "{rel:?}: {} is a file, not a directory",
                    dir.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&dir).map_err(|e| FilesError::io(rel, &e))?;
            }
            Err(e) => return Err(FilesError::io(rel, &e)),
        }
    }
    Ok(dir)
}

struct Partial {
    tmp: PathBuf,
    target: PathBuf,
    file: File,
    mode: u32,
    path: String,
    size: u64,
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

/// Receives a framed upload into `root`; prints `{"files":[{path,size}]}`.
pub fn unpack(root: &Path, input: impl Read, out: &mut impl Write) -> Result<(), FilesError> {
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
                    let rel =
                        frames::confine(&h.path, &home_str(root)).map_err(FilesError::Invalid)?;
                    if rel.is_empty() {
                        return Err(FilesError::Invalid(format!(
                            "{:?} does not name a file",
                            h.path
                        )));
                    }
                    let parent = prepare_parent(root, &rel)?;
                    let name = rel.rsplit('/').next().unwrap_or(&rel).to_owned();
                    let target = parent.join(&name);
                    if let Ok(m) = std::fs::symlink_metadata(&target) {
                        if m.is_dir() {
                            return Err(FilesError::Invalid(format!(
                                "{:?} is a directory",
                                h.path
                            )));
                        }
                        if m.file_type().is_symlink() {
                            return Err(FilesError::Invalid(format!(
                                "{:?} is a symbolic link; refusing to write through it",
                                h.path
                            )));
                        }
                    }
                    let tmp = parent.join(format!(".{name}.airlock-part-{}", std::process::id()));
                    let file = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .custom_flags(nix::libc::O_NOFOLLOW)
                        .open(&tmp)
                        .map_err(|e| FilesError::io(&h.path, &e))?;
                    current = Some(Partial {
                        tmp,
                        target,
                        file,
                        mode: h.mode & 0o7777,
                        path: h.path,
                        size: 0,
                    });
                }
                frames::DATA => {
                    let p = current
                        .as_mut()
                        .ok_or_else(|| FilesError::Invalid("data outside a file".into()))?;
                    p.file
                        .write_all(&buf)
                        .map_err(|e| FilesError::io(&p.path, &e))?;
                    p.size += buf.len() as u64;
                }
                frames::END => {
                    let p = current.take().ok_or_else(|| {
                        FilesError::Invalid("end of a file that never started".into())
                    })?;
                    p.file
                        .sync_data()
                        .map_err(|e| FilesError::io(&p.path, &e))?;
                    std::fs::set_permissions(&p.tmp, std::fs::Permissions::from_mode(p.mode))
                        .map_err(|e| FilesError::io(&p.path, &e))?;
                    std::fs::rename(&p.tmp, &p.target).map_err(|e| FilesError::io(&p.path, &e))?;
                    done.push(serde_json::json!({"path": p.path, "size": p.size}));
                }
                frames::FINISH => return Ok(()),
                other => return Err(FilesError::Invalid(format!("unknown frame type {other}"))),
            }
        }
    })();
    if let Some(p) = current {
        let _ = std::fs::remove_file(&p.tmp);
    }
    result?;
    writeln!(out, "{}", serde_json::json!({"files": done}))
        .map_err(|e| FilesError::Io(e.to_string()))
}

/// Lists a directory (or describes one file) as JSON [`FileEntry`]s.
pub fn ls(root: &Path, path: &str, out: &mut impl Write) -> Result<(), FilesError> {
    let full = resolve(root, path)?;
    let meta = std::fs::metadata(&full).map_err(|e| FilesError::io(path, &e))?;
    let entry = |name: String, m: &std::fs::Metadata| FileEntry {
        filename: name,
        mode: mode_string(m.mode()),
        size: m.len(),
        ctime: m.ctime() as f64,
        mtime: m.mtime() as f64,
        atime: m.atime() as f64,
    };
    let mut list = Vec::new();
    if meta.is_dir() {
        for e in std::fs::read_dir(&full).map_err(|e| FilesError::io(path, &e))? {
            let e = e.map_err(|e| FilesError::io(path, &e))?;
            if let Ok(m) = std::fs::symlink_metadata(e.path()) {
                list.push(entry(e.file_name().to_string_lossy().into_owned(), &m));
            }
        }
        list.sort_by(|a, b| a.filename.cmp(&b.filename));
    } else {
        let name = full
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        list.push(entry(name, &meta));
    }
    let text = serde_json::to_string(&list).map_err(|e| FilesError::Io(e.to_string()))?;
    writeln!(out, "{text}").map_err(|e| FilesError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            .filter(|e| e.file_name().to_string_lossy().contains("airlock-part"))
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
}
