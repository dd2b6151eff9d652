//! `airlock status`: where the CLI points, who is logged in, and whether the
//! gateway answers — one screen, like `gh auth status`.

use std::time::{Duration, Instant};

use airlock_proto::api::{AccountInfo, KeypairInfo, LoginCheck, VersionInfo};
use reqwest::Method;
use serde::Serialize;

use crate::args::StatusArgs;
use crate::client::{ApiClient, Body};
use crate::config::EndpointType;
use crate::error::{CliError, CliResult};

/// How long the whole check may take: a status command must not hang.
const DEADLINE: Duration = Duration::from_secs(10);

/// The gateway's answer to `GET /`.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    /// Whether it answered with a version.
    pub reachable: bool,
    /// Server name and version (`airlock 0.1.0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Backend.AI API version it speaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Round trip of the version request, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Why it is not reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What is known about the login.
#[derive(Debug, Clone, Serialize)]
pub struct LoginStatus {
    /// `logged-in`, `not-logged-in`, `expired`, `keys-accepted`,
    /// `keys-refused`, or `unknown` (gateway unreachable).
    pub state: &'static str,
    /// Who (session mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `admin` or `user`, when the gateway said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The access key in use (api mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
}

/// The whole report (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The configured endpoint.
    pub endpoint: String,
    /// `session` or `api`.
    pub endpoint_type: &'static str,
    /// The `.env` file the settings came from, if any.
    pub config_file: Option<String>,
    /// This CLI's version.
    pub client_version: &'static str,
    /// The API version this CLI speaks.
    pub client_api_version: &'static str,
    /// The gateway.
    pub gateway: GatewayStatus,
    /// The login.
    pub login: LoginStatus,
}

