//! `airlock session …`.

use std::path::{Component, Path, PathBuf};

use airlock_proto::api::{SessionCreated, SessionInfo};
use airlock_proto::files::multipart_boundary;
use airlock_proto::validate;
use futures_util::TryStreamExt;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;

use crate::args::{CreateArgs, SessionCommand};
use crate::client::{ApiClient, Body, root_cause};
use crate::error::{CliError, CliResult};
use crate::output;
use crate::transfer::{bar, enc, extract_tar};

/// Runs a `session` subcommand.
pub async fn run(client: &ApiClient, cmd: SessionCommand) -> CliResult<()> {
    match cmd {
        SessionCommand::Create(args) => create(client, args).await,
        SessionCommand::Ls {
            all,
            all_users,
            json,
        } => list(client, all, all_users, json).await,
        SessionCommand::Info { session, json } => info(client, &session, json).await,
        SessionCommand::Rm { sessions, force } => remove(client, &sessions, force).await,
        SessionCommand::Logs {
            session,
            follow,
            tail,
        } => logs(client, &session, follow, tail).await,
        SessionCommand::Download {
            session,
            files,
            dest,
        } => download(client, &session, &files, &dest).await,
        SessionCommand::Upload { session, files } => upload(client, &session, &files).await,
        SessionCommand::Images { json } => images(client, json).await,
        SessionCommand::Key {
            session,
            format,
            output,
        } => key(client, &session, format, output.as_deref()).await,
    }
}

/// Asks for `files` of a session: the response (multipart/mixed, one tar
/// archive per file) and its boundary.
async fn request_files(
    client: &ApiClient,
    session: &str,
    files: &[String],
) -> CliResult<(reqwest::Response, String)> {
    let query: Vec<String> = files.iter().map(|f| format!("files={}", enc(f))).collect();
    let path = format!("/session/{}/download?{}", enc(session), query.join("&"));
    let resp = client
        .send(client.request(Method::POST, &path, Body::Empty)?)
        .await?;
    let boundary = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart_boundary)
        .ok_or_else(|| CliError::new("the server did not answer with multipart data"))?;
    Ok((resp, boundary))
}

/// Fetches one (small) file from a session's home directory into memory.
pub async fn fetch_file(client: &ApiClient, session: &str, path: &str) -> CliResult<Vec<u8>> {
    let (resp, boundary) = request_files(client, session, &[path.to_owned()]).await?;
    let mut multipart = multer::Multipart::new(resp.bytes_stream(), boundary);
    let field = multipart
        .next_field()
        .await
        .map_err(|e| CliError::new(format!("the download was interrupted: {e}")))?
        .ok_or_else(|| CliError::new(format!("{path} was not in the answer")))?;
    let tarball = field
        .bytes()
        .await
        .map_err(|e| CliError::new(format!("the download was interrupted: {e}")))?;
    let mut archive = tar::Archive::new(&tarball[..]);
    let entries = archive
        .entries()
        .map_err(|e| CliError::new(format!("bad archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| CliError::new(format!("bad archive: {e}")))?;
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data)?;
            return Ok(data);
        }
    }
    Err(CliError::new(format!("{path} is not a regular file")))
}

