//! The page frame, shared fragments and small formatting helpers.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{BASE, Flash, HOME, WebUser, asset_url, clear_flash};

/// Which main section a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Sessions,
    Folders,
    Settings,
    Admin,
    None,
}

/// Icons (stroke paths after the Feather icon set, MIT licence).
pub(crate) mod icon {
    pub const TERMINAL: &str =
        r#"<polyline points="4 17 10 11 4 5"/><line x1="12" y1="19" x2="20" y2="19"/>"#;
    pub const CONSOLE: &str = r#"<rect x="2" y="3" width="20" height="18" rx="2"/><polyline points="6 9 9 12 6 15"/><line x1="12" y1="15" x2="17" y2="15"/>"#;
    pub const FOLDER: &str = r#"<path d="M22 19a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h5l2 3h9a2 2 0 0 1 2 2z"/>"#;
    pub const FILE: &str = r#"<path d="M13 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V9z"/><polyline points="13 2 13 9 20 9"/>"#;
    pub const DOWNLOAD: &str = r#"<path d="M21 15v4a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-4"/><polyline points="7 10 12 15 17 10"/><line x1="12" y1="15" x2="12" y2="3"/>"#;
    pub const UPLOAD: &str = r#"<path d="M21 15v4a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-4"/><polyline points="17 8 12 3 7 8"/><line x1="12" y1="3" x2="12" y2="15"/>"#;
    pub const TRASH: &str = r#"<polyline points="3 6 5 6 21 6"/><path d="M19 6v14a2 2 0 0 1-2 2H7a2 2 0 0 1-2-2V6m3 0V4a2 2 0 0 1 2-2h4a2 2 0 0 1 2 2v2"/>"#;
    pub const KEY: &str = r#"<path d="M21 2l-2 2m-7.61 7.61a5.5 5.5 0 1 1-7.778 7.778 5.5 5.5 0 0 1 7.777-7.777zm0 0L15.5 7.5m0 0l3 3L22 7l-3-3m-3.5 3.5L19 4"/>"#;
    pub const COPY: &str = r#"<rect x="9" y="9" width="13" height="13" rx="2" ry="2"/><path d="M5 15H4a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2h9a2 2 0 0 1 2 2v1"/>"#;
    pub const PLUS: &str =
        r#"<line x1="12" y1="5" x2="12" y2="19"/><line x1="5" y1="12" x2="19" y2="12"/>"#;
    pub const CLOSE: &str =
        r#"<line x1="18" y1="6" x2="6" y2="18"/><line x1="6" y1="6" x2="18" y2="18"/>"#;
    pub const SHIELD: &str = r#"<path d="M12 22s8-4 8-10V5l-8-3-8 3v7c0 6 8 10 8 10z"/>"#;
    pub const BACK: &str =
        r#"<line x1="19" y1="12" x2="5" y2="12"/><polyline points="12 19 5 12 12 5"/>"#;
    pub const LOGOUT: &str = r#"<path d="M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4"/><polyline points="16 17 21 12 16 7"/><line x1="21" y1="12" x2="9" y2="12"/>"#;
    pub const SETTINGS: &str = r#"<circle cx="12" cy="12" r="3"/><path d="M19.4 15a1.65 1.65 0 0 0 .33 1.82l.06.06a2 2 0 1 1-2.83 2.83l-.06-.06a1.65 1.65 0 0 0-1.82-.33 1.65 1.65 0 0 0-1 1.51V21a2 2 0 1 1-4 0v-.09a1.65 1.65 0 0 0-1.08-1.51 1.65 1.65 0 0 0-1.82.33l-.06.06a2 2 0 1 1-2.83-2.83l.06-.06a1.65 1.65 0 0 0 .33-1.82 1.65 1.65 0 0 0-1.51-1H3a2 2 0 1 1 0-4h.09a1.65 1.65 0 0 0 1.51-1.08 1.65 1.65 0 0 0-.33-1.82l-.06-.06a2 2 0 1 1 2.83-2.83l.06.06a1.65 1.65 0 0 0 1.82.33H9a1.65 1.65 0 0 0 1-1.51V3a2 2 0 1 1 4 0v.09a1.65 1.65 0 0 0 1 1.51 1.65 1.65 0 0 0 1.82-.33l.06-.06a2 2 0 1 1 2.83 2.83l-.06.06a1.65 1.65 0 0 0-.33 1.82V9a1.65 1.65 0 0 0 1.51 1H21a2 2 0 1 1 0 4h-.09a1.65 1.65 0 0 0-1.51 1z"/>"#;
    pub const INFO: &str = r#"<circle cx="12" cy="12" r="10"/><line x1="12" y1="16" x2="12" y2="12"/><line x1="12" y1="8" x2="12.01" y2="8"/>"#;
}

