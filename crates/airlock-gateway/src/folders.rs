//! Storage folders (vfolders): the operations the HTTP API and the web UI
//! share — lookup with ownership checks, create/delete/rename, listing,
//! streaming uploads (temporary file + atomic rename), downloads with
//! `Range`, mkdir and file removal.

use airlock_beneath::{FsError, NewFile, RelPath, Tree};
use airlock_proto::api::{FolderEntry, FolderInfo};
use airlock_proto::validate::{self, mode_string};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderValue, StatusCode, header};
use tokio::io::AsyncWriteExt;

pub use airlock_beneath::{MkdirOptions, Removal};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::store::{Folder, rfc3339};

/// How many blocking folder operations may run at once; the rest wait
/// (asynchronously) for a slot, so a slow disk cannot take every thread of
/// the blocking pool.
const MAX_BLOCKING: usize = 32;

static SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(MAX_BLOCKING));

/// Runs blocking folder work ([`airlock_beneath`] calls) on the blocking
/// pool, at most [`MAX_BLOCKING`] at a time.
pub(crate) async fn run_blocking<T, F>(f: F) -> Result<T, FsError>
where
    F: FnOnce() -> Result<T, FsError> + Send + 'static,
    T: Send + 'static,
{
    let _slot = SLOTS
        .acquire()
        .await
        .map_err(|e| FsError::Io(std::io::Error::other(e)))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FsError::Io(std::io::Error::other(e)))?
}

