//! Moving files in and out of a running session through its agent (the API
//! and the web UI share this): the framed upload stream, single-path
//! downloads (a file's bytes, or a directory as one tar archive), listing
//! and changes (rename, remove, mkdir). The runner confines every path to
//! the home directory; callers confine them textually first.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use airlock_proto::CONTAINER_HOME;
use airlock_proto::agent::{FileChange, FileEntry, SIZES_HEADER, parse_sizes};
use airlock_proto::files::{self as frames, FileHeader, multipart_boundary};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::sessions;
use crate::store::SessionRow;

type Chunk = Result<Bytes, std::io::Error>;

/// A confined relative path as the session sees it (`/home/work/…`, like
/// the runner's own SFTP events).
pub fn home_path(rel: &str) -> String {
    if rel.is_empty() {
        CONTAINER_HOME.to_owned()
    } else {
        format!("{CONTAINER_HOME}/{rel}")
    }
}

// ---------------------------------------------------------------- upload

/// Where an upload's files go: the framed stream to the session's runner.
#[derive(Debug)]
pub struct FrameSink {
    tx: tokio::sync::mpsc::Sender<Chunk>,
    closed: Arc<AtomicBool>,
}

impl FrameSink {
    async fn send(&self, data: Vec<u8>) -> ApiResult<()> {
        if self.tx.send(Ok(Bytes::from(data))).await.is_err() {
            self.closed.store(true, Ordering::Relaxed);
            return Err(ApiError::unavailable(
                "the session stopped receiving the upload",
            ));
        }
        Ok(())
    }

    /// Sends one file to `path` (confined, relative to the home) from
    /// `body`; returns its size. It appears in the session only when
    /// complete.
    pub async fn file<S, E>(&self, path: String, mut body: S) -> ApiResult<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let header =
            serde_json::to_vec(&FileHeader { path, mode: 0o644 }).map_err(ApiError::internal)?;
        self.send(frames::frame(frames::START, &header)).await?;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ApiError::invalid(format!("upload interrupted: {e}")))?;
            size += chunk.len() as u64;
            for piece in chunk.chunks(frames::MAX_FRAME) {
                let mut f = Vec::with_capacity(piece.len() + 5);
                f.extend_from_slice(&frames::frame_header(frames::DATA, piece.len()));
                f.extend_from_slice(piece);
                self.send(f).await?;
            }
        }
        self.send(frames::frame(frames::END, &[])).await?;
        Ok(size)
    }
}

/// Streams into session `s` the files that `produce` sends to its
/// [`FrameSink`] (it runs concurrently with the transfer to the agent) and
/// returns what `produce` returned once the session has them all. When
/// `produce` fails, the stream is aborted and no partial file is kept.
pub async fn upload<T, E, F, Fut>(state: &AppState, s: &SessionRow, produce: F) -> Result<T, E>
where
    F: FnOnce(FrameSink) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<ApiError> + Send + 'static,
{
    let agent = sessions::agent_of(state, s).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(8);
    let closed = Arc::new(AtomicBool::new(false));
    let work = produce(FrameSink {
        tx: tx.clone(),
        closed: closed.clone(),
    });
    let task = tokio::spawn(async move {
        let outcome = work.await;
        let end = match &outcome {
            Ok(_) => Ok(Bytes::from(frames::frame(frames::FINISH, &[]))),
            // Abort the stream to the agent: partial files are discarded.
            Err(_) => Err(std::io::Error::other("upload aborted")),
        };
        if tx.send(end).await.is_err() && outcome.is_ok() {
            return Err(E::from(ApiError::unavailable(
                "the session stopped receiving the upload",
            )));
        }
        outcome
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let sent = state
        .agents()
        .upload(&agent, &s.id, reqwest::Body::wrap_stream(stream))
        .await;
    let produced = task
        .await
        .unwrap_or_else(|_| Err(E::from(ApiError::internal("upload task ended"))));
    match (produced, sent) {
        (Ok(v), Ok(_)) => Ok(v),
        // The session gave up first: its reason is the one to tell.
        (Err(_), Err(e)) if closed.load(Ordering::Relaxed) => Err(E::from(ApiError::from(e))),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(E::from(ApiError::from(e))),
    }
}

// ---------------------------------------------------------------- download

/// What a downloaded path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file of this size: the body is its bytes.
    File(u64),
    /// A directory: the body is a tar archive of it.
    Dir,
}

/// One path's content, streamed from the session.
pub struct Download {
    /// What it is.
    pub kind: Kind,
    /// The bytes; an error aborts the response rather than ending it.
    pub body: std::pin::Pin<Box<dyn Stream<Item = Chunk> + Send>>,
}

/// Streams one confined path out of session `s`: a file's exact bytes, or
/// a directory (a link to one, the home for `""`) as a tar archive.
pub async fn download(state: &AppState, s: &SessionRow, rel: &str) -> ApiResult<Download> {
    let agent = sessions::agent_of(state, s).await?;
    let path = if rel.is_empty() { "." } else { rel };
    let resp = state
        .agents()
        .download(&agent, &s.id, vec![path.to_owned()])
        .await?;
    let kind = match resp
        .headers()
        .get(SIZES_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_sizes)
        .as_deref()
    {
        Some([Some(n)]) => Kind::File(*n),
        _ => Kind::Dir,
    };
    let boundary = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart_boundary)
        .ok_or_else(|| ApiError::internal("the node did not answer with multipart data"))?;
    let mut parts = multer::Multipart::new(resp.bytes_stream(), boundary);
    let archive = parts
        .next_field()
        .await
        .map_err(|e| ApiError::unavailable(format!("the download from the node failed: {e}")))?
        .ok_or_else(|| ApiError::internal("the node sent no archive"))?
        .map(|c| c.map_err(std::io::Error::other));
    let body: std::pin::Pin<Box<dyn Stream<Item = Chunk> + Send>> = match kind {
        Kind::File(_) => Box::pin(first_file(archive)),
        Kind::Dir => Box::pin(archive),
    };
    Ok(Download { kind, body })
}

