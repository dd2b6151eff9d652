//! The files page of a running session: browse `/home/work`, download
//! files (directories as tar archives), upload (file picker or drag and
//! drop; streamed), rename, delete and make directories. Everything goes
//! through the session's runner as the session user
//! (`crate::session_files`); paths are confined to the home here and again
//! by the runner.

use airlock_proto::CONTAINER_HOME;
use airlock_proto::agent::{FileChange, FileEntry};
use airlock_proto::files::confine;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use maud::{Markup, html};

use super::Confirmed;
use super::folders::{PathQuery, join, parent};
use super::layout::{self, Nav, csrf, form_error, icon, svg};
use super::upload::{UploadForm, failed, uploaded};
use super::{
    Flash, PageError, PageResult, PostForm, WebUser, attachment, enc, explain, redirect_for,
    redirect_with, sentence,
};
use crate::AppState;
use crate::audit::{FileScope, file_event, file_events, file_renamed};
use crate::error::ApiError;
use crate::session_files::{self, Kind, home_path};
use crate::sessions::{self, Lookup};
use crate::store::SessionRow;

/// A path from the user, confined to the home (relative, no `..`).
fn confined(raw: &str) -> PageResult<String> {
    confine(raw, CONTAINER_HOME).map_err(|m| {
        PageError::new(StatusCode::BAD_REQUEST, "Invalid path", sentence(&m)).hint(format!(
            "Paths are relative to {CONTAINER_HOME} and cannot leave it."
        ))
    })
}

/// The caller's running session `id` (404 for other users' sessions).
async fn running(state: &AppState, user: &WebUser, id: &str) -> PageResult<SessionRow> {
    let s = sessions::resolve(state, &user.caller, id, Lookup::Live).await?;
    sessions::require_running(&s)?;
    Ok(s)
}

fn base_url(s: &SessionRow) -> String {
    format!("/ui/sessions/{}/files", s.id)
}

fn files_url(s: &SessionRow, rel: &str) -> String {
    if rel.is_empty() {
        base_url(s)
    } else {
        format!("{}?path={}", base_url(s), enc(rel))
    }
}

fn action_url(s: &SessionRow, action: &str, rel: &str) -> String {
    format!("{}/{action}?path={}", base_url(s), enc(rel))
}

fn base_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// A new name for something in a directory: one path component.
fn new_name(raw: &str) -> Result<&str, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
        return Err(ApiError::invalid(format!(
            "{name:?} is not a name: it must not be empty, '.' or '..', nor contain '/'"
        ))
        .hint("give just the new name; to move something elsewhere use SFTP"));
    }
    Ok(name)
}

/// What an entry is, from its `ls -l` mode.
fn kind_of(e: &FileEntry) -> &'static str {
    match e.mode.chars().next() {
        Some('d') => "directory",
        Some('l') => "link",
        Some('-') => "file",
        _ => "special",
    }
}

// ---------------------------------------------------------------- browse

/// Form state of the page after an error.
#[derive(Debug, Default)]
struct BrowseForm {
    mkdir_name: String,
    mkdir_error: Option<(String, Option<String>)>,
}

/// The entries of directory `rel`, directories first; an error page when
/// `rel` is not a directory.
async fn entries(state: &AppState, s: &SessionRow, rel: &str) -> PageResult<Vec<FileEntry>> {
    let mut list = session_files::list(state, s, rel).await?;
    // A file is listed as its one entry; a directory holding one entry of
    // its own name looks the same, so ask its parent.
    if let [only] = list.as_slice()
        && !rel.is_empty()
        && only.filename == base_name(rel)
        && kind_of(only) != "directory"
    {
        let up = session_files::list(state, s, &parent(rel)).await?;
        let here = up.iter().find(|e| e.filename == base_name(rel));
        if let Some(e) = here.filter(|e| kind_of(e) != "directory") {
            return Err(PageError::new(
                StatusCode::BAD_REQUEST,
                "Not a directory",
                format!("{} is a {}, not a directory.", home_path(rel), kind_of(e)),
            )
            .hint("Use its Download button to fetch it."));
        }
    }
    list.sort_by(|a, b| {
        (kind_of(b) == "directory")
            .cmp(&(kind_of(a) == "directory"))
            .then_with(|| a.filename.cmp(&b.filename))
    });
    Ok(list)
}

