//! The route table. Every path is served both bare and under `/func/` (the
//! Backend.AI web server's prefix), by stripping the prefix before routing.

mod cluster;
mod compat;
mod events;
mod folders;
mod limits;
mod login;
mod session;
pub(crate) mod tunnel;
mod user;

use airlock_proto::api::VersionInfo;
use axum::extract::Request;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http::{StatusCode, Uri};
use tower::ServiceExt;

use crate::AppState;
use crate::auth::RawTarget;
use crate::error::ApiError;

/// Marks a request that arrived under `/func/`.
#[derive(Debug, Clone, Copy)]
pub struct ViaFunc;

fn strip_func(mut req: Request) -> Request {
    let raw = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    req.extensions_mut().insert(RawTarget(raw));
    let path = req.uri().path();
    if path == "/func" || path.starts_with("/func/") {
        let rest = path.get(5..).unwrap_or_default();
        let rest = if rest.is_empty() { "/" } else { rest };
        let new = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        if let Ok(uri) = new.parse::<Uri>() {
            *req.uri_mut() = uri;
            req.extensions_mut().insert(ViaFunc);
        }
    }
    req
}

/// The full application, `/func` handling included.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/", get(version))
        .route("/server/login", post(login::login))
        .route("/server/logout", post(login::logout))
        .route("/server/login-check", get(login::login_check))
        .route("/manager/announcement", get(announcement))
        .route(
            "/user/settings",
            get(user::get_settings)
                .patch(user::patch_settings)
                .post(user::patch_settings),
        )
        .route("/user/limits", get(limits::mine))
        .route("/user/me", get(user::me))
        .route("/user/events", get(events::mine))
        .route("/admin/events", get(events::all))
        .route("/admin/cluster", get(cluster::get))
        .route("/admin/users/{email}/disable", post(cluster::disable))
        .route("/admin/users/{email}/enable", post(cluster::enable))
        .route("/admin/nodes/{id}/drain", post(cluster::drain))
        .route("/admin/nodes/{id}/undrain", post(cluster::undrain))
        .route(
            "/admin/users/{email}/limits",
            get(limits::get).patch(limits::patch).put(limits::patch),
        )
        .route("/user/ssh-keys", get(user::list_keys).post(user::add_key))
        .route("/user/ssh-keys/{key}", delete(user::remove_key))
        .route(
            "/user/keypair",
            get(user::get_keypair)
                .post(user::regenerate_keypair)
                .delete(user::revoke_keypair),
        )
        .route("/user/password", post(user::change_password))
        .route("/session", get(session::list).post(session::create))
        .route(
            "/session/{s}",
            get(session::get_one).delete(session::destroy),
        )
        .route("/session/{s}/logs", get(session::logs))
        .route(
            "/session/{s}/download",
            post(session::download).get(session::download),
        )
        .route("/session/{s}/upload", post(session::upload))
        .route("/session/{s}/files", get(session::files))
        .route("/session/{s}/ping", get(session::ping))
        .route("/stream/session/{s}/apps", get(session::apps))
        .route("/stream/session/{s}/tcpproxy", get(tunnel::tcpproxy))
        .route("/admin/tunnels", get(tunnel::list))
        .route("/admin/gql", post(compat::gql))
        .route("/admin/graphql", post(compat::gql))
        .route("/folders/{f}/request-upload", post(compat::request_upload))
        .route(
            "/folders/{f}/request-download",
            post(compat::request_download),
        )
        .route(
            "/folders/_/tus/upload",
            axum::routing::patch(compat::tus_patch).head(compat::tus_head),
        )
        .route("/folders/_/tus/download", get(compat::download))
        .route("/images", get(session::images))
        .route("/agent/v1/heartbeat", post(session::heartbeat))
        .route("/agent/v1/events", post(session::runner_events))
        .route("/folders", get(folders::list).post(folders::create))
        .route("/folders/_/id", get(folders::id_of))
        .route(
            "/folders/{f}",
            get(folders::get_one).delete(folders::delete),
        )
        .route("/folders/{f}/rename", post(folders::rename))
        .route("/folders/{f}/files", get(folders::list_files))
        .route(
            "/folders/{f}/file",
            get(folders::get_file)
                .put(folders::put_file)
                .delete(folders::delete_file),
        )
        .route("/folders/{f}/mkdir", post(folders::mkdir))
        .nest(crate::web::BASE, crate::web::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::origin::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::context,
        ))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            crate::cookies::secure_when_https,
        ))
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .with_state(state);
    // Rewrite before routing: wrap the finished router.
    Router::new().fallback_service(api.map_request(strip_func))
}

/// Only the agent heartbeat (see [`crate::serve_agent_link`]).
pub fn agent_link(state: AppState) -> Router {
    Router::new()
        .route("/agent/v1/heartbeat", post(session::heartbeat))
        .route("/agent/v1/events", post(session::runner_events))
        .fallback(not_found)
        .with_state(state)
}

/// `GET /`: the version JSON for API clients (the official client probes
/// it with `Accept: */*`); browsers asking for HTML go to the web UI.
async fn version(headers: http::HeaderMap) -> Response {
    if crate::web::wants_html(&headers) {
        return Redirect::to(crate::web::HOME).into_response();
    }
    Json(VersionInfo {
        version: airlock_proto::API_VERSION.to_owned(),
        manager: airlock_proto::manager_version(),
    })
    .into_response()
}

async fn announcement() -> Json<serde_json::Value> {
    Json(serde_json::json!({"enabled": false, "message": ""}))
}

async fn not_found(
    uri: Uri,
    original: axum::extract::OriginalUri,
    headers: http::HeaderMap,
) -> Response {
    if crate::web::wants_html(&headers) {
        // A person typed a wrong address: show the web UI's 404 page.
        return crate::web::not_found(original).await;
    }
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "Not found")
        .msg(format!("no API endpoint at {}", uri.path()))
        .into_response()
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
    )
    .msg(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}
