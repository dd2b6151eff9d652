//! The agent's HTTP API for the gateway (bearer-token authenticated).

use std::sync::Arc;

use airlock_proto::CONTAINER_HOME;
use airlock_proto::agent::{
    CreateContainer, DownloadRequest, FileChange, ImageInfo, SIZES_HEADER, SIZES_MAX_PATHS,
    TCP_UPGRADE, format_sizes,
};
use airlock_proto::problem::Problem;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;

use crate::error::AgentError;
use crate::runtime::{LogChunk, LogMode, RUNNER_IN_CONTAINER};
use crate::sessions::Agent;

type Shared = Arc<Agent>;

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let (status, problem) = match &self {
            AgentError::NoSession(_) => (
                StatusCode::NOT_FOUND,
                Problem::new("session-not-found", "Session not found on this agent"),
            ),
            AgentError::Invalid { status, hint, .. } => {
                let mut p = Problem::new("invalid-api-params", "Invalid request");
                p.hint = hint.clone();
                (*status, p)
            }
            AgentError::Docker(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Problem::new("docker-error", "Container engine error"),
            ),
            AgentError::Io(_) | AgentError::Firewall(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Problem::new("agent-error", "Agent error"),
            ),
        };
        (status, Json(problem.msg(self.to_string()))).into_response()
    }
}

/// The route table.
pub fn router(agent: Shared) -> Router {
    Router::new()
        .route("/v1/sessions", post(create))
        .route("/v1/sessions/{id}", delete(destroy))
        .route("/v1/sessions/{id}/connect", get(connect))
        .route("/v1/sessions/{id}/ping", get(ping))
        .route("/v1/sessions/{id}/download", post(download))
        .route("/v1/sessions/{id}/upload", post(upload))
        .route(
            "/v1/sessions/{id}/files",
            get(list_files).post(change_files),
        )
        .route("/v1/sessions/{id}/logs", get(logs))
        .route("/v1/images", get(images))
        .layer(middleware::from_fn_with_state(agent.clone(), require_token))
        .with_state(agent)
}

async fn require_token(State(agent): State<Shared>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = agent.config().token.as_bytes();
    if expected.is_empty() || !bool::from(given.as_bytes().ct_eq(expected)) {
        tracing::warn!("refused a request without the agent token");
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                Problem::new("auth-failed", "Unauthorized access")
                    .msg("missing or wrong agent token"),
            ),
        )
            .into_response();
    }
    next.run(req).await
}

