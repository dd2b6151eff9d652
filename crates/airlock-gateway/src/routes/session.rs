//! `/session…`: create, list, info, destroy, logs, files.

use std::time::Duration;

use airlock_proto::agent::{SIZES_HEADER, parse_sizes};
use airlock_proto::api::{ServicePort, SessionCreated, SessionInfo};
use airlock_proto::files as frames;
use airlock_proto::{CONTAINER_HOME, validate};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::audit::{FileScope, file_events};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::session_files::{self, home_path};
use crate::sessions::{self, CreateParams, Lookup};

fn str_or_num(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads Backend.AI's create body (and our CLI's, which is the same).
fn create_params(body: &Value) -> ApiResult<CreateParams> {
    let get = |k: &str| body.get(k).filter(|v| !v.is_null());
    let config = get("config").cloned().unwrap_or(Value::Null);
    let name = get("name")
        .or_else(|| get("sessName"))
        .or_else(|| get("clientSessionToken"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let image = get("image")
        .or_else(|| get("lang"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut mounts = Vec::new();
    if let Some(list) = config.get("mounts").and_then(Value::as_array) {
        for m in list {
            match m.as_str() {
                Some(s) => mounts.push(s.to_owned()),
                None => {
                    return Err(ApiError::invalid(
                        "config.mounts must be a list of folder names",
                    ));
                }
            }
        }
    }
    if let Some(map) = config.get("mount_map").and_then(Value::as_object) {
        for (k, v) in map {
            if v.as_str()
                .is_some_and(|t| t != format!("{CONTAINER_HOME}/{k}") && t != k)
            {
                return Err(ApiError::invalid(format!(
                    "folder {k:?} can only be mounted at {CONTAINER_HOME}/{k}"
                )));
            }
            mounts.push(k.clone());
        }
    }
    let mut environ = Vec::new();
    match config.get("environ").filter(|v| !v.is_null()) {
        None => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => v.to_string(),
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "config.environ.{k} must be a string"
                        )));
                    }
                };
                validate::check_env_var(k, &value)?;
                environ.push((k.clone(), value));
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "config.environ must be an object of variable names to values",
            ));
        }
    }
    let resources = config.get("resources").cloned().unwrap_or(Value::Null);
    let cpu_milli = match resources.get("cpu").and_then(str_or_num) {
        Some(c) => Some(validate::parse_cpu(&c)?),
        None => None,
    };
    let mem_bytes = match resources.get("mem").and_then(str_or_num) {
        Some(m) => Some(i64::try_from(validate::parse_size(&m)?).unwrap_or(i64::MAX)),
        None => None,
    };
    // Whole GPUs: `gpus` (airlock), or the official client's
    // `-r cuda.device=N`; fractions (`cuda.shares`) are not offered.
    let gpus = match resources
        .get("gpus")
        .or_else(|| resources.get("cuda.device"))
    {
        None | Some(Value::Null) => 0,
        Some(v) => str_or_num(v)
            .and_then(|g| g.trim().parse::<u32>().ok())
            .map(i64::from)
            .ok_or_else(|| {
                ApiError::invalid(format!("resources: {v} is not a whole number of GPUs"))
                    .hint("ask for whole devices, e.g. --gpus 1")
            })?,
    };
    if resources.get("cuda.shares").is_some() {
        return Err(
            ApiError::invalid("fractional GPUs (cuda.shares) are not offered")
                .hint("ask for whole devices: -r cuda.device=1 (airlock: --gpus 1)"),
        );
    }
    let enqueue_only = get("enqueueOnly").and_then(Value::as_bool).unwrap_or(false);
    let max_wait = get("maxWaitSeconds")
        .and_then(Value::as_u64)
        .map(Duration::from_secs);
    let reuse_if_exists = get("reuseIfExists")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // `config.node` (airlock), or the official client's `--assign-agent`
    // (`config.agentList`, one node).
    let node = match config.get("node").or_else(|| config.get("agentList")) {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => {
            list[0].as_str().map(str::to_owned)
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "config.node must be a node name (config.agentList: a list of one)",
            ));
        }
    };
    Ok(CreateParams {
        name,
        image,
        mounts,
        environ,
        cpu_milli,
        mem_bytes,
        gpus,
        enqueue_only,
        max_wait,
        reuse_if_exists,
        node,
    })
}