async fn gateway(client: &ApiClient) -> CliResult<(GatewayStatus, Option<CliError>)> {
    let url = client.url("/")?;
    let started = Instant::now();
    let sent = tokio::time::timeout(DEADLINE, client.http().get(url).send()).await;
    let latency = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let down = |error: String, e: CliError| {
        Ok((
            GatewayStatus {
                reachable: false,
                server: None,
                api_version: None,
                latency_ms: None,
                error: Some(error),
            },
            Some(e),
        ))
    };
    let resp = match sent {
        Err(_) => {
            let msg = format!("no answer within {} s", DEADLINE.as_secs());
            return down(
                msg.clone(),
                CliError::new(format!(
                    "the airlock gateway at {} did not answer: {msg}",
                    client.config().base()
                ))
                .hint("is the gateway overloaded, or is a firewall dropping the connection?"),
            );
        }
        Ok(Err(e)) => {
            let err = client.transport_error(&e);
            return down(crate::client::root_cause(&e), err);
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    let info = if status.is_success() {
        resp.json::<VersionInfo>().await.ok()
    } else {
        None
    };
    match info {
        Some(v) if v.version.starts_with('v') => Ok((
            GatewayStatus {
                reachable: true,
                server: Some(v.manager),
                api_version: Some(v.version),
                latency_ms: Some(latency),
                error: None,
            },
            None,
        )),
        _ => down(
            format!("answered HTTP {status} without a version"),
            CliError::new(format!(
                "{} answered, but it does not look like an airlock (or Backend.AI) gateway (HTTP {status})",
                client.config().base()
            ))
            .hint("check BACKEND_ENDPOINT: it must be the gateway address, e.g. http://127.0.0.1:8090"),
        ),
    }
}

async fn login(client: &ApiClient, reachable: bool) -> LoginStatus {
    let mut st = LoginStatus {
        state: "not-logged-in",
        user: None,
        role: None,
        access_key: None,
    };
    match client.config().endpoint_type {
        EndpointType::Session => {
            let Some(saved) = client.login() else {
                return st;
            };
            st.user = Some(saved.username.clone());
            if !reachable {
                st.state = "unknown";
                return st;
            }
            let check = match client.request(Method::GET, "/server/login-check", Body::Empty) {
                Ok(req) => tokio::time::timeout(DEADLINE, check_login(client, req)).await,
                Err(_) => {
                    st.state = "unknown";
                    return st;
                }
            };
            match check {
                Ok(Ok(c)) if c.authenticated => {
                    st.state = "logged-in";
                    if let Ok(info) = serde_json::from_value::<AccountInfo>(c.data) {
                        st.user = Some(info.email);
                        st.role = Some(info.role);
                    }
                }
                Ok(Ok(_)) => st.state = "expired",
                _ => st.state = "unknown",
            }
        }
        EndpointType::Api => {
            st.access_key = client
                .config()
                .keypair
                .as_ref()
                .map(|k| k.access_key.clone());
            if !reachable {
                st.state = "unknown";
                return st;
            }
            let answer =
                tokio::time::timeout(DEADLINE, client.get::<KeypairInfo>("/user/keypair")).await;
            st.state = match answer {
                Ok(Ok(_)) => "keys-accepted",
                Ok(Err(_)) => "keys-refused",
                Err(_) => "unknown",
            };
        }
    }
    st
}

async fn check_login(client: &ApiClient, req: reqwest::RequestBuilder) -> CliResult<LoginCheck> {
    let resp = client.send(req).await?;
    resp.json::<LoginCheck>()
        .await
        .map_err(|e| CliError::new(format!("unexpected login-check answer: {e}")))
}

fn print_screen(s: &Status) {
    let ok = "✓";
    let bad = "✗";
    let from = s
        .config_file
        .as_deref()
        .map_or_else(|| "environment / defaults".to_owned(), ToOwned::to_owned);
    println!(
        "  Endpoint:      {} (type {}; from {from})",
        s.endpoint, s.endpoint_type
    );
    let g = &s.gateway;
    if g.reachable {
        println!(
            "  {ok} Gateway:     reachable in {} ms — {}, API {}",
            g.latency_ms.unwrap_or_default(),
            g.server.as_deref().unwrap_or("?"),
            g.api_version.as_deref().unwrap_or("?"),
        );
        if g.api_version.as_deref() != Some(s.client_api_version) {
            println!(
                "    note: this CLI speaks API {}; the gateway speaks {}",
                s.client_api_version,
                g.api_version.as_deref().unwrap_or("?")
            );
        }
    } else {
        println!(
            "  {bad} Gateway:     unreachable ({})",
            g.error.as_deref().unwrap_or("no answer")
        );
    }
    let l = &s.login;
    let who = l.user.as_deref().unwrap_or("?");
    let role = l
        .role
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let key = l.access_key.as_deref().unwrap_or("?");
    match l.state {
        "logged-in" => println!("  {ok} Login:       logged in as {who}{role}"),
        "expired" => println!(
            "  {bad} Login:       not logged in: the saved login of {who} has expired or was ended\n    hint: run `airlock login`"
        ),
        "keys-accepted" => {
            println!("  {ok} Login:       signed requests accepted (access key {key})")
        }
        "keys-refused" => println!(
            "  {bad} Login:       the gateway refuses access key {key}\n    hint: check BACKEND_ACCESS_KEY/BACKEND_SECRET_KEY, or `airlock keypair regenerate` from a session-mode login"
        ),
        "unknown" => match l.access_key.as_deref() {
            Some(k) => {
                println!("  ? Login:       access key {k} (not checked: gateway unreachable)")
            }
            None => {
                println!("  ? Login:       saved login of {who} (not checked: gateway unreachable)")
            }
        },
        _ => println!("  {bad} Login:       not logged in\n    hint: run `airlock login`"),
    }
    println!(
        "  CLI:           airlock {} (API {})",
        s.client_version, s.client_api_version
    );
}

/// `airlock status [--json]`.
pub async fn run(client: &ApiClient, args: StatusArgs) -> CliResult<()> {
    let (gw, down) = gateway(client).await?;
    let login = login(client, gw.reachable).await;
    let status = Status {
        endpoint: client.config().base(),
        endpoint_type: client.config().endpoint_type.as_str(),
        config_file: client
            .config()
            .dotenv
            .as_ref()
            .map(|p| p.display().to_string()),
        client_version: env!("CARGO_PKG_VERSION"),
        client_api_version: airlock_proto::API_VERSION,
        gateway: gw,
        login,
    };
    if args.json {
        crate::output::json(&status)?;
    } else {
        print_screen(&status);
    }
    match down {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
