//! Storage folders (vfolders): the operations the HTTP API and the web UI
//! share — lookup with ownership checks, create/delete/rename, listing,
//! streaming uploads (temporary file + atomic rename), downloads with
//! `Range`, mkdir and file removal.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use airlock_proto::api::{FolderEntry, FolderInfo};
use airlock_proto::validate::{self, mode_string};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderValue, StatusCode, header};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::storage::{self, PathError, chown_quiet};
use crate::store::{Folder, rfc3339};

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::NotFound(_) => ApiError::not_found("file-not-found", e.to_string()),
            PathError::Invalid(_) | PathError::Escape(_) => ApiError::invalid(e.to_string()),
            PathError::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                ApiError::forbidden(io.to_string())
            }
            PathError::Io(io) => ApiError::internal(io),
        }
    }
}

/// Finds a folder of the caller by name or id (32 hex or dashed UUID).
/// Folders of other users are invisible (404) unless the caller is an admin.
pub async fn resolve(state: &AppState, caller: &Caller, ident: &str) -> ApiResult<Folder> {
    let not_found = || {
        ApiError::not_found("vfolder-not-found", format!("no folder {ident:?}"))
            .hint("list your folders with `airlock vfolder ls`")
    };
    if let Ok(uuid) = uuid::Uuid::parse_str(ident) {
        return state
            .store()
            .folder(&uuid.to_string())
            .await?
            .filter(|f| caller.may_access(&f.user_id))
            .ok_or_else(not_found);
    }
    state
        .store()
        .folder_named(&caller.user.id, ident)
        .await?
        .ok_or_else(not_found)
}

/// The API view of a folder.
pub async fn info(state: &AppState, f: &Folder) -> ApiResult<FolderInfo> {
    let owner = state
        .store()
        .user_by_id(&f.user_id)
        .await?
        .map(|u| u.email)
        .unwrap_or_default();
    let mounted_in = state
        .store()
        .live_sessions_mounting(&f.id)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    Ok(FolderInfo {
        id: f.hex_id(),
        name: f.name.clone(),
        host: f.host.clone(),
        owner,
        created_at: rfc3339(f.created_at),
        usage_mode: "general".into(),
        permission: "rw".into(),
        ownership_type: "user".into(),
        automount: f.name.starts_with('.'),
        mounted_in,
    })
}

/// Creates a folder of the caller on `host` (empty or `None`: this server's).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    name: &str,
    host: Option<&str>,
) -> ApiResult<Folder> {
    validate::check_folder_name(name)?;
    if let Some(host) = host
        && !host.is_empty()
        && host != state.storage().host()
    {
        return Err(ApiError::invalid(format!(
            "unknown storage host {host:?} (this server has {:?})",
            state.storage().host()
        )));
    }
    let _slot = crate::quotas::folder_slot(state, &caller.user.id).await?;
    let f = state
        .store()
        .insert_folder(&caller.user.id, name, state.storage().host())
        .await?;
    if let Err(e) = state.storage().create(&f.id) {
        state.store().delete_folder(&f.id).await?;
        return Err(ApiError::internal(e));
    }
    tracing::info!(folder = %f.name, user = %caller.user.email, "folder created");
    Ok(f)
}

/// Refuses while a live session mounts the folder.
pub async fn refuse_if_mounted(state: &AppState, f: &Folder, what: &str) -> ApiResult<()> {
    let live = state.store().live_sessions_mounting(&f.id).await?;
    if let Some(s) = live.first() {
        return Err(ApiError::conflict(format!(
            "cannot {what} folder {:?}: it is mounted in session {:?}",
            f.name, s.name
        ))
        .hint("terminate the sessions that use it first"));
    }
    Ok(())
}

/// Deletes a folder and its contents (refused while mounted).
pub async fn delete(state: &AppState, caller: &Caller, f: &Folder) -> ApiResult<()> {
    refuse_if_mounted(state, f, "delete").await?;
    state.storage().delete(&f.id).map_err(ApiError::internal)?;
    state.store().delete_folder(&f.id).await?;
    tracing::info!(folder = %f.name, user = %caller.user.email, "folder deleted");
    Ok(())
}

/// Renames a folder (refused while mounted); returns it under its new name.
pub async fn rename(
    state: &AppState,
    caller: &Caller,
    f: &Folder,
    new_name: &str,
) -> ApiResult<Folder> {
    validate::check_folder_name(new_name)?;
    refuse_if_mounted(state, f, "rename").await?;
    state.store().rename_folder(&f.id, new_name).await?;
    resolve(state, caller, new_name).await
}

fn entry(name: String, meta: &std::fs::Metadata) -> FolderEntry {
    let ft = meta.file_type();
    FolderEntry {
        name,
        kind: if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "file"
        }
        .into(),
        size: meta.len(),
        mode: mode_string(meta.mode()),
        modified: rfc3339(meta.mtime() * 1000),
    }
}

