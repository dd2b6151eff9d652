//! The airlock agent: runs session containers on one node.
//!
//! It drives the local Docker engine through bollard ([`docker`], the only
//! code that talks to Docker, behind the [`runtime::Runtime`] trait), starts
//! each session with the static `airlock-runner` bind-mounted as PID 1,
//! reports container states to the gateway ([`link`]; the states come from
//! the pure `reconcile` module), and serves the gateway's requests
//! ([`api`]): create/destroy, file transfer (through the runner, as the
//! session user, confined to its home) and raw TCP streams to the runner's
//! SSH port for tunnels.
//!
//! Invariants: the agent makes no authorization decisions about users; it
//! trusts the gateway, which proves itself with this agent's token (its
//! own when enrolled, else the shared one). Every
//! task it spawns is tracked (`Agent::spawn`) and ends at shutdown, which
//! waits for them (at most 10 s).

pub mod api;
pub mod audit;
pub mod config;
pub mod docker;
pub mod error;
pub mod firewall;
pub mod gpu;
pub mod image;
pub mod link;
pub mod load;
mod reconcile;
pub mod runtime;
mod sessions;
pub mod tls;
pub mod tunnels;

use std::sync::Arc;

pub use config::{AgentConfig, Egress, NetworkPolicy};
pub use error::AgentError;
pub use sessions::{Agent, image_allowed};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Prepares an agent (connects to Docker, installs the runner, re-adopts
/// containers left by a previous run).
pub async fn start(
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<Arc<Agent>, AgentError> {
    let engine = docker::Engine::connect().await?;
    Ok(Arc::new(
        Agent::start(config, Arc::new(engine), shutdown).await?,
    ))
}

/// Serves a started agent: the gateway API on `listener` (over TLS with
/// `tls`), reports to the gateway, until `shutdown` is cancelled.
/// Containers keep running after the agent stops; the next start re-adopts
/// them.
pub async fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let link = agent.spawn(link::run(agent.clone(), shutdown.clone()));
    let events = agent.spawn(sessions::watch_events(agent.clone(), shutdown.clone()));
    let app = api::router(agent.clone());
    let stop = shutdown.clone();
    let served = match tls {
        None => {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
        Some(config) => {
            axum::serve(tls::TlsListener::new(listener, config)?, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    };
    link.abort();
    events.abort();
    agent.wait_tasks().await;
    served.map_err(AgentError::Io)
}

/// [`start`] then [`serve`].
pub async fn run(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let agent = start(config, shutdown.clone()).await?;
    serve(agent, listener, None, shutdown).await
}