fn entry_row(user: &WebUser, s: &SessionRow, dir: &str, e: &FileEntry) -> Markup {
    let path = join(dir, &e.filename);
    let kind = kind_of(e);
    let modified = (e.mtime * 1000.0) as i64;
    layout::file_row(
        user,
        &layout::FileRow {
            name: &e.filename,
            kind: match kind {
                "directory" => layout::RowKind::Directory,
                "file" => layout::RowKind::File,
                _ => layout::RowKind::Other,
            },
            kind_name: kind,
            size: e.size,
            modified: html! { (layout::time(modified)) },
            detail: ("Type", html! { (kind) }),
            open: files_url(s, &path),
            // The runner follows links that stay inside the home; special
            // files are never read.
            download: (kind != "special").then(|| action_url(s, "download", &path)),
            rename: Some(action_url(s, "rename", &path)),
            delete: format!("{}/delete", base_url(s)),
            path: &path,
        },
    )
}

async fn render_browse(
    state: &AppState,
    user: &WebUser,
    s: &SessionRow,
    dir: &str,
    form: BrowseForm,
    status: StatusCode,
) -> PageResult {
    let list = entries(state, s, dir).await?;
    let root = format!("{} · {CONTAINER_HOME}", s.name);
    let content = html! {
        (layout::breadcrumbs(("Sessions", "/ui/sessions"), &root, dir, |p| files_url(s, p)))
        div.page-head {
            h1 { (svg(icon::FOLDER)) "Files · " (s.name) }
            p.lead {
                "In the session: " code { (home_path(dir)) } ". "
                "Files move as the session's user and stay inside " code { (CONTAINER_HOME) } "."
            }
        }
        div.grid-main {
            (layout::files_card(
                html! { div.card-actions {
                    @if !dir.is_empty() {
                        a.btn.btn-ghost.btn-sm href=(files_url(s, &parent(dir))) { (svg(icon::BACK)) "Up" }
                        " "
                    }
                    a.btn.btn-ghost.btn-sm #download-dir href=(action_url(s, "download", dir))
                        title="Download this directory as a tar archive" {
                        (svg(icon::DOWNLOAD)) "Download .tar"
                    }
                } },
                "Type",
                &list.iter().map(|e| entry_row(user, s, dir, e)).collect::<Vec<_>>(),
                html! { strong { "This directory is empty." } " Upload files with the form on this page, or drop them here." },
            ))
            div.stack {
                (layout::upload_card(user, &action_url(s, "upload", dir), html! {
                    "Into " code { (home_path(dir)) } ". Or drop files anywhere on this page. Large files are streamed."
                }, layout::DropZone::WholePage))
                (layout::mkdir_card(user, &format!("{}/mkdir", base_url(s)), dir, &form.mkdir_name,
                    form.mkdir_error.as_ref()))
            }
        }
    };
    Ok(layout::page_status(
        user,
        Nav::Sessions,
        &format!("Files · {}", s.name),
        content,
        status,
    ))
}