/// `POST /session`.
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let params = create_params(&body)?;
    let created = sessions::create(&state, &caller, params).await?;
    let status = match created {
        sessions::Created::New(_) => StatusCode::CREATED,
        sessions::Created::Existing(_) => StatusCode::OK,
    };
    let s = created.session();
    Ok((
        status,
        axum::Json(SessionCreated {
            session_id: s.id.clone(),
            session_name: s.name.clone(),
            status: s.status.as_str().to_owned(),
            status_info: s.status_info.clone(),
            service_ports: vec![ServicePort::sshd()],
            created: matches!(created, sessions::Created::New(_)),
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    all: Option<String>,
    /// Every user's sessions (administrators only).
    #[serde(default)]
    all_users: Option<String>,
}

fn flag(v: Option<&str>) -> bool {
    v.is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// `GET /session` (airlock's list; Backend.AI's client uses GraphQL).
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Vec<SessionInfo>>> {
    let all = flag(q.all.as_deref());
    let everyone = flag(q.all_users.as_deref());
    if everyone && !caller.user.is_admin() {
        return Err(
            ApiError::forbidden("only administrators can list every user's sessions")
                .hint("leave out --all-users to list your own sessions"),
        );
    }
    let owner = (!everyone).then_some(caller.user.id.as_str());
    let which = if all { Lookup::EvenEnded } else { Lookup::Live };
    let rows = state.store().sessions(owner, which).await?;
    let mut out = Vec::with_capacity(rows.len());
    for s in &rows {
        out.push(sessions::info(&state, s).await?);
    }
    Ok(axum::Json(out))
}

/// `GET /session/{s}`.
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
) -> ApiResult<axum::Json<SessionInfo>> {
    let s = sessions::resolve(&state, &caller, &ident, Lookup::EvenEnded).await?;
    Ok(axum::Json(sessions::info(&state, &s).await?))
}

#[derive(Debug, Deserialize)]
pub(crate) struct DestroyQuery {
    #[serde(default)]
    forced: Option<String>,
}

/// `DELETE /session/{s}`.
pub(crate) async fn destroy(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Query(q): Query<DestroyQuery>,
) -> ApiResult<axum::Json<Value>> {
    let s = sessions::resolve(&state, &caller, &ident, Lookup::Live).await?;
    let how = if q.forced.as_deref().is_some_and(|v| v == "true" || v == "1") {
        sessions::Termination::Forced
    } else {
        sessions::Termination::Orderly
    };
    let status = sessions::destroy(&state, &s, how).await?;
    crate::audit::session_terminated(&state, &s, &caller.user, status.as_str()).await;
    Ok(axum::Json(
        serde_json::json!({"stats": {}, "status": status.as_str()}),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogsQuery {
    /// Lines from the end (default: [`sessions::LOG_LINES`], at most that).
    #[serde(default)]
    tail: Option<usize>,
    /// Keep the response open and stream new lines (`docker logs -f`).
    #[serde(default)]
    follow: Option<String>,
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

/// `GET /session/{s}/logs[?tail=N][&follow=true]`: the container's log; a
/// terminated session's saved tail (see `sessions::destroy`).
pub(crate) async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let s = sessions::resolve(&state, &caller, &ident, Lookup::EvenEnded).await?;
    let tail = q
        .tail
        .unwrap_or(sessions::LOG_LINES)
        .min(sessions::LOG_LINES);
    let text_response = |text: Body| {
        let mut resp = text.into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    };
    if s.status == crate::store::Status::Terminated {
        return match state.store().session_log(&s.id).await? {
            Some(saved) => Ok(text_response(Body::from(last_lines(&saved, tail).to_owned()))),
            None => Err(
                ApiError::new(StatusCode::GONE, "session-terminated", "Session terminated").msg(
                    format!(
                        "session {:?} is terminated and no log was saved (its node could not be reached when it ended)",
                        s.name
                    ),
                ),
            ),
        };
    }
    let agent = sessions::agent_of(&state, &s).await?;
    if flag(q.follow.as_deref()) {
        let upstream = state.agents().follow_logs(&agent, &s.id, tail).await?;
        return Ok(text_response(Body::from_stream(upstream.bytes_stream())));
    }
    // The agent leaves out the runner's internal lines after taking the
    // tail, so ask for more and cut here.
    let asked = tail
        .saturating_mul(4)
        .saturating_add(200)
        .min(sessions::LOG_LINES);
    let text = state.agents().logs(&agent, &s.id, asked).await?;
    let mut resp = last_lines(&text, tail).to_owned().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

/// `GET /session/{s}/ping`: times the hops behind the gateway for
/// `airlock ping` (gateway → agent, agent → runner connect and SSH
/// identification). Owner only, like every session route.
pub(crate) async fn ping(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
) -> ApiResult<axum::Json<airlock_proto::api::SessionPing>> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let s = sessions::resolve(&state, &caller, &ident, Lookup::Live).await?;
    if s.status != crate::store::Status::Running {
        return Err(ApiError::conflict(format!(
            "session {:?} is {}, not RUNNING",
            s.name,
            s.status.as_str()
        ))
        .hint("wait until it is RUNNING (`airlock session info`)"));
    }
    let agent = sessions::agent_of(&state, &s).await?;
    let p = if let Some(local) = state.local_agent(&agent.id) {
        let t = std::time::Instant::now();
        // A ping is not a client's tunnel: no origin for the audit trail.
        let mut tcp = local.connect(&s.id, None).await.map_err(|e| {
            ApiError::unavailable(format!("cannot reach the session's SSH server: {e}"))
        })?;
        let connect = t.elapsed();
        let t = std::time::Instant::now();
        let banner = tokio::time::timeout(
            Duration::from_secs(10),
            airlock_tunnel::read_ssh_banner(&mut tcp),
        )
        .await
        .map_err(|_| {
            ApiError::unavailable("the session's SSH server sent no identification in 10 s")
        })?
        .map_err(|e| {
            ApiError::unavailable(format!("reading the session's SSH identification: {e}"))
        })?;
        airlock_proto::api::SessionPing {
            session: s.name.clone(),
            agent: "embedded".into(),
            gateway_agent_ms: None,
            agent_runner_connect_ms: ms(connect),
            agent_runner_banner_ms: ms(t.elapsed()),
            runner_banner: banner,
        }
    } else {
        let t = std::time::Instant::now();
        let r = state.agents().ping(&agent, &s.id).await?;
        // The agent's own work is in its answer; the rest is the hop.
        let hop = (ms(t.elapsed()) - r.connect_ms - r.banner_ms).max(0.0);
        airlock_proto::api::SessionPing {
            session: s.name.clone(),
            agent: "remote".into(),
            gateway_agent_ms: Some(hop),
            agent_runner_connect_ms: r.connect_ms,
            agent_runner_banner_ms: r.banner_ms,
            runner_banner: r.banner,
        }
    };
    Ok(axum::Json(p))
}

/// `POST /session/{s}/download?files=a&files=b`: multipart/mixed of tar
/// archives, streamed from the session. (Clients of the 22.09 series send
/// `GET` with `{"files": [...]}` as a JSON body; both work.)
pub(crate) async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let mut files: Vec<String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k == "files" || k == "file")
            .map(|(_, v)| v.into_owned())
            .collect();
    if files.is_empty() {
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .map_err(|e| ApiError::invalid(format!("could not read the request body: {e}")))?;
        if let Ok(v) = serde_json::from_slice::<Value>(&body)
            && let Some(list) = v.get("files").and_then(Value::as_array)
        {
            files = list
                .iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
        }
    }
    if files.is_empty() {
        return Err(ApiError::invalid(
            "name the files to download (?files=PATH)",
        ));
    }
    let mut paths = Vec::with_capacity(files.len());
    for f in &files {
        paths.push(home_path(
            &frames::confine(f, CONTAINER_HOME).map_err(ApiError::invalid)?,
        ));
    }
    let s = sessions::resolve(&state, &caller, &ident, Lookup::Live).await?;
    sessions::require_running(&s)?;
    let agent = sessions::agent_of(&state, &s).await?;
    let resp = state.agents().download(&agent, &s.id, files).await?;
    // The agent checked every path and says what each is (a file's size;
    // none for a directory, or from an older agent).
    let sizes = resp
        .headers()
        .get(SIZES_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_sizes)
        .filter(|v| v.len() == paths.len())
        .unwrap_or_default();
    let files: Vec<(String, Option<u64>)> = paths
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, sizes.get(i).copied().flatten()))
        .collect();
    file_events(
        &state,
        (&caller.user.id, Some(&caller.user)),
        FileScope::Session(&s),
        "session.download",
        &files,
    )
    .await;
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("multipart/mixed"));
    let mut out = Response::new(Body::from_stream(resp.bytes_stream()));
    out.headers_mut().insert(header::CONTENT_TYPE, content_type);
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `POST /session/{s}/upload`: multipart/form-data, one `src` part per file
/// (filename = destination relative to the home directory). Streamed to the
/// session; a file only appears once it has arrived completely.
pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    req: Request,
) -> ApiResult<StatusCode> {
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| ApiError::invalid("the upload must be multipart/form-data"))?;
    let s = sessions::resolve(&state, &caller, &ident, Lookup::Live).await?;
    sessions::require_running(&s)?;
    let mut multipart = multer::Multipart::new(req.into_body().into_data_stream(), boundary);
    let (st, user_id) = (state.clone(), caller.user.id.clone());
    let written = session_files::upload(&state, &s, |sink| async move {
        let sink = &sink;
        crate::quotas::each_upload_part(
            &mut multipart,
            "src",
            &st,
            &user_id,
            src_path,
            |path, body| sink.file(path, body),
        )
        .await
    })
    .await?;
    if written.is_empty() {
        return Err(ApiError::invalid(
            "no files in the upload (multipart field `src`)",
        ));
    }
    // Each file's path and size, for the audit trail.
    let uploaded: Vec<(String, Option<u64>)> = written
        .into_iter()
        .map(|(path, n)| (home_path(&path), Some(n)))
        .collect();
    tracing::info!(session = %s.id, files = uploaded.len(), "uploaded files into a session");
    file_events(
        &state,
        (&caller.user.id, Some(&caller.user)),
        FileScope::Session(&s),
        "session.upload",
        &uploaded,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Where a `src` part goes: its filename (percent-encoded), confined to
/// the home directory.
fn src_path(part: &multer::Field<'static>) -> ApiResult<Option<String>> {
    let raw = part
        .file_name()
        .map(percent_decode)
        .ok_or_else(|| ApiError::invalid("every `src` part needs a filename"))?;
    let path = frames::confine(&raw, CONTAINER_HOME).map_err(ApiError::invalid)?;
    if path.is_empty() {
        return Err(ApiError::invalid(format!("{raw:?} does not name a file")));
    }
    Ok(Some(path))
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct FilesQuery {
    #[serde(default)]
    path: Option<String>,
}

/// `GET /session/{s}/files` (Backend.AI `session ls`): path from the query or
/// a JSON body.
pub(crate) async fn files(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Query(q): Query<FilesQuery>,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<Value>> {
    let path = q
        .path
        .or_else(|| body.get("path").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| ".".to_owned());
    frames::confine(&path, CONTAINER_HOME).map_err(ApiError::invalid)?;
    let s = sessions::resolve(&state, &caller, &ident, Lookup::Live).await?;
    sessions::require_running(&s)?;
    let agent = sessions::agent_of(&state, &s).await?;
    let list = state.agents().files(&agent, &s.id, &path).await?;
    Ok(axum::Json(serde_json::json!({
        "files": list.to_string(),
        "errors": "",
        "abspath": path,
    })))
}

/// `GET /stream/session/{s}/apps`.
pub(crate) async fn apps(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
) -> ApiResult<axum::Json<Vec<ServicePort>>> {
    let s = sessions::resolve(&state, &caller, &ident, Lookup::Live).await?;
    // A session that is not running has no apps yet: say so now, rather
    // than letting the client open a local port whose tunnels all fail.
    sessions::require_running(&s)?;
    Ok(axum::Json(vec![ServicePort::sshd()]))
}

/// `GET /images`: images on online nodes.
pub(crate) async fn images(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<axum::Json<Value>> {
    let mut names = std::collections::BTreeMap::new();
    for a in crate::agents::online(&state).await? {
        match state.agents().images(&a).await {
            Ok(list) => {
                for i in list {
                    names.entry(i.name).or_insert(i.size);
                }
            }
            Err(e) => tracing::warn!(agent = %a.id, error = %e, "cannot list images"),
        }
    }
    let list: Vec<Value> = names
        .into_iter()
        .map(|(name, size)| serde_json::json!({"name": name, "size": size}))
        .collect();
    Ok(axum::Json(serde_json::json!({
        "default": state.config().default_image,
        "images": list,
    })))
}

/// Agent heartbeat, authenticated by the agent's own credential (or the
/// shared token, for an agent that has none).
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    headers: http::HeaderMap,
    Json(hb): Json<airlock_proto::agent::Heartbeat>,
) -> ApiResult<axum::Json<airlock_proto::agent::HeartbeatReply>> {
    if !agent_token_ok(&state, &headers, &hb.agent_id).await? {
        tracing::warn!(agent = %hb.agent_id, "refused a heartbeat with a wrong agent token");
        return Err(wrong_agent_token());
    }
    Ok(axum::Json(
        crate::agents::apply_heartbeat(&state, hb).await?,
    ))
}

/// Whether the request carries the token agent `agent_id` must present
/// (constant time): its own credential when it is enrolled — then nothing
/// else, so one node's token cannot speak for another — else the shared
/// agent token, when the gateway has one.
async fn agent_token_ok(
    state: &AppState,
    headers: &http::HeaderMap,
    agent_id: &str,
) -> ApiResult<bool> {
    use subtle::ConstantTimeEq;
    let own = state.store().agent_credential(agent_id).await?;
    let expected = own
        .as_ref()
        .map_or(state.agents().shared_token(), |c| c.expose())
        .as_bytes();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    Ok(!expected.is_empty() && bool::from(given.ct_eq(expected)))
}

fn wrong_agent_token() -> ApiError {
    ApiError::unauthorized("wrong agent token").hint(
        "an enrolled agent needs its own token (`airlockd node enroll ID` on the gateway); \
         others the gateway's --agent-token",
    )
}

/// `POST /agent/v1/events`: SSH events from the runners of an agent's
/// sessions, authenticated like its heartbeat. Only sessions placed on
/// that agent are believed.
pub(crate) async fn runner_events(
    State(state): State<AppState>,
    headers: http::HeaderMap,
    Json(batch): Json<airlock_proto::agent::RunnerEvents>,
) -> ApiResult<http::StatusCode> {
    if !agent_token_ok(&state, &headers, &batch.agent_id).await? {
        tracing::warn!(agent = %batch.agent_id, "refused runner events with a wrong agent token");
        return Err(wrong_agent_token());
    }
    crate::audit::ingest_runner_events(&state, batch).await?;
    Ok(http::StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a\nb\n", 5), "a\nb\n");
        assert_eq!(last_lines("a\n", 0), "");
    }

    #[test]
    fn parses_the_official_clients_body() {
        let body = serde_json::json!({
            "tag": null, "name": "demo",
            "config": {"mounts": ["data"], "mount_ids": [], "environ": {},
                       "resources": {"cpu": "1", "mem": "1g"}, "resource_opts": {},
                       "scalingGroup": null, "mount_map": {}},
            "enqueueOnly": false, "maxWaitSeconds": 0, "reuseIfExists": true,
            "image": "airlock/base:bookworm"
        });
        let p = create_params(&body).unwrap();
        assert_eq!(p.name.as_deref(), Some("demo"));
        assert_eq!(p.mounts, ["data"]);
        assert_eq!(p.cpu_milli, Some(1000));
        assert_eq!(p.mem_bytes, Some(1 << 30));
        assert!(p.reuse_if_exists);
        assert_eq!(p.gpus, 0);
        let bad = serde_json::json!({"config": {"resources": {"mem": "lots"}}});
        assert!(create_params(&bad).is_err());
        // GPUs: ours, the official client's, and what is refused.
        let gpus = |r: Value| create_params(&serde_json::json!({"config": {"resources": r}}));
        assert_eq!(gpus(serde_json::json!({"gpus": 2})).unwrap().gpus, 2);
        assert_eq!(
            gpus(serde_json::json!({"cuda.device": "1"})).unwrap().gpus,
            1
        );
        assert!(gpus(serde_json::json!({"cuda.device": "0.5"})).is_err());
        assert!(gpus(serde_json::json!({"gpus": -1})).is_err());
        assert!(gpus(serde_json::json!({"cuda.shares": "0.5"})).is_err());
    }
}
