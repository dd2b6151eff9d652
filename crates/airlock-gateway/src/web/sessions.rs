//! The sessions page: list (live status updates by long polling), create,
//! terminate, and the SSH/SFTP connection dialog with the key downloads.

use std::time::Duration;

use airlock_proto::recipes::{self, HostBlock, LocalCommands};
use airlock_proto::{CONTAINER_USER, validate};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Confirmation;
use super::layout::{self, Nav, code, csrf, danger_button, form_error, icon, svg};
use super::{Flash, PageError, PageResult, PostForm, WebUser, attachment, explain, redirect_with};
use crate::AppState;
use crate::error::ApiError;
use crate::sessions::{self, CreateParams, Lookup};
use crate::store::{SessionRow, Status};

/// The local port the dialog suggests when the user has no preferred one
/// (the port Backend.AI's guide uses; the CLI's default too).
pub(crate) const DEFAULT_LOCAL_PORT: u16 = recipes::DEFAULT_LOCAL_PORT;

const CPU_CHOICES: &[i64] = &[500, 1000, 2000, 4000];
const MEM_CHOICES: &[(&str, i64)] = &[
    ("256m", 256 << 20),
    ("512m", 512 << 20),
    ("1g", 1 << 30),
    ("2g", 2 << 30),
    ("4g", 4 << 30),
    ("8g", 8 << 30),
];

#[derive(Debug, Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    all: Option<String>,
    #[serde(default)]
    since: Option<String>,
}

impl ListQuery {
    fn all(&self) -> bool {
        self.all.as_deref().is_some_and(|v| v == "1" || v == "true")
    }
}

/// The create form's fields, and what it shows (again, after an error).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct CreateForm {
    name: String,
    image: String,
    /// Folders to mount (one `mount` field each).
    #[serde(rename = "mount")]
    mounts: Vec<String>,
    cpu: String,
    mem: String,
    /// Environment variables, one `NAME=VALUE` per line.
    env: String,
    #[serde(skip)]
    error: Option<(String, Option<String>)>,
}

fn cpu_label(milli: i64) -> String {
    let c = milli as f64 / 1000.0;
    if milli % 1000 == 0 {
        format!("{c:.0}")
    } else {
        format!("{c}")
    }
}

fn mem_label(bytes: i64) -> String {
    layout::size(u64::try_from(bytes).unwrap_or(0))
}

fn status_badge(s: &SessionRow) -> Markup {
    let class = match s.status {
        Status::Running => "badge badge-ok",
        Status::Pending | Status::Preparing => "badge badge-busy",
        Status::Terminating => "badge badge-warn",
        Status::Terminated => "badge badge-muted",
        Status::Error => "badge badge-error",
    };
    html! {
        span class=(class) data-status=(s.status.as_str()) { (s.status.as_str()) }
    }
}

/// The visible sessions of a user: live and failed ones, or all.
async fn visible(
    state: &AppState,
    user: &WebUser,
    all: bool,
) -> Result<Vec<SessionRow>, PageError> {
    Ok(state
        .store()
        .sessions(Some(user.id()), Lookup::EvenEnded)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .filter(|s| all || s.status != Status::Terminated)
        .collect())
}

