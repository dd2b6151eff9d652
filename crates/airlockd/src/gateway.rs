//! `airlockd gateway`: only the gateway.

use tokio_util::sync::CancellationToken;

use crate::cli::{GatewayArgs, hinted};
use crate::data::open_store;
use crate::serve::{self, ADMIN_EMAIL, AdminBootstrap};
use crate::shutdown::cancel_on_signals;

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    if args.agent_token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err(hinted(
            "the agent token must be at least 16 characters",
            "generate one, e.g. `openssl rand -hex 24`, or leave it out and enroll each agent: `airlockd node enroll ID`",
        ));
    }
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone())?;
    let store = open_store(&args.gateway.data).await?;
    let admin = serve::bootstrap_admin(&store).await?;
    let state = serve::gateway_state(
        &args.gateway,
        store.clone(),
        args.agent_token.clone().unwrap_or_default(),
        shutdown,
    )?;
    let listener = serve::bind(args.gateway.listen, "gateway").await?;
    let url = serve::gateway_url(&state, listener.local_addr()?);
    println!("airlock gateway is running at {url}");
    if let AdminBootstrap::Generated(p) = admin {
        println!("Created the administrator account {ADMIN_EMAIL}, password: {p} (shown once)");
    }
    if args.agent_token.is_some() {
        println!("Agents join with: airlockd agent --gateway {url} --token <the agent token>");
    } else {
        println!(
            "Agents join with: airlockd agent --gateway {url} --id ID --token <the token `airlockd node enroll ID` prints>"
        );
    }
    serve::start_metrics(&args.gateway, &state).await?;
    airlock_gateway::serve(listener, state).await?;
    store.close().await;
    Ok(())
}