/// `GET /ui/sessions/{id}/files?path=DIR`.
pub(crate) async fn browse(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> PageResult {
    let s = running(&state, &user, &id).await?;
    let dir = confined(q.raw())?;
    render_browse(
        &state,
        &user,
        &s,
        &dir,
        BrowseForm::default(),
        StatusCode::OK,
    )
    .await
}

// ---------------------------------------------------------------- download

/// `GET /ui/sessions/{id}/files/download?path=P`: a file's bytes, or a
/// directory as `NAME.tar`, streamed.
pub(crate) async fn download(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> PageResult {
    let s = running(&state, &user, &id).await?;
    let rel = confined(q.raw())?;
    let d = session_files::download(&state, &s, &rel).await?;
    let base = if rel.is_empty() {
        CONTAINER_HOME.rsplit('/').next().unwrap_or("home")
    } else {
        base_name(&rel)
    };
    let (name, size, content_type) = match d.kind {
        Kind::File(n) => (base.to_owned(), Some(n), "application/octet-stream"),
        Kind::Dir => (format!("{base}.tar"), None, "application/x-tar"),
    };
    file_event(
        &state,
        (user.id(), Some(&user.caller.user)),
        FileScope::Session(&s),
        "session.download",
        &home_path(&rel),
        size,
    )
    .await;
    let mut resp = Response::new(Body::from_stream(d.body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(n) = size {
        // The browser shows the download's progress.
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    attachment(&mut resp, &name);
    Ok(resp)
}

// ---------------------------------------------------------------- upload

/// `POST /ui/sessions/{id}/files/upload?path=DIR` (multipart/form-data:
/// `csrf` first, then `file` parts). Each file is streamed into the session
/// and appears only when complete; each counts against the upload limit.
pub(crate) async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    req: Request,
) -> PageResult {
    let (mut parts, body) = req.into_parts();
    let user = WebUser::from_request_parts(&mut parts, &state).await?;
    let s = running(&state, &user, &id).await?;
    let dir = confined(q.raw())?;
    let back = files_url(&s, &dir);
    let script = parts.headers.contains_key("x-airlock-fragment");
    let failure = |e: &ApiError| failed(script, &back, e);
    let mut form = match UploadForm::open(&parts.headers, body, &user).await? {
        Ok(form) => form,
        Err(e) => return Ok(failure(&e)),
    };
    let (st, who, into) = (state.clone(), user.id().to_owned(), dir.clone());
    let result = session_files::upload(&state, &s, move |sink| async move {
        let sink = &sink;
        form.each_file(&st, &who, |name, body| sink.file(join(&into, &name), body))
            .await
    })
    .await;
    let names = match result {
        Ok(names) => names,
        Err(e) => return Ok(failure(&e)),
    };
    tracing::info!(session = %s.id, user = %user.email(), files = names.len(), "files uploaded into a session through the web UI");
    let audited: Vec<(String, Option<u64>)> = names
        .iter()
        .map(|(name, n)| (home_path(&join(&dir, name)), Some(*n)))
        .collect();
    file_events(
        &state,
        (user.id(), Some(&user.caller.user)),
        FileScope::Session(&s),
        "session.upload",
        &audited,
    )
    .await;
    Ok(redirect_for(script, &back, &[Flash::ok(uploaded(&names))]))
}

// ---------------------------------------------------------------- rename

fn rename_page(
    user: &WebUser,
    s: &SessionRow,
    rel: &str,
    name: &str,
    error: Option<&(String, Option<String>)>,
    status: StatusCode,
) -> Response {
    let content = html! {
        section.card.narrow {
            h1 { "Rename " (base_name(rel)) }
            p.lead { "In " code { (home_path(&parent(rel))) } " of session " (s.name) "." }
            (form_error(error))
            form method="post" action={(base_url(s)) "/rename"} {
                (csrf(user))
                input type="hidden" name="path" value=(rel);
                div.field {
                    label for="r-name" { "New name" }
                    input #r-name type="text" name="name" value=(name) required autocomplete="off" spellcheck="false" autofocus;
                }
                div.actions {
                    button.btn.btn-primary type="submit" { "Rename" }
                    a.btn.btn-ghost href=(files_url(s, &parent(rel))) { "Cancel" }
                }
            }
        }
    };
    layout::page_status(user, Nav::Sessions, "Rename", content, status)
}

/// The path of an existing entry from a form or query: confined, and not
/// the home itself.
fn entry_path(raw: &str) -> PageResult<String> {
    let rel = confined(raw)?;
    if rel.is_empty() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Not possible",
            format!("{CONTAINER_HOME} itself cannot be renamed or deleted."),
        )
        .hint("Choose a file or directory inside it."));
    }
    Ok(rel)
}

/// `GET /ui/sessions/{id}/files/rename?path=P`: the rename form.
pub(crate) async fn rename_form(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> PageResult {
    let s = running(&state, &user, &id).await?;
    let rel = entry_path(q.raw())?;
    Ok(rename_page(
        &user,
        &s,
        &rel,
        base_name(&rel),
        None,
        StatusCode::OK,
    ))
}

/// Carries out `change` in session `s` and records it on the audit trail.
async fn apply(
    state: &AppState,
    user: &WebUser,
    s: &SessionRow,
    change: FileChange,
) -> Result<(), ApiError> {
    session_files::change(state, s, &change).await?;
    let actor = (user.id(), Some(&user.caller.user));
    let scope = FileScope::Session(s);
    match &change {
        FileChange::Rename { from, to } => {
            let (from, to) = (home_path(from), home_path(to));
            file_renamed(state, actor, scope, "session.rename", &from, &to).await;
        }
        FileChange::Remove { path } => {
            file_event(
                state,
                actor,
                scope,
                "session.delete",
                &home_path(path),
                None,
            )
            .await;
        }
        FileChange::Mkdir { path } => {
            file_event(state, actor, scope, "session.mkdir", &home_path(path), None).await;
        }
    }
    Ok(())
}

/// The fields of `rename`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct RenameForm {
    path: String,
    name: String,
}

/// `POST /ui/sessions/{id}/files/rename` `{path, name}`: renames within
/// the same directory.
pub(crate) async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PostForm { user, form }: PostForm<RenameForm>,
) -> PageResult {
    let s = running(&state, &user, &id).await?;
    let rel = entry_path(&form.path)?;
    let dir = parent(&rel);
    let result = match new_name(&form.name) {
        Ok(name) => {
            let to = join(&dir, name);
            let change = FileChange::Rename {
                from: rel.clone(),
                to,
            };
            apply(&state, &user, &s, change).await.map(|()| name)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(name) => Ok(redirect_with(
            &files_url(&s, &dir),
            &[Flash::ok(format!("Renamed {} to {name}.", base_name(&rel)))],
        )),
        Err(e) => Ok(rename_page(
            &user,
            &s,
            &rel,
            form.name.as_str(),
            Some(&explain(&e)),
            e.status,
        )),
    }
}

// ---------------------------------------------------------------- delete, mkdir

/// The fields of `delete`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct DeleteForm {
    path: String,
    confirmed: Confirmed,
}

