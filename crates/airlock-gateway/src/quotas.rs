//! Per-user quotas: concurrent sessions, concurrent tunnels, the size of one
//! upload and the number of folders.
//!
//! The server-wide defaults come from [`GatewayConfig::default_limits`]; an
//! administrator overrides them per account ([`crate::store::UserLimits`],
//! `airlockd user limits`, `PUT /admin/users/{email}/limits`).
//!
//! Counted quotas are checked and taken atomically: sessions and folders
//! under a per-user async lock held from the count to the insert
//! ([`session_slot`], [`folder_slot`]), tunnels in an in-memory table
//! ([`tunnel_permit`]). Uploads are checked against the announced size up
//! front and counted while they stream ([`LimitedBody`]).
//!
//! [`GatewayConfig::default_limits`]: crate::GatewayConfig::default_limits

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use airlock_proto::validate::Invalid;
use bytes::Bytes;
use futures_util::Stream;
use http::StatusCode;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
pub use crate::store::{Limit, UserLimits};

/// Effective quotas of an account (or the server-wide defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent live sessions.
    pub sessions: Limit,
    /// Concurrent tunnels.
    pub tunnels: Limit,
    /// Bytes of one upload.
    pub upload_bytes: Limit,
    /// Folders owned.
    pub folders: Limit,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sessions: Limit::Max(10),
            tunnels: Limit::Max(64),
            upload_bytes: Limit::Unlimited,
            folders: Limit::Max(100),
        }
    }
}

impl Limits {
    /// These defaults with an account's overrides applied.
    pub fn with(self, o: &UserLimits) -> Self {
        Self {
            sessions: o.sessions.unwrap_or(self.sessions),
            tunnels: o.tunnels.unwrap_or(self.tunnels),
            upload_bytes: o.upload_bytes.unwrap_or(self.upload_bytes),
            folders: o.folders.unwrap_or(self.folders),
        }
    }
}

/// What a limit counts: things, or bytes (which also read `10G`, `512k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Sessions, tunnels, folders.
    Count,
    /// Sizes.
    Bytes,
}

impl Unit {
    /// Parses a limit in this unit (`unlimited`, or a number).
    pub fn parse(self, raw: &str) -> Result<Limit, Invalid> {
        match self {
            Unit::Count => parse_count(raw),
            Unit::Bytes => parse_size(raw),
        }
    }

    /// A limit for people: sizes in units, with the exact bytes.
    pub fn show(self, limit: Limit) -> String {
        match (self, limit) {
            (Unit::Bytes, Limit::Max(n)) => format!("{} ({n} bytes)", human_size(n)),
            (_, l) => l.to_string(),
        }
    }
}

/// Parses a count quota: a whole number, or `unlimited`.
pub fn parse_count(raw: &str) -> Result<Limit, Invalid> {
    let s = raw.trim();
    if is_unlimited(s) {
        return Ok(Limit::Unlimited);
    }
    s.parse::<u64>().map(Limit::Max).map_err(|_| {
        invalid(
            format!("{raw:?} is not a count"),
            "use a whole number such as 10, or `unlimited`",
        )
    })
}

/// Parses a size quota: bytes, or a number with a binary suffix (`512k`,
/// `10M`, `1.5g`, `2GiB`, `1t`), or `unlimited`.
pub fn parse_size(raw: &str) -> Result<Limit, Invalid> {
    let hint = "use a size such as 500M, 10G or 1TiB, or `unlimited`";
    let s = raw.trim().to_ascii_lowercase();
    if is_unlimited(&s) {
        return Ok(Limit::Unlimited);
    }
    let s = s.strip_suffix("ib").unwrap_or(&s);
    let s = s.strip_suffix('b').unwrap_or(s);
    let (num, mult): (&str, u64) = match s.char_indices().last() {
        Some((i, 'k')) => (&s[..i], 1 << 10),
        Some((i, 'm')) => (&s[..i], 1 << 20),
        Some((i, 'g')) => (&s[..i], 1 << 30),
        Some((i, 't')) => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    let num = num.trim();
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .map(Limit::Max)
            .ok_or_else(|| invalid(format!("{raw:?} is too large"), hint));
    }
    let n: f64 = num
        .parse()
        .map_err(|_| invalid(format!("{raw:?} is not a size"), hint))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(invalid(format!("{raw:?} is not a size"), hint));
    }
    Ok(Limit::Max(bytes as u64))
}

fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Invalid {
    Invalid {
        message: message.into(),
        hint: hint.into(),
    }
}

fn is_unlimited(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "unlimited" | "none" | "inf" | "infinite"
    )
}

/// A byte count for people: `10 MiB`, `512 KiB`, `17 bytes`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64;
    let mut unit = "";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if (v - v.round()).abs() < 0.05 {
        format!("{} {unit}", v.round())
    } else {
        format!("{v:.1} {unit}")
    }
}

/// Live quota bookkeeping of a gateway (part of [`AppState`]).
#[derive(Debug, Default)]
pub struct Quotas {
    /// One lock per account, held from a count to the insert it allows.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Open (or opening) tunnels per account.
    tunnels: Arc<Mutex<HashMap<String, u64>>>,
}

impl Quotas {
    fn lock_of(&self, user_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut m) => m.entry(user_id.to_owned()).or_default().clone(),
            // A poisoned table cannot happen without a panic elsewhere;
            // a fresh lock keeps the gateway answering.
            Err(_) => Arc::default(),
        }
    }

    /// Tunnels an account has open now.
    pub fn open_tunnels(&self, user_id: &str) -> u64 {
        self.tunnels
            .lock()
            .map(|m| m.get(user_id).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// The effective quotas of an account.
pub async fn limits_for(state: &AppState, user_id: &str) -> ApiResult<Limits> {
    let overrides = state.store().user_limits(user_id).await?;
    Ok(state.config().default_limits.with(&overrides))
}

/// The most bytes one upload of this account may have (`None`: no limit).
pub async fn upload_limit(state: &AppState, user_id: &str) -> ApiResult<Option<u64>> {
    Ok(limits_for(state, user_id).await?.upload_bytes.max())
}

/// The `quota` of the live-sessions limit in a `quota-exceeded` problem.
pub const QUOTA_SESSIONS: &str = "concurrent sessions";

/// The answer when a counted quota is full (429, with a hint).
pub fn exceeded(what: &str, max: u64, hint: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "quota-exceeded",
        "Quota exceeded",
    )
    .msg(format!("you have reached your limit of {max} {what}"))
    .hint(hint.to_owned())
    .data(serde_json::json!({"quota": what, "limit": max}))
}

/// The answer when an upload is larger than the account may upload (413).
pub fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload-too-large",
        "Upload too large",
    )
    .msg(format!(
        "the upload is larger than your limit of {} per file",
        human_size(max)
    ))
    .hint("split the data into smaller files, or ask an administrator to raise your upload limit")
    .data(serde_json::json!({"quota": "upload size", "limit": max}))
}

/// Refuses an announced upload size over the account's limit.
pub fn check_announced(limit: Option<u64>, size: u64) -> ApiResult<()> {
    match limit {
        Some(max) if size > max => Err(too_large(max)),
        _ => Ok(()),
    }
}

/// Holds an account's quota lock until dropped: take it, count, insert,
/// then drop it.
#[derive(Debug)]
pub struct Slot {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

/// Takes a session slot: waits for the account's quota lock, then refuses
/// (429) when the account already has as many live sessions as allowed.
/// Keep the slot until the new session is recorded.
pub async fn session_slot(state: &AppState, user_id: &str) -> ApiResult<Slot> {
    let guard = state.quotas().lock_of(user_id).lock_owned().await;
    let limit = limits_for(state, user_id).await?.sessions;
    let live = state.store().live_session_count(user_id).await?;
    if let Limit::Max(max) = limit
        && live >= max
    {
        return Err(exceeded(
            QUOTA_SESSIONS,
            max,
            "list your sessions with `airlock session ls` and terminate one you no longer need, or ask an administrator to raise your limit",
        ));
    }
    Ok(Slot { _guard: guard })
}

/// Takes a folder slot, like [`session_slot`] for the folder count.
pub async fn folder_slot(state: &AppState, user_id: &str) -> ApiResult<Slot> {
    let guard = state.quotas().lock_of(user_id).lock_owned().await;
    let limit = limits_for(state, user_id).await?.folders;
    let have = state.store().folder_count(user_id).await?;
    if let Limit::Max(max) = limit
        && have >= max
    {
        return Err(exceeded(
            "folders",
            max,
            "delete a folder you no longer need (`airlock vfolder rm NAME`), or ask an administrator to raise your limit",
        ));
    }
    Ok(Slot { _guard: guard })
}

/// One open tunnel of an account; the count drops when this is dropped.
#[derive(Debug)]
pub struct TunnelPermit {
    table: Arc<Mutex<HashMap<String, u64>>>,
    user_id: String,
}

impl Drop for TunnelPermit {
    fn drop(&mut self) {
        if let Ok(mut m) = self.table.lock()
            && let Some(n) = m.get_mut(&self.user_id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.user_id);
            }
        }
    }
}

