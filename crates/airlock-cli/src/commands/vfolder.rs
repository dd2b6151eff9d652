//! `airlock vfolder …`: folders and their files.

use std::path::{Path, PathBuf};

use airlock_proto::api::{FolderEntry, FolderInfo};
use airlock_proto::validate;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, RANGE};
use tokio::io::AsyncWriteExt;

use crate::args::VfolderCommand;
use crate::client::{ApiClient, Body, root_cause};
use crate::error::{CliError, CliResult};
use crate::output;
use crate::transfer::{bar, enc};

/// Runs a `vfolder` subcommand.
pub async fn run(client: &ApiClient, cmd: VfolderCommand) -> CliResult<()> {
    match cmd {
        VfolderCommand::Create { name, json } => {
            validate::check_folder_name(&name)?;
            let f: FolderInfo = client
                .call(
                    Method::POST,
                    "/folders",
                    Body::json(&serde_json::json!({"name": name}))?,
                )
                .await?;
            if json {
                return output::json(&f);
            }
            output::success(&format!("Folder {:?} is created.", f.name));
            if f.automount {
                output::info(&format!(
                    "It starts with a dot, so every new session mounts it at /home/work/{}.",
                    f.name
                ));
            }
            Ok(())
        }
        VfolderCommand::Ls {
            name: Some(name),
            path,
            json,
        } => list_files(client, &name, &path, json).await,
        VfolderCommand::Ls {
            name: None, json, ..
        } => {
            let list: Vec<FolderInfo> = client.get("/folders").await?;
            if json {
                return output::json(&list);
            }
            if list.is_empty() {
                println!("No folders. Create one with `airlock vfolder create NAME`.");
                return Ok(());
            }
            let w = list.iter().map(|f| f.name.len()).max().unwrap_or(4).max(4);
            println!(
                "{:<w$}  {:<32}  {:<20}  MOUNTED IN",
                "NAME", "ID", "CREATED"
            );
            for f in &list {
                println!(
                    "{:<w$}  {:<32}  {:<20}  {}{}",
                    f.name,
                    f.id,
                    f.created_at,
                    f.mounted_in.join(","),
                    if f.automount { "  (auto-mounted)" } else { "" }
                );
            }
            Ok(())
        }
        VfolderCommand::Rm { name, yes } => {
            let folder: FolderInfo = client.get(&format!("/folders/{}", enc(&name))).await?;
            if !folder.mounted_in.is_empty() {
                // Said before asking: the gateway refuses it anyway.
                return Err(CliError::new(format!(
                    "folder {:?} is mounted in session {}; it cannot be deleted while in use",
                    folder.name,
                    folder.mounted_in.join(", ")
                ))
                .hint(format!(
                    "terminate {} first: `airlock session rm {}`",
                    if folder.mounted_in.len() == 1 {
                        "it"
                    } else {
                        "them"
                    },
                    folder.mounted_in.join(" ")
                )));
            }
            if !yes {
                confirm_delete(&folder)?;
            }
            let resp = client
                .send(client.request(
                    Method::DELETE,
                    &format!("/folders/{}", enc(&name)),
                    Body::Empty,
                )?)
                .await?;
            drop(resp);
            output::success(&format!("Folder {name:?} is deleted."));
            Ok(())
        }
        VfolderCommand::Rename { name, new_name } => {
            validate::check_folder_name(&new_name)?;
            let _: FolderInfo = client
                .call(
                    Method::POST,
                    &format!("/folders/{}/rename", enc(&name)),
                    Body::json(&serde_json::json!({"new_name": new_name}))?,
                )
                .await?;
            output::success(&format!("Folder {name:?} is now {new_name:?}."));
            Ok(())
        }
        VfolderCommand::Upload { name, files, dest } => upload(client, &name, &files, &dest).await,
        VfolderCommand::Download { name, paths, dest } => {
            for p in &paths {
                download(client, &name, p, &dest).await?;
            }
            Ok(())
        }
        VfolderCommand::Mkdir { name, path } => {
            let _: serde_json::Value = client
                .call(
                    Method::POST,
                    &format!("/folders/{}/mkdir", enc(&name)),
                    Body::json(
                        &serde_json::json!({"path": path, "parents": true, "exist_ok": true}),
                    )?,
                )
                .await?;
            output::success(&format!("Created {name}/{path}."));
            Ok(())
        }
        VfolderCommand::RmFile {
            name,
            path,
            recursive,
        } => {
            let q = format!(
                "/folders/{}/file?path={}{}",
                enc(&name),
                enc(&path),
                if recursive { "&recursive=true" } else { "" }
            );
            client
                .send(client.request(Method::DELETE, &q, Body::Empty)?)
                .await?;
            output::success(&format!("Deleted {name}/{path}."));
            Ok(())
        }
    }
}

/// `vfolder ls NAME [PATH]`: the files of a folder, with a header and
/// human-readable sizes (bytes in `--json`).
async fn list_files(client: &ApiClient, name: &str, path: &str, json: bool) -> CliResult<()> {
    let list: Vec<FolderEntry> = client
        .get(&format!("/folders/{}/files?path={}", enc(name), enc(path)))
        .await?;
    if json {
        return output::json(&list);
    }
    if list.is_empty() {
        eprintln!("(empty)");
        return Ok(());
    }
    println!("{:<10}  {:>7}  {:<20}  NAME", "MODE", "SIZE", "MODIFIED");
    for e in &list {
        println!(
            "{:<10}  {:>7}  {:<20}  {}{}",
            e.mode,
            if e.kind == "dir" {
                "-".to_owned()
            } else {
                output::human_size(e.size)
            },
            e.modified,
            e.name,
            if e.kind == "dir" { "/" } else { "" }
        );
    }
    Ok(())
}