fn rows_markup(user: &WebUser, list: &[SessionRow]) -> Markup {
    html! {
        @if list.is_empty() {
            tr.empty {
                td colspan="6" {
                    div.empty-state {
                        (svg(icon::TERMINAL))
                        p { strong { "No sessions yet." } " Start one with the form on this page; it runs in a container you can reach over SSH and SFTP." }
                    }
                }
            }
        }
        @for s in list {
            tr data-session=(s.name) data-status=(s.status.as_str()) {
                td data-label="Name" {
                    div.cell-title { (s.name) }
                    div.cell-sub.mono title=(s.id) { (s.id.get(..8).unwrap_or(&s.id)) }
                }
                td data-label="Image" { span.mono.small { (s.image) } div.cell-sub { (cpu_label(s.cpu_milli)) " CPU · " (mem_label(s.mem_bytes)) } }
                td data-label="Status" {
                    (status_badge(s))
                    @if let Some(info) = &s.status_info { div.cell-sub.status-info { (info) } }
                }
                td data-label="Created" { (layout::time(s.created_at)) }
                td data-label="Folders" {
                    @if s.mounts.is_empty() { span.muted { "—" } }
                    @for m in &s.mounts { span.chip { (svg(icon::FOLDER)) (m.name) } " " }
                }
                td.actions-cell {
                    @if s.status.is_live() {
                        a.btn.btn-primary.btn-sm href={"/ui/sessions/" (s.id) "/ssh"} data-dialog
                            aria-label={"SSH / SFTP connection for " (s.name)} {
                            (svg(icon::TERMINAL)) span { "SSH / SFTP" }
                        }
                        " "
                        @if s.status == Status::Running {
                            a.btn.btn-ghost.btn-sm.files href={"/ui/sessions/" (s.id) "/files"}
                                aria-label={"Files of " (s.name)} { (svg(icon::FOLDER)) span { "Files" } }
                            " "
                            a.btn.btn-secondary.btn-sm href={"/ui/sessions/" (s.id) "/terminal"} target="_blank" rel="noopener"
                                aria-label={"Terminal in " (s.name) " (opens a new tab)"} {
                                (svg(icon::CONSOLE)) span { "Terminal" }
                            }
                            " "
                        }
                        @if s.status != Status::Terminating {
                            (danger_button(user, &format!("/ui/sessions/{}/terminate", s.id), &[],
                                &format!("Terminate session {}? Its container and everything outside mounted folders is deleted.", s.name),
                                "Terminate", &format!("Terminate {}", s.name)))
                        }
                    }
                }
            }
        }
    }
}

fn version_of(m: &Markup) -> String {
    hex::encode(&Sha256::digest(m.0.as_bytes())[..8])
}

/// Images on the online nodes, the default first.
async fn images(state: &AppState) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    if let Ok(agents) = crate::agents::online(state).await {
        for a in agents {
            match state.agents().images(&a).await {
                Ok(list) => names.extend(list.into_iter().map(|i| i.name)),
                Err(e) => tracing::warn!(agent = %a.id, error = %e, "cannot list images"),
            }
        }
    }
    let default = state.config().default_image.clone();
    names.remove(&default);
    std::iter::once(default).chain(names).collect()
}