/// `POST /ui/sessions/{id}/files/delete` `{path, confirmed}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PostForm { user, form }: PostForm<DeleteForm>,
) -> PageResult {
    let s = running(&state, &user, &id).await?;
    let rel = entry_path(&form.path)?;
    let back = files_url(&s, &parent(&rel));
    if !form.confirmed.given() {
        return Ok(layout::confirm_page(
            &user,
            Nav::Sessions,
            layout::Confirm {
                title: "Delete?",
                question: &format!(
                    "Delete {} (and everything in it, if it is a directory) from session {}?",
                    home_path(&rel),
                    s.name
                ),
                action: &format!("{}/delete", base_url(&s)),
                fields: &[("path", &rel)],
                button: "Delete",
                back: &back,
            },
        ));
    }
    let change = FileChange::Remove { path: rel.clone() };
    let flash = match apply(&state, &user, &s, change).await {
        Ok(()) => Flash::ok(format!("{rel} deleted.")),
        Err(e) => Flash::error(explain(&e).0),
    };
    Ok(redirect_with(&back, &[flash]))
}

/// The fields of `mkdir`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct MkdirForm {
    path: String,
    name: String,
}

/// `POST /ui/sessions/{id}/files/mkdir` `{path, name}`.
pub(crate) async fn mkdir(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PostForm { user, form }: PostForm<MkdirForm>,
) -> PageResult {
    let s = running(&state, &user, &id).await?;
    let dir = confined(&form.path)?;
    let result = match new_name(&form.name) {
        Ok(name) => {
            let change = FileChange::Mkdir {
                path: join(&dir, name),
            };
            apply(&state, &user, &s, change).await.map(|()| name)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(name) => Ok(redirect_with(
            &files_url(&s, &dir),
            &[Flash::ok(format!("Directory {name} created."))],
        )),
        Err(e) => {
            let form = BrowseForm {
                mkdir_name: form.name.clone(),
                mkdir_error: Some(explain(&e)),
            };
            render_browse(&state, &user, &s, &dir, form, e.status).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(new_name(" a.txt ").unwrap(), "a.txt");
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(new_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(confined("/home/work/a/../b").ok(), None);
        assert_eq!(confined("./a//b/").ok().as_deref(), Some("a/b"));
        assert_eq!(confined("/home/work").ok().as_deref(), Some(""));
        assert!(entry_path("").is_err());
        assert!(confined("/etc").is_err());
        assert_eq!(base_name("a/b/c.txt"), "c.txt");
    }
}
