//! `airlock login` / `airlock logout`.

use std::io::{BufRead, IsTerminal, Write};

use airlock_proto::api::LoginResponse;
use airlock_proto::login::ENCODED_HEADER;
use reqwest::header::{CONTENT_TYPE, SET_COOKIE};

use crate::client::{ApiClient, root_cause};
use crate::config::EndpointType;
use crate::error::{CliError, CliResult};
use crate::output;
use crate::state::Login;

fn read_line() -> CliResult<String> {
    let mut line = String::new();
    let n = std::io::stdin().lock().read_line(&mut line)?;
    if n == 0 {
        return Err(CliError::new("no input (stdin is closed)")
            .hint("type the answers, or pipe them: printf 'EMAIL\\nPASSWORD\\n' | airlock login"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn prompt(label: &str) -> CliResult<String> {
    eprint!("{label}");
    std::io::stderr().flush()?;
    let line = read_line()?;
    if !std::io::stdin().is_terminal() {
        // Piped input is not echoed: end the prompt line ourselves.
        eprintln!();
    }
    Ok(line)
}

fn prompt_password() -> CliResult<String> {
    if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ").map_err(CliError::from)
    } else {
        prompt("Password: ")
    }
}

/// Checks that the endpoint speaks our protocol (version handshake).
pub async fn handshake(client: &ApiClient) -> CliResult<()> {
    let url = client.url("/")?;
    let resp = client
        .http()
        .get(url.clone())
        .send()
        .await
        .map_err(|e| client.transport_error(&e))?;
    let ok = resp.status().is_success()
        && resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| {
                v.get("version")
                    .and_then(|s| s.as_str())
                    .map(|s| s.starts_with('v'))
            })
            .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "{} does not look like an airlock (or Backend.AI) server",
            client.config().base()
        ))
        .hint("check BACKEND_ENDPOINT: it must be the gateway address, e.g. http://127.0.0.1:8090"))
    }
}

fn cookie_from(resp: &reqwest::Response) -> Option<(String, Option<i64>)> {
    for v in resp.headers().get_all(SET_COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        let mut attrs = v.split(';');
        let Some((name, value)) = attrs.next().and_then(|kv| kv.split_once('=')) else {
            continue;
        };
        if name.trim() != airlock_proto::SESSION_COOKIE {
            continue;
        }
        let max_age = attrs
            .filter_map(|a| a.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("max-age"))
            .and_then(|(_, v)| v.trim().parse::<i64>().ok());
        let expires = max_age.map(|s| chrono::Utc::now().timestamp() + s);
        return Some((value.trim().to_owned(), expires));
    }
    None
}

/// `airlock login`.
pub async fn login(client: &ApiClient) -> CliResult<()> {
    if client.config().endpoint_type != EndpointType::Session {
        return Err(CliError::new("`airlock login` needs BACKEND_ENDPOINT_TYPE=session")
            .hint("set BACKEND_ENDPOINT_TYPE=session in .env; in api mode requests are signed with your access keys and need no login"));
    }
    handshake(client).await?;
    let username = prompt("User ID: ")?;
    let password = prompt_password()?;
    if username.trim().is_empty() {
        return Err(
            CliError::new("the user ID (email) is empty").hint("type the email you log in with")
        );
    }
    let body = serde_json::json!({"username": username.trim(), "password": password});
    let body = serde_json::to_vec(&body).map_err(|e| CliError::new(e.to_string()))?;
    let url = client.url("/server/login")?;
    let mut req = client.http().post(url);
    req = if client.config().endpoint.scheme() == "https" {
        req.header(CONTENT_TYPE, "application/json").body(body)
    } else {
        // Like the official client: never send the password as clear JSON
        // over plain http (this is obfuscation; use https for real secrecy).
        let enc = airlock_proto::login::encrypt(&client.config().endpoint_raw, &body);
        req.header(ENCODED_HEADER, "true")
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(enc)
    };
    let resp = req.send().await.map_err(|e| client.transport_error(&e))?;
    if !resp.status().is_success() {
        return Err(client.status_error(resp).await);
    }
    let cookie = cookie_from(&resp);
    let answer: LoginResponse = resp
        .json()
        .await
        .map_err(|e| CliError::new(format!("unexpected login answer: {}", root_cause(&e))))?;
    if !answer.authenticated {
        output::failure("Login failed.");
        let details = answer
            .data
            .get("details")
            .and_then(|d| d.as_str())
            .unwrap_or("the server refused the credentials");
        eprintln!("  {details}");
        return Err(CliError::silent(1));
    }
    let Some((cookie, expires_at)) = cookie else {
        return Err(
            CliError::new("the server accepted the login but sent no session cookie")
                .hint("is BACKEND_ENDPOINT the airlock gateway (not a proxy that strips cookies)?"),
        );
    };
    client.state().save_login(&Login {
        endpoint: client.config().base(),
        cookie,
        username: username.trim().to_owned(),
        expires_at,
    })?;
    output::success(&format!(
        "Login succeeded: {} on {}.",
        username.trim(),
        client.config().base()
    ));
    Ok(())
}

/// `airlock whoami`: the account on stdout, the endpoint on stderr.
pub async fn whoami(client: &ApiClient, json: bool) -> CliResult<()> {
    let me: airlock_proto::api::AccountInfo = client.get("/user/me").await?;
    if json {
        return output::json(&serde_json::json!({
            "email": me.email,
            "role": me.role,
            "endpoint": client.config().base(),
        }));
    }
    println!("{}", me.email);
    eprintln!(
        "  {} on {}{}",
        me.role,
        client.config().base(),
        match client.config().endpoint_type {
            EndpointType::Session => " (logged in)",
            EndpointType::Api => " (signed with your access key)",
        }
    );
    Ok(())
}

/// `airlock logout`.
pub async fn logout(client: &ApiClient) -> CliResult<()> {
    if client.login().is_none() {
        output::info(&format!(
            "Not logged in to {}; nothing to do.",
            client.config().base()
        ));
        return Ok(());
    }
    if client.config().endpoint_type == EndpointType::Session {
        let req = client.request(
            reqwest::Method::POST,
            "/server/logout",
            crate::client::Body::Empty,
        )?;
        // Forget the cookie even when the server cannot be reached.
        if let Err(e) = client.send(req).await {
            output::warning(&format!("the server was not told: {}", e.message));
        }
    }
    client.state().clear_login()?;
    output::success(&format!("Logout done: {}.", client.config().base()));
    Ok(())
}
