//! `airlock ping SESSION`: round trips through each hop of the chain —
//! this machine → gateway (HTTP), gateway → agent, agent → runner (TCP
//! connect and SSH identification), and end to end: a new tunnel until the
//! runner's SSH identification line arrives, as every SSH connection waits
//! for it. Answers "is it the network or the session?".

use std::time::{Duration, Instant};

use airlock_proto::api::SessionPing;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::args::PingArgs;
use crate::client::ApiClient;
use crate::error::{CliError, CliResult};
use crate::output;
use crate::transfer::enc;
use crate::tunnel;

/// Deadline for one round (all its requests).
const ROUND_DEADLINE: Duration = Duration::from_secs(30);
/// Most rounds one command runs.
pub const MAX_COUNT: u32 = 100;

/// One round, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// This machine → gateway: an HTTP request on an open connection.
    pub cli_gateway_ms: f64,
    /// Gateway → agent; `None` when the agent runs in the gateway's process.
    pub gateway_agent_ms: Option<f64>,
    /// Agent → runner: TCP connect to the SSH port.
    pub agent_runner_connect_ms: f64,
    /// Agent → runner: from the connection to the SSH identification line.
    pub agent_runner_banner_ms: f64,
    /// End to end: opening a tunnel (WebSocket through gateway and agent).
    pub tunnel_open_ms: f64,
    /// End to end: from the start of the tunnel to the runner's SSH
    /// identification line.
    pub ssh_banner_ms: f64,
}

/// min / avg / max of one metric.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Largest.
    pub max: f64,
}

/// The whole report (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Session name.
    pub session: String,
    /// `embedded` or `remote` agent.
    pub agent: String,
    /// The runner's SSH identification line.
    pub runner_banner: String,
    /// Every round.
    pub rounds: Vec<Round>,
    /// Per metric over the rounds (keys as in a round).
    pub summary: std::collections::BTreeMap<&'static str, Summary>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn cli_gateway(client: &ApiClient) -> CliResult<f64> {
    let url = client.url("/")?;
    let t = Instant::now();
    let resp = client
        .http()
        .get(url)
        .send()
        .await
        .map_err(|e| client.transport_error(&e))?;
    let _ = resp.bytes().await;
    Ok(ms(t.elapsed()))
}

/// What one tunnel to the runner showed.
struct Banner {
    /// Milliseconds until the tunnel was open.
    open_ms: f64,
    /// Milliseconds until the SSH identification line had arrived.
    total_ms: f64,
    /// That line.
    line: String,
}

/// Opens a tunnel and waits for the runner's SSH identification line.
async fn ssh_banner(client: &ApiClient, session: &str) -> CliResult<Banner> {
    let t = Instant::now();
    let mut ws = tunnel::open(client, session).await?;
    let open = ms(t.elapsed());
    let mut got = Vec::new();
    let banner = loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                got.extend_from_slice(&b);
                let mut r: &[u8] = &got;
                if got.contains(&b'\n')
                    && let Ok(line) = airlock_tunnel::read_ssh_banner(&mut r).await
                {
                    break line;
                }
                if got.len() > 8192 {
                    return Err(CliError::new(
                        "the session's SSH server sent no identification line",
                    ));
                }
            }
            Some(Ok(Message::Close(f))) => {
                let reason = f.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(CliError::new(format!(
                    "the gateway closed the tunnel before the SSH server answered: {reason}"
                ))
                .hint("check the session with `airlock session info`"));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(CliError::new(format!("the tunnel failed: {e}"))),
            None => {
                return Err(CliError::new(
                    "the tunnel closed before the SSH server answered",
                ));
            }
        }
    };
    let total = ms(t.elapsed());
    let _ = ws.send(Message::Close(None)).await;
    Ok(Banner {
        open_ms: open,
        total_ms: total,
        line: banner,
    })
}

