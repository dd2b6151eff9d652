//! The real OpenSSH client, always with host-key checking on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{Output, run};

/// A client identity and a known_hosts file in a temporary directory.
pub struct SshClient {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
}

impl SshClient {
    /// A fresh ed25519 key.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@airlock", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
        Self { dir, key }
    }

    /// Uses an existing private key (copied, mode 0600).
    pub fn with_key(path: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::copy(path, &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self { dir, key }
    }

    /// The public key line.
    pub fn public_key(&self) -> String {
        std::fs::read_to_string(self.key.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Pins `host_key` (an OpenSSH public key line) for `[host]:port`.
    pub fn pin(&self, host: &str, port: u16, host_key: &str) -> PathBuf {
        let kh = self.dir.path().join("known_hosts");
        let pattern = if port == 22 {
            host.to_owned()
        } else {
            format!("[{host}]:{port}")
        };
        let mut content = std::fs::read_to_string(&kh).unwrap_or_default();
        content.push_str(&format!("{pattern} {host_key}\n"));
        std::fs::write(&kh, content).unwrap();
        kh
    }

    /// Base options: this key only, strict host key checking against the
    /// pinned file, batch mode, deadlines.
    pub fn options(&self) -> Vec<String> {
        let kh = self.dir.path().join("known_hosts");
        [
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "LogLevel=ERROR",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([
            "-o".to_owned(),
            format!("UserKnownHostsFile={}", kh.display()),
        ])
        .chain(["-i".to_owned(), self.key.display().to_string()])
        .collect()
    }

    /// `ssh -p PORT work@HOST CMD`.
    pub fn ssh(&self, host: &str, port: u16, cmd: &str) -> Output {
        let mut c = Command::new("ssh");
        c.args(self.options())
            .args(["-p", &port.to_string(), &format!("work@{host}"), cmd]);
        run(&mut c, None, Duration::from_secs(120))
    }
}

impl Default for SshClient {
    fn default() -> Self {
        Self::new()
    }
}

/// sha256 of a file (via coreutils).
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The SHA256 fingerprint of a public key file (via `ssh-keygen -lf`).
pub fn fingerprint(public_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

/// Writes `mib` MiB of random data to `path`.
pub fn random_file(path: &Path, mib: u64) {
    let st = Command::new("dd")
        .args([
            "if=/dev/urandom",
            "bs=1M",
            &format!("count={mib}"),
            "status=none",
        ])
        .arg(format!("of={}", path.display()))
        .status()
        .unwrap();
    assert!(st.success());
}