/// An inline SVG icon (decorative: hidden from assistive technology).
pub(crate) fn svg(paths: &str) -> Markup {
    html! {
        svg.icon xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" aria-hidden="true" focusable="false" {
            (PreEscaped(paths))
        }
    }
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf(user: &WebUser) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.csrf); }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light";
            title { (title) " · airlock" }
            link rel="icon" type="image/svg+xml" href=(asset_url("logo.svg"));
            link rel="stylesheet" href=(asset_url("app.css"));
            script src=(asset_url("app.js")) defer {}
        }
    }
}

fn flash_list(flashes: &[Flash]) -> Markup {
    html! {
        @if !flashes.is_empty() {
            div.flashes {
                @for f in flashes {
                    div class={"flash flash-" (f.kind)} role=(if f.kind == "ok" { "status" } else { "alert" }) {
                        (f.text)
                    }
                }
            }
        }
    }
}

fn topbar(user: Option<&WebUser>, nav: Nav) -> Markup {
    let item = |n: Nav, href: &str, label: &str, ic: &str| {
        html! {
            a href=(href) aria-current=[(nav == n).then_some("page")] { (svg(ic)) span { (label) } }
        }
    };
    html! {
        header.topbar {
            div.topbar-inner {
                a.brand href=(HOME) {
                    img src=(asset_url("logo.svg")) alt="" width="28" height="28";
                    span { "airlock" }
                }
                @if let Some(user) = user {
                    nav.mainnav aria-label="Main" {
                        (item(Nav::Sessions, "/ui/sessions", "Sessions", icon::TERMINAL))
                        (item(Nav::Folders, "/ui/folders", "Folders", icon::FOLDER))
                        (item(Nav::Settings, "/ui/settings", "Settings", icon::SETTINGS))
                        @if user.caller.user.is_admin() {
                            (item(Nav::Admin, "/ui/admin/events", "Audit", icon::SHIELD))
                        }
                    }
                    div.account {
                        span.who title="Logged in as" { (user.email()) }
                        form method="post" action="/ui/logout" {
                            (csrf(user))
                            button.btn.btn-ghost.btn-sm type="submit" { (svg(icon::LOGOUT)) "Log out" }
                        }
                    }
                }
            }
        }
    }
}

fn document(title: &str, user: Option<&WebUser>, nav: Nav, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                (topbar(user, nav))
                main #main.container tabindex="-1" {
                    @if let Some(u) = user { (flash_list(&u.flashes)) }
                    (content)
                }
                footer.footer {
                    "airlock " (env!("CARGO_PKG_VERSION"))
                    " · Backend.AI API " (airlock_proto::API_VERSION)
                }
                dialog #modal aria-labelledby="modal-title" {}
            }
        }
    }
}

/// A full page for a logged-in user (200).
pub(crate) fn page(user: &WebUser, nav: Nav, title: &str, content: Markup) -> Response {
    page_status(user, nav, title, content, StatusCode::OK)
}

