//! Endpoints only the official Backend.AI client uses: GraphQL queries and
//! the storage-proxy style folder transfers (request-upload + tus,
//! request-download).

use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::folders;
use crate::gql::{self, GqlRequest};
use crate::json::Json;
use crate::storage::{self, chown_quiet};

/// `POST /admin/gql` (and the older `/admin/graphql`).
pub(crate) async fn gql(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<GqlRequest>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    Ok(axum::Json(gql::execute(&state, &caller, req).await?))
}

/// `scheme://host` of this request, for URLs handed to the client.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let scheme = if state.config().trust_forwarded {
        h("x-forwarded-proto").unwrap_or("http")
    } else {
        "http"
    };
    let host = if state.config().trust_forwarded {
        h("x-forwarded-host").or(h("host"))
    } else {
        h("host")
    }
    .unwrap_or("127.0.0.1");
    format!("{scheme}://{host}")
}

/// The body of `request-upload` and `request-download`.
#[derive(Debug, Deserialize)]
pub(crate) struct TransferRequest {
    path: String,
    #[serde(default)]
    size: u64,
}

/// `POST /folders/{f}/request-upload` `{path, size}` → `{token, url}`.
pub(crate) async fn request_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    headers: HeaderMap,
    Json(TransferRequest { path, size }): Json<TransferRequest>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let f = folders::resolve(&state, &caller, &ident).await?;
    crate::quotas::check_announced(
        crate::quotas::upload_limit(&state, &caller.user.id).await?,
        size,
    )?;
    let root = state.storage().path(&f.id);
    let target = tokio::task::spawn_blocking({
        let root = root.clone();
        let path = path.clone();
        move || storage::resolve_new(&root, &path, true)
    })
    .await
    .map_err(ApiError::internal)??;
    if target.is_dir() {
        return Err(ApiError::invalid(format!("{path:?} is a directory")));
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(
        ".{name}.airlock-upload-{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    tokio::fs::File::create(&tmp)
        .await
        .map_err(ApiError::internal)?;
    let owner = state.storage().owner();
    if size == 0 {
        // tus sends no PATCH for an empty file: it is complete now.
        chown_quiet(&tmp, owner.0, owner.1);
        tokio::fs::rename(&tmp, &target)
            .await
            .map_err(ApiError::internal)?;
    }
    let token = state.transfers().start_upload(target, tmp, size, owner);
    if size == 0 {
        state.transfers().release(&token, 0, true);
    }
    tracing::info!(folder = %f.name, %path, size, "upload requested");
    Ok(axum::Json(serde_json::json!({
        "token": token,
        "url": format!("{}/folders/_/tus/upload", base_url(&state, &headers)),
    })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: String,
}

fn tus_headers(resp: &mut Response, offset: u64, length: Option<u64>) {
    let h = resp.headers_mut();
    h.insert("Tus-Resumable", HeaderValue::from_static("1.0.0"));
    if let Ok(v) = HeaderValue::from_str(&offset.to_string()) {
        h.insert("Upload-Offset", v);
    }
    if let Some(l) = length
        && let Ok(v) = HeaderValue::from_str(&l.to_string())
    {
        h.insert("Upload-Length", v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn unknown_token() -> ApiError {
    ApiError::not_found("upload-not-found", "unknown or expired upload token")
        .hint("request a new upload")
}

/// `HEAD /folders/_/tus/upload?token=` → the current offset.
pub(crate) async fn tus_head(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Response> {
    let up = state
        .transfers()
        .upload(&q.token)
        .ok_or_else(unknown_token)?;
    let mut resp = StatusCode::OK.into_response();
    tus_headers(&mut resp, up.offset, Some(up.size));
    Ok(resp)
}

/// `PATCH /folders/_/tus/upload?token=` with `Upload-Offset`: appends.
pub(crate) async fn tus_patch(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    req: Request,
) -> ApiResult<Response> {
    let claimed = state.transfers().claim(&q.token);
    let Some(up) = claimed else {
        return Err(match state.transfers().upload(&q.token) {
            Some(_) => ApiError::conflict("another request is writing this upload"),
            None => unknown_token(),
        });
    };
    let offset: Option<u64> = req
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    if offset != Some(up.offset) {
        state.transfers().release(&q.token, up.offset, false);
        let mut resp = ApiError::conflict(format!(
            "Upload-Offset must be {} (got {})",
            up.offset,
            offset.map_or_else(|| "none".to_owned(), |o| o.to_string())
        ))
        .into_response();
        tus_headers(&mut resp, up.offset, Some(up.size));
        return Ok(resp);
    }
    let result: ApiResult<u64> = async {
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&up.tmp)
            .await
            .map_err(ApiError::internal)?;
        let mut pos = up.offset;
        let mut body = req.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ApiError::invalid(format!("upload interrupted: {e}")))?;
            pos += chunk.len() as u64;
            if pos > up.size {
                return Err(ApiError::invalid(format!(
                    "more data than the announced {} bytes",
                    up.size
                )));
            }
            file.write_all(&chunk).await.map_err(ApiError::internal)?;
        }
        file.flush().await.map_err(ApiError::internal)?;
        if pos == up.size {
            file.sync_all().await.map_err(ApiError::internal)?;
        }
        Ok(pos)
    }
    .await;
    let pos = match result {
        Ok(p) => p,
        Err(e) => {
            // Keep what is safely on disk; the client resumes from there.
            let on_disk = tokio::fs::metadata(&up.tmp)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            let keep = on_disk.min(up.size);
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&up.tmp) {
                let _ = f.set_len(keep);
            }
            state.transfers().release(&q.token, keep, false);
            return Err(e);
        }
    };
    let done = pos == up.size;
    if done {
        chown_quiet(&up.tmp, up.owner.0, up.owner.1);
        if let Err(e) = tokio::fs::rename(&up.tmp, &up.target).await {
            state.transfers().release(&q.token, pos, false);
            return Err(ApiError::internal(e));
        }
        tracing::info!(path = %up.target.display(), size = up.size, "upload complete");
    }
    state.transfers().release(&q.token, pos, done);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    tus_headers(&mut resp, pos, None);
    Ok(resp)
}

/// `POST /folders/{f}/request-download` `{path}` → `{token, url}`.
pub(crate) async fn request_download(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    headers: HeaderMap,
    Json(TransferRequest { path, .. }): Json<TransferRequest>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let f = folders::resolve(&state, &caller, &ident).await?;
    let full = folders::existing_path(&state, &f, &path)?;
    if full.is_dir() {
        return Err(ApiError::invalid(format!("{path:?} is a directory")));
    }
    let token = state.transfers().start_download(full);
    Ok(axum::Json(serde_json::json!({
        "token": token,
        "url": format!("{}/folders/_/tus/download", base_url(&state, &headers)),
    })))
}

/// `GET /folders/_/tus/download?token=` (Range and If-Range honoured).
pub(crate) async fn download(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let path = state.transfers().download(&q.token).ok_or_else(|| {
        ApiError::not_found("download-not-found", "unknown or expired download token")
    })?;
    folders::serve_file(&path, &headers).await
}