/// Takes a tunnel permit, or refuses (429) when the account already has as
/// many tunnels open as allowed. Hold it for the tunnel's whole life.
pub async fn tunnel_permit(state: &AppState, user_id: &str) -> ApiResult<TunnelPermit> {
    let limit = limits_for(state, user_id).await?.tunnels;
    let table = state.quotas().tunnels.clone();
    let mut m = table
        .lock()
        .map_err(|_| ApiError::internal("the tunnel table is poisoned"))?;
    let n = m.entry(user_id.to_owned()).or_insert(0);
    if !limit.admits_one_more(*n) {
        let max = limit.max().unwrap_or(0);
        if *n == 0 {
            m.remove(user_id);
        }
        return Err(exceeded(
            "concurrent tunnels",
            max,
            "close SSH connections you no longer use (each `ssh`, `scp` or `sftp` through airlock is one tunnel), or ask an administrator to raise your limit",
        ));
    }
    *n += 1;
    drop(m);
    Ok(TunnelPermit {
        table,
        user_id: user_id.to_owned(),
    })
}

/// Why a [`LimitedBody`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body went past the limit.
    #[error("the upload is larger than the limit of {} per file", human_size(*.0))]
    TooLarge(u64),
    /// The underlying stream failed.
    #[error("{0}")]
    Inner(String),
}

/// A body stream that fails once more than `limit` bytes have passed, so an
/// upload is refused while it streams whatever its headers announced.
#[derive(Debug)]
pub struct LimitedBody<S> {
    inner: S,
    seen: u64,
    limit: Option<u64>,
    tripped: Arc<AtomicBool>,
}

/// Tells, after the fact, whether a [`LimitedBody`] went past its limit.
#[derive(Debug, Clone)]
pub struct Tripped(Arc<AtomicBool>);