/// A full page with a status (e.g. 400 for a form shown again with errors).
pub(crate) fn page_status(
    user: &WebUser,
    nav: Nav,
    title: &str,
    content: Markup,
    status: StatusCode,
) -> Response {
    let mut resp = document(title, Some(user), nav, content).into_response();
    *resp.status_mut() = status;
    if !user.flashes.is_empty() {
        clear_flash(&mut resp);
    }
    resp
}

/// A page without the signed-in frame (login).
pub(crate) fn public_page(title: &str, content: Markup) -> Markup {
    document(title, None, Nav::None, content)
}

/// The page shown for errors and 404s.
pub(crate) fn error_page(title: &str, msg: &str, hint: Option<&str>, status: StatusCode) -> Markup {
    let content = html! {
        section.card.error-card {
            p.eyebrow { "Error " (status.as_u16()) }
            h1 { (title) }
            p.lead { (msg) }
            @if let Some(h) = hint { p.hint { (h) } }
            p.actions {
                a.btn.btn-primary href=(HOME) { "Go to your sessions" }
                " "
                a.btn.btn-ghost href=(BASE.to_owned() + "/folders") { "Folders" }
            }
        }
    };
    document(title, None, Nav::None, content)
}

/// A page heading with an optional lead paragraph.
pub(crate) fn heading(title: &str, lead: Option<Markup>) -> Markup {
    html! {
        div.page-head {
            h1 { (title) }
            @if let Some(l) = lead { p.lead { (l) } }
        }
    }
}

/// Breadcrumbs: a leading link (label, href), the root (`root`, at
/// `url("")`), then one crumb per part of `path`; the last is the page.
pub(crate) fn breadcrumbs(
    lead: (&str, &str),
    root: &str,
    path: &str,
    url: impl Fn(&str) -> String,
) -> Markup {
    let parts: Vec<&str> = if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    };
    html! {
        nav.breadcrumbs aria-label="Breadcrumb" {
            ol {
                li { a href=(lead.1) { (lead.0) } }
                li {
                    @if parts.is_empty() { span aria-current="page" { (root) } }
                    @else { a href=(url("")) { (root) } }
                }
                @for (i, p) in parts.iter().enumerate() {
                    li {
                        @if i + 1 == parts.len() { span aria-current="page" { (p) } }
                        @else { a href=(url(&parts[..=i].join("/"))) { (p) } }
                    }
                }
            }
        }
    }
}

/// The card listing a directory: `actions` in its head, then a table of
/// `rows` under Name, Size, Modified, `fourth` (or `empty` when none).
pub(crate) fn files_card(actions: Markup, fourth: &str, rows: &[Markup], empty: Markup) -> Markup {
    html! {
        section.card.table-card aria-labelledby="files-title" {
            div.card-head {
                h2 #files-title { "Files" }
                (actions)
            }
            div.table-wrap {
                table.table.files-table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" .num { "Size" } th scope="col" { "Modified" }
                        th scope="col" { (fourth) } th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        @if rows.is_empty() {
                            tr.empty { td colspan="5" { div.empty-state {
                                (svg(icon::UPLOAD)) p { (empty) }
                            } } }
                        }
                        @for r in rows { (r) }
                    }
                }
            }
        }
    }
}

/// What an entry of a files table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowKind {
    /// A directory: its name opens it.
    Directory,
    /// A regular file: its name downloads it.
    File,
    /// Anything else (a link, a FIFO, a device…): named, never opened.
    Other,
}

