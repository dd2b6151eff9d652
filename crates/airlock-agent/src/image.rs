//! The default session image, built locally because no registry may be
//! reachable: a Debian rootfs made with `debootstrap --variant=minbase`,
//! imported into the engine as `airlock/base:bookworm`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::docker::Engine;
use crate::error::AgentError;

/// Tag of the default image.
pub const BASE_IMAGE: &str = "airlock/base:bookworm";

/// Packages in the default image (beyond minbase).
pub const BASE_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "procps",
    "python3",
    "rsync",
    "less",
    "nano",
    "ca-certificates",
];

/// How to build the image.
#[derive(Debug, Clone)]
pub struct BaseImageOptions {
    /// Image tag.
    pub tag: String,
    /// Debian suite.
    pub suite: String,
    /// Debian mirror URL.
    pub mirror: String,
    /// Where to build the rootfs (a temporary directory is made inside).
    pub work_dir: PathBuf,
}

impl Default for BaseImageOptions {
    fn default() -> Self {
        Self {
            tag: BASE_IMAGE.to_owned(),
            suite: "bookworm".to_owned(),
            mirror: "http://deb.debian.org/debian".to_owned(),
            work_dir: std::env::temp_dir(),
        }
    }
}

fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// Builds the base image unless `tag` is already present. Progress goes to
/// the log (stderr).
pub async fn ensure_base_image(
    engine: &Engine,
    opts: &BaseImageOptions,
) -> Result<bool, AgentError> {
    if engine.has_image(&opts.tag).await? {
        return Ok(false);
    }
    build_base_image(engine, opts).await?;
    Ok(true)
}

/// Builds and imports the base image (replacing an existing tag).
pub async fn build_base_image(engine: &Engine, opts: &BaseImageOptions) -> Result<(), AgentError> {
    let debootstrap = which("debootstrap").ok_or_else(|| {
        AgentError::invalid(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("the session image {} is missing and cannot be built: debootstrap is not installed", opts.tag),
        )
        .with_hint("install it (apt-get install debootstrap), or load an image into Docker and pass --image")
    })?;
    if !nix::unistd::geteuid().is_root() {
        return Err(AgentError::invalid(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "building {} needs root (debootstrap creates device nodes and chroots)",
                opts.tag
            ),
        )
        .with_hint("run `sudo airlockd image build-base` once"));
    }
    std::fs::create_dir_all(&opts.work_dir)?;
    let tmp = tempfile::Builder::new()
        .prefix("airlock-rootfs-")
        .tempdir_in(&opts.work_dir)?;
    let rootfs = tmp.path().join("rootfs");
    tracing::info!(image = %opts.tag, suite = %opts.suite, mirror = %opts.mirror, "building the session base image with debootstrap (takes a minute or two)");
    let mut child = tokio::process::Command::new(debootstrap)
        .arg("--variant=minbase")
        .arg(format!("--include={}", BASE_PACKAGES.join(",")))
        .arg(&opts.suite)
        .arg(&rootfs)
        .arg(&opts.mirror)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut tail = Vec::new();
    if let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) {
        let mut out = BufReader::new(out).lines();
        let mut err = BufReader::new(err).lines();
        let (mut out_done, mut err_done) = (false, false);
        while !(out_done && err_done) {
            tokio::select! {
                l = out.next_line(), if !out_done => match l? {
                    Some(l) => { tracing::info!(target: "debootstrap", "{l}"); tail.push(l); }
                    None => out_done = true,
                },
                l = err.next_line(), if !err_done => match l? {
                    Some(l) => { tracing::info!(target: "debootstrap", "{l}"); tail.push(l); }
                    None => err_done = true,
                },
            }
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().await?;
    if !status.success() {
        return Err(AgentError::invalid(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("debootstrap failed ({status}): {}", tail.join(" | ")),
        )
        .with_hint("check that the Debian mirror is reachable (--mirror URL)"));
    }
    // Leave a friendly prompt and no apt caches in the image.
    let _ = std::fs::remove_dir_all(rootfs.join("var/cache/apt/archives"));
    let _ = std::fs::create_dir_all(rootfs.join("var/cache/apt/archives/partial"));
    let _ = std::fs::remove_dir_all(rootfs.join("var/lib/apt/lists"));
    let _ = std::fs::create_dir_all(rootfs.join("var/lib/apt/lists"));
    tracing::info!(image = %opts.tag, "importing the rootfs into Docker");
    import_rootfs(engine, &rootfs, &opts.tag).await?;
    tracing::info!(image = %opts.tag, "session base image ready");
    Ok(())
}

/// Streams `rootfs` as a tar into the engine's image import.
pub async fn import_rootfs(engine: &Engine, rootfs: &Path, tag: &str) -> Result<(), AgentError> {
    let (repo, tag_part) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let root = rootfs.to_owned();
    let producer = tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(1 << 20),
        };
        let result = write_tar(&root, writer);
        if let Err(e) = &result {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        result
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let changes = vec![
        "CMD [\"/bin/bash\"]".to_owned(),
        "ENV LANG=C.UTF-8".to_owned(),
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    ];
    engine.import_image(repo, tag_part, changes, stream).await?;
    producer
        .await
        .map_err(|e| AgentError::Docker(e.to_string()))??;
    Ok(())
}

struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.buf));
            self.tx
                .blocking_send(Ok(chunk))
                .map_err(|_| std::io::Error::other("the image import stopped reading"))?;
        }
        Ok(())
    }
}

/// Writes a tar of `root` (directories, regular files, symlinks, hard links
/// as copies; device nodes and sockets are skipped: the container runtime
/// provides /dev).
fn write_tar<W: Write>(root: &Path, out: W) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&full)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let rel_path = rel.join(entry.file_name());
            let meta = std::fs::symlink_metadata(entry.path())?;
            let ft = meta.file_type();
            if ft.is_dir() {
                builder.append_path_with_name(entry.path(), &rel_path)?;
                stack.push(rel_path);
            } else if ft.is_file() || ft.is_symlink() {
                builder.append_path_with_name(entry.path(), &rel_path)?;
            } else {
                tracing::debug!(path = %rel_path.display(), mode = meta.mode(), "skipping special file");
            }
        }
    }
    let mut out = builder.into_inner()?;
    out.flush()
}
