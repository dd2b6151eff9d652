//! The folders page: create/delete folders (including `.ssh`), browse,
//! upload (streamed to disk, atomic) and download (streamed, resumable)
//! files, make directories, and build `.ssh/authorized_keys` from pasted
//! public keys.

use airlock_beneath::Kind;
use airlock_proto::api::FolderEntry;
use airlock_proto::sshkey::{ParsedKey, parse_public_key};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use http::{HeaderMap, StatusCode};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, csrf, danger_button, form_error, icon, svg};
use super::upload::{UploadForm, failed, uploaded};
use super::{Confirmation, Confirmed};
use super::{
    Flash, PageError, PageResult, PostForm, WebUser, attachment, enc, explain, redirect_with,
};
use crate::AppState;
use crate::error::ApiError;
use crate::folders;
use crate::store::Folder;

#[derive(Debug, Deserialize, Default)]
pub(crate) struct PathQuery {
    #[serde(default)]
    path: Option<String>,
}

impl PathQuery {
    fn path(&self) -> String {
        clean(self.path.as_deref().unwrap_or(""))
    }

    /// The path as given ("" when absent).
    pub(super) fn raw(&self) -> &str {
        self.path.as_deref().unwrap_or("")
    }
}

/// A folder-relative path without leading/trailing slashes or empty parts.
fn clean(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

pub(super) fn parent(p: &str) -> String {
    p.rsplit_once('/')
        .map(|(a, _)| a.to_owned())
        .unwrap_or_default()
}

fn folder_url(f: &Folder, path: &str) -> String {
    if path.is_empty() {
        format!("/ui/folders/{}", f.hex_id())
    } else {
        format!("/ui/folders/{}?path={}", f.hex_id(), enc(path))
    }
}

// ---------------------------------------------------------------- list

#[derive(Debug, Default)]
struct ListForm {
    name: String,
    error: Option<(String, Option<String>)>,
}

async fn render_list(
    state: &AppState,
    user: &WebUser,
    form: ListForm,
    status: StatusCode,
) -> PageResult {
    let list = state
        .store()
        .folders(Some(user.id()))
        .await
        .map_err(ApiError::from)?;
    let mut infos = Vec::new();
    for f in &list {
        infos.push((f, folders::info(state, f).await?));
    }
    let has_ssh = list.iter().any(|f| f.name == ".ssh");
    let content = html! {
        (layout::heading("Folders", Some(html! {
            "Folders keep your data across sessions; each is mounted at " code { "/home/work/NAME" } ". "
            "Folders whose name starts with a dot (like " code { ".ssh" } ") are mounted into every new session."
        })))
        div.grid-main {
            section.card.table-card aria-labelledby="folders-title" {
                div.card-head { h2 #folders-title { "Your folders" } }
                div.table-wrap {
                    table.table {
                        thead { tr {
                            th scope="col" { "Name" } th scope="col" { "Mounted in" }
                            th scope="col" { "Created" } th scope="col" { span.visually-hidden { "Actions" } }
                        } }
                        tbody {
                            @if infos.is_empty() {
                                tr.empty { td colspan="4" { div.empty-state {
                                    (svg(icon::FOLDER))
                                    p { strong { "No folders yet." } " Create one to keep files between sessions." }
                                } } }
                            }
                            @for (f, info) in &infos {
                                tr data-folder=(f.name) {
                                    td data-label="Name" {
                                        a.cell-title.folder-link href=(folder_url(f, "")) { (svg(icon::FOLDER)) (f.name) }
                                        @if info.automount { " " span.badge.badge-muted title="Mounted into every new session" { "auto-mount" } }
                                    }
                                    td data-label="Mounted in" {
                                        @if info.mounted_in.is_empty() { span.muted { "—" } }
                                        @for s in &info.mounted_in { span.chip { (s) } " " }
                                    }
                                    td data-label="Created" { (layout::time(f.created_at)) }
                                    td.actions-cell {
                                        @if info.mounted_in.is_empty() {
                                            (danger_button(user, &format!("/ui/folders/{}/delete", f.hex_id()), &[],
                                                &format!("Delete folder {} and every file in it? This cannot be undone.", f.name),
                                                "Delete", &format!("Delete folder {}", f.name)))
                                        } @else {
                                            // Said before the confirm, not after: the
                                            // gateway refuses to delete a mounted folder.
                                            @let why = format!("Folder {} is mounted in {}; terminate {} first to delete it.",
                                                f.name, info.mounted_in.join(", "),
                                                if info.mounted_in.len() == 1 { "that session" } else { "those sessions" });
                                            span.disabled-action {
                                                button.btn.btn-danger-ghost.btn-sm type="button" disabled
                                                    aria-describedby={"why-" (f.hex_id())} title=(why) {
                                                    (svg(icon::TRASH)) span { "Delete" }
                                                }
                                                span.small.muted.why #{"why-" (f.hex_id())} {
                                                    "In use" span.visually-hidden { ": " (why) }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            div.stack {
                section.card aria-labelledby="new-folder-title" {
                    h2 #new-folder-title { (svg(icon::PLUS)) "New folder" }
                    (form_error(form.error.as_ref()))
                    form method="post" action="/ui/folders" {
                        (csrf(user))
                        div.field {
                            label for="f-name" { "Folder name" }
                            input #f-name type="text" name="name" value=(form.name) required maxlength="64"
                                autocomplete="off" spellcheck="false" placeholder="e.g. data" aria-describedby="f-name-help";
                            p.help #f-name-help { "Letters, digits, " code { "." } " " code { "_" } " " code { "-" } "." }
                        }
                        button.btn.btn-primary.btn-block type="submit" { "Create folder" }
                    }
                }
                @if !has_ssh {
                    section.card.tip aria-labelledby="ssh-tip-title" {
                        h2 #ssh-tip-title { (svg(icon::KEY)) "Use your own SSH key" }
                        p {
                            "Create a " code { ".ssh" } " folder and paste your public key into its "
                            code { "authorized_keys" } ": every new session then accepts your key, no "
                            code { "id_container" } " download needed."
                        }
                        form method="post" action="/ui/folders" {
                            (csrf(user))
                            input type="hidden" name="name" value=".ssh";
                            button.btn.btn-secondary.btn-block type="submit" { "Create .ssh folder" }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page_status(
        user,
        Nav::Folders,
        "Folders",
        content,
        status,
    ))
}

/// `GET /ui/folders`.
pub(crate) async fn page(State(state): State<AppState>, user: WebUser) -> PageResult {
    render_list(&state, &user, ListForm::default(), StatusCode::OK).await
}

/// The fields of `create`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct NameForm {
    name: String,
}

/// `POST /ui/folders`.
pub(crate) async fn create(
    State(state): State<AppState>,
    PostForm { user, form }: PostForm<NameForm>,
) -> PageResult {
    let name = form.name.trim().to_owned();
    match folders::create(&state, &user.caller, &name, None).await {
        Ok(f) => Ok(redirect_with(
            &folder_url(&f, ""),
            &[Flash::ok(format!("Folder {} created.", f.name))],
        )),
        Err(e) => {
            let status = e.status;
            let mut error = explain(&e);
            if status == StatusCode::CONFLICT {
                error = (
                    format!("You already have a folder named {name}."),
                    Some("Pick another name.".to_owned()),
                );
            }
            render_list(
                &state,
                &user,
                ListForm {
                    name,
                    error: Some(error),
                },
                status,
            )
            .await
        }
    }
}

/// `POST /ui/folders/{id}/delete`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PostForm { user, form }: PostForm<Confirmation>,
) -> PageResult {
    let f = folders::resolve(&state, &user.caller, &id).await?;
    if !form.confirmed.given() {
        return Ok(layout::confirm_page(
            &user,
            Nav::Folders,
            layout::Confirm {
                title: "Delete folder?",
                question: &format!(
                    "Delete folder {} and every file in it? This cannot be undone.",
                    f.name
                ),
                action: &format!("/ui/folders/{}/delete", f.hex_id()),
                fields: &[],
                button: "Delete folder",
                back: "/ui/folders",
            },
        ));
    }
    match folders::delete(&state, &user.caller, &f).await {
        Ok(()) => Ok(redirect_with(
            "/ui/folders",
            &[Flash::ok(format!("Folder {} deleted.", f.name))],
        )),
        Err(e) => {
            let (m, h) = explain(&e);
            let text = match h {
                Some(h) => format!("{m} {h}"),
                None => m,
            };
            Ok(redirect_with("/ui/folders", &[Flash::error(text)]))
        }
    }
}

// ---------------------------------------------------------------- browse

/// Form state of the browse page after an error.
#[derive(Debug, Default)]
struct BrowseForm {
    keys_text: String,
    keys_error: Option<(String, Option<String>)>,
    mkdir_error: Option<(String, Option<String>)>,
}

/// The keys of an authorized_keys text (comments and blank lines skipped);
/// lines that do not parse are returned as errors.
fn parse_keys(text: &str) -> Vec<Result<ParsedKey, (usize, String)>> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            // authorized_keys lines may start with options; the pasted keys
            // we accept may not, so options are shown but not parsed here.
            parse_public_key(l).map_err(|e| (i + 1, format!("{e}. {}", super::sentence(e.hint()))))
        })
        .collect()
}

fn entry_row(user: &WebUser, f: &Folder, dir: &str, e: &FolderEntry) -> Markup {
    let path = join(dir, &e.name);
    let kind = match e.kind.as_str() {
        "dir" => layout::RowKind::Directory,
        "file" => layout::RowKind::File,
        _ => layout::RowKind::Other,
    };
    layout::file_row(
        user,
        &layout::FileRow {
            name: &e.name,
            kind,
            kind_name: &e.kind,
            size: e.size,
            modified: html! { (layout::time_str(&e.modified)) },
            detail: ("Mode", html! { span.mono { (e.mode) } }),
            open: folder_url(f, &path),
            // Only regular files are read; links and special files never.
            download: (kind == layout::RowKind::File)
                .then(|| format!("/ui/folders/{}/download?path={}", f.hex_id(), enc(&path))),
            rename: None,
            delete: format!("/ui/folders/{}/delete-file", f.hex_id()),
            path: &path,
        },
    )
}

async fn render_browse(
    state: &AppState,
    user: &WebUser,
    f: &Folder,
    path: &str,
    form: BrowseForm,
    status: StatusCode,
) -> PageResult {
    let entries = folders::list_files(state, f, path).await?;
    let is_ssh = f.name == ".ssh" && path.is_empty();
    let current_keys = if is_ssh {
        folders::read_authorized_keys(state, f).await
    } else {
        None
    };
    let upload_action = format!("/ui/folders/{}/upload?path={}", f.hex_id(), enc(path));
    let shown_path = if path.is_empty() {
        crate::session_files::home_path(&f.name)
    } else {
        crate::session_files::home_path(&format!("{}/{path}", f.name))
    };
    let content = html! {
        (layout::breadcrumbs(("Folders", "/ui/folders"), &f.name, path, |p| folder_url(f, p)))
        div.page-head {
            h1 { (svg(icon::FOLDER)) (f.name) @if !path.is_empty() { " / " (path) } }
            p.lead { "In sessions: " code { (shown_path) } }
        }
        div.grid-main {
            (layout::files_card(
                html! { @if !path.is_empty() {
                    a.btn.btn-ghost.btn-sm href=(folder_url(f, &parent(path))) { (svg(icon::BACK)) "Up" }
                } },
                "Mode",
                &entries.iter().map(|e| entry_row(user, f, path, e)).collect::<Vec<_>>(),
                html! { strong { "This folder is empty." } " Upload files with the form on this page." },
            ))
            div.stack {
                @if is_ssh {
                    section.card #authorized-keys aria-labelledby="ak-title" {
                        h2 #ak-title { (svg(icon::KEY)) "authorized_keys" }
                        p.small {
                            "Public keys here may log in to every session you start from now on, instead of "
                            code { "id_container" } "."
                        }
                        @if let Some(text) = &current_keys {
                            ul.keylist {
                                @for k in parse_keys(text) {
                                    @match k {
                                        Ok(k) => li {
                                            span.mono.small { (k.fingerprint) }
                                            span.muted.small { " " (k.algorithm) @if !k.comment.is_empty() { " · " (k.comment) } }
                                        },
                                        Err((line, _)) => li.muted.small { "line " (line) ": not a plain public key" },
                                    }
                                }
                            }
                        }
                        (form_error(form.keys_error.as_ref()))
                        form method="post" action={"/ui/folders/" (f.hex_id()) "/authorized-keys"} {
                            (csrf(user))
                            div.field {
                                label for="ak-key" { "Paste a public key" }
                                textarea #ak-key name="keys" rows="4" required spellcheck="false"
                                    placeholder="ssh-ed25519 AAAAC3Nza… you@laptop" aria-describedby="ak-help" { (form.keys_text) }
                                p.help #ak-help { "The contents of your " code { ".pub" } " file, e.g. " code { "~/.ssh/id_ed25519.pub" } ". One key per line." }
                            }
                            button.btn.btn-primary.btn-block type="submit" { "Add to authorized_keys" }
                        }
                    }
                }
                (layout::upload_card(user, &upload_action, html! {
                    "Into " code { (shown_path) } ". Large files are fine: they are streamed to disk."
                }, layout::DropZone::PickerOnly))
                (layout::mkdir_card(user, &format!("/ui/folders/{}/mkdir", f.hex_id()), path, "",
                    form.mkdir_error.as_ref()))
            }
        }
    };
    Ok(layout::page_status(
        user,
        Nav::Folders,
        &f.name,
        content,
        status,
    ))
}

/// `GET /ui/folders/{id}?path=`.
pub(crate) async fn browse(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> PageResult {
    let f = folders::resolve(&state, &user.caller, &id).await?;
    let path = q.path();
    if !path.is_empty() {
        let st = folders::stat(&state, &f, &path).await?;
        if st.kind != Kind::Dir {
            return Err(PageError::new(
                StatusCode::BAD_REQUEST,
                "Not a directory",
                format!("{path} is a {}, not a directory.", st.kind.as_str()),
            )
            .hint("Use its Download button to fetch it."));
        }
    }
    render_browse(
        &state,
        &user,
        &f,
        &path,
        BrowseForm::default(),
        StatusCode::OK,
    )
    .await
}

/// `GET /ui/folders/{id}/download?path=`: streams the file (with `Range`).
pub(crate) async fn download(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    headers: HeaderMap,
) -> PageResult {
    let f = folders::resolve(&state, &user.caller, &id).await?;
    let path = q.path();
    if path.is_empty() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "No file named",
            "Choose a file to download.",
        ));
    }
    if folders::stat(&state, &f, &path).await?.kind == Kind::Dir {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "That is a directory",
            format!("{path} is a directory; download files one by one."),
        ));
    }
    // Resolved again, by descriptor: whatever it has become meanwhile,
    // only a regular file inside the folder is served.
    let (file, len) = folders::open_file(&state, &f, &path).await?;
    crate::audit::file_event(
        &state,
        (user.id(), Some(&user.caller.user)),
        crate::audit::FileScope::Folder(&f),
        "folder.download",
        &path,
        Some(len),
    )
    .await;
    let mut resp = folders::serve_file(file, len, &headers)?;
    let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
    attachment(&mut resp, &name);
    Ok(resp)
}

/// The fields of `mkdir`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct MkdirForm {
    path: String,
    name: String,
}

/// `POST /ui/folders/{id}/mkdir` `{path, name}`.
pub(crate) async fn mkdir(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PostForm { user, form }: PostForm<MkdirForm>,
) -> PageResult {
    let f = folders::resolve(&state, &user.caller, &id).await?;
    let dir = clean(&form.path);
    let name = form.name.trim();
    let result = if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        Err(ApiError::invalid(
            "a directory name must not be empty or contain '/'",
        ))
    } else {
        folders::mkdir(
            &state,
            &f,
            &join(&dir, name),
            folders::MkdirOptions::default(),
        )
        .await
    };
    match result {
        Ok(_) => Ok(redirect_with(
            &folder_url(&f, &dir),
            &[Flash::ok(format!("Directory {name} created."))],
        )),
        Err(e) => {
            let status = e.status;
            let form = BrowseForm {
                mkdir_error: Some(explain(&e)),
                ..Default::default()
            };
            render_browse(&state, &user, &f, &dir, form, status).await
        }
    }
}

/// The fields of `delete_file`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct DeleteFileForm {
    path: String,
    confirmed: Confirmed,
}

/// `POST /ui/folders/{id}/delete-file` `{path, confirmed}`.
pub(crate) async fn delete_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PostForm { user, form }: PostForm<DeleteFileForm>,
) -> PageResult {
    let f = folders::resolve(&state, &user.caller, &id).await?;
    let path = clean(&form.path);
    let back = folder_url(&f, &parent(&path));
    if !form.confirmed.given() {
        return Ok(layout::confirm_page(
            &user,
            Nav::Folders,
            layout::Confirm {
                title: "Delete?",
                question: &format!("Delete {path} from folder {}?", f.name),
                action: &format!("/ui/folders/{}/delete-file", f.hex_id()),
                fields: &[("path", &path)],
                button: "Delete",
                back: &back,
            },
        ));
    }
    match folders::delete_file(&state, &f, &path, folders::Removal::Tree).await {
        Ok(()) => {
            crate::audit::file_event(
                &state,
                (user.id(), Some(&user.caller.user)),
                crate::audit::FileScope::Folder(&f),
                "folder.delete",
                &path,
                None,
            )
            .await;
            Ok(redirect_with(
                &back,
                &[Flash::ok(format!("{path} deleted."))],
            ))
        }
        Err(e) => {
            let (m, _) = explain(&e);
            Ok(redirect_with(&back, &[Flash::error(m)]))
        }
    }
}

/// The fields of `authorized_keys`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct KeysForm {
    keys: String,
}

/// `POST /ui/folders/{id}/authorized-keys` `{keys}`: validates the pasted
/// keys and appends the new ones to `authorized_keys` (mode 0600).
pub(crate) async fn authorized_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PostForm { user, form }: PostForm<KeysForm>,
) -> PageResult {
    let f = folders::resolve(&state, &user.caller, &id).await?;
    let text = form.keys.clone();
    let parsed = parse_keys(&text);
    let mut keys = Vec::new();
    let mut error = None;
    for k in parsed {
        match k {
            Ok(k) => keys.push(k),
            Err((line, msg)) => {
                let where_ = if text.trim().lines().count() > 1 {
                    format!("Line {line}: ")
                } else {
                    String::new()
                };
                let (m, h) = msg.split_once(". ").unwrap_or((&msg, ""));
                error = Some((
                    format!("{where_}{}", super::sentence(m)),
                    Some(h.to_owned()).filter(|h| !h.is_empty()),
                ));
                break;
            }
        }
    }
    if error.is_none() && keys.is_empty() {
        error = Some((
            "Paste a public key first.".to_owned(),
            Some(
                "Paste one line like 'ssh-ed25519 AAAAC3Nza... you@laptop' from your .pub file."
                    .to_owned(),
            ),
        ));
    }
    if let Some(err) = error {
        let form = BrowseForm {
            keys_text: text,
            keys_error: Some(err),
            ..Default::default()
        };
        return render_browse(&state, &user, &f, "", form, StatusCode::BAD_REQUEST).await;
    }
    let fingerprints = folders::add_authorized_keys(&state, &f, &keys).await?;
    let added = fingerprints.len();
    if added == 0 {
        return Ok(redirect_with(
            &folder_url(&f, ""),
            &[Flash::warn("That key is already in authorized_keys.")],
        ));
    }
    tracing::info!(folder = %f.name, user = %user.email(), added, "keys added to authorized_keys");
    Ok(redirect_with(
        &folder_url(&f, ""),
        &[Flash::ok(format!(
            "Added {} to authorized_keys ({}). New sessions accept it.",
            if added == 1 {
                "1 key".to_owned()
            } else {
                format!("{added} keys")
            },
            fingerprints.join(", ")
        ))],
    ))
}

