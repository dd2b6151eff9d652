//! The filesystem handler: SFTP requests as filesystem operations.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use russh_sftp::protocol::{
    Attrs, ExtendedReply, File as SftpFile, FileAttributes, Handle, Name, OpenFlags, Packet,
    Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tracing::{debug, warn};

use super::longname::longname;
use super::wire::{
    FXP_READ, FXP_WRITE, encode, err, escape, escape_request, get_str, get_string, status_bytes,
    status_of, status_reply_bytes, unescape,
};
use super::{LIMIT_PACKET, LIMIT_RW, ReadSpec, Reply};
use crate::passwd::NameMaps;

/// Entries per READDIR reply.
const DIR_BATCH: usize = 100;

fn ok_status(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".into(),
        language_tag: "en".into(),
    }
}

/// File attributes built from `st_mode` (not from `Metadata::is_dir`, which
/// loses fifos, sockets and devices — docs/ssh-server-notes.md N6).
pub fn attrs_of(m: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(m.size()),
        uid: Some(m.uid()),
        user: None,
        gid: Some(m.gid()),
        group: None,
        permissions: Some(m.mode()),
        atime: Some(clamp_time(m.atime())),
        mtime: Some(clamp_time(m.mtime())),
    }
}

fn clamp_time(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

enum OpenHandle {
    File {
        file: Arc<File>,
        /// As opened (for the audit trail).
        path: PathBuf,
        /// Opened for writing.
        write: bool,
    },
    Dir {
        path: PathBuf,
        iter: Option<std::fs::ReadDir>,
        dots_sent: bool,
    },
}

/// The filesystem handler, rooted at nothing (absolute paths are served as
/// they are; relative paths are relative to `home`).
pub struct FsHandler {
    home: PathBuf,
    names: NameMaps,
    handles: HashMap<String, OpenHandle>,
    next: u64,
    /// The connection's peer: file operations go to the audit trail.
    pub peer: Option<std::net::SocketAddr>,
}

/// The attributes a SETSTAT changes, for the audit trail.
fn attrs_audit(a: &FileAttributes) -> serde_json::Value {
    serde_json::json!({
        "size": a.size,
        "mode": a.permissions.map(|m| format!("{:o}", m & 0o7777)),
        "uid": a.uid,
        "gid": a.gid,
        "mtime": a.mtime,
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

fn lexical_normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// A path from a request (see [`escape`]): the bytes it stands for.
fn os_path(p: &str) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(unescape(p)))
}

impl FsHandler {
    /// A handler whose relative paths start at `home`, naming owners with
    /// `names`.
    pub fn new(home: PathBuf, names: NameMaps) -> Self {
        FsHandler {
            home,
            names,
            handles: HashMap::new(),
            next: 0,
            peer: None,
        }
    }

    /// Records a file operation of this connection.
    fn audit(&self, kind: &str, detail: serde_json::Value) {
        if let Some(peer) = self.peer {
            crate::audit::emit(peer, kind, detail);
        }
    }

    /// Records a closed file: `sftp.write`/`sftp.read` with its path and
    /// size at close.
    fn audit_closed(&self, h: &OpenHandle) {
        if let OpenHandle::File { file, path, write } = h {
            let size = file.metadata().map(|m| m.len()).ok();
            let kind = if *write { "sftp.write" } else { "sftp.read" };
            self.audit(
                kind,
                serde_json::json!({ "path": path.to_string_lossy(), "size": size }),
            );
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        if p.is_empty() {
            self.home.clone()
        } else if p.starts_with('/') {
            os_path(p)
        } else {
            self.home.join(os_path(p))
        }
    }

    fn add(&mut self, h: OpenHandle) -> String {
        self.next += 1;
        let s = self.next.to_string();
        self.handles.insert(s.clone(), h);
        s
    }

    fn file(&self, handle: &str) -> Result<Arc<File>, StatusReply> {
        match self.handles.get(handle) {
            Some(OpenHandle::File { file, .. }) => Ok(file.clone()),
            _ => Err(err(StatusCode::Failure).with_message("Invalid handle")),
        }
    }

    pub(super) fn close_all(&mut self) {
        for h in self.handles.values() {
            self.audit_closed(h);
        }
        self.handles.clear();
    }

    fn canonical(&self, p: &str) -> PathBuf {
        let abs = self.path(p);
        match std::fs::canonicalize(&abs) {
            Ok(c) => c,
            Err(_) => lexical_normalize(&abs),
        }
    }

    fn expand(&self, p: &str) -> PathBuf {
        if p == "~" {
            return self.home.clone();
        }
        if let Some(rest) = p.strip_prefix("~/") {
            return self.home.join(os_path(rest));
        }
        if let Some(rest) = p.strip_prefix('~') {
            let (user, tail) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            if let Some(e) = crate::passwd::user_by_name(user) {
                return PathBuf::from(e.home).join(os_path(tail));
            }
        }
        self.path(p)
    }

    fn name_reply(id: u32, path: &Path) -> Name {
        let s = escape(path.as_os_str().as_bytes());
        Name {
            id,
            files: vec![SftpFile {
                filename: s.clone(),
                longname: s,
                attrs: FileAttributes::default(),
            }],
        }
    }

    /// Whether [`process`](Self::process) of this request stays off the
    /// blocking filesystem calls (READ and WRITE: their disk I/O runs in the
    /// blocking pool on its own). Everything else (open, stat, a listing of
    /// thousands of entries) makes blocking calls: serve it with
    /// [`process_blocking`](Self::process_blocking).
    pub fn is_fast(bytes: &[u8]) -> bool {
        matches!(bytes.first(), Some(&FXP_READ | &FXP_WRITE))
    }

    /// [`process`](Self::process) on a thread of the blocking pool, so that
    /// a slow filesystem call never holds an async worker (and with it the
    /// other channels and connections). The handler travels with the job.
    pub async fn process_blocking(self, bytes: Bytes) -> Option<(Self, Option<Reply>)> {
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut me = self;
            let reply = rt.block_on(me.process(bytes));
            (me, reply)
        })
        .await
        .ok()
    }

    /// Handle one raw request packet (type byte first); `None` = no reply.
    pub async fn process(&mut self, bytes: Bytes) -> Option<Reply> {
        let ty = *bytes.first()?;
        if ty == FXP_READ || ty == FXP_WRITE {
            let mut b = bytes.slice(1..);
            if b.remaining() < 4 {
                return None;
            }
            let id = b.get_u32();
            let r = if ty == FXP_READ {
                self.start_read(b).map(|job| Reply::Read(id, job))
            } else {
                self.fast_write(id, b).await.map(Reply::Ready)
            };
            return Some(match r {
                Ok(r) => r,
                Err(e) => Reply::Ready(status_reply_bytes(id, &e)),
            });
        }
        let mut bytes = escape_request(bytes);
        let packet = match Packet::try_from(&mut bytes) {
            Ok(p) => p,
            Err(e) => {
                warn!("sftp: bad request: {e}");
                return Some(Reply::Ready(status_bytes(
                    0,
                    StatusCode::BadMessage,
                    "Bad message",
                )));
            }
        };
        Some(Reply::Ready(self.dispatch(packet).await))
    }

    /// Run one decoded request; the reply, encoded.
    async fn dispatch(&mut self, packet: Packet) -> Bytes {
        use russh_sftp::server::Handler as _;
        let id = packet.get_request_id();
        macro_rules! wrap {
            ($e:expr) => {
                match $e.await {
                    Ok(p) => encode(p.into()),
                    Err(e) => status_reply_bytes(id, &e),
                }
            };
        }
        match packet {
            Packet::Init(p) => wrap!(self.init(p.version, p.extensions)),
            Packet::Open(p) => wrap!(self.open(p.id, p.filename, p.pflags, p.attrs)),
            Packet::Close(p) => wrap!(self.close(p.id, p.handle)),
            Packet::Lstat(p) => wrap!(self.lstat(p.id, p.path)),
            Packet::Fstat(p) => wrap!(self.fstat(p.id, p.handle)),
            Packet::SetStat(p) => wrap!(self.setstat(p.id, p.path, p.attrs)),
            Packet::FSetStat(p) => wrap!(self.fsetstat(p.id, p.handle, p.attrs)),
            Packet::OpenDir(p) => wrap!(self.opendir(p.id, p.path)),
            Packet::ReadDir(p) => wrap!(self.readdir(p.id, p.handle)),
            Packet::Remove(p) => wrap!(self.remove(p.id, p.filename)),
            Packet::MkDir(p) => wrap!(self.mkdir(p.id, p.path, p.attrs)),
            Packet::RmDir(p) => wrap!(self.rmdir(p.id, p.path)),
            Packet::RealPath(p) => wrap!(self.realpath(p.id, p.path)),
            Packet::Stat(p) => wrap!(self.stat(p.id, p.path)),
            Packet::Rename(p) => wrap!(self.rename(p.id, p.oldpath, p.newpath)),
            Packet::ReadLink(p) => wrap!(self.readlink(p.id, p.path)),
            Packet::Symlink(p) => wrap!(self.symlink(p.id, p.linkpath, p.targetpath)),
            Packet::Extended(p) => wrap!(self.extended(p.id, p.request, p.data)),
            // READ and WRITE never get here: `process` serves them first.
            _ => status_reply_bytes(id, &err(StatusCode::OpUnsupported)),
        }
    }

    fn start_read(&mut self, mut b: Bytes) -> Result<ReadSpec, StatusReply> {
        let handle = get_str(&mut b).ok_or_else(|| err(StatusCode::BadMessage))?;
        if b.remaining() < 12 {
            return Err(err(StatusCode::BadMessage));
        }
        let offset = b.get_u64();
        let len = b.get_u32().min(u32::try_from(LIMIT_RW).unwrap_or(u32::MAX)) as usize;
        let file = self.file(&String::from_utf8_lossy(&handle))?;
        Ok(ReadSpec { file, offset, len })
    }

    async fn fast_write(&mut self, id: u32, mut b: Bytes) -> Result<Bytes, StatusReply> {
        let handle = get_str(&mut b).ok_or_else(|| err(StatusCode::BadMessage))?;
        if b.remaining() < 8 {
            return Err(err(StatusCode::BadMessage));
        }
        let offset = b.get_u64();
        let data = get_str(&mut b).ok_or_else(|| err(StatusCode::BadMessage))?;
        let file = self.file(&String::from_utf8_lossy(&handle))?;
        tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
            .await
            .map_err(|_| err(StatusCode::Failure))?
            .map_err(|e| status_of(&e))?;
        Ok(status_bytes(id, StatusCode::Ok, "Success"))
    }

    fn apply_attrs(
        &self,
        path: &Path,
        file: Option<&File>,
        a: &FileAttributes,
    ) -> std::io::Result<()> {
        if let Some(size) = a.size {
            match file {
                Some(f) => f.set_len(size)?,
                None => std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)?
                    .set_len(size)?,
            }
        }
        if let Some(mode) = a.permissions {
            let p = std::fs::Permissions::from_mode(mode & 0o7777);
            match file {
                Some(f) => f.set_permissions(p)?,
                None => std::fs::set_permissions(path, p)?,
            }
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let at = nix::sys::time::TimeVal::new(i64::from(a.atime.unwrap_or(0)), 0);
            let mt = nix::sys::time::TimeVal::new(i64::from(a.mtime.unwrap_or(0)), 0);
            // utimes(2) on the path: works for directories too (ssh-server-notes N6).
            nix::sys::stat::utimes(path, &at, &mt).map_err(std::io::Error::from)?;
        }
        if a.uid.is_some() || a.gid.is_some() {
            match file {
                Some(f) => std::os::unix::fs::fchown(f, a.uid, a.gid)?,
                None => std::os::unix::fs::chown(path, a.uid, a.gid)?,
            }
        }
        Ok(())
    }

    fn statvfs_reply(id: u32, s: &nix::sys::statvfs::Statvfs) -> Packet {
        let mut b = BytesMut::with_capacity(88);
        b.put_u64(s.block_size());
        b.put_u64(s.fragment_size());
        b.put_u64(s.blocks());
        b.put_u64(s.blocks_free());
        b.put_u64(s.blocks_available());
        b.put_u64(s.files());
        b.put_u64(s.files_free());
        b.put_u64(s.files_available());
        b.put_u64(s.filesystem_id());
        let mut flag = 0u64;
        if s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            flag |= 1;
        }
        if s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID) {
            flag |= 2;
        }
        b.put_u64(flag);
        b.put_u64(s.name_max());
        Packet::ExtendedReply(ExtendedReply {
            id,
            data: b.to_vec(),
        })
    }
}

