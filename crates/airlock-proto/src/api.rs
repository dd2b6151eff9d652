//! JSON shapes of the gateway API that airlock's own CLI and web UI use.
//! (Backend.AI-compatible shapes that only the official client needs live in
//! the gateway, next to the handlers that produce them.)

use serde::{Deserialize, Serialize};

/// `GET /` and `GET /func/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// API version (`v9.20250722`).
    pub version: String,
    /// Server name and version (`airlock 0.1.0`).
    pub manager: String,
}

/// Account data returned by a successful login and by `login-check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// Login email.
    pub email: String,
    /// `admin` or `user`.
    pub role: String,
    /// `active` or `inactive`.
    pub status: String,
    /// The user's API access key.
    pub access_key: String,
    /// Same as `role == "admin"`.
    pub is_admin: bool,
}

/// `POST /server/login` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Whether the credentials were accepted.
    pub authenticated: bool,
    /// [`AccountInfo`] on success, `{type,title,details}` on failure.
    pub data: serde_json::Value,
}

/// `GET /server/login-check` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginCheck {
    /// Whether the cookie belongs to a live session.
    pub authenticated: bool,
    /// [`AccountInfo`] when authenticated, `{}` otherwise.
    pub data: serde_json::Value,
    /// The web session id when authenticated.
    pub session_id: Option<String>,
}

/// A user's settings (`GET /user/settings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSettings {
    /// Preferred local port for SSH/SFTP proxies, if set.
    pub ssh_port: Option<u16>,
}

/// `PATCH /user/settings` body. `ssh_port` may be a number, a numeric string,
/// `0`, `""` or `null` (the last three clear it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserSettingsUpdate {
    /// New preferred port; absent leaves it unchanged, `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub ssh_port: Option<serde_json::Value>,
}

/// Maps a present field (even `null`) to `Some`, so that absent and `null`
/// differ.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// `PATCH /user/settings` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSettingsSaved {
    /// The settings now in effect.
    pub settings: UserSettings,
    /// Advice about the accepted values (e.g. a port outside the recommended range).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// An SSH public key registered on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKeyInfo {
    /// Stable id (UUID).
    pub id: String,
    /// User-chosen name.
    pub name: String,
    /// Key algorithm.
    pub algorithm: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// The public key line.
    pub public_key: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// `POST /user/ssh-keys` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddSshKey {
    /// A name for the key (defaults to its comment).
    #[serde(default)]
    pub name: Option<String>,
    /// The public key line.
    pub public_key: String,
}

/// `GET/POST /user/keypair` answer: the API keypair. The secret key is
/// present only in the answer that created it.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeypairInfo {
    /// Access key; `None` when the account has no keypair (revoked).
    pub access_key: Option<String>,
    /// Secret key; only right after regeneration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

impl std::fmt::Debug for KeypairInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeypairInfo")
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// `POST /user/password` body.
#[derive(Clone, Serialize, Deserialize)]
pub struct ChangePassword {
    /// The current password.
    pub old_password: String,
    /// The new one (at least 8 characters).
    pub new_password: String,
}

impl std::fmt::Debug for ChangePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangePassword { <secret> }")
    }
}

/// A session service (Backend.AI's `servicePorts` item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// `sshd`.
    pub name: String,
    /// `tcp`.
    pub protocol: String,
    /// Container ports.
    pub ports: Vec<u16>,
}

impl ServicePort {
    /// The SSH/SFTP service every session has.
    pub fn sshd() -> Self {
        ServicePort {
            name: "sshd".into(),
            protocol: "tcp".into(),
            ports: vec![crate::SSHD_PORT],
        }
    }
}

/// `POST /session` answer (Backend.AI's shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated {
    /// UUID.
    pub session_id: String,
    /// Name.
    pub session_name: String,
    /// Status after waiting.
    pub status: String,
    /// Why, for ERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_info: Option<String>,
    /// Services.
    pub service_ports: Vec<ServicePort>,
    /// False when an existing session was reused.
    pub created: bool,
}

/// A session as airlock's CLI and web UI see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner's email.
    pub owner: String,
    /// Image.
    pub image: String,
    /// PENDING, PREPARING, RUNNING, TERMINATING, TERMINATED, ERROR.
    pub status: String,
    /// Reason for the status, if any.
    pub status_info: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once terminated.
    pub terminated_at: Option<String>,
    /// CPU cores.
    pub cpu: f64,
    /// Memory in bytes.
    pub mem_bytes: u64,
    /// Whole NVIDIA GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// Mounted folder names.
    pub mounts: Vec<String>,
    /// The session's SSH host public key (OpenSSH line).
    pub host_key: Option<String>,
    /// Its SHA256 fingerprint.
    pub host_key_fingerprint: Option<String>,
    /// Node.
    pub agent: Option<String>,
    /// The node has stopped reporting (for a live session: it cannot be
    /// reached until the node is back; `status_info` says since when).
    #[serde(default)]
    pub node_unreachable: bool,
    /// Services.
    pub service_ports: Vec<ServicePort>,
    /// Fingerprints of the account SSH keys authorised in the session (keys
    /// added to the account later are not).
    #[serde(default)]
    pub key_fingerprints: Vec<String>,
}

/// A storage folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderInfo {
    /// UUID as 32 hex digits (Backend.AI's form).
    pub id: String,
    /// Name.
    pub name: String,
    /// Storage host.
    pub host: String,
    /// Owner's email.
    pub owner: String,
    /// RFC 3339.
    pub created_at: String,
    /// `general`.
    pub usage_mode: String,
    /// `rw`.
    pub permission: String,
    /// `user`.
    pub ownership_type: String,
    /// Whether it is mounted in every new session (name starts with a dot).
    pub automount: bool,
    /// Live sessions that mount it.
    #[serde(default)]
    pub mounted_in: Vec<String>,
}

/// An entry of a folder listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderEntry {
    /// Name.
    pub name: String,
    /// `file`, `dir`, `symlink`, or a special file: `fifo`, `socket`,
    /// `char-device`, `block-device` (listed, never opened).
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// `-rw-r--r--`.
    pub mode: String,
    /// RFC 3339.
    pub modified: String,
}

/// `GET /session/{s}/ping` answer: the hops behind the gateway
/// (`airlock ping`). Times in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionPing {
    /// Session name.
    pub session: String,
    /// `embedded` (the agent runs in the gateway's process) or `remote`.
    pub agent: String,
    /// Gateway → agent round trip; `None` for an embedded agent.
    pub gateway_agent_ms: Option<f64>,
    /// Agent → runner TCP connect.
    pub agent_runner_connect_ms: f64,
    /// Agent → runner: connected until the SSH identification line arrived.
    pub agent_runner_banner_ms: f64,
    /// The runner's SSH identification line.
    pub runner_banner: String,
}