/// One row of a files table — a folder's or a running session's (both
/// files pages show their entries through [`file_row`]).
pub(crate) struct FileRow<'a> {
    /// The entry's name.
    pub name: &'a str,
    /// What it is.
    pub kind: RowKind,
    /// What it is, in words (`data-kind`, and a note beside the names of
    /// [`RowKind::Other`] entries).
    pub kind_name: &'a str,
    /// Its size in bytes (not shown for directories).
    pub size: u64,
    /// The "Modified" cell.
    pub modified: Markup,
    /// The fourth column's name and cell (see [`files_card`]).
    pub detail: (&'a str, Markup),
    /// Where a directory's name leads.
    pub open: String,
    /// Where its Download button leads, if it has one (a directory's
    /// download is a tar archive).
    pub download: Option<String>,
    /// Where its Rename button leads, if it has one.
    pub rename: Option<String>,
    /// The delete form's action; it posts `path`.
    pub delete: String,
    /// Its path, as the page's forms name it.
    pub path: &'a str,
}

/// A files table row (`tr[data-entry][data-kind]`) with the actions the
/// entry allows.
pub(crate) fn file_row(user: &WebUser, r: &FileRow<'_>) -> Markup {
    let is_dir = r.kind == RowKind::Directory;
    // Shown to people; links and forms keep the name itself.
    let shown = airlock_beneath::names::display(r.name);
    let question = match r.kind {
        RowKind::Directory => format!("Delete directory {shown} and everything in it?"),
        RowKind::File => format!("Delete file {shown}?"),
        RowKind::Other => format!("Delete {shown}?"),
    };
    html! {
        tr data-entry=(r.name) data-kind=(r.kind_name) {
            td data-label="Name" {
                @match (r.kind, &r.download) {
                    (RowKind::Directory, _) => {
                        a.cell-title.folder-link href=(r.open) { (svg(icon::FOLDER)) (shown) "/" }
                    }
                    (RowKind::File, Some(download)) => {
                        a.cell-title.file-link href=(download) download=(r.name) { (svg(icon::FILE)) (shown) }
                    }
                    _ => {
                        // Links and special files are named, never followed
                        // or read by the page.
                        span.cell-title { (svg(icon::FILE)) (shown) " " span.muted.small { "(" (r.kind_name) ")" } }
                    }
                }
            }
            td data-label="Size" .num { @if is_dir { span.muted { "—" } } @else { (size(r.size)) } }
            td data-label="Modified" { (r.modified) }
            td.small data-label=(r.detail.0) { (r.detail.1) }
            td.actions-cell {
                @if let Some(download) = &r.download {
                    a.btn.btn-ghost.btn-sm.download href=(download) download=[(!is_dir).then_some(r.name)]
                        aria-label={"Download " (shown)} title={"Download " (shown) @if is_dir { " as a tar archive" }} {
                        (svg(icon::DOWNLOAD)) span { @if is_dir { "Download .tar" } @else { "Download" } }
                    }
                    " "
                }
                @if let Some(rename) = &r.rename {
                    a.btn.btn-ghost.btn-sm.rename href=(rename)
                        aria-label={"Rename " (shown)} title={"Rename " (shown)} { span { "Rename" } }
                    " "
                }
                (danger_button(user, &r.delete, &[("path", r.path)], &question,
                    "Delete", &format!("Delete {shown}")))
            }
        }
    }
}

/// Whether files dropped anywhere on a page go to its upload form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropZone {
    /// They do.
    WholePage,
    /// Only the file picker adds files.
    PickerOnly,
}

/// The upload card (`form.upload-form`, streamed by the script with a
/// progress bar).
pub(crate) fn upload_card(user: &WebUser, action: &str, help: Markup, zone: DropZone) -> Markup {
    let drop = zone == DropZone::WholePage;
    html! {
        section.card aria-labelledby="upload-title" {
            h2 #upload-title { (svg(icon::UPLOAD)) "Upload files" }
            form.upload-form method="post" action=(action) enctype="multipart/form-data" data-drop[drop] {
                (csrf(user))
                div.field {
                    label for="u-file" { "Files" }
                    input #u-file type="file" name="file" multiple required;
                    p.help { (help) }
                }
                progress.upload-progress max="100" value="0" hidden aria-label="Upload progress" {}
                button.btn.btn-primary.btn-block type="submit" { "Upload" }
            }
        }
    }
}

