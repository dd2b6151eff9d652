//! Reports to the gateway: a full heartbeat every few seconds and right
//! after any container change; removes what the gateway says is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_proto::agent::HeartbeatReply;
use tokio_util::sync::CancellationToken;

use crate::sessions::Agent;

/// Heartbeat path on the gateway.
pub const HEARTBEAT_PATH: &str = "/agent/v1/heartbeat";

/// Runs until `shutdown`.
pub async fn run(agent: Arc<Agent>, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the HTTP client for the gateway link");
            return;
        }
    };
    let url = format!(
        "{}{HEARTBEAT_PATH}",
        agent.config().gateway_url.trim_end_matches('/')
    );
    // Runner events travel beside the heartbeats, on their own schedule.
    agent.spawn(crate::audit::forward(
        agent.audit().clone(),
        client.clone(),
        agent.config().gateway_url.clone(),
        agent.config().agent_id.clone(),
        agent.config().token.clone(),
        shutdown.clone(),
    ));
    let mut last_warning: Option<Instant> = None;
    let mut connected = false;
    loop {
        match beat(&agent, &client, &url).await {
            Ok(reply) => {
                if !connected {
                    tracing::info!(gateway = %agent.config().gateway_url, "registered with the gateway");
                    connected = true;
                }
                for id in reply.destroy {
                    tracing::info!(session = %id, "the gateway ended this session; removing its container");
                    if let Err(e) = agent.destroy(&id).await {
                        tracing::warn!(session = %id, error = %e, "removing the container failed");
                    }
                }
            }
            Err(e) => {
                connected = false;
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(gateway = %agent.config().gateway_url, error = %e, "cannot report to the gateway; retrying");
                    last_warning = Some(Instant::now());
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = agent.changed() => {}
            _ = tokio::time::sleep(agent.config().heartbeat) => {}
        }
    }
}

async fn beat(
    agent: &Agent,
    client: &reqwest::Client,
    url: &str,
) -> Result<HeartbeatReply, String> {
    let report = agent.report().await.map_err(|e| e.to_string())?;
    let resp = client
        .post(url)
        .bearer_auth(&agent.config().token)
        .json(&report)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        let id = &agent.config().agent_id;
        return Err(format!(
            "the gateway refused this agent's token for id {id:?}; enroll it there \
             (`airlockd node enroll {id}`) and run with the token that prints, \
             or use the gateway's shared --agent-token"
        ));
    }
    if !resp.status().is_success() {
        return Err(format!("the gateway answered {}", resp.status()));
    }
    resp.json().await.map_err(|e| e.to_string())
}
