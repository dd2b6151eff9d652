//! Folder transfers the way Backend.AI's storage proxy does them, for the
//! official client: `request-upload` hands out a token and a URL, the data
//! then arrives as tus 1.0 `PATCH` requests with offsets (resumable, `HEAD`
//! tells the offset); `request-download` hands out a token for a `GET` with
//! Range support. Tokens are the only credential on those URLs, so they are
//! random, single-purpose, belong to the user who asked for them, and expire
//! a fixed time after they were issued (use does not extend them).
//!
//! A token records the folder id, the path inside it and the user — never
//! a host path: every request resolves the path again beneath the folder
//! root ([`airlock_beneath`]). An upload's bytes go to an unnamed file held
//! here by descriptor; it gets its name only when the last byte is in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use airlock_beneath::NewFile;

/// Tokens expire this long after they were issued.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a token grants: one path of one folder, to one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The folder's id.
    pub folder_id: String,
    /// The path inside the folder (normalised, relative).
    pub path: String,
    /// The user who asked for the token.
    pub user_id: String,
}

/// An upload in progress, as seen by a request.
#[derive(Debug, Clone)]
pub struct Upload {
    /// What it writes.
    pub grant: Grant,
    /// Declared size.
    pub size: u64,
    /// Bytes received so far.
    pub offset: u64,
}

#[derive(Debug)]
struct UploadSlot {
    up: Upload,
    /// The unnamed file; taken out while a PATCH writes to it.
    file: Option<NewFile>,
    expires: Instant,
}

#[derive(Debug)]
struct Download {
    grant: Grant,
    expires: Instant,
}

/// Outstanding transfer tokens.
#[derive(Debug, Default)]
pub struct Transfers {
    uploads: Mutex<HashMap<String, UploadSlot>>,
    downloads: Mutex<HashMap<String, Download>>,
}

fn token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

impl Transfers {
    /// Forgets the uploads and downloads that `drop_it` picks; unfinished
    /// uploads (not being written right now) are thrown away.
    fn forget(&self, drop_it: impl Fn(&Grant, Instant) -> bool) {
        let mut dropped = Vec::new();
        if let Ok(mut u) = self.uploads.lock() {
            let gone: Vec<String> = u
                .iter()
                .filter(|(_, s)| drop_it(&s.up.grant, s.expires))
                .map(|(t, _)| t.clone())
                .collect();
            for t in gone {
                if let Some(s) = u.remove(&t) {
                    dropped.extend(s.file);
                }
            }
        }
        if let Ok(mut d) = self.downloads.lock() {
            d.retain(|_, dl| !drop_it(&dl.grant, dl.expires));
        }
        for f in dropped {
            f.discard();
        }
    }

    fn purge(&self) {
        let now = Instant::now();
        self.forget(|_, expires| expires <= now);
    }

    /// Registers an upload whose bytes go to `file`; returns its token.
    pub fn start_upload(&self, grant: Grant, file: NewFile, size: u64) -> String {
        self.purge();
        let t = token();
        if let Ok(mut u) = self.uploads.lock() {
            u.insert(
                t.clone(),
                UploadSlot {
                    up: Upload {
                        grant,
                        size,
                        offset: 0,
                    },
                    file: Some(file),
                    expires: Instant::now() + TOKEN_TTL,
                },
            );
        }
        t
    }

    /// The state of an upload (None if unknown or expired).
    pub fn upload(&self, token: &str) -> Option<Upload> {
        let u = self.uploads.lock().ok()?;
        let s = u.get(token)?;
        (s.expires > Instant::now()).then(|| s.up.clone())
    }

    /// Claims an upload for one PATCH: hands out its file (None if unknown,
    /// expired or another request holds it).
    pub fn claim(&self, token: &str) -> Option<(Upload, NewFile)> {
        let mut u = self.uploads.lock().ok()?;
        let s = u.get_mut(token)?;
        if s.expires <= Instant::now() {
            return None;
        }
        let file = s.file.take()?;
        Some((s.up.clone(), file))
    }

    /// Gives a claimed upload's file back at a new offset.
    pub fn release(&self, token: &str, offset: u64, file: NewFile) {
        let back = match self.uploads.lock() {
            Ok(mut u) => match u.get_mut(token) {
                Some(s) => {
                    s.up.offset = offset;
                    s.file = Some(file);
                    None
                }
                // Revoked while it was being written.
                None => Some(file),
            },
            Err(_) => Some(file),
        };
        if let Some(f) = back {
            f.discard();
        }
    }

    /// Forgets a finished (or failed for good) upload.
    pub fn finish(&self, token: &str) {
        if let Ok(mut u) = self.uploads.lock() {
            u.remove(token);
        }
    }

    /// Registers a download; returns its token.
    pub fn start_download(&self, grant: Grant) -> String {
        self.purge();
        let t = token();
        if let Ok(mut d) = self.downloads.lock() {
            d.insert(
                t.clone(),
                Download {
                    grant,
                    expires: Instant::now() + TOKEN_TTL,
                },
            );
        }
        t
    }

    /// What a download token grants (kept until it expires, for resumes).
    pub fn download(&self, token: &str) -> Option<Grant> {
        let d = self.downloads.lock().ok()?;
        let dl = d.get(token)?;
        (dl.expires > Instant::now()).then(|| dl.grant.clone())
    }

    /// Ends every token of a user (password change, account disabled);
    /// their unfinished uploads are thrown away.
    pub fn revoke_user(&self, user_id: &str) {
        self.forget(|g, _| g.user_id == user_id);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use airlock_beneath::{RelPath, Tree};

    fn grant(user: &str) -> Grant {
        Grant {
            folder_id: "f".into(),
            path: "a.txt".into(),
            user_id: user.into(),
        }
    }

    #[test]
    fn tokens_are_per_user_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("f")).unwrap();
        let root = std::fs::File::open(dir.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = root.metadata().unwrap();
        let f = Tree::open(root.as_fd(), "f", (m.uid(), m.gid())).unwrap();
        let t = Transfers::default();
        let up = t.start_upload(
            grant("alice"),
            f.create(&RelPath::new("a.txt").unwrap(), 0o644).unwrap(),
            3,
        );
        let down = t.start_download(grant("alice"));
        let other = t.start_download(grant("bob"));
        // One PATCH at a time.
        let (u, file) = t.claim(&up).unwrap();
        assert_eq!(u.grant.user_id, "alice");
        assert!(t.claim(&up).is_none());
        t.release(&up, 1, file);
        assert_eq!(t.upload(&up).unwrap().offset, 1);
        t.revoke_user("alice");
        assert!(t.upload(&up).is_none());
        assert!(t.download(&down).is_none());
        assert_eq!(t.download(&other).unwrap().user_id, "bob");
        assert!(t.download("nope").is_none());
    }
}