async fn render_page(
    state: &AppState,
    user: &WebUser,
    q: &ListQuery,
    form: CreateForm,
    status: StatusCode,
) -> PageResult {
    let all = q.all();
    let list = visible(state, user, all).await?;
    let rows = rows_markup(user, &list);
    let version = version_of(&rows);
    let images = images(state).await;
    let folders = state
        .store()
        .folders(Some(user.id()))
        .await
        .map_err(ApiError::from)?;
    let cfg = state.config();
    let cpu = if form.cpu.is_empty() {
        cpu_label(cfg.default_cpu_milli)
    } else {
        form.cpu.clone()
    };
    let mut cpu_choices: Vec<String> = CPU_CHOICES.iter().map(|c| cpu_label(*c)).collect();
    if !cpu_choices.contains(&cpu) {
        cpu_choices.push(cpu.clone());
    }
    let default_mem = MEM_CHOICES
        .iter()
        .find(|(_, b)| *b == cfg.default_mem_bytes)
        .map_or("1g", |(l, _)| l);
    let mem = if form.mem.is_empty() {
        default_mem.to_owned()
    } else {
        form.mem.clone()
    };
    let image = if form.image.is_empty() {
        cfg.default_image.clone()
    } else {
        form.image.clone()
    };
    let live_url = if all {
        "/ui/sessions/rows?all=1"
    } else {
        "/ui/sessions/rows"
    };
    let content = html! {
        (layout::heading("Sessions", Some(html! {
            "Your compute sessions. Open " strong { "SSH / SFTP" } " on a session to connect with "
            code { "ssh" } ", " code { "scp" } ", FileZilla, WinSCP, PuTTY or VS Code."
        })))
        div.grid-main {
            section.card.table-card aria-labelledby="list-title" {
                div.card-head {
                    h2 #list-title { "Your sessions" }
                    div.card-tools {
                        span.live-dot #live-state aria-live="polite" hidden { "Live" }
                        @if all {
                            a.btn.btn-ghost.btn-sm href="/ui/sessions" { "Hide terminated" }
                        } @else {
                            a.btn.btn-ghost.btn-sm href="/ui/sessions?all=1" { "Show terminated" }
                        }
                    }
                }
                div.table-wrap {
                    table.table.sessions-table {
                        thead { tr {
                            th scope="col" { "Name" } th scope="col" { "Image" } th scope="col" { "Status" }
                            th scope="col" { "Created" } th scope="col" { "Folders" }
                            th scope="col" { span.visually-hidden { "Actions" } }
                        } }
                        tbody #session-rows data-live=(live_url) data-version=(version) { (rows) }
                    }
                }
            }
            section.card #new-session aria-labelledby="new-title" {
                h2 #new-title { (svg(icon::PLUS)) "Start a session" }
                (form_error(form.error.as_ref()))
                form method="post" action="/ui/sessions" {
                    (csrf(user))
                    div.field {
                        label for="s-name" { "Name" span.optional { "optional" } }
                        input #s-name type="text" name="name" value=(form.name) placeholder="e.g. training-run"
                            autocomplete="off" spellcheck="false" maxlength="64" aria-describedby="s-name-help";
                        p.help #s-name-help { "4–64 letters, digits, " code { "." } " " code { "_" } " " code { "-" } ". Empty: a name is generated." }
                    }
                    div.field {
                        label for="s-image" { "Image" }
                        select #s-image name="image" {
                            @for i in &images { option value=(i) selected[*i == image] { (i) } }
                            @if !images.contains(&image) { option value=(image) selected { (image) } }
                        }
                    }
                    div.field-row {
                        div.field {
                            label for="s-cpu" { "CPU cores" }
                            select #s-cpu name="cpu" {
                                @for c in &cpu_choices { option value=(c) selected[*c == cpu] { (c) } }
                            }
                        }
                        div.field {
                            label for="s-mem" { "Memory" }
                            select #s-mem name="mem" {
                                @for (l, b) in MEM_CHOICES { option value=(l) selected[*l == mem] { (mem_label(*b)) } }
                                @if !MEM_CHOICES.iter().any(|(l, _)| *l == mem) { option value=(mem) selected { (mem) } }
                            }
                        }
                    }
                    fieldset.field {
                        legend { "Folders to mount" }
                        @let regular: Vec<_> = folders.iter().filter(|f| !f.name.starts_with('.')).collect();
                        @let dot: Vec<_> = folders.iter().filter(|f| f.name.starts_with('.')).collect();
                        @if regular.is_empty() {
                            p.help { "You have no folders yet. " a href="/ui/folders" { "Create one" } " to keep data across sessions." }
                        }
                        div.checks {
                            @for f in &regular {
                                label.check {
                                    input type="checkbox" name="mount" value=(f.name) checked[form.mounts.contains(&f.name)];
                                    span { (f.name) }
                                }
                            }
                        }
                        @if !dot.is_empty() {
                            p.help {
                                "Always mounted: "
                                @for (i, f) in dot.iter().enumerate() { @if i > 0 { ", " } code { (f.name) } }
                            }
                        }
                        p.help { "Mounted at " code { "/home/work/NAME" } "." }
                    }
                    div.field {
                        label for="s-env" { "Environment variables" span.optional { "optional" } }
                        textarea #s-env name="env" rows="2" spellcheck="false" aria-describedby="s-env-help"
                            placeholder="HF_HOME=/home/work/data/hf" { (form.env) }
                        p.help #s-env-help { "One " code { "NAME=VALUE" } " per line; every shell and SSH command in the session sees them." }
                    }
                    button.btn.btn-primary.btn-block type="submit" { "Start session" }
                }
            }
        }
    };
    Ok(layout::page_status(
        user,
        Nav::Sessions,
        "Sessions",
        content,
        status,
    ))
}

/// `GET /ui/sessions`.
pub(crate) async fn page(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<ListQuery>,
) -> PageResult {
    render_page(&state, &user, &q, CreateForm::default(), StatusCode::OK).await
}

