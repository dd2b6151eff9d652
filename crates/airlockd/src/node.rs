//! `airlockd node …`: agents' own credentials, against the gateway's state.
//! Each enrolled agent presents its own token, and the gateway presents that
//! token to it, so one node's token speaks for no other node; revoking one
//! leaves the others alone.

use airlock_gateway::Store;
use airlock_gateway::store::{NewEvent, now_ms, rfc3339};

use crate::cli::{NodeArgs, NodeCommand, hinted};
use crate::data::open_existing_store;

/// Longest agent id we enroll (the agent's `--id`, a host name by default).
const MAX_ID: usize = 253;

fn check_id(id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(hinted(
            format!("{id:?} is not an agent id"),
            "use the agent's --id (letters, digits, '-', '_', '.'; its host name by default)",
        ))
    }
}

/// Records an enrolment or revocation (by whoever can read the state).
async fn audit(store: &Store, kind: &str, id: &str) {
    let event = NewEvent {
        at: now_ms(),
        kind: kind.to_owned(),
        detail: serde_json::json!({ "node": id, "by": "airlockd node" }),
        ..NewEvent::default()
    };
    if let Err(e) = store.append_events(&[event]).await {
        tracing::warn!(error = %e, "cannot record an audit event");
    }
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let store = open_existing_store(&args.data).await?;
    let result = run_on(&store, args.command).await;
    store.close().await;
    result
}

async fn run_on(store: &Store, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Enroll { id } => {
            check_id(&id)?;
            let token = store.enroll_agent(&id).await?;
            audit(store, "node.enrolled", &id).await;
            // The token alone on stdout, for `$(airlockd node enroll ID)`.
            println!("{}", token.expose());
            eprintln!(
                "enrolled agent {id}: run it with --id {id} and this token as --token \
                 (AIRLOCK_AGENT_TOKEN); shown once, any earlier token of {id} no longer works"
            );
        }
        NodeCommand::Revoke { id } => {
            if !store.revoke_agent(&id).await? {
                return Err(hinted(
                    format!("agent {id:?} is not enrolled"),
                    "list enrolled agents with `airlockd node list`",
                ));
            }
            audit(store, "node.revoked", &id).await;
            println!("revoked agent {id}: its token is refused from now on");
        }
        NodeCommand::List { json } => {
            let list = store.enrollments().await?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "id": e.agent_id,
                            "enrolled_at": rfc3339(e.created_at),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if list.is_empty() {
                println!("no enrolled agents (agents use the shared --agent-token)");
            } else {
                println!("{:<32}  ENROLLED", "AGENT");
                for e in list {
                    println!("{:<32}  {}", e.agent_id, rfc3339(e.created_at));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        assert!(check_id("node-a").is_ok());
        assert!(check_id("gpu01.cluster.internal").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a b").is_err());
        assert!(check_id("../x").is_err());
    }
}