impl Tripped {
    /// Whether the limit was exceeded.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl<S> LimitedBody<S> {
    /// Wraps `inner`; `None` counts but never refuses.
    pub fn new(inner: S, limit: Option<u64>) -> Self {
        Self {
            inner,
            seen: 0,
            limit,
            tripped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A handle that says whether the limit was hit.
    pub fn tripped(&self) -> Tripped {
        Tripped(self.tripped.clone())
    }
}

impl<S, E> Stream for LimitedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.tripped.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen = self.seen.saturating_add(chunk.len() as u64);
                match self.limit {
                    Some(max) if self.seen > max => {
                        self.tripped.store(true, Ordering::Relaxed);
                        Poll::Ready(Some(Err(BodyError::TooLarge(max))))
                    }
                    _ => Poll::Ready(Some(Ok(chunk))),
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Inner(e.to_string())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Wraps an upload body in the account's size limit. After a failed write,
/// [`Tripped::get`] tells whether the limit was the reason (answer with
/// [`too_large`]).
pub async fn limit_upload<S>(
    state: &AppState,
    user_id: &str,
    body: S,
) -> ApiResult<(LimitedBody<S>, Tripped, Option<u64>)> {
    let limit = upload_limit(state, user_id).await?;
    let body = LimitedBody::new(body, limit);
    let tripped = body.tripped();
    Ok((body, tripped, limit))
}

/// After a failed write of a [`LimitedBody`]: the 413 when the limit was
/// the reason, else the write's own error.
pub fn over_limit_or(e: ApiError, tripped: &Tripped, limit: Option<u64>) -> ApiError {
    match limit {
        Some(max) if tripped.get() => too_large(max),
        _ => e,
    }
}

/// One file part of a multipart upload, as its writer reads it: the part's
/// bytes, cut off past the account's upload limit.
pub type UploadPart = LimitedBody<Pin<Box<multer::Field<'static>>>>;

/// Streams each part named `field` of a multipart upload through `put`,
/// under the name `name_of` gives it (`None` skips the part), each within
/// the account's upload limit (an over-limit write becomes the 413). The
/// names and sizes written, in order; none is not an error here.
///
/// On any error the rest of the body is read and dropped, for at most a
/// minute, so that the client gets the answer: a client cut off
/// mid-upload only reports a broken pipe or a reset.
pub async fn each_upload_part<N, F, Fut>(
    multipart: &mut multer::Multipart<'static>,
    field: &str,
    state: &AppState,
    user_id: &str,
    mut name_of: N,
    mut put: F,
) -> ApiResult<Vec<(String, u64)>>
where
    N: FnMut(&multer::Field<'static>) -> ApiResult<Option<String>>,
    F: FnMut(String, UploadPart) -> Fut,
    Fut: Future<Output = ApiResult<u64>>,
{
    let outcome = async {
        let mut written = Vec::new();
        while let Some(part) = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::invalid(format!("the upload was interrupted ({e})")))?
        {
            if part.name() != Some(field) {
                continue;
            }
            let Some(name) = name_of(&part)? else {
                continue;
            };
            let (body, tripped, limit) = limit_upload(state, user_id, Box::pin(part)).await?;
            let n = put(name.clone(), body)
                .await
                .map_err(|e| over_limit_or(e, &tripped, limit))?;
            written.push((name, n));
        }
        Ok(written)
    }
    .await;
    if outcome.is_err() {
        let drain = async {
            while let Ok(Some(mut part)) = multipart.next_field().await {
                while let Ok(Some(_)) = part.chunk().await {}
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), drain).await;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn parses_counts_and_sizes() {
        assert_eq!(parse_count("10").ok(), Some(Limit::Max(10)));
        assert_eq!(parse_count("0").ok(), Some(Limit::Max(0)));
        assert_eq!(parse_count("unlimited").ok(), Some(Limit::Unlimited));
        assert!(parse_count("-1").is_err());
        assert!(parse_count("ten").is_err());
        assert_eq!(parse_size("10G").ok(), Some(Limit::Max(10 << 30)));
        assert_eq!(parse_size("512k").ok(), Some(Limit::Max(512 << 10)));
        assert_eq!(parse_size("2GiB").ok(), Some(Limit::Max(2 << 30)));
        assert_eq!(parse_size("1.5m").ok(), Some(Limit::Max(1_572_864)));
        assert_eq!(parse_size("100").ok(), Some(Limit::Max(100)));
        assert_eq!(parse_size("Unlimited").ok(), Some(Limit::Unlimited));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-5m").is_err());
        assert!(parse_size("99999999999t").is_err());
    }

    #[test]
    fn overrides_win_over_defaults() {
        let d = Limits::default();
        let l = d.with(&UserLimits {
            sessions: Some(Limit::Max(2)),
            upload_bytes: Some(Limit::Max(5)),
            ..UserLimits::default()
        });
        assert_eq!(l.sessions, Limit::Max(2));
        assert_eq!(l.upload_bytes, Limit::Max(5));
        assert_eq!(l.tunnels, d.tunnels);
        assert_eq!(l.folders, d.folders);
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(17), "17 bytes");
        assert_eq!(human_size(10 << 20), "10 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
    }

    #[tokio::test]
    async fn limited_body_stops_past_the_limit() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"12345")),
            Ok(Bytes::from_static(b"678")),
        ];
        let mut body = LimitedBody::new(futures_util::stream::iter(chunks), Some(6));
        let tripped = body.tripped();
        assert_eq!(
            body.next().await.and_then(Result::ok).as_deref(),
            Some(&b"12345"[..])
        );
        assert!(matches!(
            body.next().await,
            Some(Err(BodyError::TooLarge(6)))
        ));
        assert!(tripped.get());
        assert!(body.next().await.is_none());

        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(b"123456"))];
        let mut body = LimitedBody::new(futures_util::stream::iter(chunks), Some(6));
        assert!(matches!(body.next().await, Some(Ok(_))));
        assert!(body.next().await.is_none());
        assert!(!body.tripped().get());
    }
}