/// `GET /ui/sessions/rows?since=VERSION`: the table body once it differs
/// from VERSION (long poll, up to 25 s; 204 when nothing changed).
pub(crate) async fn rows(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let mut events = state.session_events();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    loop {
        let list = visible(&state, &user, q.all()).await?;
        let m = rows_markup(&user, &list);
        let version = version_of(&m);
        if q.since.as_deref() != Some(version.as_str()) {
            let mut resp = m.into_response();
            if let Ok(v) = HeaderValue::from_str(&version) {
                resp.headers_mut().insert("x-rows-version", v);
            }
            return Ok(resp);
        }
        tokio::select! {
            _ = state.shutdown_token().cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            r = events.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    break;
                }
                // Let a burst of changes settle into one answer.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /ui/sessions`.
pub(crate) async fn create(
    State(state): State<AppState>,
    PostForm { user, form }: PostForm<CreateForm>,
) -> PageResult {
    let mut shown = CreateForm {
        name: form.name.trim().to_owned(),
        image: form.image.trim().to_owned(),
        mounts: form.mounts.clone(),
        cpu: form.cpu.trim().to_owned(),
        mem: form.mem.trim().to_owned(),
        env: form.env.trim().to_owned(),
        error: None,
    };
    let result: Result<SessionRow, ApiError> = async {
        let cpu_milli = if shown.cpu.is_empty() {
            None
        } else {
            Some(validate::parse_cpu(&shown.cpu)?)
        };
        let mem_bytes = if shown.mem.is_empty() {
            None
        } else {
            Some(i64::try_from(validate::parse_size(&shown.mem)?).unwrap_or(i64::MAX))
        };
        let params = CreateParams {
            name: Some(shown.name.clone()).filter(|n| !n.is_empty()),
            image: Some(shown.image.clone()).filter(|i| !i.is_empty()),
            mounts: shown.mounts.clone(),
            environ: shown
                .env
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(validate::parse_env_assignment)
                .collect::<Result<_, _>>()?,
            cpu_milli,
            mem_bytes,
            gpus: 0,
            enqueue_only: true,
            max_wait: None,
            reuse_if_exists: false,
            node: None,
        };
        let s = match sessions::create(&state, &user.caller, params).await? {
            sessions::Created::New(s) | sessions::Created::Existing(s) => s,
        };
        Ok(s)
    }
    .await;
    match result {
        Ok(s) => Ok(redirect_with(
            "/ui/sessions",
            &[Flash::ok(format!(
                "Session {} is starting; its status updates on this page by itself.",
                s.name
            ))],
        )),
        Err(e) => {
            let status = e.status;
            shown.error = Some(explain(&e));
            render_page(&state, &user, &ListQuery::default(), shown, status).await
        }
    }
}

/// `POST /ui/sessions/{id}/terminate` (asks first without `confirmed=1`).
pub(crate) async fn terminate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PostForm { user, form }: PostForm<Confirmation>,
) -> PageResult {
    let s = sessions::resolve(&state, &user.caller, &id, Lookup::Live).await?;
    if !form.confirmed.given() {
        return Ok(layout::confirm_page(
            &user,
            Nav::Sessions,
            layout::Confirm {
                title: "Terminate session?",
                question: &format!(
                    "Terminate session {}? Its container and everything outside mounted folders is deleted.",
                    s.name
                ),
                action: &format!("/ui/sessions/{}/terminate", s.id),
                fields: &[],
                button: "Terminate",
                back: "/ui/sessions",
            },
        ));
    }
    let status = sessions::destroy(&state, &s, sessions::Termination::Orderly).await?;
    crate::audit::session_terminated(&state, &s, &user.caller.user, status.as_str()).await;
    let msg = if status == Status::Terminated {
        Flash::ok(format!("Session {} was terminated.", s.name))
    } else {
        Flash::warn(format!(
            "Session {} is terminating; its node will remove it when it is reachable again.",
            s.name
        ))
    };
    Ok(redirect_with("/ui/sessions", &[msg]))
}

/// The local port the dialog's commands use.
#[derive(Debug, Clone, Copy)]
struct LocalPort {
    port: u16,
    /// The user's preferred SSH port (else the default).
    preferred: bool,
}

fn local_port(settings: &airlock_proto::api::UserSettings) -> LocalPort {
    match settings.ssh_port {
        Some(port) => LocalPort {
            port,
            preferred: true,
        },
        None => LocalPort {
            port: DEFAULT_LOCAL_PORT,
            preferred: false,
        },
    }
}

/// Where the connection information is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// In the list page's dialog (a script asked for the fragment).
    Dialog,
    /// On a page of its own.
    Page,
}