async fn create(
    State(agent): State<Shared>,
    Json(spec): Json<CreateContainer>,
) -> Result<StatusCode, AgentError> {
    agent.create(spec).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn destroy(
    State(agent): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode, AgentError> {
    agent.destroy(&id).await?;
    Ok(StatusCode::OK)
}

async fn images(State(agent): State<Shared>) -> Result<Json<Vec<ImageInfo>>, AgentError> {
    let list = agent.runtime().images().await?;
    let allowed = &agent.config().allowed_images;
    Ok(Json(
        list.into_iter()
            .filter(|i| crate::sessions::image_allowed(allowed, &i.name))
            .collect(),
    ))
}

#[derive(serde::Deserialize)]
struct ConnectQuery {
    #[serde(default)]
    port: Option<u16>,
    /// `1`: the stream carries a resumable tunnel ([`crate::tunnels`]).
    #[serde(default)]
    resume: Option<u8>,
}

/// Upgrades to a raw TCP stream spliced to the runner's SSH port, or with
/// `resume=1` to the agent's end of a resumable tunnel (new or resumed,
/// as its first frame says).
/// The client connection a tunnel serves, as the gateway said.
fn origin_of(h: &http::HeaderMap) -> Option<airlock_proto::agent::TunnelOrigin> {
    use airlock_proto::agent::{ORIGIN_CLIENT_HEADER, ORIGIN_CONN_HEADER, TunnelOrigin};
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Some(TunnelOrigin {
        conn: get(ORIGIN_CONN_HEADER)?,
        client: get(ORIGIN_CLIENT_HEADER)?,
    })
}

async fn connect(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<ConnectQuery>,
    mut req: Request,
) -> Result<Response, AgentError> {
    let port = q.port.unwrap_or(airlock_proto::SSHD_PORT);
    if port != airlock_proto::SSHD_PORT {
        return Err(AgentError::invalid(
            StatusCode::FORBIDDEN,
            format!("port {port} is not a session service port"),
        ));
    }
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(TCP_UPGRADE));
    if !wants {
        return Err(AgentError::invalid(
            StatusCode::BAD_REQUEST,
            format!("expected `Upgrade: {TCP_UPGRADE}`"),
        ));
    }
    let origin = origin_of(req.headers());
    if q.resume == Some(1) {
        // The runner connection is opened (or found) once the client's
        // HELLO arrives; only the session must exist now.
        agent.container_of(&id)?;
        let on_upgrade = hyper::upgrade::on(&mut req);
        let tracker = agent.clone();
        tracker.spawn_until_shutdown(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    crate::tunnels::serve(agent, id, TokioIo::new(upgraded), origin).await;
                }
                Err(e) => tracing::warn!(error = %e, "upgrade failed"),
            }
        });
        return Ok(switching_protocols());
    }
    let tcp = agent.connect(&id).await?;
    agent.note_origin(&id, &tcp, origin.as_ref());
    let on_upgrade = hyper::upgrade::on(&mut req);
    agent.spawn_until_shutdown(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut tcp = tcp;
                match tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut tcp,
                    256 * 1024,
                    256 * 1024,
                )
                .await
                {
                    Ok((up, down)) => tracing::debug!(session = %id, up, down, "tunnel closed"),
                    Err(e) => tracing::debug!(session = %id, error = %e, "tunnel ended"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "upgrade failed"),
        }
    });
    Ok(switching_protocols())
}

fn switching_protocols() -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(TCP_UPGRADE));
    resp
}

/// Times this node's hop to the runner (`airlock ping`): TCP connect to
/// its SSH port, then its SSH identification line.
async fn ping(
    State(agent): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<airlock_proto::agent::RunnerPing>, AgentError> {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let t = std::time::Instant::now();
    let mut tcp = agent.connect(&id).await?;
    let connect = t.elapsed();
    let t = std::time::Instant::now();
    let banner = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        airlock_tunnel::read_ssh_banner(&mut tcp),
    )
    .await
    .map_err(|_| {
        AgentError::Docker("the session's SSH server sent no identification in 10 s".into())
    })?
    .map_err(|e| AgentError::Docker(format!("reading the session's SSH identification: {e}")))?;
    Ok(Json(airlock_proto::agent::RunnerPing {
        connect_ms: ms(connect),
        banner_ms: ms(t.elapsed()),
        banner,
    }))
}

fn user(agent: &Agent) -> String {
    format!("{}:{}", agent.config().uid, agent.config().gid)
}

fn runner_files(sub: &str, paths: &[String]) -> Vec<String> {
    let mut cmd = vec![
        RUNNER_IN_CONTAINER.to_owned(),
        "files".to_owned(),
        sub.to_owned(),
        "--root".to_owned(),
        CONTAINER_HOME.to_owned(),
        "--".to_owned(),
    ];
    cmd.extend(paths.iter().cloned());
    cmd
}