/// The new-directory card: posts `path` (the directory shown) and `name`.
pub(crate) fn mkdir_card(
    user: &WebUser,
    action: &str,
    path: &str,
    name: &str,
    error: Option<&(String, Option<String>)>,
) -> Markup {
    html! {
        section.card aria-labelledby="mkdir-title" {
            h2 #mkdir-title { (svg(icon::PLUS)) "New directory" }
            (form_error(error))
            form method="post" action=(action) {
                (csrf(user))
                input type="hidden" name="path" value=(path);
                div.field {
                    label for="d-name" { "Directory name" }
                    input #d-name type="text" name="name" value=(name) required autocomplete="off" spellcheck="false";
                }
                button.btn.btn-secondary.btn-block type="submit" { "Create directory" }
            }
        }
    }
}

/// A confirmation page for a destructive action (the no-JavaScript path;
/// with JavaScript the browser asks in place).
/// What a confirmation page asks.
pub(crate) struct Confirm<'a> {
    pub title: &'a str,
    pub question: &'a str,
    /// Where the confirmed form posts.
    pub action: &'a str,
    /// Hidden fields to repeat.
    pub fields: &'a [(&'a str, &'a str)],
    pub button: &'a str,
    /// Where "Cancel" leads.
    pub back: &'a str,
}

pub(crate) fn confirm_page(user: &WebUser, nav: Nav, c: Confirm<'_>) -> Response {
    let Confirm {
        title,
        question,
        action,
        fields,
        button,
        back,
    } = c;
    let content = html! {
        section.card.narrow {
            h1 { (title) }
            p.lead { (question) }
            form method="post" action=(action) {
                (csrf(user))
                @for (k, v) in fields { input type="hidden" name=(k) value=(v); }
                input type="hidden" name="confirmed" value="1";
                div.actions {
                    button.btn.btn-danger type="submit" { (button) }
                    a.btn.btn-ghost href=(back) { "Cancel" }
                }
            }
        }
    };
    page(user, nav, title, content)
}

/// A destructive button in a small form: asks first (JavaScript `confirm`,
/// or the confirmation page without JavaScript).
pub(crate) fn danger_button(
    user: &WebUser,
    action: &str,
    fields: &[(&str, &str)],
    question: &str,
    label: &str,
    aria_label: &str,
) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=(question) {
            (csrf(user))
            @for (k, v) in fields { input type="hidden" name=(k) value=(v); }
            button.btn.btn-danger-ghost.btn-sm type="submit" aria-label=(aria_label) title=(aria_label) {
                (svg(icon::TRASH)) span { (label) }
            }
        }
    }
}

/// A `<time>` element (UTC on the server; the script shows local, relative
/// time).
pub(crate) fn time(ms: i64) -> Markup {
    let dt = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    html! {
        time datetime=(dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            (dt.format("%Y-%m-%d %H:%M UTC"))
        }
    }
}

/// A `<time>` from an RFC 3339 string.
pub(crate) fn time_str(rfc: &str) -> Markup {
    match chrono::DateTime::parse_from_rfc3339(rfc) {
        Ok(dt) => time(dt.timestamp_millis()),
        Err(_) => html! { (rfc) },
    }
}

/// Human-readable size.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A code block with a copy button.
pub(crate) fn code(text: &str, label: &str) -> Markup {
    html! {
        div.codeblock {
            pre tabindex="0" aria-label=(label) { code { (text) } }
            button.btn.btn-ghost.btn-xs.copy type="button" data-copy aria-label={"Copy " (label)} hidden {
                (svg(icon::COPY)) span { "Copy" }
            }
        }
    }
}

/// An inline error or hint block for a form.
pub(crate) fn form_error(msg: Option<&(String, Option<String>)>) -> Markup {
    html! {
        @if let Some((m, h)) = msg {
            div.form-error role="alert" {
                strong { (m) }
                @if let Some(h) = h { " " span { (h) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}