/// The SSH/SFTP connection information for a session.
fn dialog_body(s: &SessionRow, local: LocalPort, shown: Shown) -> Markup {
    let LocalPort { port, preferred } = local;
    let name = &s.name;
    let alias = recipes::alias(name);
    let fingerprint = s
        .host_key
        .as_deref()
        .and_then(airlock_proto::sshkey::fingerprint);
    let algorithm = s
        .host_key
        .as_deref()
        .and_then(|k| k.split_whitespace().next())
        .unwrap_or("");
    let LocalCommands {
        proxy,
        ssh,
        scp,
        sftp,
    } = recipes::local_commands(name, port);
    let known = s
        .host_key
        .as_deref()
        .map(|k| recipes::known_hosts_line(name, k));
    // Exactly what `airlock config-ssh` writes (its paths shown with `~`).
    let config = HostBlock {
        airlock: "airlock",
        dir: "~/.ssh/airlock",
        own_keys: &[],
        forward_agent: false,
    }
    .render();
    let base = format!("/ui/sessions/{}", s.id);
    let running = s.status == Status::Running;
    html! {
        div.dialog-head {
            @if shown == Shown::Dialog {
                h2 #modal-title { (svg(icon::TERMINAL)) "SSH / SFTP · " (name) }
                button.btn.btn-ghost.btn-icon type="button" data-close aria-label="Close" { (svg(icon::CLOSE)) }
            } @else {
                h1 #modal-title { (svg(icon::TERMINAL)) "SSH / SFTP · " (name) }
            }
        }
        @if !running {
            div.flash.flash-warn role="status" {
                "Session " (name) " is " (s.status.as_str()) "."
                @if matches!(s.status, Status::Pending | Status::Preparing) {
                    " The key and host key are available as soon as it runs; reopen this dialog in a moment."
                } @else {
                    " Start a new session to connect."
                }
            }
        }
        div.conn-summary {
            dl.facts {
                div { dt { "Host" } dd.mono { (recipes::LOCAL_HOST) } }
                div { dt { "Port" } dd.mono #dialog-port { (port) } }
                div { dt { "User" } dd.mono { (CONTAINER_USER) } }
            }
            p.small.muted {
                @if preferred {
                    "Port " (port) " is your preferred SSH port. "
                } @else {
                    "Port " (port) " is the default; set your own preferred SSH port in "
                }
                a href="/ui/settings#port" { "Settings" } "."
            }
            div.fingerprint {
                span.label { (svg(icon::SHIELD)) "Host key fingerprint" }
                @if let Some(fp) = &fingerprint {
                    code #host-fingerprint { (fp) }
                    span.muted.small { " " (algorithm) }
                } @else {
                    span.muted { "not known yet" }
                }
            }
            div.downloads {
                @if running {
                    a.btn.btn-primary href={(base) "/id_container"} download="id_container" #dl-key {
                        (svg(icon::DOWNLOAD)) span { "id_container" } small { "OpenSSH key" }
                    }
                    a.btn.btn-secondary href={(base) "/ppk"} download={(name) ".ppk"} #dl-ppk {
                        (svg(icon::DOWNLOAD)) span { (name) ".ppk" } small { "PuTTY · FileZilla · WinSCP" }
                    }
                    a.btn.btn-secondary href={(base) "/known_hosts"} download="known_hosts" #dl-known {
                        (svg(icon::DOWNLOAD)) span { "known_hosts" } small { "host key pin" }
                    }
                }
            }
            p.small.muted {
                "The key is made for this session only; a new session has a new key. Keep it private."
            }
        }
        div.note {
            (svg(icon::INFO))
            p {
                "A browser cannot open ports on your computer, so the "
                strong { "airlock" } " CLI runs the local proxy. Keep "
                code { (proxy) } " running in a terminal while you connect."
            }
        }
        div.tabs data-tabs {
            section.tab #tab-unix aria-labelledby="tab-unix-h" {
                h3 #tab-unix-h data-short="Linux / macOS" { "Linux / macOS" }
                ol.steps {
                    li {
                        p { "Quickest: one command starts the proxy, fetches the key, pins the host key and logs you in:" }
                        (code(&format!("airlock ssh {name}"), "quick ssh command"))
                    }
                    li {
                        p { "Or do it by hand. Start the local proxy and leave it running:" }
                        (code(&proxy, "proxy command"))
                    }
                    li {
                        p {
                            "Save " strong { "id_container" } " and " strong { "known_hosts" }
                            " (buttons above) in one directory and make the key private:"
                        }
                        (code("chmod 600 id_container", "chmod command"))
                        @if let Some(k) = &known {
                            p.small.muted { "known_hosts holds this one line (strict host-key checking stays on):" }
                            (code(k, "known_hosts line"))
                        }
                    }
                    li {
                        p { "Connect:" }
                        (code(&ssh, "ssh command"))
                    }
                    li {
                        p { "Copy files with " code { "scp" } " (or " code { "sftp" } "):" }
                        (code(&scp, "scp command"))
                        (code(&sftp, "sftp command"))
                    }
                }
            }
            section.tab #tab-windows aria-labelledby="tab-windows-h" {
                h3 #tab-windows-h data-short="Windows" { "Windows · FileZilla · WinSCP · PuTTY" }
                ol.steps {
                    li {
                        p { "Start the local proxy with the airlock CLI and leave it running:" }
                        (code(&proxy, "proxy command"))
                    }
                    li {
                        p { "Download " strong { (name) ".ppk" } " (button above): the session key as PuTTY key file, no PuTTYgen conversion needed." }
                    }
                    li {
                        p { "FileZilla: " em { "File › Site Manager › New site" } ", then enter:" }
                        table.kv {
                            tbody {
                                tr { th scope="row" { "Protocol" } td { "SFTP – SSH File Transfer Protocol" } }
                                tr { th scope="row" { "Host" } td.mono { (recipes::LOCAL_HOST) } }
                                tr { th scope="row" { "Port" } td.mono { (port) } }
                                tr { th scope="row" { "Logon Type" } td { "Key file" } }
                                tr { th scope="row" { "User" } td.mono { (CONTAINER_USER) } }
                                tr { th scope="row" { "Key file" } td.mono { (name) ".ppk" } }
                            }
                        }
                        p.small.muted {
                            "WinSCP takes the same values (Advanced › SSH › Authentication › Private key file). "
                            "PuTTY: host " (recipes::LOCAL_HOST) ", port " (port) ", Connection › Data › Auto-login username " code { (CONTAINER_USER) }
                            ", Connection › SSH › Auth › Credentials › " (name) ".ppk."
                        }
                    }
                    li {
                        p {
                            "On the first connection the client shows the server's host key fingerprint. "
                            "Accept it only if it is exactly:"
                        }
                        @if let Some(fp) = &fingerprint { (code(fp, "host key fingerprint")) }
                    }
                }
            }
            section.tab #tab-vscode aria-labelledby="tab-vscode-h" {
                h3 #tab-vscode-h data-short="VS Code" { "VS Code · OpenSSH config" }
                ol.steps {
                    li {
                        p { "Let the CLI write the SSH configuration once; it covers this session and every session you create later:" }
                        (code("airlock config-ssh", "config-ssh command"))
                        p.small.muted {
                            "It writes this block to " code { "~/.ssh/airlock/config" }
                            " (included from " code { "~/.ssh/config" } "; the real file names the full path of "
                            code { "airlock" } "). On each connection the proxy pins the session's host key in "
                            code { "~/.ssh/airlock/known_hosts" } " the first time, refuses a key that changed, "
                            "and saves the session key as " code { "~/.ssh/airlock/" (alias) ".key" } ":"
                        }
                        (code(&config, "ssh config block"))
                        p.small.muted #forward-agent-note {
                            "To use your laptop's SSH keys inside the session (for example "
                            code { "git push" } " from VS Code), generate the block with "
                            code { "ForwardAgent yes" } " instead:"
                        }
                        (code("airlock config-ssh --forward-agent", "config-ssh with agent forwarding"))
                        p.small.muted {
                            "Only do this for sessions you trust: while you are connected, anything running in the session "
                            "can use your loaded keys (not copy them) to log in wherever they work."
                        }
                    }
                    li {
                        p {
                            "In VS Code with the Remote - SSH extension: " em { "Command Palette › Remote-SSH: Connect to Host…" }
                            " › " strong.mono { (alias) } ". In a terminal:"
                        }
                        (code(&format!("ssh {alias}"), "ssh alias command"))
                    }
                }
            }
        }
    }
}

