//! The administrator's cluster routes: `GET /admin/cluster`,
//! `POST /admin/users/{email}/disable|enable` and
//! `POST /admin/nodes/{id}/drain|undrain`, answered by [`crate::cluster`].
//! Terminating any session is `DELETE /session/{id}` as an administrator
//! (audited with who did it).

use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Admin;
use crate::cluster::{self, snapshot};
use crate::error::ApiResult;
use crate::store::{Account, Drain};

/// `GET /admin/cluster`.
pub(crate) async fn get(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(snapshot(&state).await?))
}

/// `POST /admin/users/{email}/disable`.
pub(crate) async fn disable(
    State(state): State<AppState>,
    admin: Admin,
    Path(email): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    cluster::set_account(&state, &admin, &email, Account::Disabled).await?;
    Ok(axum::Json(json!({"email": email, "active": false})))
}

/// `POST /admin/users/{email}/enable`.
pub(crate) async fn enable(
    State(state): State<AppState>,
    admin: Admin,
    Path(email): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    cluster::set_account(&state, &admin, &email, Account::Enabled).await?;
    Ok(axum::Json(json!({"email": email, "active": true})))
}

/// `POST /admin/nodes/{id}/drain`.
pub(crate) async fn drain(
    State(state): State<AppState>,
    admin: Admin,
    Path(node): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    cluster::set_draining(&state, &admin, &node, Drain::Drained).await?;
    Ok(axum::Json(json!({"node": node, "draining": true})))
}

/// `POST /admin/nodes/{id}/undrain`.
pub(crate) async fn undrain(
    State(state): State<AppState>,
    admin: Admin,
    Path(node): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    cluster::set_draining(&state, &admin, &node, Drain::Accepting).await?;
    Ok(axum::Json(json!({"node": node, "draining": false})))
}
