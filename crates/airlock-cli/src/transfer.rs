//! File transfer helpers: progress bars on stderr and safe tar extraction.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{CliError, CliResult};

/// A byte progress bar on stderr (hidden when stderr is not a terminal).
pub fn bar(len: Option<u64>, label: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    let style = if len.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {bytes} {bytes_per_sec}"
    };
    if let Ok(s) = ProgressStyle::with_template(style) {
        pb.set_style(s.progress_chars("=> "));
    }
    pb.set_message(label.to_owned());
    pb
}

/// Percent-encodes one URL path segment or query value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Whether a link target stays inside the extraction directory.
fn link_stays_inside(entry_path: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = entry_path.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Extracts a tar stream into `dest` like Python's tarfile `data` filter:
/// no absolute paths, no `..`, no links leading out, no device files;
/// setuid/setgid/sticky and group/other write bits are cleared, other mode
/// bits kept (so `id_container` stays 0600). Returns the top-level names.
pub fn extract_tar(reader: impl Read, dest: &Path) -> CliResult<Vec<(PathBuf, u32)>> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    let mut out = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| CliError::new(format!("the download is not a valid archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| CliError::new(format!("the download was cut short: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| CliError::new(format!("bad path in the archive: {e}")))?
            .into_owned();
        if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(CliError::new(format!(
                "refusing to extract {}: it would land outside {}",
                path.display(),
                dest.display()
            )));
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            if !link_stays_inside(&path, &target) {
                return Err(CliError::new(format!(
                    "refusing to extract the link {} -> {}: it points outside {}",
                    path.display(),
                    target.display(),
                    dest.display()
                )));
            }
        } else if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777 & !0o7022;
        let unpacked = entry.unpack_in(dest).map_err(|e| {
            CliError::new(format!("cannot write {}: {e}", dest.join(&path).display()))
        })?;
        if !unpacked {
            continue;
        }
        let full = dest.join(&path);
        if !kind.is_symlink() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).map_err(
                |e| CliError::new(format!("cannot set the mode of {}: {e}", full.display())),
            )?;
        }
        if path.components().count() == 1 {
            out.push((full, mode));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tarball(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    #[test]
    fn keeps_private_modes_and_clears_dangerous_bits() {
        let data = tarball(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o600);
            b.append_data(&mut h, "id_container", &b"key"[..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o4777);
            b.append_data(&mut h, "suid", &b"x"[..]).unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let got = extract_tar(&data[..], dir.path()).unwrap();
        assert_eq!(got.len(), 2);
        let m = |n: &str| {
            std::fs::metadata(dir.path().join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(m("id_container"), 0o600);
        assert_eq!(m("suid"), 0o755);
    }

    #[test]
    fn refuses_escaping_links() {
        let data = tarball(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "evil", "/etc/passwd").unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        assert!(extract_tar(&data[..], dir.path()).is_err());
        assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("../c")));
    }
}