/// Asks before a folder and its contents are deleted; refuses without a
/// terminal (scripts pass `--yes`).
fn confirm_delete(folder: &FolderInfo) -> CliResult<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(format!(
            "deleting folder {:?} deletes everything in it; not asking without a terminal",
            folder.name
        ))
        .hint(format!("airlock vfolder rm {} --yes", folder.name)));
    }
    eprint!(
        "Delete folder {:?} and everything in it? This cannot be undone. [y/N] ",
        folder.name
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        eprintln!("Nothing was deleted.");
        Err(CliError::silent(1))
    }
}

/// The account's upload limit in bytes, when the gateway has one (and says
/// so: older gateways lack `/user/limits`). Checked before sending, since a
/// refusal in the middle of a large body can reach us as a reset.
async fn upload_limit(client: &ApiClient) -> Option<u64> {
    let req = client
        .request(Method::GET, "/user/limits", Body::Empty)
        .ok()?;
    let resp = client.send(req).await.ok()?;
    let v: serde_json::Value = resp.json().await.ok()?;
    v["limits"]["upload_size"].as_u64()
}

async fn upload(client: &ApiClient, folder: &str, files: &[PathBuf], dest: &str) -> CliResult<()> {
    let limit = upload_limit(client).await;
    for f in files {
        let meta = std::fs::metadata(f)
            .map_err(|e| CliError::new(format!("cannot read {}: {e}", f.display())))?;
        if !meta.is_file() {
            return Err(
                CliError::new(format!("{} is not a regular file", f.display()))
                    .hint("upload the files inside it, or archive the directory first"),
            );
        }
        if let Some(max) = limit
            && meta.len() > max
        {
            return Err(CliError::new(format!(
                "{} has {} bytes, more than your upload limit of {max} bytes per file",
                f.display(),
                meta.len()
            ))
            .hint("split it into smaller files, or ask an administrator to raise your limit"));
        }
        let base = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| CliError::new(format!("{} has no file name", f.display())))?;
        let target = if dest.trim_matches('/').is_empty() {
            base.clone()
        } else {
            format!("{}/{base}", dest.trim_matches('/'))
        };
        let file = tokio::fs::File::open(f).await?;
        let pb = bar(Some(meta.len()), &base);
        let pb2 = pb.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .inspect_ok(move |c| pb2.inc(c.len() as u64));
        let path = format!("/folders/{}/file?path={}", enc(folder), enc(&target));
        let req = client
            .request(
                Method::PUT,
                &path,
                Body::Stream(
                    reqwest::Body::wrap_stream(stream),
                    "application/octet-stream".into(),
                ),
            )?
            .header(CONTENT_LENGTH, meta.len());
        client.send(req).await?;
        pb.finish_and_clear();
        output::success(&format!("Uploaded {} to {folder}/{target}.", f.display()));
    }
    Ok(())
}

/// Downloads one file, into a temporary name first (resuming it if a
/// previous attempt was interrupted), renamed when complete.
async fn download(client: &ApiClient, folder: &str, path: &str, dest: &Path) -> CliResult<()> {
    std::fs::create_dir_all(dest)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", dest.display())))?;
    let base = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| CliError::new(format!("{path:?} does not name a file")))?;
    let target = dest.join(base);
    let partial = dest.join(format!(".{base}.airlock-download"));
    let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let url_path = format!("/folders/{}/file?path={}", enc(folder), enc(path));
    let mut req = client.request(Method::GET, &url_path, Body::Empty)?;
    if have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    let first = req.send().await.map_err(|e| client.transport_error(&e))?;
    let resp = if first.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
        // The partial file is stale (the source changed): start over.
        let _ = std::fs::remove_file(&partial);
        client
            .send(client.request(Method::GET, &url_path, Body::Empty)?)
            .await?
    } else if first.status().is_success() {
        first
    } else {
        return Err(client.status_error(first).await);
    };
    let resumed = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
    let remaining = resp.content_length();
    let start = if resumed { have } else { 0 };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&partial)
        .await?;
    let pb = bar(remaining.map(|r| r + start), base);
    pb.set_position(start);
    let mut stream = resp.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            CliError::new(format!(
                "the download of {path} was interrupted: {}",
                root_cause(&e)
            ))
            .hint("run the same command again to resume")
        })?;
        file.write_all(&chunk).await?;
        got += chunk.len() as u64;
        pb.inc(chunk.len() as u64);
    }
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    if let Some(n) = remaining
        && n != got
    {
        return Err(CliError::new(format!(
            "the download of {path} ended after {got} of {n} bytes"
        ))
        .hint("run the same command again to resume"));
    }
    std::fs::rename(&partial, &target)?;
    pb.finish_and_clear();
    output::success(&format!(
        "Downloaded {folder}/{path} to {}.",
        target.display()
    ));
    Ok(())
}