/// `POST /ui/folders/{id}/upload?path=DIR` (multipart/form-data: `csrf`
/// first, then one or more `file` parts). Each file is streamed to disk and
/// appears only when complete.
pub(crate) async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    req: Request,
) -> PageResult {
    let (mut parts, body) = req.into_parts();
    let user = WebUser::from_request_parts(&mut parts, &state).await?;
    let f = folders::resolve(&state, &user.caller, &id).await?;
    let dir = q.path();
    let back = folder_url(&f, &dir);
    let script = parts.headers.contains_key("x-airlock-fragment");
    let failure = |e: &ApiError| failed(script, &back, e);
    let mut form = match UploadForm::open(&parts.headers, body, &user).await? {
        Ok(form) => form,
        Err(e) => return Ok(failure(&e)),
    };
    let written = form
        .each_file(&state, user.id(), |name, body| {
            let (state, f, user, target) = (&state, &f, &user, join(&dir, &name));
            async move {
                let n = folders::write_file(state, f, &target, body, None, 0o644).await?;
                crate::audit::file_event(
                    state,
                    (user.id(), Some(&user.caller.user)),
                    crate::audit::FileScope::Folder(f),
                    "folder.upload",
                    &target,
                    Some(n),
                )
                .await;
                Ok(n)
            }
        })
        .await;
    let names = match written {
        Ok(names) => names,
        Err(e) => return Ok(failure(&e)),
    };
    tracing::info!(folder = %f.name, user = %user.email(), files = names.len(), "files uploaded through the web UI");
    Ok(redirect_with(&back, &[Flash::ok(uploaded(&names))]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(clean("/a//b/./c/"), "a/b/c");
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a/b", "x"), "a/b/x");
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("a"), "");
    }

    #[test]
    fn keys_are_validated_line_by_line() {
        let ok =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILGDGCepR3g7zolW5aQ2fg/uizIPWnjMnm53e8FOcNb1 test";
        let r = parse_keys(&format!("# mine\n\n{ok}\nnonsense\n"));
        assert_eq!(r.len(), 2);
        assert!(r[0].is_ok());
        assert!(matches!(&r[1], Err((4, _))));
    }
}
