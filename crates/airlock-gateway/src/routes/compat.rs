//! Endpoints only the official Backend.AI client uses: GraphQL queries and
//! the storage-proxy style folder transfers (request-upload + tus,
//! request-download).

use airlock_beneath::RelPath;
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
use crate::store::Folder;
use crate::transfers::Grant;

/// `POST /admin/gql` (and the older `/admin/graphql`).
pub(crate) async fn gql(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<GqlRequest>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    Ok(axum::Json(gql::execute(&state, &caller, req).await?))
}

/// `scheme://host` of this request, for URLs handed to the client.
/// `X-Forwarded-*` count only from a trusted proxy.
fn base_url(state: &AppState, parts: &http::request::Parts) -> String {
    let peer = crate::forwarded::peer_of(parts);
    let fwd = |n: &str| crate::forwarded::forwarded(state.config(), &parts.headers, peer, n);
    // Without a proxy's word, the scheme this gateway itself serves.
    let own = if state.config().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let scheme = fwd("proto").unwrap_or(own);
    let host = fwd("host")
        .or_else(|| parts.headers.get("host").and_then(|v| v.to_str().ok()))
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
    parts: http::request::Parts,
    Json(TransferRequest { path, size }): Json<TransferRequest>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let f = folders::resolve(&state, &caller, &ident).await?;
    crate::quotas::check_announced(
        crate::quotas::upload_limit(&state, &caller.user.id).await?,
        size,
    )?;
    let rel = RelPath::new(&path)?;
    let file = folders::create_file(&state, &f, &path, 0o644).await?;
    let grant = Grant {
        folder_id: f.id.clone(),
        path: rel.as_str().to_owned(),
        user_id: caller.user.id.clone(),
    };
    if size == 0 {
        // tus sends no PATCH for an empty file: it is complete now.
        folders::commit_file(&state, &f.id, file).await?;
        tracing::info!(folder = %f.name, %path, "empty file uploaded");
        crate::audit::file_event(
            &state,
            (&caller.user.id, Some(&caller.user)),
            crate::audit::FileScope::Folder(&f),
            "folder.upload",
            rel.as_str(),
            Some(0),
        )
        .await;
        return Ok(axum::Json(serde_json::json!({
            // Nothing will use it: the file is complete.
            "token": hex::encode(rand::random::<[u8; 24]>()),
            "url": format!("{}/folders/_/tus/upload", base_url(&state, &parts)),
        })));
    }
    let token = state.transfers().start_upload(grant, file, size);
    tracing::info!(folder = %f.name, %path, size, "upload requested");
    Ok(axum::Json(serde_json::json!({
        "token": token,
        "url": format!("{}/folders/_/tus/upload", base_url(&state, &parts)),
    })))
}

/// The folder a token's grant points at, if its user may still use it (the
/// account is active and the folder is still theirs).
async fn granted_folder(state: &AppState, grant: &Grant) -> ApiResult<Folder> {
    let gone = || {
        ApiError::not_found("transfer-not-found", "the folder of this transfer is gone")
            .hint("request a new transfer")
    };
    let user = state
        .store()
        .user_by_id(&grant.user_id)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(gone)?;
    state
        .store()
        .folder(&grant.folder_id)
        .await?
        .filter(|f| f.user_id == user.id || user.is_admin())
        .ok_or_else(gone)
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
    let Some((up, file)) = state.transfers().claim(&q.token) else {
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
        state.transfers().release(&q.token, up.offset, file);
        let mut resp = ApiError::conflict(format!(
            "Upload-Offset must be {} (got {})",
            up.offset,
            offset.map_or_else(|| "none".to_owned(), |o| o.to_string())
        ))
        .into_response();
        tus_headers(&mut resp, up.offset, Some(up.size));
        return Ok(resp);
    }
    if let Err(e) = granted_folder(&state, &up.grant).await {
        state.transfers().finish(&q.token);
        file.discard();
        return Err(e);
    }
    let result: ApiResult<u64> = async {
        let mut std_file = file.file().try_clone().map_err(ApiError::internal)?;
        std::io::Seek::seek(&mut std_file, std::io::SeekFrom::Start(up.offset))
            .map_err(ApiError::internal)?;
        let mut out = tokio::fs::File::from_std(std_file);
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
            out.write_all(&chunk).await.map_err(ApiError::internal)?;
        }
        out.flush().await.map_err(ApiError::internal)?;
        Ok(pos)
    }
    .await;
    let pos = match result {
        Ok(p) => p,
        Err(e) => {
            // Keep what is safely written; the client resumes from there.
            let on_disk = file.file().metadata().map(|m| m.len()).unwrap_or(0);
            let keep = on_disk.min(up.size);
            let _ = file.file().set_len(keep);
            state.transfers().release(&q.token, keep, file);
            return Err(e);
        }
    };
    if pos == up.size {
        state.transfers().finish(&q.token);
        folders::commit_file(&state, &up.grant.folder_id, file).await?;
        tracing::info!(path = %up.grant.path, size = up.size, "upload complete");
        if let Ok(f) = granted_folder(&state, &up.grant).await {
            crate::audit::file_event(
                &state,
                (&up.grant.user_id, None),
                crate::audit::FileScope::Folder(&f),
                "folder.upload",
                &up.grant.path,
                Some(up.size),
            )
            .await;
        }
    } else {
        state.transfers().release(&q.token, pos, file);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    tus_headers(&mut resp, pos, None);
    Ok(resp)
}

/// `POST /folders/{f}/request-download` `{path}` → `{token, url}`.
pub(crate) async fn request_download(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    parts: http::request::Parts,
    Json(TransferRequest { path, .. }): Json<TransferRequest>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let f = folders::resolve(&state, &caller, &ident).await?;
    let rel = RelPath::new(&path)?;
    // Refuse now what would be refused later (directories, links, special
    // files); the path is resolved again on every GET.
    folders::open_file(&state, &f, &path).await?;
    let token = state.transfers().start_download(Grant {
        folder_id: f.id.clone(),
        path: rel.as_str().to_owned(),
        user_id: caller.user.id.clone(),
    });
    Ok(axum::Json(serde_json::json!({
        "token": token,
        "url": format!("{}/folders/_/tus/download", base_url(&state, &parts)),
    })))
}

/// `GET /folders/_/tus/download?token=` (Range and If-Range honoured). The
/// path is resolved again beneath the folder root on every request.
pub(crate) async fn download(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let grant = state.transfers().download(&q.token).ok_or_else(|| {
        ApiError::not_found("download-not-found", "unknown or expired download token")
            .hint("request a new download")
    })?;
    let f = granted_folder(&state, &grant).await?;
    let (file, len) = folders::open_file(&state, &f, &grant.path).await?;
    crate::audit::file_event(
        &state,
        (&grant.user_id, None),
        crate::audit::FileScope::Folder(&f),
        "folder.download",
        &grant.path,
        Some(len),
    )
    .await;
    folders::serve_file(file, len, &headers)
}