impl russh_sftp::server::Handler for FsHandler {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        err(StatusCode::OpUnsupported)
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        debug!("sftp init, client version {version}");
        let mut v = Version::new();
        for (k, val) in [
            ("posix-rename@openssh.com", "1"),
            ("statvfs@openssh.com", "2"),
            ("fstatvfs@openssh.com", "2"),
            ("hardlink@openssh.com", "1"),
            ("fsync@openssh.com", "1"),
            ("limits@openssh.com", "1"),
            ("expand-path@openssh.com", "1"),
        ] {
            v.extensions.insert(k.into(), val.into());
        }
        Ok(v)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = self.path(&filename);
        let mut o = std::fs::OpenOptions::new();
        let write = pflags.contains(OpenFlags::WRITE) || pflags.contains(OpenFlags::APPEND);
        o.read(pflags.contains(OpenFlags::READ) || !write);
        if write {
            o.write(true);
        }
        if pflags.contains(OpenFlags::APPEND) {
            o.append(true);
        }
        if pflags.contains(OpenFlags::CREATE) {
            if pflags.contains(OpenFlags::EXCLUDE) {
                o.create_new(true);
            } else {
                o.create(true);
            }
        }
        if pflags.contains(OpenFlags::TRUNCATE) {
            o.truncate(true);
        }
        o.mode(attrs.permissions.map_or(0o666, |m| m & 0o7777));
        let file = o.open(&path).map_err(|e| status_of(&e))?;
        let handle = self.add(OpenHandle::File {
            file: Arc::new(file),
            path,
            write,
        });
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(h) => {
                self.audit_closed(&h);
                Ok(ok_status(id))
            }
            None => Err(err(StatusCode::Failure).with_message("Invalid handle")),
        }
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let m = std::fs::symlink_metadata(self.path(&path)).map_err(|e| status_of(&e))?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&m),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let m = match self.handles.get(&handle) {
            Some(OpenHandle::File { file, .. }) => file.metadata(),
            Some(OpenHandle::Dir { path, .. }) => std::fs::metadata(path),
            None => return Err(err(StatusCode::Failure).with_message("Invalid handle")),
        }
        .map_err(|e| status_of(&e))?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&m),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let p = self.path(&path);
        self.apply_attrs(&p, None, &attrs)
            .map_err(|e| status_of(&e))?;
        self.audit(
            "sftp.setstat",
            serde_json::json!({ "path": p.to_string_lossy(), "attrs": attrs_audit(&attrs) }),
        );
        Ok(ok_status(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        match self.handles.get(&handle) {
            Some(OpenHandle::File { file, .. }) => {
                let file = file.clone();
                let path = std::fs::read_link(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(file.as_ref())
                ))
                .unwrap_or_default();
                // Times need a path (utimes); everything else uses the fd.
                let mut rest = attrs.clone();
                rest.atime = None;
                rest.mtime = None;
                self.apply_attrs(&path, Some(&file), &rest)
                    .map_err(|e| status_of(&e))?;
                if attrs.atime.is_some() || attrs.mtime.is_some() {
                    let t = std::fs::FileTimes::new()
                        .set_accessed(to_systime(attrs.atime.unwrap_or(0)))
                        .set_modified(to_systime(attrs.mtime.unwrap_or(0)));
                    file.set_times(t).map_err(|e| status_of(&e))?;
                }
                self.audit(
                    "sftp.setstat",
                    serde_json::json!({ "path": path.to_string_lossy(), "attrs": attrs_audit(&attrs) }),
                );
                Ok(ok_status(id))
            }
            Some(OpenHandle::Dir { path, .. }) => {
                let path = path.clone();
                self.apply_attrs(&path, None, &attrs)
                    .map_err(|e| status_of(&e))?;
                Ok(ok_status(id))
            }
            None => Err(err(StatusCode::Failure).with_message("Invalid handle")),
        }
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let p = self.path(&path);
        let iter = std::fs::read_dir(&p).map_err(|e| status_of(&e))?;
        let handle = self.add(OpenHandle::Dir {
            path: p,
            iter: Some(iter),
            dots_sent: false,
        });
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let now = now();
        let names = self.names.clone();
        let Some(OpenHandle::Dir {
            path,
            iter,
            dots_sent,
        }) = self.handles.get_mut(&handle)
        else {
            return Err(err(StatusCode::Failure).with_message("Invalid handle"));
        };
        let mut files = Vec::new();
        if !*dots_sent {
            *dots_sent = true;
            for (n, p) in [(".", path.clone()), ("..", path.join(".."))] {
                if let Ok(m) = std::fs::symlink_metadata(&p) {
                    files.push(SftpFile {
                        filename: n.into(),
                        longname: longname(n, &m, &names, now),
                        attrs: attrs_of(&m),
                    });
                }
            }
        }
        if let Some(it) = iter.as_mut() {
            while files.len() < DIR_BATCH {
                match it.next() {
                    Some(Ok(e)) => {
                        let name = escape(e.file_name().as_bytes());
                        if let Ok(m) = std::fs::symlink_metadata(e.path()) {
                            files.push(SftpFile {
                                longname: longname(&name, &m, &names, now),
                                attrs: attrs_of(&m),
                                filename: name,
                            });
                        }
                    }
                    Some(Err(_)) => continue,
                    None => {
                        *iter = None;
                        break;
                    }
                }
            }
        }
        if files.is_empty() {
            return Err(StatusReply::new(StatusCode::Eof).with_message("End of file"));
        }
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let p = self.path(&filename);
        std::fs::remove_file(&p).map_err(|e| status_of(&e))?;
        self.audit(
            "sftp.remove",
            serde_json::json!({ "path": p.to_string_lossy() }),
        );
        Ok(ok_status(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(attrs.permissions.map_or(0o777, |m| m & 0o7777))
            .create(self.path(&path))
            .map_err(|e| status_of(&e))?;
        self.audit(
            "sftp.mkdir",
            serde_json::json!({ "path": self.path(&path).to_string_lossy() }),
        );
        Ok(ok_status(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        std::fs::remove_dir(self.path(&path)).map_err(|e| status_of(&e))?;
        self.audit(
            "sftp.rmdir",
            serde_json::json!({ "path": self.path(&path).to_string_lossy() }),
        );
        Ok(ok_status(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let p = if path.is_empty() { "." } else { path.as_str() };
        Ok(Self::name_reply(id, &self.canonical(p)))
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let m = std::fs::metadata(self.path(&path)).map_err(|e| status_of(&e))?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&m),
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        // SFTPv3 rename never overwrites (posix-rename does).
        let (o, n) = (self.path(&oldpath), self.path(&newpath));
        std::fs::symlink_metadata(&o).map_err(|e| status_of(&e))?;
        if std::fs::symlink_metadata(&n).is_ok() {
            return Err(err(StatusCode::Failure));
        }
        std::fs::rename(&o, &n).map_err(|e| status_of(&e))?;
        self.audit(
            "sftp.rename",
            serde_json::json!({ "from": o.to_string_lossy(), "to": n.to_string_lossy() }),
        );
        Ok(ok_status(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let t = std::fs::read_link(self.path(&path)).map_err(|e| status_of(&e))?;
        Ok(Self::name_reply(id, &t))
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        // OpenSSH sends the arguments reversed: `linkpath` is the target
        // the new link points to, `targetpath` the link to create (ssh-server-notes N6).
        std::os::unix::fs::symlink(os_path(&linkpath), self.path(&targetpath))
            .map_err(|e| status_of(&e))?;
        Ok(ok_status(id))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        let mut b = Bytes::from(data);
        let bad = || err(StatusCode::BadMessage);
        match request.as_str() {
            "posix-rename@openssh.com" => {
                let o = get_string(&mut b).ok_or_else(bad)?;
                let n = get_string(&mut b).ok_or_else(bad)?;
                let (o, n) = (self.path(&o), self.path(&n));
                std::fs::rename(&o, &n).map_err(|e| status_of(&e))?;
                self.audit(
                    "sftp.rename",
                    serde_json::json!({ "from": o.to_string_lossy(), "to": n.to_string_lossy() }),
                );
                Ok(ok_status(id).into())
            }
            "hardlink@openssh.com" => {
                let o = get_string(&mut b).ok_or_else(bad)?;
                let n = get_string(&mut b).ok_or_else(bad)?;
                std::fs::hard_link(self.path(&o), self.path(&n)).map_err(|e| status_of(&e))?;
                Ok(ok_status(id).into())
            }
            "statvfs@openssh.com" => {
                let p = get_string(&mut b).ok_or_else(bad)?;
                let s = nix::sys::statvfs::statvfs(&self.path(&p))
                    .map_err(|e| status_of(&std::io::Error::from(e)))?;
                Ok(Self::statvfs_reply(id, &s))
            }
            "fstatvfs@openssh.com" => {
                let h = get_string(&mut b).ok_or_else(bad)?;
                let file = self.file(&h)?;
                let s = nix::sys::statvfs::fstatvfs(file.as_ref())
                    .map_err(|e| status_of(&std::io::Error::from(e)))?;
                Ok(Self::statvfs_reply(id, &s))
            }
            "fsync@openssh.com" => {
                let h = get_string(&mut b).ok_or_else(bad)?;
                let file = self.file(&h)?;
                tokio::task::spawn_blocking(move || file.sync_all())
                    .await
                    .map_err(|_| err(StatusCode::Failure))?
                    .map_err(|e| status_of(&e))?;
                Ok(ok_status(id).into())
            }
            "limits@openssh.com" => {
                let mut r = BytesMut::with_capacity(32);
                r.put_u64(LIMIT_PACKET);
                r.put_u64(LIMIT_RW);
                r.put_u64(LIMIT_RW);
                r.put_u64(256);
                Ok(Packet::ExtendedReply(ExtendedReply {
                    id,
                    data: r.to_vec(),
                }))
            }
            "expand-path@openssh.com" => {
                let p = get_string(&mut b).ok_or_else(bad)?;
                let e = self.expand(&p);
                let c = std::fs::canonicalize(&e).unwrap_or_else(|_| lexical_normalize(&e));
                Ok(Self::name_reply(id, &c).into())
            }
            other => {
                debug!("sftp: unsupported extension {other}");
                Err(err(StatusCode::OpUnsupported))
            }
        }
    }
}

fn to_systime(t: u32) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(t))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fifo_attrs_keep_type() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let a = attrs_of(&m);
        assert_eq!(a.permissions.unwrap() & 0o170000, 0o010000);
        let l = longname("f", &m, &NameMaps::default(), now());
        assert!(l.starts_with("prw-------"), "{l}");
    }
}
