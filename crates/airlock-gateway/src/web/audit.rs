//! The audit trail in the web UI: `/ui/admin/events` (administrators:
//! everyone's events, filtered by user, session and time, optionally
//! refreshing itself every few seconds) and the "Recent activity" card of
//! the settings page (a user's own events).

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use http::{HeaderValue, StatusCode};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav};
use super::{Flash, PageError, PageResult, PostForm, WebUser, redirect_with};
use crate::AppState;
use crate::audit::parse_since;
use crate::store::{Drain, Event, EventFilter, now_ms};

/// The newest this many are shown.
const SHOWN: u32 = 500;

/// Details of an event as `key=value` pairs.
fn details(e: &Event) -> String {
    let out: Vec<String> = e
        .what
        .details()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    out.join("  ")
}

/// Whether an events table has a User column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserColumn {
    /// Everyone's events (the administrator's audit page).
    Shown,
    /// One user's own events.
    Hidden,
}

/// A table of events, newest first.
pub(crate) fn table(events: &[Event], user_column: UserColumn) -> Markup {
    let show_user = user_column == UserColumn::Shown;
    html! {
        @if events.is_empty() {
            p.muted { "No events." }
        } @else {
            div.table-wrap {
                table.events {
                    thead { tr {
                        th { "Time" } th { "Event" }
                        @if show_user { th { "User" } }
                        th { "From" } th { "Session" } th { "Details" }
                    } }
                    tbody {
                        @for e in events.iter().rev() {
                            tr data-kind=(e.what.kind) {
                                td { (layout::time(e.what.at)) }
                                td { code { (e.what.kind) } }
                                @if show_user { td { (e.what.user.as_deref().unwrap_or("-")) } }
                                td { (e.what.client.as_deref().unwrap_or("-")) }
                                td { (e.what.session.as_deref().unwrap_or("-")) }
                                td.details { (details(e)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsQuery {
    #[serde(default)]
    user: String,
    #[serde(default)]
    session: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    live: String,
}

/// `GET /ui/admin/events`.
pub(crate) async fn page(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<EventsQuery>,
) -> PageResult {
    if !user.caller.user.is_admin() {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Only administrators see everyone's events; yours are under Settings.",
        ));
    }
    let since = match q.since.trim() {
        "" => None,
        s => Some(
            parse_since(s, now_ms())
                .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, "Bad time filter", e))?,
        ),
    };
    let nonempty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let events = state
        .store()
        .events(&EventFilter {
            user: nonempty(&q.user),
            session: nonempty(&q.session),
            since,
            limit: Some(SHOWN),
            ..EventFilter::default()
        })
        .await?;
    let live = q.live == "1";
    let content = html! {
        (layout::heading("Audit trail", Some(html! {
            "Logins, sessions, tunnels, file transfers and what happened inside SSH connections, newest first (at most " (SHOWN) "). "
            a href="/ui/admin/cluster" { "Cluster" }
        })))
        section.card {
            form.filters method="get" action="/ui/admin/events" {
                label { "User " input type="text" name="user" value=(q.user) placeholder="email"; }
                label { "Session " input type="text" name="session" value=(q.session) placeholder="name or id"; }
                label { "Since " input type="text" name="since" value=(q.since) placeholder="1h, 7d, or a date"; }
                label { input type="checkbox" name="live" value="1" checked[live]; " Refresh every 5 s" }
                button.btn.btn-primary type="submit" { "Show" }
            }
            (table(&events, UserColumn::Shown))
        }
    };
    let mut resp = layout::page(&user, Nav::Admin, "Audit trail", content).into_response();
    if live {
        // A plain refresh: no script needed, the filters stay in the URL.
        resp.headers_mut()
            .insert("refresh", HeaderValue::from_static("5"));
    }
    Ok(resp)
}

/// The settings page's "Recent activity" card: the user's own newest
/// events.
pub(crate) async fn recent(state: &AppState, user: &WebUser) -> Result<Markup, PageError> {
    let events = state
        .store()
        .events(&EventFilter {
            user_id: Some(user.id().to_owned()),
            limit: Some(50),
            ..EventFilter::default()
        })
        .await?;
    Ok(html! {
        section.card #activity aria-labelledby="activity-title" {
            h2 #activity-title { (layout::svg(layout::icon::SHIELD)) "Recent activity" }
            p.muted { "Your account's newest events: logins, sessions, connections and file transfers." }
            (table(&events, UserColumn::Hidden))
        }
    })
}

/// `GET /ui/admin/cluster`: agents with capacity and load, every user's
/// live sessions (with a terminate button), open tunnels; refreshes itself
/// every 5 seconds.
pub(crate) async fn cluster(State(state): State<AppState>, user: WebUser) -> PageResult {
    if !user.caller.user.is_admin() {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Only administrators see the cluster.",
        ));
    }
    let c = crate::cluster::snapshot(&state).await?;
    let empty = Vec::new();
    let list = |k: &str| c[k].as_array().unwrap_or(&empty).clone();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let gib =
        |v: &serde_json::Value| format!("{:.1}", v.as_f64().unwrap_or(0.0) / f64::from(1u32 << 30));
    let cores = |v: &serde_json::Value| format!("{:.1}", v.as_f64().unwrap_or(0.0) / 1000.0);
    let content = html! {
        (layout::heading("Cluster", Some(html! {
            "Nodes, every user's sessions and open tunnels (refreshes every 5 s). "
            a href="/ui/admin/events" { "Audit trail" }
        })))
        section.card #agents {
            h2 { "Agents" }
            table.cluster { thead { tr { th { "Agent" } th { "Online" } th { "CPU used / cores" } th { "Memory used / GiB" } th { "GPUs used / total" } th { "Load (1 min)" } th { "Version" } th { "Last seen" } th { "New sessions" } } }
                tbody { @for a in list("agents") { tr {
                    td { (text(&a["id"])) } td { (text(&a["online"])) }
                    td { (cores(&a["cpu_milli_used"])) " / " (cores(&a["cpu_milli"])) }
                    td { (gib(&a["mem_bytes_used"])) " / " (gib(&a["mem_bytes"])) }
                    td { (text(&a["gpus_used"])) " / " (text(&a["gpus"])) }
                    td { (format!("{:.2}", a["load1"].as_f64().unwrap_or(0.0))) }
                    td { (text(&a["version"])) } td { (text(&a["last_seen"])) }
                    td {
                        @let id = text(&a["id"]);
                        @let draining = a["draining"] == true;
                        form.inline method="post" action=(format!("/ui/admin/nodes/{id}/{}", if draining { "undrain" } else { "drain" })) {
                            (layout::csrf(&user))
                            @if draining {
                                "drained " button.btn.btn-sm type="submit" aria-label=(format!("End the drain of node {id}")) { "Undrain" }
                            } @else {
                                button.btn.btn-sm type="submit" aria-label=(format!("Drain node {id}: no new sessions")) { "Drain" }
                            }
                        }
                    }
                } } } }
        }
        section.card #all-sessions {
            h2 { "Sessions" }
            table.cluster { thead { tr { th { "Session" } th { "Owner" } th { "Status" } th { "Agent" } th { "Created" } th {} } }
                tbody { @for s in list("sessions") { tr {
                    td { (text(&s["name"])) } td { (text(&s["owner"])) } td { (text(&s["status"])) }
                    td { (text(&s["agent"])) } td { (text(&s["created_at"])) }
                    td { (layout::danger_button(&user, &format!("/ui/sessions/{}/terminate", text(&s["id"])), &[], &format!("Terminate session {} of {}?", text(&s["name"]), text(&s["owner"])), "Terminate", &format!("Terminate session {}", text(&s["name"])))) }
                } } } }
        }
        section.card #tunnels {
            h2 { "Open tunnels" }
            table.cluster { thead { tr { th { "Session" } th { "User" } th { "Client" } th { "From" } th { "Since" } th { "Open" } th { "Up" } th { "Down" } } }
                tbody { @for t in list("tunnels") { tr {
                    td { (text(&t["session_name"])) } td { (text(&t["user"])) }
                    td { (text(&t["client"])) @if let Some(v) = t["client_version"].as_str() { " " (v) } }
                    td { (text(&t["client_addr"])) } td { (text(&t["since"])) }
                    td { (duration(t["duration_s"].as_u64().unwrap_or(0))) }
                    td.num data-bytes=(t["bytes_up"]) { (layout::size(t["bytes_up"].as_u64().unwrap_or(0))) }
                    td.num data-bytes=(t["bytes_down"]) { (layout::size(t["bytes_down"].as_u64().unwrap_or(0))) }
                } } } }
        }
    };
    let mut resp = layout::page(&user, Nav::Admin, "Cluster", content).into_response();
    resp.headers_mut()
        .insert("refresh", HeaderValue::from_static("5"));
    Ok(resp)
}