fn summarize(rounds: &[Round]) -> std::collections::BTreeMap<&'static str, Summary> {
    type Get = fn(&Round) -> Option<f64>;
    let metrics: [(&'static str, Get); 6] = [
        ("cli_gateway_ms", |r| Some(r.cli_gateway_ms)),
        ("gateway_agent_ms", |r| r.gateway_agent_ms),
        ("agent_runner_connect_ms", |r| {
            Some(r.agent_runner_connect_ms)
        }),
        ("agent_runner_banner_ms", |r| Some(r.agent_runner_banner_ms)),
        ("tunnel_open_ms", |r| Some(r.tunnel_open_ms)),
        ("ssh_banner_ms", |r| Some(r.ssh_banner_ms)),
    ];
    let mut out = std::collections::BTreeMap::new();
    for (name, get) in metrics {
        let v: Vec<f64> = rounds.iter().filter_map(get).collect();
        if v.is_empty() {
            continue;
        }
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let avg = v.iter().sum::<f64>() / v.len() as f64;
        out.insert(name, Summary { min, avg, max });
    }
    out
}

/// `airlock ping`.
pub async fn run(client: &ApiClient, args: PingArgs) -> CliResult<()> {
    if args.count == 0 || args.count > MAX_COUNT {
        return Err(CliError::new(format!(
            "--count must be from 1 to {MAX_COUNT}, not {}",
            args.count
        )));
    }
    // Checks the session (and the login) with a clear error, and opens the
    // HTTP connection so the first round does not time its setup.
    let path = format!("/session/{}/ping", enc(&args.session));
    let first: SessionPing = client.get(&path).await?;
    let mut rounds = Vec::new();
    let mut banner = first.runner_banner.clone();
    if !args.json {
        println!(
            "PING {} through {} ({} agent)",
            first.session,
            client.config().base(),
            first.agent
        );
    }
    for i in 0..args.count {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let round = tokio::time::timeout(ROUND_DEADLINE, async {
            let cli_gw = cli_gateway(client).await?;
            let hops: SessionPing = client.get(&path).await?;
            let ssh = ssh_banner(client, &args.session).await?;
            Ok::<_, CliError>((cli_gw, hops, ssh))
        })
        .await
        .map_err(|_| {
            CliError::new(format!(
                "a ping round took longer than {} s",
                ROUND_DEADLINE.as_secs()
            ))
            .hint("the gateway or the session's node is overloaded or unreachable")
        })??;
        let (cli_gw, hops, ssh) = round;
        banner = ssh.line;
        let r = Round {
            cli_gateway_ms: cli_gw,
            gateway_agent_ms: hops.gateway_agent_ms,
            agent_runner_connect_ms: hops.agent_runner_connect_ms,
            agent_runner_banner_ms: hops.agent_runner_banner_ms,
            tunnel_open_ms: ssh.open_ms,
            ssh_banner_ms: ssh.total_ms,
        };
        if !args.json {
            let ga = r
                .gateway_agent_ms
                .map_or_else(|| "in-process".to_owned(), |v| format!("{v:.2} ms"));
            println!(
                "round {}: you→gateway {:.2} ms  gateway→agent {ga}  agent→runner {:.2} ms (+{:.2} ms to SSH banner)  end to end: tunnel {:.2} ms, SSH banner {:.2} ms",
                i + 1,
                r.cli_gateway_ms,
                r.agent_runner_connect_ms,
                r.agent_runner_banner_ms,
                r.tunnel_open_ms,
                r.ssh_banner_ms
            );
        }
        rounds.push(r);
    }
    let report = Report {
        session: first.session,
        agent: first.agent,
        runner_banner: banner,
        summary: summarize(&rounds),
        rounds,
    };
    if args.json {
        return output::json(&report);
    }
    println!(
        "--- {} ping statistics ({}) ---",
        report.session, report.runner_banner
    );
    println!("{:<26} {:>9} {:>9} {:>9}", "hop (ms)", "min", "avg", "max");
    for (name, label) in [
        ("cli_gateway_ms", "you → gateway"),
        ("gateway_agent_ms", "gateway → agent"),
        ("agent_runner_connect_ms", "agent → runner (connect)"),
        ("agent_runner_banner_ms", "runner SSH banner"),
        ("tunnel_open_ms", "tunnel open (end to end)"),
        ("ssh_banner_ms", "SSH banner (end to end)"),
    ] {
        match report.summary.get(name) {
            Some(s) => println!("{label:<26} {:>9.2} {:>9.2} {:>9.2}", s.min, s.avg, s.max),
            None => println!("{label:<26} {:>9}", "in-process"),
        }
    }
    Ok(())
}
