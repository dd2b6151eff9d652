//! Key generation, key files and authorized-keys handling.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};

use crate::error::{Error, Result};

/// Generate a fresh ed25519 key pair.
pub fn generate_ed25519(comment: &str) -> Result<PrivateKey> {
    let mut rng = rand::rng();
    let mut key = PrivateKey::random(&mut rng, Algorithm::Ed25519)?;
    key.set_comment(comment);
    Ok(key)
}

/// Write `contents` to `path` atomically-ish (temp file + rename) with `mode`.
pub fn write_file_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.airlock-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::path("create", &tmp, e))?;
    f.write_all(contents)
        .map_err(|e| Error::path("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::path("sync", &tmp, e))?;
    drop(f);
    // The mode given to open() is filtered by the umask: set it explicitly.
    set_mode(&tmp, mode)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::path("rename to", path, e))?;
    Ok(())
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::path("chmod", path, e))
}

/// Write a private key in OpenSSH format with mode 0600.
pub fn write_private_key(path: &Path, key: &PrivateKey) -> Result<()> {
    let pem = key.to_openssh(LineEnding::LF)?;
    write_file_mode(path, pem.as_bytes(), 0o600)
}

/// Write a public key line with mode 0644.
pub fn write_public_key(path: &Path, key: &PublicKey) -> Result<()> {
    let mut line = key.to_openssh()?;
    line.push('\n');
    write_file_mode(path, line.as_bytes(), 0o644)
}

/// Read a private key in OpenSSH format.
pub fn read_private_key(path: &Path) -> Result<PrivateKey> {
    let data = std::fs::read_to_string(path).map_err(|e| Error::path("read", path, e))?;
    Ok(PrivateKey::from_openssh(data)?)
}

/// Load the host key from `path`, generating (and writing) one if missing.
pub fn load_or_generate_host_key(path: &Path) -> Result<PrivateKey> {
    if path.exists() {
        return read_private_key(path);
    }
    let key = generate_ed25519("airlock-host-key")?;
    write_private_key(path, &key)?;
    let pub_path = path.with_extension("pub");
    if pub_path != path {
        write_public_key(&pub_path, key.public_key())?;
    }
    Ok(key)
}

/// Outcome of parsing one authorized_keys style line.
#[derive(Debug)]
pub enum KeyLine {
    /// A usable key.
    Key(PublicKey),
    /// Blank line or comment.
    Skip,
    /// Unusable line, with the reason.
    Bad(String),
}

/// Parse one authorized_keys line. Lines with options (`command=`, `from=`, …)
/// are refused, because the runner cannot enforce them.
pub fn parse_key_line(line: &str) -> KeyLine {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return KeyLine::Skip;
    }
    match line.parse::<ssh_key::authorized_keys::Entry>() {
        Ok(entry) => {
            if entry.config_opts().is_empty() {
                KeyLine::Key(entry.public_key().clone())
            } else {
                KeyLine::Bad("key options are not supported".to_string())
            }
        }
        Err(e) => KeyLine::Bad(e.to_string()),
    }
}

/// Parse a whole authorized_keys text; malformed lines are reported with
/// `warn(source, line_no, reason)` and skipped.
pub fn parse_authorized(
    text: &str,
    source: &str,
    warn: &mut dyn FnMut(&str, usize, &str),
) -> Vec<PublicKey> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_key_line(line) {
            KeyLine::Key(k) => out.push(k),
            KeyLine::Skip => {}
            KeyLine::Bad(reason) => warn(source, i + 1, &reason),
        }
    }
    out
}

/// Read an authorized_keys file; a missing file gives an empty list.
pub fn read_authorized_file(path: &Path) -> Vec<PublicKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_authorized(&text, &path.display().to_string(), &mut |src, n, why| {
            tracing::warn!("{src}:{n}: skipping authorized key: {why}");
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!("cannot read {}: {e}", path.display());
            Vec::new()
        }
    }
}

/// Whether two public keys are the same key (comments ignored).
pub fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parse_lines() {
        let k = generate_ed25519("c").unwrap();
        let line = k.public_key().to_openssh().unwrap();
        assert!(matches!(parse_key_line(&line), KeyLine::Key(_)));
        assert!(matches!(parse_key_line("# x"), KeyLine::Skip));
        assert!(matches!(parse_key_line("garbage"), KeyLine::Bad(_)));
        let with_opts = format!("command=\"/bin/true\" {line}");
        assert!(matches!(parse_key_line(&with_opts), KeyLine::Bad(_)));
        let mut n = 0;
        let keys = parse_authorized(&format!("{line}\nbad\n\n"), "t", &mut |_, _, _| n += 1);
        assert_eq!(keys.len(), 1);
        assert_eq!(n, 1);
        assert!(same_key(&keys[0], k.public_key()));
    }
}
