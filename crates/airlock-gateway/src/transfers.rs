//! Folder transfers the way Backend.AI's storage proxy does them, for the
//! official client: `request-upload` hands out a token and a URL, the data
//! then arrives as tus 1.0 `PATCH` requests with offsets (resumable, `HEAD`
//! tells the offset); `request-download` hands out a token for a `GET` with
//! Range support. Tokens are the only credential on those URLs, so they are
//! random, single-purpose and expire.
//!
//! An upload is written to a hidden temporary file next to its target and
//! renamed into place only when the last byte has arrived.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle uploads and unused download tokens expire after this long.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// An upload in progress.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Final path.
    pub target: PathBuf,
    /// Temporary file being filled.
    pub tmp: PathBuf,
    /// Declared size.
    pub size: u64,
    /// Bytes received so far.
    pub offset: u64,
    /// Owner for the finished file.
    pub owner: (u32, u32),
    /// A PATCH is being applied.
    pub busy: bool,
    touched: Instant,
}

#[derive(Debug, Clone)]
struct Download {
    path: PathBuf,
    touched: Instant,
}

/// Outstanding transfer tokens.
#[derive(Debug, Default)]
pub struct Transfers {
    uploads: Mutex<HashMap<String, Upload>>,
    downloads: Mutex<HashMap<String, Download>>,
}

fn token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

impl Transfers {
    fn purge(&self) {
        if let Ok(mut u) = self.uploads.lock() {
            u.retain(|_, up| {
                let keep = up.busy || up.touched.elapsed() < TOKEN_TTL;
                if !keep {
                    let _ = std::fs::remove_file(&up.tmp);
                }
                keep
            });
        }
        if let Ok(mut d) = self.downloads.lock() {
            d.retain(|_, dl| dl.touched.elapsed() < TOKEN_TTL);
        }
    }

    /// Registers an upload; returns its token.
    pub fn start_upload(
        &self,
        target: PathBuf,
        tmp: PathBuf,
        size: u64,
        owner: (u32, u32),
    ) -> String {
        self.purge();
        let t = token();
        if let Ok(mut u) = self.uploads.lock() {
            u.insert(
                t.clone(),
                Upload {
                    target,
                    tmp,
                    size,
                    offset: 0,
                    owner,
                    busy: false,
                    touched: Instant::now(),
                },
            );
        }
        t
    }

    /// The state of an upload.
    pub fn upload(&self, token: &str) -> Option<Upload> {
        self.uploads.lock().ok()?.get(token).cloned()
    }

    /// Claims an upload for one PATCH (None if unknown or busy).
    pub fn claim(&self, token: &str) -> Option<Upload> {
        let mut u = self.uploads.lock().ok()?;
        let up = u.get_mut(token)?;
        if up.busy {
            return None;
        }
        up.busy = true;
        up.touched = Instant::now();
        Some(up.clone())
    }

    /// Releases a claimed upload at a new offset; `done` forgets it.
    pub fn release(&self, token: &str, offset: u64, done: bool) {
        if let Ok(mut u) = self.uploads.lock() {
            if done {
                u.remove(token);
            } else if let Some(up) = u.get_mut(token) {
                up.busy = false;
                up.offset = offset;
                up.touched = Instant::now();
            }
        }
    }

    /// Registers a download; returns its token.
    pub fn start_download(&self, path: PathBuf) -> String {
        self.purge();
        let t = token();
        if let Ok(mut d) = self.downloads.lock() {
            d.insert(
                t.clone(),
                Download {
                    path,
                    touched: Instant::now(),
                },
            );
        }
        t
    }

    /// The file of a download token (kept for resumes).
    pub fn download(&self, token: &str) -> Option<PathBuf> {
        let mut d = self.downloads.lock().ok()?;
        let dl = d.get_mut(token)?;
        dl.touched = Instant::now();
        Some(dl.path.clone())
    }
}

impl Transfers {
    /// Stub until the transfers rework lands: revokes a user's tokens.
    pub fn revoke_user(&self, _user_id: &str) {}
}
