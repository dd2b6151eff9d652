//! The audit trail's read side: `GET /user/events` (the caller's own
//! events) and `GET /admin/events` (everyone's, filtered).

use axum::extract::{Query, State};
use serde::Deserialize;

use crate::AppState;
use crate::audit::parse_since;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ApiResult};
use crate::store::{EventFilter, now_ms};

/// The most events one request returns.
const MAX_EVENTS: u32 = 10_000;

#[derive(Debug, Deserialize)]
pub(crate) struct EventQuery {
    /// Account id or email (administrators only).
    #[serde(default)]
    user: Option<String>,
    /// Session id or name.
    #[serde(default)]
    session: Option<String>,
    /// `1h`, `7d`, or an RFC 3339 time.
    #[serde(default)]
    since: Option<String>,
    /// Only events after this id (live tail).
    #[serde(default)]
    after: Option<String>,
    /// The newest this many (default and maximum 10000).
    #[serde(default)]
    limit: Option<u32>,
}

fn filter(q: EventQuery) -> ApiResult<EventFilter> {
    let since = q
        .since
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| parse_since(s, now_ms()))
        .transpose()
        .map_err(|e| {
            ApiError::invalid(e).hint("for example since=1h or since=2026-01-31T00:00:00Z")
        })?;
    Ok(EventFilter {
        user: q.user.filter(|s| !s.is_empty()),
        user_id: None,
        session: q.session.filter(|s| !s.is_empty()),
        since,
        after_id: q.after.filter(|s| !s.is_empty()),
        limit: Some(q.limit.unwrap_or(MAX_EVENTS).clamp(1, MAX_EVENTS)),
    })
}

/// `GET /user/events`: the caller's own events (never anyone else's, the
/// caller's role notwithstanding).
pub(crate) async fn mine(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<EventQuery>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let mut f = filter(q)?;
    f.user = None;
    f.user_id = Some(caller.user.id.clone());
    let events = state.store().events(&f).await?;
    Ok(axum::Json(serde_json::json!({ "events": events })))
}

/// `GET /admin/events`: everyone's events (administrators only).
pub(crate) async fn all(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<EventQuery>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let f = filter(q)?;
    let events = state.store().events(&f).await?;
    Ok(axum::Json(serde_json::json!({ "events": events })))
}