/// Lists a directory of a folder (directories first, then by name); a file
/// path lists just that file. Unfinished uploads are hidden.
pub async fn list_files(state: &AppState, f: &Folder, path: &str) -> ApiResult<Vec<FolderEntry>> {
    let root = state.storage().path(&f.id);
    let dir = storage::resolve_existing(&root, path)?;
    tokio::task::spawn_blocking(move || -> Result<Vec<FolderEntry>, PathError> {
        let meta = std::fs::metadata(&dir)?;
        if !meta.is_dir() {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok(vec![entry(name, &meta)]);
        }
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".airlock-upload-") {
                continue;
            }
            if let Ok(meta) = std::fs::symlink_metadata(e.path()) {
                out.push(entry(name, &meta));
            }
        }
        out.sort_by(|a, b| (a.kind != "dir", &a.name).cmp(&(b.kind != "dir", &b.name)));
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

/// Streams `body` into `path` inside the folder. The file appears
/// (atomically, owned by the session user) only once the whole body has
/// arrived — and, when `expected` is given, only if it had that many bytes.
/// Returns the number of bytes written.
pub async fn write_file<S, E>(
    state: &AppState,
    f: &Folder,
    path: &str,
    mut body: S,
    expected: Option<u64>,
    mode: u32,
) -> ApiResult<u64>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let root = state.storage().path(&f.id);
    let (uid, gid) = state.storage().owner();
    let target = {
        let root = root.clone();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let t = storage::resolve_new(&root, &path, true)?;
            // New directories belong to the session user too.
            let mut dir = t.parent().map(std::path::Path::to_path_buf);
            while let Some(d) = dir {
                if d == root || !d.starts_with(&root) {
                    break;
                }
                chown_quiet(&d, uid, gid);
                dir = d.parent().map(std::path::Path::to_path_buf);
            }
            Ok::<_, PathError>(t)
        })
        .await
        .map_err(ApiError::internal)??
    };
    if target.is_dir() {
        return Err(ApiError::invalid(format!("{path:?} is a directory")));
    }
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(
        ".{file_name}.airlock-upload-{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .await
        .map_err(ApiError::internal)?;
    let mut written: u64 = 0;
    let result: ApiResult<()> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::invalid(format!(
                    "the upload was interrupted after {written} bytes: {e}"
                ))
            })?;
            file.write_all(&chunk).await.map_err(ApiError::internal)?;
            written += chunk.len() as u64;
        }
        if let Some(n) = expected
            && n != written
        {
            return Err(ApiError::invalid(format!(
                "the upload ended after {written} of {n} bytes"
            )));
        }
        file.flush().await.map_err(ApiError::internal)?;
        file.sync_all().await.map_err(ApiError::internal)?;
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        tracing::info!(folder = %f.name, %path, "discarded an incomplete upload");
        return Err(e);
    }
    chown_quiet(&tmp, uid, gid);
    tokio::fs::rename(&tmp, &target)
        .await
        .map_err(ApiError::internal)?;
    Ok(written)
}

/// The host path of an existing file or directory inside the folder.
pub fn existing_path(state: &AppState, f: &Folder, path: &str) -> ApiResult<PathBuf> {
    Ok(storage::resolve_existing(
        &state.storage().path(&f.id),
        path,
    )?)
}

/// Parses a single-range `Range` header against a length.
pub fn parse_range(h: &str, len: u64) -> Option<(u64, u64)> {
    let spec = h.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (len.saturating_sub(n), len.checked_sub(1)?)
        }
        (s, "") => (s.parse().ok()?, len.checked_sub(1)?),
        (s, e) => (
            s.parse().ok()?,
            e.parse::<u64>().ok()?.min(len.checked_sub(1)?),
        ),
    };
    (start <= end && end < len).then_some((start, end))
}

/// Streams `full` with Content-Length and single-range support.
pub async fn serve_file(full: &std::path::Path, headers: &http::HeaderMap) -> ApiResult<Response> {
    let mut file = tokio::fs::File::open(full)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => ApiError::forbidden(e.to_string()),
            _ => ApiError::internal(e),
        })?;
    let meta = file.metadata().await.map_err(ApiError::internal)?;
    if meta.is_dir() {
        return Err(ApiError::invalid(format!(
            "{} is a directory",
            full.display()
        )));
    }
    let len = meta.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, len));
    let (status, start, count) = match range {
        Some(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Some(None) if len > 0 => {
            let mut r = (StatusCode::RANGE_NOT_SATISFIABLE, String::new()).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
        _ => (StatusCode::OK, 0, len),
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(ApiError::internal)?;
    }
    let reader = tokio::io::AsyncReadExt::take(file, count);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&count.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

/// Deletes a file, symlink or (with `recursive`, non-empty) directory.
pub async fn delete_file(
    state: &AppState,
    f: &Folder,
    path: &str,
    recursive: bool,
) -> ApiResult<()> {
    let root = state.storage().path(&f.id);
    let rel = storage::relative(path)?;
    if rel.as_os_str().is_empty() {
        return Err(ApiError::invalid(
            "refusing to delete the folder root; delete the folder instead",
        ));
    }
    // Resolve the parent only, so that a symlink itself is removed, not its
    // target.
    let parent = storage::resolve_existing(
        &root,
        &rel.parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    )?;
    let full = parent.join(rel.file_name().unwrap_or_default());
    let meta =
        std::fs::symlink_metadata(&full).map_err(|_| PathError::NotFound(path.to_owned()))?;
    let r = if meta.is_dir() {
        if recursive {
            tokio::fs::remove_dir_all(&full).await
        } else {
            tokio::fs::remove_dir(&full).await
        }
    } else {
        tokio::fs::remove_file(&full).await
    };
    r.map_err(|e| match e.raw_os_error() {
        Some(39) => ApiError::conflict(format!("{path:?} is a directory that is not empty"))
            .hint("delete it with recursive=true"),
        _ => ApiError::internal(e),
    })
}

/// Creates one directory; `Ok(false)` when it existed and `exist_ok`.
pub fn mkdir(
    state: &AppState,
    f: &Folder,
    path: &str,
    parents: bool,
    exist_ok: bool,
) -> ApiResult<bool> {
    let root = state.storage().path(&f.id);
    let (uid, gid) = state.storage().owner();
    let target = storage::resolve_new(&root, path, parents)?;
    match std::fs::create_dir(&target) {
        Ok(()) => {
            chown_quiet(&target, uid, gid);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && exist_ok => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(ApiError::conflict(format!("{path:?} already exists")))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