/// `GET /ui/sessions/{id}/ssh`: a page, or (for the script) the dialog's
/// content only.
pub(crate) async fn ssh_dialog(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let s = sessions::resolve(&state, &user.caller, &id, Lookup::EvenEnded).await?;
    let settings = state
        .store()
        .settings(user.id())
        .await
        .map_err(ApiError::from)?;
    let local = local_port(&settings);
    if headers.get("x-airlock-fragment").is_some() {
        return Ok(dialog_body(&s, local, Shown::Dialog).into_response());
    }
    let content = html! {
        p { a.back href="/ui/sessions" { (svg(icon::BACK)) "All sessions" } }
        section.card.dialog-page { (dialog_body(&s, local, Shown::Page)) }
    };
    Ok(layout::page(
        &user,
        Nav::Sessions,
        &format!("SSH / SFTP · {}", s.name),
        content,
    ))
}

/// Reads `~/id_container` of a running session (audited as a download).
async fn fetch_key(
    state: &AppState,
    user: &WebUser,
    id: &str,
) -> PageResult<(SessionRow, Vec<u8>)> {
    let s = sessions::resolve(state, &user.caller, id, Lookup::Live).await?;
    sessions::require_running(&s)?;
    let key = sessions::read_small_file(state, &s, "id_container").await?;
    tracing::info!(session = %s.id, user = %user.email(), "session key downloaded through the web UI");
    crate::audit::file_event(
        state,
        (user.id(), Some(&user.caller.user)),
        crate::audit::FileScope::Session(&s),
        "session.download",
        &format!("{}/id_container", airlock_proto::CONTAINER_HOME),
        Some(key.len() as u64),
    )
    .await;
    Ok((s, key))
}