async fn key(
    client: &ApiClient,
    session: &str,
    format: crate::args::KeyFormat,
    output_path: Option<&Path>,
) -> CliResult<()> {
    let info = get(client, session).await?;
    let openssh = fetch_file(client, &info.name, "id_container").await?;
    let data = match format {
        crate::args::KeyFormat::Openssh => openssh,
        crate::args::KeyFormat::Ppk => {
            let text = String::from_utf8(openssh)
                .map_err(|_| CliError::new("the session key is not text"))?;
            airlock_proto::ppk::openssh_to_ppk(
                &text,
                Some(&format!("airlock session {}", info.name)),
            )
            .map_err(|e| CliError::new(format!("cannot convert the key: {e}")))?
            .into_bytes()
        }
    };
    match output_path {
        Some(p) => {
            crate::state::write_private_file(p, &data)?;
            output::success(&format!(
                "Wrote the key of session {:?} to {} (mode 0600).",
                info.name,
                p.display()
            ));
        }
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// `GET /session/{s}`.
pub async fn get(client: &ApiClient, session: &str) -> CliResult<SessionInfo> {
    client.get(&format!("/session/{}", enc(session))).await
}

/// The session, which must be RUNNING to connect to; otherwise an error
/// whose hint fits its state (and names it, so the hint runs as printed).
pub async fn get_running(client: &ApiClient, session: &str) -> CliResult<SessionInfo> {
    let info = get(client, session).await?;
    if info.status == "RUNNING" {
        return Ok(info);
    }
    let what = format!(
        "session {:?} is {}{}",
        info.name,
        info.status,
        info.status_info
            .as_deref()
            .map(|i| format!(" ({i})"))
            .unwrap_or_default()
    );
    let hint = match info.status.as_str() {
        "PENDING" | "PREPARING" => format!(
            "it is starting; check again in a moment with `airlock session info {}`",
            info.name
        ),
        "ERROR" => format!(
            "see why with `airlock session logs {}`; start a new one with `airlock session create --name NEW-NAME`",
            info.name
        ),
        _ => format!(
            "it has ended; start a new one with `airlock session create --name {}`",
            info.name
        ),
    };
    Err(CliError::new(what).hint(hint))
}

async fn create(client: &ApiClient, a: CreateArgs) -> CliResult<()> {
    if let Some(n) = &a.name {
        validate::check_session_name(n)?;
    }
    let mut resources = serde_json::Map::new();
    if let Some(c) = &a.cpu {
        validate::parse_cpu(c)?;
        resources.insert("cpu".into(), c.clone().into());
    }
    if let Some(m) = &a.mem {
        validate::parse_size(m)?;
        resources.insert("mem".into(), m.clone().into());
    }
    if let Some(g) = a.gpus.filter(|g| *g > 0) {
        resources.insert("gpus".into(), g.into());
    }
    let mut environ = serde_json::Map::new();
    for e in &a.env {
        let (k, v) = validate::parse_env_assignment(e)?;
        environ.insert(k, v.into());
    }
    let mut config =
        serde_json::json!({"mounts": a.mounts, "resources": resources, "environ": environ});
    if let Some(node) = &a.node {
        config["node"] = node.clone().into();
    }
    let body = serde_json::json!({
        "name": a.name,
        "image": a.image,
        "config": config,
        "enqueueOnly": a.no_wait,
        "maxWaitSeconds": 0,
        "reuseIfExists": false,
        "type": "interactive",
    });
    if !a.json {
        output::info("Creating the session (the first start of an image can take a while)...");
    }
    let created: SessionCreated = client
        .call(Method::POST, "/session", Body::json(&body)?)
        .await?;
    if a.json {
        // One JSON shape per object: the same as `session info --json`.
        return output::json(&get(client, &created.session_id).await?);
    }
    match created.status.as_str() {
        "RUNNING" => {
            output::info(&format!(
                "Session ID {} is created and ready.",
                created.session_id
            ));
            output::info(&format!(
                "This session provides the following app services: {}",
                created
                    .service_ports
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            output::success(&format!(
                "Session {:?} is running. Connect with: airlock ssh {}",
                created.session_name, created.session_name
            ));
            Ok(())
        }
        "ERROR" => Err(CliError::new(format!(
            "session {:?} failed to start: {}",
            created.session_name,
            created
                .status_info
                .unwrap_or_else(|| "unknown reason".into())
        ))
        .hint(format!(
            "see `airlock session logs {}`; remove it with `airlock session rm {}`",
            created.session_name, created.session_name
        ))),
        other => {
            output::info(&format!(
                "Session ID {} is {}; check it with `airlock session info {}`.",
                created.session_id, other, created.session_name
            ));
            Ok(())
        }
    }
}

fn short_mem(bytes: u64) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1}g")
    } else {
        format!("{}m", bytes >> 20)
    }
}

async fn list(client: &ApiClient, all: bool, all_users: bool, json: bool) -> CliResult<()> {
    let mut query = Vec::new();
    if all {
        query.push("all=true");
    }
    if all_users {
        query.push("all_users=true");
    }
    let path = if query.is_empty() {
        "/session".to_owned()
    } else {
        format!("/session?{}", query.join("&"))
    };
    let sessions: Vec<SessionInfo> = client.get(&path).await?;
    if json {
        return output::json(&sessions);
    }
    if sessions.is_empty() {
        println!("No sessions. Create one with `airlock session create --name NAME`.");
        return Ok(());
    }
    let w = sessions
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let now = chrono::Utc::now();
    let owners = if all_users {
        sessions
            .iter()
            .map(|s| s.owner.len())
            .max()
            .unwrap_or(5)
            .max(5)
    } else {
        0
    };
    let owner_col = |o: &str| {
        if all_users {
            format!("{o:<owners$}  ")
        } else {
            String::new()
        }
    };
    println!(
        "{:<w$}  {}{:<11}  {:>4}  {:<24}  {:>4} {:>6}  MOUNTS",
        "NAME",
        owner_col("OWNER"),
        "STATUS",
        "AGE",
        "IMAGE",
        "CPU",
        "MEM"
    );
    for s in &sessions {
        println!(
            "{:<w$}  {}{:<11}  {:>4}  {:<24}  {:>4} {:>6}  {}",
            s.name,
            owner_col(&s.owner),
            if s.node_unreachable {
                "UNREACHABLE"
            } else {
                s.status.as_str()
            },
            output::age(&s.created_at, now),
            s.image,
            s.cpu,
            short_mem(s.mem_bytes),
            s.mounts.join(",")
        );
    }
    Ok(())
}

async fn info(client: &ApiClient, session: &str, json: bool) -> CliResult<()> {
    let s = get(client, session).await?;
    if json {
        return output::json(&s);
    }
    println!("Name:        {}", s.name);
    println!("ID:          {}", s.id);
    println!("Owner:       {}", s.owner);
    println!(
        "Status:      {}{}",
        s.status,
        s.status_info
            .as_deref()
            .map(|i| format!(" ({i})"))
            .unwrap_or_default()
    );
    println!("Image:       {}", s.image);
    if s.gpus > 0 {
        println!(
            "Resources:   {} CPU, {}, {} GPU{}",
            s.cpu,
            short_mem(s.mem_bytes),
            s.gpus,
            if s.gpus == 1 { "" } else { "s" }
        );
    } else {
        println!("Resources:   {} CPU, {}", s.cpu, short_mem(s.mem_bytes));
    }
    println!("Created:     {}", s.created_at);
    if let Some(t) = &s.terminated_at {
        println!("Terminated:  {t}");
    }
    println!(
        "Folders:     {}",
        if s.mounts.is_empty() {
            "(none)".to_owned()
        } else {
            s.mounts
                .iter()
                .map(|m| format!("{m} → /home/work/{m}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "Services:    {}",
        s.service_ports
            .iter()
            .map(|p| format!(
                "{} ({}/{})",
                p.name,
                p.protocol,
                p.ports.first().copied().unwrap_or(0)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(fp) = &s.host_key_fingerprint {
        println!("Host key:    {fp}");
    }
    if let Some(a) = &s.agent {
        println!("Node:        {a}");
    }
    Ok(())
}

async fn remove(client: &ApiClient, sessions: &[String], force: bool) -> CliResult<()> {
    output::info("Terminating the session(s)...");
    let mut failed = 0;
    for s in sessions {
        let path = if force {
            format!("/session/{}?forced=true", enc(s))
        } else {
            format!("/session/{}", enc(s))
        };
        match client
            .call::<serde_json::Value>(Method::DELETE, &path, Body::Empty)
            .await
        {
            Ok(v) if v.get("status").and_then(|x| x.as_str()) == Some("TERMINATING") => {
                output::warning(&format!(
                    "{s}: its node is unreachable; the container is removed when the node is back"
                ));
            }
            Ok(_) => output::success(&format!("Terminated {s}.")),
            Err(e) => {
                failed += 1;
                output::failure(&format!("{s}: {}", e.message));
                if let Some(h) = e.hint {
                    eprintln!("  hint: {h}");
                }
            }
        }
    }
    if failed > 0 {
        return Err(CliError::silent(1));
    }
    output::success("Done.");
    Ok(())
}

async fn logs(
    client: &ApiClient,
    session: &str,
    follow: bool,
    tail: Option<usize>,
) -> CliResult<()> {
    use std::io::Write;
    let mut path = format!("/session/{}/logs", enc(session));
    let mut query = Vec::new();
    if let Some(n) = tail {
        query.push(format!("tail={n}"));
    }
    if follow {
        query.push("follow=true".to_owned());
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let resp = client
        .send(client.request(Method::GET, &path, Body::Empty)?)
        .await?;
    let mut stream = resp.bytes_stream();
    let mut out = std::io::stdout();
    loop {
        let chunk = tokio::select! {
            c = stream.try_next() => c,
            _ = tokio::signal::ctrl_c(), if follow => return Ok(()),
        };
        match chunk {
            Ok(Some(bytes)) => {
                out.write_all(&bytes)?;
                out.flush()?;
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(CliError::new(format!(
                    "reading the log failed: {}",
                    root_cause(&e)
                )));
            }
        }
    }
}

async fn download(
    client: &ApiClient,
    session: &str,
    files: &[String],
    dest: &Path,
) -> CliResult<()> {
    std::fs::create_dir_all(dest)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", dest.display())))?;
    let dest = dest.canonicalize()?;
    output::info(&format!("Downloading file(s) from {session}..."));
    let (resp, boundary) = request_files(client, session, files).await?;
    let pb = bar(None, "Downloading files");
    let pb2 = pb.clone();
    let stream = resp
        .bytes_stream()
        .inspect_ok(move |c| pb2.inc(c.len() as u64));
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut written = Vec::new();
    let mut index = 0;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| CliError::new(format!("the download was interrupted: {e}")))?
    {
        // One archive per requested path, in order: `tree/a` lands at
        // DEST/tree/a, where `session upload tree/a` put it.
        let d = dest.join(download_parent(files.get(index).map_or("", String::as_str)));
        index += 1;
        std::fs::create_dir_all(&d)
            .map_err(|e| CliError::new(format!("cannot create {}: {e}", d.display())))?;
        let reader = tokio_util::io::StreamReader::new(
            field.map_err(|e| std::io::Error::other(e.to_string())),
        );
        let sync = tokio_util::io::SyncIoBridge::new(reader);
        let got = tokio::task::spawn_blocking(move || extract_tar(sync, &d))
            .await
            .map_err(|e| CliError::new(format!("extraction failed: {e}")))??;
        written.extend(got);
    }
    pb.finish_and_clear();
    for (p, mode) in &written {
        eprintln!("  {} (mode {:04o})", p.display(), mode);
    }
    output::success(&format!("Downloaded to {}.", dest.display()));
    Ok(())
}

/// The local directory (below the destination) a downloaded session path
/// goes to: its parent, relative to `/home/work`; nothing for paths that
/// are not plainly below the home (`..`, other absolute paths).
fn download_parent(path: &str) -> PathBuf {
    let home = format!("{}/", airlock_proto::CONTAINER_HOME);
    let rel = Path::new(path.strip_prefix(&home).unwrap_or(path));
    let Some(parent) = rel.parent() else {
        return PathBuf::new();
    };
    if parent
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        parent.to_path_buf()
    } else {
        PathBuf::new()
    }
}

/// The destination name of an uploaded file: its path relative to the
/// current directory when it lies inside it, else its base name.
fn upload_name(file: &Path) -> CliResult<String> {
    let clean = file
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    let name = if clean {
        file.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/")
    } else {
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| CliError::new(format!("{} is not a file name", file.display())))?
    };
    Ok(name)
}

async fn upload(client: &ApiClient, session: &str, files: &[PathBuf]) -> CliResult<()> {
    let mut form = reqwest::multipart::Form::new();
    let mut total = 0u64;
    let mut names = Vec::new();
    let pb = bar(None, "Uploading files");
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| {
            CliError::new(format!("cannot read {}: {e}", f.display()))
                .hint("name existing files; directories are not supported, archive them first")
        })?;
        if !meta.is_file() {
            return Err(
                CliError::new(format!("{} is not a regular file", f.display()))
                    .hint("upload files one by one, or archive a directory first (tar czf)"),
            );
        }
        let name = upload_name(f)?;
        let file = tokio::fs::File::open(f).await?;
        let pb2 = pb.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .inspect_ok(move |c| pb2.inc(c.len() as u64));
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(stream),
            meta.len(),
        )
        .file_name(name.clone())
        .mime_str("application/octet-stream")
        .map_err(|e| CliError::new(e.to_string()))?;
        form = form.part("src", part);
        total += meta.len();
        names.push(name);
    }
    pb.set_length(total);
    output::info("Uploading files...");
    let url = client.url(&format!("/session/{}/upload", enc(session)))?;
    let ct = format!("multipart/form-data; boundary={}", form.boundary());
    let headers = client.auth_headers(&Method::POST, &url, &ct)?;
    let req = client.http().post(url).headers(headers).multipart(form);
    client.send(req).await?;
    pb.finish_and_clear();
    for n in &names {
        eprintln!("  /home/work/{n}");
    }
    output::success("Uploaded.");
    Ok(())
}

async fn images(client: &ApiClient, json: bool) -> CliResult<()> {
    let v: serde_json::Value = client.get("/images").await?;
    if json {
        return output::json(&v);
    }
    let default = v
        .get("default")
        .and_then(|d| d.as_str())
        .unwrap_or_default();
    for i in v
        .get("images")
        .and_then(|i| i.as_array())
        .into_iter()
        .flatten()
    {
        let name = i.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let size = i
            .get("size")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        println!(
            "{name}  ({} MiB){}",
            size >> 20,
            if name == default { "  [default]" } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{download_parent, upload_name};
    use std::path::{Path, PathBuf};

    #[test]
    fn download_parents() {
        assert_eq!(download_parent("tree/a"), PathBuf::from("tree"));
        assert_eq!(download_parent("a"), PathBuf::new());
        assert_eq!(download_parent("/home/work/tree/a"), PathBuf::from("tree"));
        assert_eq!(download_parent("../x/a"), PathBuf::new());
        assert_eq!(download_parent("/etc/x"), PathBuf::new());
    }

    #[test]
    fn upload_names() {
        assert_eq!(upload_name(Path::new("a/b.txt")).unwrap(), "a/b.txt");
        assert_eq!(upload_name(Path::new("./b.txt")).unwrap(), "b.txt");
        assert_eq!(upload_name(Path::new("/tmp/x/b.txt")).unwrap(), "b.txt");
        assert_eq!(upload_name(Path::new("../b.txt")).unwrap(), "b.txt");
    }
}
