//! `airlockd gateway`: only the gateway.

use tokio_util::sync::CancellationToken;

use crate::cli::{GatewayArgs, hinted};
use crate::data::open_store;
use crate::serve::{self, ADMIN_EMAIL, AdminBootstrap};
use crate::shutdown::cancel_on_signals;

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    if args.agent_token.len() < 16 {
        return Err(hinted(
            "the agent token must be at least 16 characters",
            "generate one, e.g. `openssl rand -hex 24`, and give the same to every agent",
        ));
    }
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone())?;
    let store = open_store(&args.gateway.data).await?;
    let admin = serve::bootstrap_admin(&store).await?;
    let state = serve::gateway_state(
        &args.gateway,
        store.clone(),
        args.agent_token.clone(),
        shutdown,
    )?;
    let listener = serve::bind(args.gateway.listen, "gateway").await?;
    let url = serve::gateway_url(&state, listener.local_addr()?);
    println!("airlock gateway is running at {url}");
    if let AdminBootstrap::Generated(p) = admin {
        println!("Created the administrator account {ADMIN_EMAIL}, password: {p} (shown once)");
    }
    println!("Agents join with: airlockd agent --gateway {url} --token <the agent token>");
    serve::start_metrics(&args.gateway, &state).await?;
    airlock_gateway::serve(listener, state).await?;
    store.close().await;
    Ok(())
}