fn download(bytes: Vec<u8>, name: &str, content_type: &'static str) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    attachment(&mut resp, name);
    resp
}

/// `GET /ui/sessions/{id}/id_container`: the session key, byte for byte.
pub(crate) async fn id_container(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> PageResult {
    let (_, key) = fetch_key(&state, &user, &id).await?;
    Ok(download(key, "id_container", "application/octet-stream"))
}

/// `GET /ui/sessions/{id}/ppk`: the session key as a PuTTY key file.
pub(crate) async fn ppk(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> PageResult {
    let (s, key) = fetch_key(&state, &user, &id).await?;
    let text = String::from_utf8(key)
        .map_err(|_| ApiError::internal("id_container is not an OpenSSH key"))?;
    let ppk = airlock_proto::ppk::openssh_to_ppk(&text, Some(&recipes::alias(&s.name)))
        .map_err(ApiError::internal)?;
    Ok(download(
        ppk.into_bytes(),
        &format!("{}.ppk", s.name),
        "application/octet-stream",
    ))
}

/// `GET /ui/sessions/{id}/known_hosts`: the pinned host key line.
pub(crate) async fn known_hosts(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> PageResult {
    let s = sessions::resolve(&state, &user.caller, &id, Lookup::Live).await?;
    let key = s.host_key.as_deref().ok_or_else(|| {
        PageError::new(
            StatusCode::CONFLICT,
            "Host key not known yet",
            format!("Session {} has not reported its host key yet.", s.name),
        )
        .hint("Wait until the session is RUNNING, then try again.")
    })?;
    Ok(download(
        format!("{}\n", recipes::known_hosts_line(&s.name, key)).into_bytes(),
        "known_hosts",
        "text/plain; charset=utf-8",
    ))
}
