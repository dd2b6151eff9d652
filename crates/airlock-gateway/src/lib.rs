//! The airlock gateway: the only server users reach.
//!
//! It speaks the Backend.AI web-server and manager protocols (login cookie,
//! HMAC-signed keypair requests, every path both bare and under `/func/`),
//! keeps accounts and sessions in the [`store`], and relays SSH tunnels to the
//! agents that run the session containers.
//!
//! Entry point: [`serve`] takes a bound listener and a shutdown token from the
//! caller (the `airlockd` binary or a test), so tests run it on `127.0.0.1:0`.

// The `json!` literal of a session in gql.rs is deep.
#![recursion_limit = "256"]

pub mod agents;
pub mod audit;
pub mod auth;
mod cluster;
pub mod config;
mod cookies;
pub mod error;
pub mod folders;
pub mod forwarded;
pub mod gql;
mod json;
mod listener;
pub mod metrics;
pub mod origin;
pub mod quotas;
pub mod ratelimit;
mod routes;
pub mod session_files;
pub mod sessions;
pub mod storage;
pub mod store;
pub mod terminal;
pub mod tls;
pub mod transfers;
pub mod tunnels;
mod web;

use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::GatewayConfig;
pub use listener::HttpLimits;
pub use storage::{FolderStorage, HostStorage};
pub use store::Store;

use crate::agents::AgentClient;

use crate::ratelimit::LoginLimiter;

/// Shared state of a running gateway (cheap to clone).
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: GatewayConfig,
    logins: LoginLimiter,
    shutdown: CancellationToken,
    agents: AgentClient,
    storage: Arc<dyn FolderStorage>,
    session_events: tokio::sync::broadcast::Sender<String>,
    tunnels: tunnels::Tunnels,
    transfers: transfers::Transfers,
    quotas: quotas::Quotas,
    local_agents:
        std::sync::RwLock<std::collections::HashMap<String, Arc<dyn tunnels::LocalAgent>>>,
    audit_conns: audit::Conns,
    /// Tunnel and terminal WebSockets after their upgrade (their HTTP
    /// connection is over, so the listener's drain no longer waits for
    /// them).
    streams: tokio_util::task::TaskTracker,
}

impl AppState {
    /// State over an opened store and folder storage.
    pub fn new(
        store: Store,
        config: GatewayConfig,
        storage: Arc<dyn FolderStorage>,
        shutdown: CancellationToken,
    ) -> Self {
        let logins = LoginLimiter::new(ratelimit::LoginPolicy::from(&config));
        let agents = AgentClient::new(config.agent_token.clone());
        let (session_events, _) = tokio::sync::broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                logins,
                shutdown,
                agents,
                storage,
                session_events,
                tunnels: tunnels::Tunnels::default(),
                transfers: transfers::Transfers::default(),
                quotas: quotas::Quotas::default(),
                local_agents: std::sync::RwLock::new(std::collections::HashMap::new()),
                audit_conns: audit::Conns::default(),
                streams: tokio_util::task::TaskTracker::new(),
            }),
        }
    }

    /// Registers an agent that runs in this process (see
    /// [`tunnels::LocalAgent`]).
    pub fn register_local_agent(&self, agent_id: &str, agent: Arc<dyn tunnels::LocalAgent>) {
        if let Ok(mut m) = self.inner.local_agents.write() {
            m.insert(agent_id.to_owned(), agent);
        }
    }

    /// The in-process agent with this id, if any.
    pub fn local_agent(&self, agent_id: &str) -> Option<Arc<dyn tunnels::LocalAgent>> {
        self.inner.local_agents.read().ok()?.get(agent_id).cloned()
    }

    /// Outstanding folder transfer tokens.
    pub fn transfers(&self) -> &transfers::Transfers {
        &self.inner.transfers
    }

    /// Live quota bookkeeping (per-user locks, open tunnels).
    pub fn quotas(&self) -> &quotas::Quotas {
        &self.inner.quotas
    }

    /// Tunnel ends as runners see them (ties runner events to connections).
    pub fn audit_conns(&self) -> &audit::Conns {
        &self.inner.audit_conns
    }

    /// Live tunnels.
    pub fn tunnels(&self) -> &tunnels::Tunnels {
        &self.inner.tunnels
    }

    /// Client for agent APIs.
    pub fn agents(&self) -> &AgentClient {
        &self.inner.agents
    }

    /// Folder storage.
    pub fn storage(&self) -> &dyn FolderStorage {
        self.inner.storage.as_ref()
    }

    /// Folder storage, shared (for blocking work on another thread).
    pub fn storage_arc(&self) -> Arc<dyn FolderStorage> {
        Arc::clone(&self.inner.storage)
    }

    /// Tells waiters that a session changed state.
    pub fn notify_session(&self, id: &str) {
        let _ = self.inner.session_events.send(id.to_owned());
    }

    /// Subscribes to session state changes (session ids).
    pub fn session_events(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.session_events.subscribe()
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    pub(crate) fn logins(&self) -> &LoginLimiter {
        &self.inner.logins
    }

    /// Cancelled when the gateway shuts down (long-lived streams watch it).
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Where tunnel and terminal WebSockets run after their upgrade:
    /// [`serve`] waits for them at shutdown, so each writes its last audit
    /// event (`tunnel.closed`, reason `gateway shutdown`) before the store
    /// closes.
    pub(crate) fn streams(&self) -> &tokio_util::task::TaskTracker {
        &self.inner.streams
    }
}

/// Errors that stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Accepting or serving connections failed.
    #[error("gateway server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves only the agent heartbeat (token-authenticated), in plain HTTP, on
/// `listener` until shutdown: for the agent embedded in `airlockd up` when
/// the public listener speaks HTTPS under a name that does not resolve to
/// loopback. Bind it to loopback only.
pub async fn serve_agent_link(listener: TcpListener, state: AppState) -> Result<(), ServeError> {
    let shutdown = state.shutdown_token().clone();
    let limits = state.config().http_limits;
    listener::serve(listener, routes::agent_link(state), limits, None, shutdown).await?;
    Ok(())
}

/// The complete HTTP application.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}

/// Serves the gateway on `listener` until `state`'s shutdown token is
/// cancelled, then drains in-flight requests. Connections are limited by
/// [`GatewayConfig::http_limits`] (header-read timeout, connection caps).
pub async fn serve(listener: TcpListener, state: AppState) -> Result<(), ServeError> {
    let shutdown = state.shutdown_token().clone();
    let purge_state = state.clone();
    let purge = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = purge_state.shutdown_token().cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = purge_state.store().purge_web_sessions().await {
                        tracing::warn!(error = %e, "purging expired web sessions failed");
                    }
                    audit::prune(&purge_state).await;
                }
            }
        }
    });
    let limits = state.config().http_limits;
    let tls = state.config().tls.clone();
    let streams = state.streams().clone();
    let result = listener::serve(listener, app(state), limits, tls, shutdown).await;
    purge.abort();
    // The streams saw the same token; they only record how they ended.
    streams.close();
    if tokio::time::timeout(STREAM_DRAIN, streams.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tunnels were still closing after the shutdown drain");
    }
    result?;
    Ok(())
}

/// How long shutdown waits for tunnels and terminals to record their end.
const STREAM_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
