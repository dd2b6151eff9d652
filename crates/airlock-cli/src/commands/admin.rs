//! `airlock admin …`: the administrator's view of the cluster (agents with
//! capacity and load, every user's live sessions, open tunnels with live
//! byte counts) and disabling or enabling accounts, through the gateway's
//! `/admin/…` API. Terminating anyone's session is `airlock session rm ID`.

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::args::{AdminCommand, AdminNodeCommand, AdminUserCommand};
use crate::client::{ApiClient, Body, root_cause};
use crate::error::{CliError, CliResult};
use crate::output;
use crate::transfer::enc;

/// Runs an `admin` subcommand.
pub async fn run(client: &ApiClient, cmd: AdminCommand) -> CliResult<()> {
    match cmd {
        AdminCommand::Cluster { json } => cluster(client, json).await,
        AdminCommand::User(AdminUserCommand::Disable { email }) => {
            set_active(client, &email, Account::Disabled).await
        }
        AdminCommand::User(AdminUserCommand::Enable { email }) => {
            set_active(client, &email, Account::Enabled).await
        }
        AdminCommand::Node(AdminNodeCommand::Drain { node }) => {
            call(
                client,
                Method::POST,
                &format!("/admin/nodes/{}/drain", enc(&node)),
            )
            .await?;
            output::success(&format!(
                "Drained {node}: no new sessions go there; the ones it runs stay."
            ));
            Ok(())
        }
        AdminCommand::Node(AdminNodeCommand::Undrain { node }) => {
            call(
                client,
                Method::POST,
                &format!("/admin/nodes/{}/undrain", enc(&node)),
            )
            .await?;
            output::success(&format!("{node} takes new sessions again."));
            Ok(())
        }
    }
}

/// Calls an administrators' route; a 403 becomes an error that says so.
async fn call(client: &ApiClient, method: Method, path: &str) -> CliResult<Value> {
    let resp = client
        .request(method, path, Body::Empty)?
        .send()
        .await
        .map_err(|e| client.transport_error(&e))?;
    if resp.status() == StatusCode::FORBIDDEN {
        let who = client
            .login()
            .map(|l| format!(" ({} is not)", l.username))
            .unwrap_or_default();
        return Err(CliError::new(format!(
            "`airlock admin` needs an administrator account{who}"
        ))
        .hint("ask an administrator, or log in as one with `airlock login`"));
    }
    if !resp.status().is_success() {
        return Err(client.status_error(resp).await);
    }
    let url = resp.url().clone();
    resp.json::<Value>().await.map_err(|e| {
        CliError::new(format!("unexpected answer from {url}: {}", root_cause(&e)))
            .hint("are the CLI and server versions compatible?")
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Cluster {
    agents: Vec<Agent>,
    sessions: Vec<Session>,
    tunnels: Vec<Tunnel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Agent {
    id: String,
    online: bool,
    version: String,
    last_seen: String,
    cpu_milli: u64,
    cpu_milli_used: u64,
    mem_bytes: u64,
    mem_bytes_used: u64,
    gpus: u64,
    gpus_used: u64,
    draining: bool,
    load1: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Session {
    id: String,
    name: String,
    owner: Option<String>,
    status: String,
    agent: Option<String>,
    cpu_milli: u64,
    mem_bytes: u64,
    created_at: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Tunnel {
    session_name: String,
    user: String,
    client: String,
    client_version: Option<String>,
    client_addr: Option<String>,
    duration_s: u64,
    bytes_up: u64,
    bytes_down: u64,
}

fn cores(milli: u64) -> String {
    format!("{:.1}", milli as f64 / 1000.0)
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `GET /admin/cluster`.
async fn cluster(client: &ApiClient, json: bool) -> CliResult<()> {
    let raw = call(client, Method::GET, "/admin/cluster").await?;
    if json {
        return output::json(&raw);
    }
    let c: Cluster = serde_json::from_value(raw).map_err(|e| {
        CliError::new(format!("unexpected cluster answer: {e}"))
            .hint("are the CLI and server versions compatible?")
    })?;
    let now = chrono::Utc::now();
    println!("AGENTS");
    output::table(
        &[
            "ID",
            "ONLINE",
            "CPU USED/TOTAL",
            "MEM USED/TOTAL",
            "GPU USED/TOTAL",
            "LOAD",
            "VERSION",
            "SEEN",
        ],
        c.agents
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    match (a.online, a.draining) {
                        (true, false) => "yes",
                        (true, true) => "drained",
                        (false, _) => "no",
                    }
                    .to_owned(),
                    format!("{}/{}", cores(a.cpu_milli_used), cores(a.cpu_milli)),
                    format!(
                        "{}/{}",
                        output::human_size(a.mem_bytes_used),
                        output::human_size(a.mem_bytes)
                    ),
                    format!("{}/{}", a.gpus_used, a.gpus),
                    format!("{:.2}", a.load1),
                    a.version.clone(),
                    output::age(&a.last_seen, now),
                ]
            })
            .collect(),
    );
    println!();
    println!("SESSIONS");
    output::table(
        &[
            "ID", "NAME", "OWNER", "STATUS", "AGENT", "CPU", "MEM", "AGE",
        ],
        c.sessions
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.name.clone(),
                    s.owner.clone().unwrap_or_else(|| "-".into()),
                    s.status.clone(),
                    s.agent.clone().unwrap_or_else(|| "-".into()),
                    cores(s.cpu_milli),
                    output::human_size(s.mem_bytes),
                    output::age(&s.created_at, now),
                ]
            })
            .collect(),
    );
    println!();
    println!("TUNNELS");
    output::table(
        &["SESSION", "USER", "CLIENT", "FROM", "OPEN", "UP", "DOWN"],
        c.tunnels
            .iter()
            .map(|t| {
                vec![
                    t.session_name.clone(),
                    t.user.clone(),
                    match &t.client_version {
                        Some(v) => format!("{} {v}", t.client),
                        None => t.client.clone(),
                    },
                    t.client_addr.clone().unwrap_or_else(|| "-".into()),
                    duration(t.duration_s),
                    output::human_size(t.bytes_up),
                    output::human_size(t.bytes_down),
                ]
            })
            .collect(),
    );
    if !c.sessions.is_empty() {
        output::info("Terminate a session with `airlock session rm ID`.");
    }
    Ok(())
}

/// `POST /admin/users/{email}/disable|enable`.
/// What `admin user enable|disable` makes of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Account {
    Enabled,
    Disabled,
}

async fn set_active(client: &ApiClient, email: &str, to: Account) -> CliResult<()> {
    let active = to == Account::Enabled;
    let verb = if active { "enable" } else { "disable" };
    call(
        client,
        Method::POST,
        &format!("/admin/users/{}/{verb}", enc(email)),
    )
    .await?;
    if active {
        output::success(&format!("Enabled {email}: it can log in again."));
    } else {
        output::success(&format!(
            "Disabled {email}: its logins ended and it cannot log in or sign requests."
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations() {
        assert_eq!(duration(7), "7s");
        assert_eq!(duration(125), "2m05s");
        assert_eq!(duration(7260), "2h01m");
    }
}
