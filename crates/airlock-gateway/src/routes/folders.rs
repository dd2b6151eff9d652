//! `/folders…`: storage folders and their files (the logic lives in
//! [`crate::folders`], shared with the web UI).

use airlock_proto::api::{FolderEntry, FolderInfo};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::audit::{FileScope, file_event};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::folders::{self, info, resolve};
use crate::json::Json;
use crate::quotas;

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
    let host = body.get("host").and_then(Value::as_str);
    let f = folders::create(&state, &caller, name, host).await?;
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

/// `DELETE /folders/{f}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
) -> ApiResult<StatusCode> {
    let f = resolve(&state, &caller, &ident).await?;
    folders::delete(&state, &caller, &f).await?;
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
    let f = folders::rename(&state, &caller, &f, new_name).await?;
    Ok(axum::Json(info(&state, &f).await?))
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct PathQuery {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    recursive: Option<String>,
}

/// `GET /folders/{f}/files?path=`.
pub(crate) async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<axum::Json<Vec<FolderEntry>>> {
    let f = resolve(&state, &caller, &ident).await?;
    let out = folders::list_files(&state, &f, q.path.as_deref().unwrap_or("")).await?;
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
    // The upload limit: the announced length up front, then the bytes as
    // they stream (a chunked body announces nothing).
    let (body, tripped, limit) =
        quotas::limit_upload(&state, &caller.user.id, req.into_body().into_data_stream()).await?;
    quotas::check_announced(limit, expected.unwrap_or(0))?;
    let written = folders::write_file(&state, &f, &path, body, expected, 0o644)
        .await
        .map_err(|e| quotas::over_limit_or(e, &tripped, limit))?;
    file_event(
        &state,
        (&caller.user.id, Some(&caller.user)),
        FileScope::Folder(&f),
        "folder.upload",
        &path,
        Some(written),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"path": path, "size": written})),
    )
        .into_response())
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
    let (file, len) = folders::open_file(&state, &f, &path).await?;
    file_event(
        &state,
        (&caller.user.id, Some(&caller.user)),
        FileScope::Folder(&f),
        "folder.download",
        &path,
        Some(len),
    )
    .await;
    folders::serve_file(file, len, &headers)
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
    let recursive = q
        .recursive
        .as_deref()
        .is_some_and(|v| v == "true" || v == "1");
    let what = if recursive {
        folders::Removal::Tree
    } else {
        folders::Removal::Entry
    };
    folders::delete_file(&state, &f, &path, what).await?;
    file_event(
        &state,
        (&caller.user.id, Some(&caller.user)),
        FileScope::Folder(&f),
        "folder.delete",
        &path,
        None,
    )
    .await;
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
    let mut results = Vec::new();
    for p in paths {
        folders::mkdir(&state, &f, &p, folders::MkdirOptions { parents, exist_ok }).await?;
        results.push(serde_json::json!({"item": p, "msg": null}));
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"results": results})),
    )
        .into_response())
}
