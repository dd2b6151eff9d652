//! Starting the gateway and the agent (shared by `up`, `gateway`, `agent`).

use std::path::PathBuf;
use std::sync::Arc;

use airlock_agent::{AgentConfig, Egress};
use airlock_gateway::quotas::{Limit, Limits};
use airlock_gateway::store::{NewUser, Role};
use airlock_gateway::{AppState, GatewayConfig, HostStorage, HttpLimits, Store};
use rand::RngExt;
use rand::distr::Alphanumeric;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentOpts, EgressArg, GatewayOpts, hinted};

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

/// The folder storage directory of a gateway.
pub fn storage_root(opts: &GatewayOpts) -> PathBuf {
    opts.storage
        .clone()
        .unwrap_or_else(|| opts.data.data.join("vfolders"))
}

/// Builds the gateway state.
pub fn gateway_state(
    opts: &GatewayOpts,
    store: Store,
    agent_token: String,
    shutdown: CancellationToken,
) -> anyhow::Result<AppState> {
    let storage_root = storage_root(opts);
    let storage = HostStorage::new(&storage_root, SESSION_UID, SESSION_UID).map_err(|e| {
        hinted(
            format!(
                "cannot use {} for folder storage: {e}",
                storage_root.display()
            ),
            "pass a writable directory with --storage DIR",
        )
    })?;
    for (flag, cap) in [
        ("--max-connections", opts.limits.max_connections),
        (
            "--max-connections-per-ip",
            opts.limits.max_connections_per_ip,
        ),
    ] {
        if cap == Limit::Max(0) {
            return Err(hinted(
                format!("{flag} 0 would refuse every connection"),
                "use at least 1, or `unlimited`",
            ));
        }
    }
    let tls = tls_config(opts)?;
    let config = GatewayConfig {
        secure_cookies: opts.secure_cookies || tls.is_some(),
        tls,
        trusted_proxies: opts.trusted_proxies.clone(),
        public_origins: opts
            .public_urls
            .iter()
            .map(|u| public_origin(u))
            .collect::<anyhow::Result<_>>()?,
        agent_token,
        default_image: opts.default_image.clone(),
        default_limits: Limits {
            sessions: opts.limits.max_sessions,
            tunnels: opts.limits.max_tunnels,
            upload_bytes: opts.limits.max_upload_size,
            folders: opts.limits.max_folders,
        },
        placement: opts.placement,
        agent_offline_after: std::time::Duration::from_secs(opts.agent_offline_after),
        audit_retention: (opts.audit_retention_days > 0)
            .then(|| std::time::Duration::from_secs(u64::from(opts.audit_retention_days) * 86_400)),
        http_limits: HttpLimits {
            header_read_timeout: std::time::Duration::from_secs(opts.limits.header_timeout),
            max_connections: opts.limits.max_connections,
            max_connections_per_ip: opts.limits.max_connections_per_ip,
        },
        ..GatewayConfig::default()
    };
    Ok(AppState::new(store, config, Arc::new(storage), shutdown))
}

/// The HTTPS configuration from `--tls-cert`/`--tls-key` (both or neither).
pub fn tls_config(opts: &GatewayOpts) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    tls_pair(
        opts.tls_cert.as_deref(),
        opts.tls_key.as_deref(),
        "AIRLOCK_TLS_CERT and AIRLOCK_TLS_KEY",
    )
}

/// A server TLS configuration from `--tls-cert`/`--tls-key` (both or
/// neither; `env` names their environment variables for the hint).
pub fn tls_pair(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    env: &str,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let hint = format!(
        "give both --tls-cert FILE and --tls-key FILE (or {env}) to serve HTTPS, or neither for plain HTTP"
    );
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => airlock_gateway::tls::server_config(cert, key)
            .map(Some)
            .map_err(|e| hinted(e.to_string(), e.hint())),
        (Some(_), None) => Err(hinted("--tls-cert needs --tls-key", hint)),
        (None, Some(_)) => Err(hinted("--tls-key needs --tls-cert", hint)),
    }
}

/// The URL the gateway serves at `addr` (`https` with TLS).
pub fn gateway_url(state: &AppState, addr: std::net::SocketAddr) -> String {
    let scheme = if state.config().tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}")
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
    cfg.network.egress = match opts.session_egress {
        EgressArg::Open => Egress::Open,
        EgressArg::None => Egress::None,
    };
    cfg.network.firewall = !opts.no_firewall;
    cfg.network.firewall_netns = opts.firewall_netns.clone();
    if opts.session_network != cfg.network.network {
        // The default bridge name belongs to the default network.
        cfg.network.network = opts.session_network.clone();
        cfg.network.bridge = String::new();
    }
    cfg.tunnel_grace = opts.tunnel_grace;
    cfg.runner_audit = !opts.no_runner_audit;
    cfg.allowed_images = opts
        .allowed_images
        .iter()
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty())
        .collect();
    Ok(cfg)
}

/// An agent start-up error, with advice.
pub fn agent_start_error(e: airlock_agent::AgentError) -> anyhow::Error {
    match e {
        airlock_agent::AgentError::Firewall(detail) => hinted(
            format!("cannot set up the session firewall: {detail}"),
            "run airlockd as root on a host with iptables (the same backend Docker uses), or pass --no-firewall to accept that sessions can reach this node's services",
        ),
        airlock_agent::AgentError::Invalid {
            message,
            hint: Some(hint),
            ..
        } => hinted(message, hint),
        other => anyhow::Error::new(other),
    }
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

/// Starts the Prometheus listener when `--metrics-listen` is given.
pub async fn start_metrics(opts: &GatewayOpts, state: &AppState) -> anyhow::Result<()> {
    let Some(addr) = opts.metrics_listen else {
        return Ok(());
    };
    let listener = bind(addr, "metrics").await?;
    tracing::info!(addr = %listener.local_addr()?, "serving Prometheus metrics at /metrics");
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = airlock_gateway::metrics::serve(listener, state).await {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
    Ok(())
}