/// Where a [`first_file`] reader is in the archive.
#[derive(Debug, Clone, Copy)]
enum TarState {
    Header,
    Skip(u64),
    Data(u64),
    Done,
}

struct TarReader<S> {
    inner: S,
    buf: BytesMut,
    state: TarState,
}

fn cut_short() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the archive from the session ended early",
    )
}

impl<S: Stream<Item = Chunk> + Unpin> TarReader<S> {
    /// Reads more into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        match self.inner.next().await {
            Some(chunk) => {
                self.buf.extend_from_slice(&chunk?);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            match self.state {
                TarState::Done => return Ok(None),
                TarState::Header => {
                    while self.buf.len() < 512 {
                        if !self.fill().await? {
                            return Err(cut_short());
                        }
                    }
                    let block = self.buf.split_to(512);
                    if block.iter().all(|b| *b == 0) {
                        return Err(std::io::Error::other("the archive holds no file"));
                    }
                    let h = tar::Header::from_byte_slice(&block);
                    let size = h.entry_size()?;
                    let t = h.entry_type();
                    self.state = if t.is_file() {
                        TarState::Data(size)
                    } else if t.is_gnu_longname()
                        || t.is_gnu_longlink()
                        || t.is_pax_local_extensions()
                        || t.is_pax_global_extensions()
                    {
                        TarState::Skip(size.div_ceil(512) * 512)
                    } else {
                        return Err(std::io::Error::other("the path is not a regular file"));
                    };
                }
                TarState::Skip(0) => self.state = TarState::Header,
                TarState::Skip(n) => {
                    if self.buf.is_empty() && !self.fill().await? {
                        return Err(cut_short());
                    }
                    let k = n.min(self.buf.len() as u64);
                    self.buf.advance(k as usize);
                    self.state = TarState::Skip(n - k);
                }
                TarState::Data(0) => {
                    self.state = TarState::Done;
                    return Ok(None);
                }
                TarState::Data(left) => {
                    if self.buf.is_empty() && !self.fill().await? {
                        return Err(cut_short());
                    }
                    let k = left.min(self.buf.len() as u64);
                    self.state = TarState::Data(left - k);
                    return Ok(Some(self.buf.split_to(k as usize).freeze()));
                }
            }
        }
    }
}

/// The content of the first regular file in a tar stream (the runner's
/// `pack` of one file: optional long-name headers, then the file).
fn first_file<S>(inner: S) -> impl Stream<Item = Chunk> + Send
where
    S: Stream<Item = Chunk> + Unpin + Send,
{
    let reader = TarReader {
        inner,
        buf: BytesMut::new(),
        state: TarState::Header,
    };
    futures_util::stream::unfold(reader, |mut r| async move {
        match r.next_chunk().await {
            Ok(Some(b)) => Some((Ok(b), r)),
            Ok(None) => None,
            Err(e) => {
                r.state = TarState::Done;
                Some((Err(e), r))
            }
        }
    })
}

// ---------------------------------------------------------------- list, change

/// The entries of a directory (or the one entry of a file) in session `s`.
pub async fn list(state: &AppState, s: &SessionRow, rel: &str) -> ApiResult<Vec<FileEntry>> {
    let agent = sessions::agent_of(state, s).await?;
    let path = if rel.is_empty() { "." } else { rel };
    let v = state.agents().files(&agent, &s.id, path).await?;
    serde_json::from_value(v)
        .map_err(|e| ApiError::internal(format!("the node sent an unreadable listing: {e}")))
}

/// Renames, removes or creates a path in session `s`.
pub async fn change(state: &AppState, s: &SessionRow, change: &FileChange) -> ApiResult<()> {
    let agent = sessions::agent_of(state, s).await?;
    state
        .agents()
        .change_files(&agent, &s.id, change)
        .await
        .map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    async fn extract(tarball: Vec<u8>, piece: usize) -> std::io::Result<Vec<u8>> {
        let chunks: Vec<Chunk> = tarball
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut s = Box::pin(first_file(futures_util::stream::iter(chunks)));
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn first_file_streams_the_bytes_of_one_file() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        for piece in [1, 7, 512, 4096, 1 << 20] {
            assert_eq!(extract(archive("a.bin", &data), piece).await.unwrap(), data);
        }
        // A long name comes as a GNU long-name entry first.
        let long = "n".repeat(300);
        assert_eq!(extract(archive(&long, b"x"), 100).await.unwrap(), b"x");
        assert_eq!(extract(archive("e", b""), 512).await.unwrap(), b"");
    }

    #[tokio::test]
    async fn first_file_fails_on_a_cut_or_empty_archive() {
        let mut t = archive("a.bin", &[7u8; 5000]);
        t.truncate(3000);
        assert!(extract(t, 1000).await.is_err());
        assert!(extract(vec![0u8; 1024], 512).await.is_err());
        assert!(extract(Vec::new(), 512).await.is_err());
    }

    #[test]
    fn home_paths() {
        assert_eq!(home_path(""), "/home/work");
        assert_eq!(home_path("a/b"), "/home/work/a/b");
    }
}
