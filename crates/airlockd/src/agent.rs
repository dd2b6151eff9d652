//! `airlockd agent`: only an agent.

use tokio_util::sync::CancellationToken;

use crate::cli::AgentArgs;
use crate::serve;
use crate::shutdown::cancel_on_signals;

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".to_owned())
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone())?;
    std::fs::create_dir_all(&args.data)?;
    let tls = serve::tls_pair(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        "AIRLOCK_AGENT_TLS_CERT and AIRLOCK_AGENT_TLS_KEY",
    )?;
    let listener = serve::bind(args.listen, "agent API").await?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{bound}"));
    let id = args.id.clone().unwrap_or_else(hostname);
    let mut config = serve::agent_config(
        &args.agent,
        id.clone(),
        args.gateway.clone(),
        args.token.clone(),
        advertise.clone(),
        args.data.clone(),
        1.0,
    )?;
    config.storage_root = args.storage.clone();
    let agent = airlock_agent::start(config, shutdown.clone())
        .await
        .map_err(serve::agent_start_error)?;
    println!(
        "airlock agent {id} serving at {advertise}, reporting to {}",
        args.gateway
    );
    airlock_agent::serve(agent, listener, tls, shutdown).await?;
    Ok(())
}