/// Maps a failed runner file command to an error (exit 3: not found, 4:
/// permission denied, others: invalid path).
fn file_error(code: i64, stderr: &str) -> AgentError {
    let msg = stderr
        .lines()
        .map(|l| l.trim_start_matches("error: "))
        .find(|l| !l.trim().is_empty())
        .unwrap_or("the file operation failed")
        .to_owned();
    let status = match code {
        3 => StatusCode::NOT_FOUND,
        4 => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    AgentError::invalid(status, msg)
}

/// `multipart/mixed` of one tar archive per requested path, streamed.
async fn download(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    Json(req): Json<DownloadRequest>,
) -> Result<Response, AgentError> {
    let cid = agent.container_of(&id)?;
    if req.paths.is_empty() {
        return Err(AgentError::invalid(
            StatusCode::BAD_REQUEST,
            "no files requested",
        ));
    }
    // Validate every path first, so that errors get a proper status.
    let stat = run_files(&agent, &id, "stat", &req.paths).await?;
    // What each path is, for the gateway's audit trail.
    let sizes = (req.paths.len() <= SIZES_MAX_PATHS)
        .then(|| stat_sizes(&stat))
        .flatten()
        .filter(|s| s.len() == req.paths.len());
    let boundary = format!("airlock-{}", hex::encode(rand::random::<[u8; 12]>()));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let b = boundary.clone();
    let tracker = agent.clone();
    tracker.spawn(async move {
        for path in &req.paths {
            let name = path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(path)
                .to_owned();
            let head = format!(
                "--{b}\r\nContent-Type: application/octet-stream\r\nContent-Encoding: identity\r\nContent-Disposition: attachment; filename=\"{}.tar\"\r\n\r\n",
                name.replace('"', "_")
            );
            if tx.send(Ok(Bytes::from(head))).await.is_err() {
                return;
            }
            let mut exec = match agent
                .runtime()
                .exec(
                    &cid,
                    &user(&agent),
                    runner_files("pack", std::slice::from_ref(path)),
                )
                .await
            {
                Ok(e) => e,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            drop(exec.input);
            let mut stderr = String::new();
            while let Some(chunk) = exec.output.next().await {
                match chunk {
                    Ok(LogChunk::Stdout(message)) => {
                        if tx.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    Ok(LogChunk::Stderr(message)) => {
                        stderr.push_str(&String::from_utf8_lossy(&message));
                    }
                    Ok(LogChunk::Other(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                }
            }
            match agent.runtime().exec_exit_code(&exec.id).await {
                Ok(0) => {}
                Ok(code) => {
                    tracing::warn!(path, code, stderr = %stderr.trim(), "packing a file failed");
                    // Abort the body: the client sees a truncated response,
                    // never a silently incomplete archive.
                    let _ = tx
                        .send(Err(std::io::Error::other(format!("packing {path} failed"))))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
            if tx.send(Ok(Bytes::from_static(b"\r\n"))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(Bytes::from(format!("--{b}--\r\n")))).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}"))
            .map_err(|e| AgentError::Docker(e.to_string()))?,
    );
    if let Some(v) = sizes.and_then(|s| HeaderValue::from_str(&format_sizes(&s)).ok()) {
        resp.headers_mut().insert(SIZES_HEADER, v);
    }
    Ok(resp)
}

/// The sizes in `airlock-runner files stat` output (`[{"kind","size"}…]`;
/// `None` for a directory).
fn stat_sizes(out: &[u8]) -> Option<Vec<Option<u64>>> {
    let v: serde_json::Value = serde_json::from_slice(out).ok()?;
    v.as_array()?
        .iter()
        .map(|e| match e["kind"].as_str() {
            Some("dir") => Some(None),
            _ => e["size"].as_u64().map(Some),
        })
        .collect()
}

/// Streams the framed upload body into `airlock-runner files unpack`.
async fn upload(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, AgentError> {
    let cid = agent.container_of(&id)?;
    let mut exec = agent
        .runtime()
        .exec(&cid, &user(&agent), runner_files("unpack", &[]))
        .await?;
    let mut body = req.into_body().into_data_stream();
    let mut output = Vec::new();
    let mut stderr = String::new();
    let mut input_ok = true;
    // Feed stdin while draining stdout so neither side blocks.
    loop {
        tokio::select! {
            chunk = body.next(), if input_ok => match chunk {
                Some(Ok(data)) => {
                    if exec.input.write_all(&data).await.is_err() {
                        input_ok = false;
                    }
                }
                Some(Err(e)) => {
                    tracing::info!(error = %e, "upload body ended early");
                    input_ok = false;
                    let _ = exec.input.shutdown().await;
                }
                None => {
                    input_ok = false;
                    let _ = exec.input.shutdown().await;
                }
            },
            out = exec.output.next() => match out {
                Some(Ok(LogChunk::Stdout(message))) => output.extend_from_slice(&message),
                Some(Ok(LogChunk::Stderr(message))) => stderr.push_str(&String::from_utf8_lossy(&message)),
                Some(Ok(LogChunk::Other(_))) => {}
                Some(Err(e)) => return Err(e),
                None => break,
            },
        }
    }
    let code = agent.runtime().exec_exit_code(&exec.id).await?;
    if code != 0 {
        return Err(file_error(code, &stderr));
    }
    let mut resp = Response::new(Body::from(output));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[derive(serde::Deserialize)]
struct LsQuery {
    #[serde(default)]
    path: Option<String>,
}

async fn list_files(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<LsQuery>,
) -> Result<Response, AgentError> {
    let path = q.path.unwrap_or_else(|| ".".to_owned());
    let out = run_files(&agent, &id, "ls", &[path]).await?;
    let mut resp = Response::new(Body::from(out));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Runs `airlock-runner files SUB PATHS…` in a session as its user; its
/// stdout, or the error its exit code names.
async fn run_files(
    agent: &Agent,
    id: &str,
    sub: &str,
    paths: &[String],
) -> Result<Vec<u8>, AgentError> {
    let cid = agent.container_of(id)?;
    let out = agent
        .runtime()
        .exec_capture(&cid, &user(agent), runner_files(sub, paths))
        .await?;
    if out.code != 0 {
        return Err(file_error(out.code, &out.stderr));
    }
    Ok(out.stdout)
}

/// Renames, removes or creates a path in a session (`FileChange`); the
/// runner confines it to the home.
async fn change_files(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    Json(change): Json<FileChange>,
) -> Result<StatusCode, AgentError> {
    let (sub, paths) = change.runner_args();
    run_files(&agent, &id, sub, &paths).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    #[serde(default)]
    tail: Option<usize>,
    #[serde(default)]
    follow: bool,
}

async fn logs(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, AgentError> {
    let cid = match agent.container_of(&id) {
        Ok(c) => c,
        Err(_) => agent
            .runtime()
            .list(&agent.config().agent_id)
            .await?
            .into_iter()
            .find(|f| f.session_id == id)
            .map(|f| f.id)
            .ok_or_else(|| AgentError::NoSession(id.clone()))?,
    };
    let mode = if q.follow {
        LogMode::Follow
    } else {
        LogMode::Existing
    };
    let stream = agent
        .runtime()
        .logs(&cid, mode, Some(q.tail.unwrap_or(2000)));
    // The runner's readiness lines are for us, not for the session's owner.
    let lines = Arc::new(std::sync::Mutex::new(LineFilter::default()));
    let at_end = lines.clone();
    let body = stream
        .map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            let mut f = lines
                .lock()
                .map_err(|_| std::io::Error::other("log filter"))?;
            Ok::<_, std::io::Error>(f.push(chunk.bytes()))
        })
        .chain(futures_util::stream::once(async move {
            let mut f = at_end
                .lock()
                .map_err(|_| std::io::Error::other("log filter"))?;
            Ok(f.finish())
        }));
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

/// Drops the runner's internal lines (`proto::recipes::readiness`) from a
/// log stream split into arbitrary chunks; a partial line waits for its end.
#[derive(Default)]
struct LineFilter {
    partial: Vec<u8>,
}

impl LineFilter {
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.partial.extend_from_slice(chunk);
        let Some(last) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        let mut out = Vec::with_capacity(complete.len());
        for line in complete.split_inclusive(|b| *b == b'\n') {
            if !airlock_proto::recipes::readiness::is_internal(&String::from_utf8_lossy(line)) {
                out.extend_from_slice(line);
            }
        }
        out
    }

    /// The last line, when the log does not end with a newline.
    fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.partial);
        if airlock_proto::recipes::readiness::is_internal(&String::from_utf8_lossy(&rest)) {
            Vec::new()
        } else {
            rest
        }
    }
}

#[cfg(test)]
mod line_filter_tests {
    use super::LineFilter;

    #[test]
    fn drops_readiness_lines_across_chunks() {
        let mut f = LineFilter::default();
        let mut out = f.push(b"hello\nAIRLOCK-HOST");
        out.extend(f.push(b"-KEY ssh-ed25519 AAAA\nAIRLOCK-READY\nwor"));
        out.extend(f.push(b"ld\nlast"));
        out.extend(f.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "hello\nworld\nlast");
    }
}
