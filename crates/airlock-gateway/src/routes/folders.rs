//! `/folders…`: storage folders and their files.

use std::os::unix::fs::MetadataExt;

use airlock_proto::api::{FolderEntry, FolderInfo};
use airlock_proto::validate::{self, mode_string};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
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
pub(crate) async fn resolve(state: &AppState, caller: &Caller, ident: &str) -> ApiResult<Folder> {
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

async fn info(state: &AppState, f: &Folder) -> ApiResult<FolderInfo> {
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

/// `POST /folders` `{name, host?}`.
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("the folder name is required"))?;
    validate::check_folder_name(name)?;
    if let Some(host) = body.get("host").and_then(Value::as_str)
        && !host.is_empty()
        && host != state.storage().host()
    {
        return Err(ApiError::invalid(format!(
            "unknown storage host {host:?} (this server has {:?})",
            state.storage().host()
        )));
    }
    let f = state
        .store()
        .insert_folder(&caller.user.id, name, state.storage().host())
        .await?;
    if let Err(e) = state.storage().create(&f.id) {
        state.store().delete_folder(&f.id).await?;
        return Err(ApiError::internal(e));
    }
    tracing::info!(folder = %f.name, user = %caller.user.email, "folder created");
    let mut v = serde_json::to_value(info(&state, &f).await?).map_err(ApiError::internal)?;
    v["max_size"] = 0.into();
    v["cloneable"] = false.into();
    v["status"] = "ready".into();
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

/// `GET /folders`.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<FolderInfo>>> {
    let mut out = Vec::new();
    for f in state.store().folders(Some(&caller.user.id)).await? {
        out.push(info(&state, &f).await?);
    }
    Ok(axum::Json(out))
}

/// `GET /folders/{f}`.
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
) -> ApiResult<axum::Json<FolderInfo>> {
    let f = resolve(&state, &caller, &ident).await?;
    Ok(axum::Json(info(&state, &f).await?))
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct NameQuery {
    #[serde(default)]
    name: Option<String>,
}

/// `GET /folders/_/id` with `{name}` in the body or query → `{id}`.
pub(crate) async fn id_of(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<NameQuery>,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<Value>> {
    let name = q
        .name
        .or_else(|| body.get("name").and_then(Value::as_str).map(str::to_owned))
        .ok_or_else(|| ApiError::invalid("the folder name is required"))?;
    let f = resolve(&state, &caller, &name).await?;
    Ok(axum::Json(serde_json::json!({"id": f.hex_id()})))
}

async fn refuse_if_mounted(state: &AppState, f: &Folder, what: &str) -> ApiResult<()> {
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

/// `DELETE /folders/{f}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
) -> ApiResult<StatusCode> {
    let f = resolve(&state, &caller, &ident).await?;
    refuse_if_mounted(&state, &f, "delete").await?;
    state.storage().delete(&f.id).map_err(ApiError::internal)?;
    state.store().delete_folder(&f.id).await?;
    tracing::info!(folder = %f.name, user = %caller.user.email, "folder deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /folders/{f}/rename` `{new_name}`.
pub(crate) async fn rename(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<FolderInfo>> {
    let f = resolve(&state, &caller, &ident).await?;
    let new_name = body
        .get("new_name")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("new_name is required"))?;
    validate::check_folder_name(new_name)?;
    refuse_if_mounted(&state, &f, "rename").await?;
    state.store().rename_folder(&f.id, new_name).await?;
    let f = resolve(&state, &caller, new_name).await?;
    Ok(axum::Json(info(&state, &f).await?))
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct PathQuery {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    recursive: Option<String>,
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

/// `GET /folders/{f}/files?path=`.
pub(crate) async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<axum::Json<Vec<FolderEntry>>> {
    let f = resolve(&state, &caller, &ident).await?;
    let root = state.storage().path(&f.id);
    let dir = storage::resolve_existing(&root, q.path.as_deref().unwrap_or(""))?;
    let out = tokio::task::spawn_blocking(move || -> Result<Vec<FolderEntry>, PathError> {
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
    .map_err(ApiError::internal)??;
    Ok(axum::Json(out))
}

/// `PUT /folders/{f}/file?path=`: streams the body into the folder. The file
/// appears (atomically) only once the whole body has arrived.
pub(crate) async fn put_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Query(q): Query<PathQuery>,
    req: Request,
) -> ApiResult<Response> {
    let f = resolve(&state, &caller, &ident).await?;
    let path = q
        .path
        .ok_or_else(|| ApiError::invalid("the destination ?path= is required"))?;
    let expected: Option<u64> = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let root = state.storage().path(&f.id);
    let (uid, gid) = state.storage().owner();
    let target = {
        let root = root.clone();
        let path = path.clone();
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
        .mode(0o644)
        .open(&tmp)
        .await
        .map_err(ApiError::internal)?;
    let mut body = req.into_body().into_data_stream();
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
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"path": path, "size": written})),
    )
        .into_response())
}

fn parse_range(h: &str, len: u64) -> Option<(u64, u64)> {
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

/// `GET /folders/{f}/file?path=`: streams a file (with `Range` support so
/// interrupted downloads resume).
pub(crate) async fn get_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Query(q): Query<PathQuery>,
    headers: http::HeaderMap,
) -> ApiResult<Response> {
    let f = resolve(&state, &caller, &ident).await?;
    let path = q
        .path
        .ok_or_else(|| ApiError::invalid("the file ?path= is required"))?;
    let full = storage::resolve_existing(&state.storage().path(&f.id), &path)?;
    serve_file(&full, &headers).await
}

/// Streams `full` with Content-Length and single-range support.
pub(crate) async fn serve_file(
    full: &std::path::Path,
    headers: &http::HeaderMap,
) -> ApiResult<Response> {
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

/// `DELETE /folders/{f}/file?path=[&recursive=true]`.
pub(crate) async fn delete_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<StatusCode> {
    let f = resolve(&state, &caller, &ident).await?;
    let path = q
        .path
        .ok_or_else(|| ApiError::invalid("the file ?path= is required"))?;
    let root = state.storage().path(&f.id);
    let rel = storage::relative(&path)?;
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
    let recursive = q
        .recursive
        .as_deref()
        .is_some_and(|v| v == "true" || v == "1");
    let meta = std::fs::symlink_metadata(&full).map_err(|_| PathError::NotFound(path.clone()))?;
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
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /folders/{f}/mkdir` `{path, parents, exist_ok}`.
pub(crate) async fn mkdir(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let f = resolve(&state, &caller, &ident).await?;
    let paths: Vec<String> = match body.get("path") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => return Err(ApiError::invalid("path is required")),
    };
    let parents = body.get("parents").and_then(Value::as_bool).unwrap_or(true);
    let exist_ok = body
        .get("exist_ok")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let root = state.storage().path(&f.id);
    let (uid, gid) = state.storage().owner();
    let mut results = Vec::new();
    for p in paths {
        let target = storage::resolve_new(&root, &p, parents)?;
        match std::fs::create_dir(&target) {
            Ok(()) => {
                chown_quiet(&target, uid, gid);
                results.push(serde_json::json!({"item": p, "msg": null}));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && exist_ok => {
                results.push(serde_json::json!({"item": p, "msg": null}));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ApiError::conflict(format!("{p:?} already exists")));
            }
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"results": results})),
    )
        .into_response())
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
