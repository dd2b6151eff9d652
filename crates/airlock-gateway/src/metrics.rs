//! Prometheus metrics (`metrics` facade, `metrics-exporter-prometheus`
//! renderer), served by [`serve`] at `/metrics` on its own listener
//! (`--metrics-listen`), never on the public one.
//!
//! Counters and the histogram are recorded where things happen (logins,
//! tunnel ends, every HTTP request by route and status); gauges (sessions
//! by state, agents, open tunnels) and the relayed bytes (open tunnels'
//! live counts plus those of ended ones) are read from the state at each
//! scrape.

use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::AppState;
use crate::store::Status;

/// Tunnel durations, seconds.
const DURATION_BUCKETS: &[f64] = &[
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    24.0 * 3600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls reuse it). `None`
/// when another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("airlock_tunnel_duration_seconds".to_owned()),
                    DURATION_BUCKETS,
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// A login attempt's outcome (`ok`, `failed`).
pub fn login(result: &'static str) {
    metrics::counter!("airlock_logins_total", "result" => result).increment(1);
}

/// A tunnel (SSH or web terminal) ended after `seconds`.
pub fn tunnel_ended(seconds: f64) {
    metrics::histogram!("airlock_tunnel_duration_seconds").record(seconds);
}

/// Layer: counts requests by matched route (never the raw path, which
/// holds names) and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    metrics::counter!(
        "airlock_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => resp.status().as_u16().to_string()
    )
    .increment(1);
    resp
}

async fn scrape(State(state): State<AppState>) -> Response {
    let Some(handle) = handle() else {
        return Response::new("# metrics recorder unavailable\n".into());
    };
    for s in [
        Status::Pending,
        Status::Preparing,
        Status::Running,
        Status::Terminating,
    ] {
        let n = state.store().session_count(s).await.unwrap_or(0);
        metrics::gauge!("airlock_sessions", "state" => s.as_str()).set(n as f64);
    }
    let max_age = i64::try_from(state.config().agent_offline_after.as_millis()).unwrap_or(0);
    let agents = state
        .store()
        .online_agents(max_age)
        .await
        .map_or(0, |a| a.len());
    metrics::gauge!("airlock_agents_online").set(agents as f64);
    metrics::gauge!("airlock_tunnels_open").set(state.tunnels().count() as f64);
    // Live: the bytes of open tunnels count as they pass, not at their end.
    let (up, down) = state.tunnels().bytes_total();
    metrics::counter!("airlock_tunnel_bytes_total", "direction" => "up").absolute(up);
    metrics::counter!("airlock_tunnel_bytes_total", "direction" => "down").absolute(down);
    let mut resp = Response::new(handle.render().into());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// Serves `/metrics` on `listener` until the gateway shuts down.
pub async fn serve(listener: TcpListener, state: AppState) -> Result<(), crate::ServeError> {
    handle();
    let shutdown = state.shutdown_token().clone();
    let limits = state.config().http_limits;
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state(state);
    crate::listener::serve(listener, app, limits, None, shutdown).await?;
    Ok(())
}
