//! Starting the gateway and the agent (shared by `up`, `gateway`, `agent`).

use std::path::PathBuf;
use std::sync::Arc;

use airlock_agent::AgentConfig;
use airlock_gateway::store::{NewUser, Role};
use airlock_gateway::{AppState, GatewayConfig, HostStorage, Store};
use rand::RngExt;
use rand::distr::Alphanumeric;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentOpts, GatewayOpts, hinted};

/// The account created on first start.
pub const ADMIN_EMAIL: &str = "admin@airlock.local";

/// uid/gid of the session user `work`.
pub const SESSION_UID: u32 = 1000;

/// A random secret of `n` alphanumerics.
pub fn random_secret(n: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// What happened to the administrator account at start.
pub enum AdminBootstrap {
    /// Accounts existed already.
    Existing,
    /// Created with a generated password (shown once).
    Generated(String),
    /// Created with `AIRLOCK_ADMIN_PASSWORD`.
    FromEnv,
}

/// Creates `admin@airlock.local` when there are no accounts yet.
pub async fn bootstrap_admin(store: &Store) -> anyhow::Result<AdminBootstrap> {
    if store.user_count().await? > 0 {
        return Ok(AdminBootstrap::Existing);
    }
    let (password, result) = match std::env::var("AIRLOCK_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, AdminBootstrap::FromEnv),
        _ => {
            let p = random_secret(20);
            (p.clone(), AdminBootstrap::Generated(p))
        }
    };
    store
        .create_user(NewUser {
            email: ADMIN_EMAIL,
            password: &password,
            role: Role::Admin,
        })
        .await?;
    Ok(result)
}

/// Binds the gateway's listener with a helpful error.
pub async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        hinted(
            format!("cannot listen on {addr} for the {what}: {e}"),
            "stop whatever uses that port or pick another address",
        )
    })
}

/// Builds the gateway state.
pub fn gateway_state(
    opts: &GatewayOpts,
    store: Store,
    agent_token: String,
    shutdown: CancellationToken,
) -> anyhow::Result<AppState> {
    let storage_root = opts
        .storage
        .clone()
        .unwrap_or_else(|| opts.data.data.join("vfolders"));
    let storage = HostStorage::new(&storage_root, SESSION_UID, SESSION_UID).map_err(|e| {
        hinted(
            format!(
                "cannot use {} for folder storage: {e}",
                storage_root.display()
            ),
            "pass a writable directory with --storage DIR",
        )
    })?;
    let config = GatewayConfig {
        secure_cookies: opts.secure_cookies,
        trust_forwarded: !opts.trusted_proxies.is_empty(),
        trusted_proxies: opts.trusted_proxies.clone(),
        public_origins: opts
            .public_urls
            .iter()
            .map(|u| public_origin(u))
            .collect::<anyhow::Result<_>>()?,
        agent_token,
        default_image: opts.default_image.clone(),
        ..GatewayConfig::default()
    };
    Ok(AppState::new(store, config, Arc::new(storage), shutdown))
}

/// Parses `KEY=VALUE` labels.
pub fn labels(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    hinted(
                        format!("label {l:?} is not KEY=VALUE"),
                        "e.g. --container-label team=ml",
                    )
                })
        })
        .collect()
}

/// Builds an agent configuration.
pub fn agent_config(
    opts: &AgentOpts,
    id: String,
    gateway_url: String,
    token: String,
    advertise: String,
    data_dir: PathBuf,
    default_overcommit: f64,
) -> anyhow::Result<AgentConfig> {
    let runner = crate::runner::locate(opts.runner.as_deref())?;
    let mut cfg = AgentConfig::new(id, gateway_url, token, runner, data_dir);
    cfg.advertise_url = advertise;
    cfg.cpu_overcommit = opts.cpu_overcommit.unwrap_or(default_overcommit);
    cfg.extra_labels = labels(&opts.container_labels)?;
    cfg.uid = SESSION_UID;
    cfg.gid = SESSION_UID;
    Ok(cfg)
}

/// `https://host[:port][/path]` → `https://host[:port]` (the origin browsers send).
fn public_origin(url: &str) -> anyhow::Result<String> {
    let bad = || {
        hinted(
            format!("--public-url {url:?} is not an http(s) URL"),
            "give the address users open, like https://airlock.example.com",
        )
    };
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad());
    }
    Ok(parsed.origin().ascii_serialization())
}