impl From<FsError> for ApiError {
    fn from(e: FsError) -> Self {
        match e {
            FsError::NotFound(_) => ApiError::not_found("file-not-found", e.to_string())
                .hint("paths are relative to the folder's top directory; `airlock vfolder ls` lists your folders"),
            FsError::Symlink(_) => ApiError::invalid(e.to_string())
                .hint("work with links from inside a session (ssh, sftp)"),
            FsError::Special { .. } => ApiError::invalid(e.to_string())
                .hint("special files can only be used from inside a session"),
            FsError::NotEmpty(_) => {
                ApiError::conflict(e.to_string()).hint("delete it with recursive=true")
            }
            FsError::Exists(_) => ApiError::conflict(e.to_string()),
            FsError::PermissionDenied(_) => ApiError::forbidden(e.to_string()),
            FsError::Invalid(_)
            | FsError::Escape(_)
            | FsError::NotADirectory(_)
            | FsError::IsADirectory(_) => ApiError::invalid(e.to_string()),
            FsError::Io(io) => ApiError::internal(io),
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
    let storage = state.storage_arc();
    let id = f.id.clone();
    if let Err(e) = run_blocking(move || storage.create(&id)).await {
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
    let storage = state.storage_arc();
    let id = f.id.clone();
    run_blocking(move || storage.delete(&id))
        .await
        .map_err(ApiError::internal)?;
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

fn entry(e: airlock_beneath::Entry) -> FolderEntry {
    FolderEntry {
        name: e.name,
        kind: e.kind.as_str().into(),
        size: e.size,
        mode: mode_string(e.mode),
        modified: rfc3339(e.mtime * 1000),
    }
}

/// Runs `op` on the folder's open root handle, on the blocking pool.
async fn with_dir<T, F>(state: &AppState, f: &Folder, op: F) -> ApiResult<T>
where
    F: FnOnce(&Tree) -> Result<T, FsError> + Send + 'static,
    T: Send + 'static,
{
    let storage = state.storage_arc();
    let id = f.id.clone();
    Ok(run_blocking(move || op(&storage.open(&id)?)).await?)
}

/// Lists a directory of a folder (directories first, then by name); a file
/// path lists just that file. Unfinished uploads are hidden; links and
/// special files are listed with their kind, never followed.
pub async fn list_files(state: &AppState, f: &Folder, path: &str) -> ApiResult<Vec<FolderEntry>> {
    let rel = RelPath::new(path)?;
    let entries = with_dir(state, f, move |d| d.list(&rel)).await?;
    Ok(entries.into_iter().map(entry).collect())
}

/// What `path` is inside the folder (a link is reported as a link).
pub async fn stat(state: &AppState, f: &Folder, path: &str) -> ApiResult<airlock_beneath::Entry> {
    let rel = RelPath::new(path)?;
    with_dir(state, f, move |d| d.stat(&rel)).await
}

/// Reads a small regular file of the folder whole (`None` when it is
/// missing, a link, special, or larger than `max`).
pub async fn read_small(
    state: &AppState,
    f: &Folder,
    path: &str,
    max: u64,
) -> ApiResult<Option<Vec<u8>>> {
    let rel = RelPath::new(path)?;
    with_dir(state, f, move |d| d.read_small(&rel, max)).await
}

/// Opens a regular file of the folder for reading (links, directories and
/// special files are refused); returns it with its length.
pub async fn open_file(
    state: &AppState,
    f: &Folder,
    path: &str,
) -> ApiResult<(std::fs::File, u64)> {
    let rel = RelPath::new(path)?;
    with_dir(state, f, move |d| d.open_read(&rel)).await
}

/// Starts a new file at `path` (nothing appears there until it is
/// committed).
pub async fn create_file(
    state: &AppState,
    f: &Folder,
    path: &str,
    mode: u32,
) -> ApiResult<NewFile> {
    let rel = RelPath::new(path)?;
    with_dir(state, f, move |d| d.create(&rel, mode)).await
}

/// Gives a finished file its name (resolving its directory afresh).
pub async fn commit_file(state: &AppState, folder_id: &str, file: NewFile) -> ApiResult<()> {
    let storage = state.storage_arc();
    let id = folder_id.to_owned();
    Ok(run_blocking(move || file.commit(&storage.open(&id)?)).await?)
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
    let new = create_file(state, f, path, mode).await?;
    let mut file = tokio::fs::File::from_std(new.file().try_clone().map_err(ApiError::internal)?);
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
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = result {
        let _ = run_blocking(move || {
            new.discard();
            Ok(())
        })
        .await;
        tracing::info!(folder = %f.name, %path, "discarded an incomplete upload");
        return Err(e);
    }
    commit_file(state, &f.id, new).await?;
    Ok(written)
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

/// Streams an open file of `len` bytes with Content-Length and
/// single-range support.
pub fn serve_file(
    mut file: std::fs::File,
    len: u64,
    headers: &http::HeaderMap,
) -> ApiResult<Response> {
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
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))
            .map_err(ApiError::internal)?;
    }
    let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), count);
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

/// Deletes a file, link, special file or (with `recursive`, non-empty)
/// directory; links are removed, never followed.
pub async fn delete_file(state: &AppState, f: &Folder, path: &str, what: Removal) -> ApiResult<()> {
    let rel = RelPath::new(path)?;
    with_dir(state, f, move |d| d.remove(&rel, what)).await
}

/// Creates one directory; `Ok(false)` when it existed and `exist_ok`.
pub async fn mkdir(
    state: &AppState,
    f: &Folder,
    path: &str,
    opts: MkdirOptions,
) -> ApiResult<bool> {
    let rel = RelPath::new(path)?;
    with_dir(state, f, move |d| d.mkdir(&rel, opts)).await
}

/// The file in a `.ssh` folder that sessions take their accepted keys from.
pub const AUTHORIZED_KEYS: &str = "authorized_keys";

/// The folder's `authorized_keys` as text (`None`: absent, unreadable, over
/// 1 MiB or not UTF-8).
pub async fn read_authorized_keys(state: &AppState, f: &Folder) -> Option<String> {
    let bytes = read_small(state, f, AUTHORIZED_KEYS, 1 << 20)
        .await
        .ok()??;
    String::from_utf8(bytes).ok()
}

/// Appends to the folder's `authorized_keys` (written 0600) the keys it
/// does not hold yet, compared by fingerprint; returns the fingerprints of
/// those added.
pub async fn add_authorized_keys(
    state: &AppState,
    f: &Folder,
    keys: &[airlock_proto::sshkey::ParsedKey],
) -> ApiResult<Vec<String>> {
    let existing = read_authorized_keys(state, f).await.unwrap_or_default();
    let Some((content, added)) = merge_authorized_keys(&existing, keys) else {
        return Ok(Vec::new());
    };
    let body =
        futures_util::stream::once(
            async move { Ok::<Bytes, std::io::Error>(Bytes::from(content)) },
        );
    write_file(state, f, AUTHORIZED_KEYS, Box::pin(body), None, 0o600).await?;
    Ok(added)
}

/// `existing` with the keys it lacks appended, and their fingerprints;
/// `None` when it has them all. Lines that are not keys (comments,
/// options) are kept.
fn merge_authorized_keys(
    existing: &str,
    keys: &[airlock_proto::sshkey::ParsedKey],
) -> Option<(String, Vec<String>)> {
    let mut known: Vec<String> = existing
        .lines()
        .filter_map(|l| airlock_proto::sshkey::parse_public_key(l.trim()).ok())
        .map(|k| k.fingerprint)
        .collect();
    let mut content = existing.to_owned();
    if !content.is_empty() && !content.ends_with('\n') {
        content.push('\n');
    }
    let mut added = Vec::new();
    for k in keys {
        if known.contains(&k.fingerprint) {
            continue;
        }
        content.push_str(&k.line);
        content.push('\n');
        known.push(k.fingerprint.clone());
        added.push(k.fingerprint.clone());
    }
    (!added.is_empty()).then_some((content, added))
}

#[cfg(test)]
mod tests {
    use super::{merge_authorized_keys, parse_range};
    use airlock_proto::sshkey::parse_public_key;

    const ONE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN9PsX/zmh4cZgQXQjwHFIEDmEjWwlU7uubLkarg9Tua one";
    const TWO: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG4PUYujwtrxVl4d6zn/VosAPFFX49F7t8iE6a0NVz6g two";

    #[test]
    fn authorized_keys_merge_by_fingerprint() {
        let one = parse_public_key(ONE).unwrap();
        let two = parse_public_key(TWO).unwrap();
        // Already there (with another comment): nothing to write.
        let existing = format!("# mine\n{}", ONE.replace(" one", " laptop"));
        assert_eq!(
            merge_authorized_keys(&existing, std::slice::from_ref(&one)),
            None
        );
        // A new one, given twice, is appended once, after a newline.
        let (content, added) =
            merge_authorized_keys(&existing, &[two.clone(), one, two.clone()]).unwrap();
        assert_eq!(added, std::slice::from_ref(&two.fingerprint));
        assert_eq!(content, format!("{existing}\n{TWO}\n"));
        assert_eq!(
            merge_authorized_keys("", &[parse_public_key(TWO).unwrap()])
                .unwrap()
                .0,
            format!("{TWO}\n")
        );
    }

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