/// `POST /ui/admin/nodes/{id}/drain`: the Cluster page's Drain button (no
/// new sessions on the node; running ones stay).
pub(crate) async fn drain(
    State(state): State<AppState>,
    Path(node): Path<String>,
    PostForm { user, .. }: PostForm,
) -> PageResult {
    set_draining(&state, user, &node, Drain::Drained).await
}

/// `POST /ui/admin/nodes/{id}/undrain`: ends a drain.
pub(crate) async fn undrain(
    State(state): State<AppState>,
    Path(node): Path<String>,
    PostForm { user, .. }: PostForm,
) -> PageResult {
    set_draining(&state, user, &node, Drain::Accepting).await
}

async fn set_draining(state: &AppState, user: WebUser, node: &str, to: Drain) -> PageResult {
    if !user.caller.user.is_admin() {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Only administrators drain nodes.",
        ));
    }
    let admin = crate::auth::Admin(user.caller);
    crate::cluster::set_draining(state, &admin, node, to).await?;
    let msg = match to {
        Drain::Drained => {
            format!("Node {node} is drained: it takes no new sessions; running ones stay.")
        }
        Drain::Accepting => format!("Node {node} takes new sessions again."),
    };
    Ok(redirect_with("/ui/admin/cluster", &[Flash::ok(msg)]))
}

/// A duration for people: `45s`, `12m 3s`, `3h 12m`.
fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn formats_for_people() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(725), "12m 5s");
        assert_eq!(duration(11_520), "3h 12m");
    }
}
