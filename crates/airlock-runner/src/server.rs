//! The SSH server: configuration, accept loop and the per-connection handler.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{Auth, Handle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, SshId};
use ssh_key::HashAlg;
use ssh_key::{PrivateKey, PublicKey};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::queue::Backlog;
use crate::{eow, forward, keys, session};

/// Transport tuning knobs (docs/ssh-server-notes.md N4; measurements in BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// russh per-channel message queue length.
    pub channel_buffer_size: usize,
    /// Initial channel window we grant.
    pub window_size: u32,
    /// Max packet size we accept.
    pub maximum_packet_size: u32,
    /// Server keepalive interval.
    pub keepalive_interval: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            channel_buffer_size: 256,
            window_size: 8 * 1024 * 1024,
            maximum_packet_size: 65535,
            keepalive_interval: Duration::from_secs(15),
        }
    }
}

/// Everything the server needs to know.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The only login name accepted.
    pub user: String,
    /// Home directory of that user.
    pub home: PathBuf,
    /// The user's shell.
    pub shell: String,
    /// Authorized keys files, read at every authentication attempt
    /// (the merged list and the user's live `~/.ssh/authorized_keys`).
    pub authorized_keys: Vec<PathBuf>,
    /// Host key.
    pub host_key: PrivateKey,
    /// `PATH` given to shells and commands.
    pub path_env: String,
    /// Default `LANG` for sessions.
    pub lang: String,
    /// The container's own environment (image `ENV` and the session's
    /// variables), given to every shell and command; empty in standalone
    /// mode.
    pub base_env: Vec<(String, String)>,
    /// This executable (re-executed as `scp` when the image has none).
    pub self_exe: PathBuf,
    /// Transport tuning.
    pub tuning: Tuning,
}

/// The identification string. OpenSSH's client only sends
/// `eow@openssh.com` (needed for `ssh host cmd | head -1` to return, see
/// eow.rs) to servers whose software version starts with `OpenSSH`
/// (compat flag SSH_NEW_OPENSSH), so the runner announces itself as
/// OpenSSH-compatible; the comment part names the real implementation.
pub const SERVER_ID: &str = concat!(
    "SSH-2.0-OpenSSH_9.0 airlock-runner_",
    env!("CARGO_PKG_VERSION")
);

/// Default `PATH` for sessions when the server has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ServerSettings {
    /// The russh configuration derived from these settings.
    pub fn russh_config(&self) -> russh::server::Config {
        russh::server::Config {
            server_id: SshId::Standard(SERVER_ID.into()),
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(250),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![self.host_key.clone()],
            window_size: self.tuning.window_size,
            maximum_packet_size: self.tuning.maximum_packet_size,
            channel_buffer_size: self.tuning.channel_buffer_size,
            max_auth_attempts: 10,
            inactivity_timeout: None,
            keepalive_interval: Some(self.tuning.keepalive_interval),
            keepalive_max: 4,
            nodelay: true,
            ..Default::default()
        }
    }

    /// Which of the authorized keys `key` is, for the audit trail: the
    /// session key (the first line of the merged list the runner wrote at
    /// start), a key in the user's `~/.ssh/authorized_keys` (a `.ssh`
    /// folder), or an account key.
    pub fn key_source(&self, key: &PublicKey) -> &'static str {
        let merged = self
            .authorized_keys
            .first()
            .map(|f| keys::read_authorized_file(f))
            .unwrap_or_default();
        if merged.first().is_some_and(|k| keys::same_key(k, key)) {
            return "session key";
        }
        let in_file = |f: Option<&PathBuf>| {
            f.is_some_and(|f| {
                keys::read_authorized_file(f)
                    .iter()
                    .any(|k| keys::same_key(k, key))
            })
        };
        if in_file(self.authorized_keys.get(1)) {
            "authorized_keys"
        } else {
            "account key"
        }
    }

    /// Whether `key` is currently authorized (files are re-read every time).
    pub fn is_authorized(&self, key: &PublicKey) -> bool {
        self.authorized_keys.iter().any(|f| {
            keys::read_authorized_file(f)
                .iter()
                .any(|k| keys::same_key(k, key))
        })
    }
}

/// Serve SSH on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<ServerSettings>,
    shutdown: CancellationToken,
) -> Result<()> {
    let config = Arc::new(settings.russh_config());
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let config = config.clone();
        let settings = settings.clone();
        let token = shutdown.child_token();
        tokio::spawn(async move {
            if let Err(e) = connection(sock, peer, config, settings, token).await {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
    Ok(())
}

async fn connection(
    sock: TcpStream,
    peer: SocketAddr,
    config: Arc<russh::server::Config>,
    settings: Arc<ServerSettings>,
    token: CancellationToken,
) -> Result<()> {
    let _ = sock.set_nodelay(true);
    let local = sock
        .local_addr()
        .map_err(|e| Error::io("local address", e))?;
    debug!(%peer, "connection accepted");
    let conn_id = eow::new_conn_id();
    let handler = ConnHandler {
        settings,
        peer,
        local,
        conn_id,
        token: token.clone(),
        remote_forwards: HashMap::new(),
        backlog: Backlog::new(config.window_size),
    };
    let stream = eow::TaggedStream::new(sock, conn_id);
    let session = russh::server::run_stream(config, stream, handler).await?;
    let handle = session.handle();
    tokio::select! {
        r = session => r,
        _ = token.cancelled() => {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "server shutting down".into(), String::new())
                .await;
            Ok(())
        }
    }
}

/// Per-connection context handed to channel tasks.
#[derive(Clone)]
pub(crate) struct ConnCtx {
    pub settings: Arc<ServerSettings>,
    pub handle: Handle,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub conn_id: u64,
    pub token: CancellationToken,
    /// Client data not yet consumed, which steers the window (queue.rs).
    pub backlog: Backlog,
}

struct ConnHandler {
    settings: Arc<ServerSettings>,
    peer: SocketAddr,
    local: SocketAddr,
    conn_id: u64,
    token: CancellationToken,
    remote_forwards: HashMap<(String, u32), CancellationToken>,
    backlog: Backlog,
}

impl Drop for ConnHandler {
    fn drop(&mut self) {
        // Stops remote-forward listeners and agent sockets of this connection.
        self.token.cancel();
    }
}

/// Whether user-key signatures of this algorithm are accepted: everything
/// russh verifies except `ssh-rsa` (RSA with SHA-1).
pub fn accepted_signature_algorithm(algorithm: &ssh_key::Algorithm) -> bool {
    !matches!(algorithm, ssh_key::Algorithm::Rsa { hash: None })
}

impl ConnHandler {
    fn ctx(&self, session: &Session) -> ConnCtx {
        ConnCtx {
            settings: self.settings.clone(),
            handle: session.handle(),
            peer: self.peer,
            local: self.local,
            conn_id: self.conn_id,
            token: self.token.clone(),
            backlog: self.backlog.clone(),
        }
    }

    /// Refuses signature algorithms OpenSSH (>= 8.8) no longer accepts by
    /// default: `ssh-rsa` means RSA with SHA-1. RSA keys stay usable with
    /// `rsa-sha2-256`/`rsa-sha2-512` signatures.
    fn refuse_algorithm(&self, user: &str, algorithm: &ssh_key::Algorithm) -> Option<Auth> {
        if accepted_signature_algorithm(algorithm) {
            return None;
        }
        info!(peer = %self.peer, "refused publickey for {user:?}: signature algorithm {algorithm} (SHA-1) is not accepted; use rsa-sha2-256/512 or an ed25519 key");
        Some(Auth::reject())
    }

    async fn check_key(&self, user: &str, key: &PublicKey, stage: &str) -> Auth {
        let fp = key.fingerprint(HashAlg::Sha256);
        if user != self.settings.user {
            info!(peer = %self.peer, "refused {stage} for user {user:?}: only {:?} may log in", self.settings.user);
            return Auth::reject();
        }
        // The key files are read at every attempt (a key added to a `.ssh`
        // folder works at once), on the blocking pool.
        let (settings, k) = (self.settings.clone(), key.clone());
        let source = tokio::task::spawn_blocking(move || {
            settings.is_authorized(&k).then(|| settings.key_source(&k))
        })
        .await
        .ok()
        .flatten();
        if let Some(source) = source {
            if stage == "publickey" {
                info!(peer = %self.peer, "accepted publickey for {user} ({} {fp})", key.algorithm());
                crate::audit::emit(
                    self.peer,
                    "ssh.auth",
                    serde_json::json!({
                        "user": user,
                        "algorithm": key.algorithm().to_string(),
                        "fingerprint": fp.to_string(),
                        "key": source,
                    }),
                );
            }
            Auth::Accept
        } else {
            info!(peer = %self.peer, "refused {stage} for {user}: key {} {fp} is not authorized", key.algorithm());
            if stage == "publickey" {
                crate::audit::emit(
                    self.peer,
                    "ssh.auth-failed",
                    serde_json::json!({
                        "user": user,
                        "fingerprint": fp.to_string(),
                    }),
                );
            }
            Auth::reject()
        }
    }
}

impl russh::server::Handler for ConnHandler {
    type Error = Error;

    /// The window of russh's next adjustment: full, or a trickle while a
    /// channel of this connection is behind (see queue.rs for why this is
    /// the connection's only flow control).
    fn adjust_window(&mut self, _channel: ChannelId, _current: u32) -> u32 {
        self.backlog.target_window()
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth> {
        debug!(peer = %self.peer, "auth none for {user:?}: publickey required");
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth> {
        info!(peer = %self.peer, "refused password authentication for {user:?}: only publickey is allowed");
        Ok(Auth::reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth> {
        info!(peer = %self.peer, "refused keyboard-interactive for {user:?}: only publickey is allowed");
        Ok(Auth::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth> {
        if let Some(refusal) = self.refuse_algorithm(user, offer.algorithm) {
            return Ok(refusal);
        }
        Ok(self
            .check_key(user, offer.public_key, "publickey offer")
            .await)
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth> {
        if let Some(refusal) = self.refuse_algorithm(user, key.algorithm) {
            return Ok(refusal);
        }
        Ok(self.check_key(user, key.public_key, "publickey").await)
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        _certificate: &ssh_key::Certificate,
    ) -> Result<Auth> {
        info!(peer = %self.peer, "refused certificate for {user:?}: certificates are not supported");
        Ok(Auth::reject())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<()> {
        reply.accept().await;
        let ctx = self.ctx(session);
        tokio::spawn(session::run(channel, ctx));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<()> {
        let host = host_to_connect.to_string();
        let peer = self.peer;
        let backlog = self.backlog.clone();
        // Connect off the session loop (docs/ssh-server-notes.md N5).
        tokio::spawn(async move {
            let Ok(port) = u16::try_from(port_to_connect) else {
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return;
            };
            let result = forward::connect_tcp(&host, port).await;
            crate::audit::emit(
                peer,
                "ssh.forward",
                serde_json::json!({
                    "direction": "local",
                    "destination": format!("{host}:{port}"),
                    "ok": result.is_ok(),
                }),
            );
            match result {
                Ok(stream) => {
                    debug!(%peer, "direct-tcpip to {host}:{port}");
                    reply.accept().await;
                    forward::bridge(channel, stream, backlog).await;
                }
                Err(e) => {
                    info!(%peer, "direct-tcpip to {host}:{port} failed: {e}");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<()> {
        let path = socket_path.to_string();
        let peer = self.peer;
        let backlog = self.backlog.clone();
        tokio::spawn(async move {
            match tokio::net::UnixStream::connect(&path).await {
                Ok(stream) => {
                    reply.accept().await;
                    forward::bridge(channel, stream, backlog).await;
                }
                Err(e) => {
                    info!(%peer, "direct-streamlocal to {path} failed: {e}");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<()> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    // Channel requests reach both the Channel (handled by the channel task) and
    // these methods, which only answer want-reply (docs/ssh-server-notes.md N3).
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<()> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<()> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<()> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<()> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<()> {
        debug!(peer = %self.peer, "exec {:?}", String::from_utf8_lossy(data));
        session.channel_success(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<()> {
        if name == "sftp" {
            session.channel_success(channel)?;
        } else {
            info!(peer = %self.peer, "refused unknown subsystem {name:?}");
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<()> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn agent_request(&mut self, _channel: ChannelId, _session: &mut Session) -> Result<bool> {
        Ok(true)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool> {
        let Ok(p) = u16::try_from(*port) else {
            return Ok(false);
        };
        match forward::listen_remote(
            address,
            p,
            session.handle(),
            self.backlog.clone(),
            self.token.child_token(),
        )
        .await
        {
            Ok((bound, token)) => {
                info!(peer = %self.peer, "remote forward {address}:{bound} listening");
                crate::audit::emit(
                    self.peer,
                    "ssh.forward",
                    serde_json::json!({
                        "direction": "remote",
                        "listen": format!("{address}:{bound}"),
                    }),
                );
                if *port == 0 {
                    *port = u32::from(bound);
                }
                self.remote_forwards
                    .insert((address.to_string(), u32::from(bound)), token);
                Ok(true)
            }
            Err(e) => {
                info!(peer = %self.peer, "remote forward {address}:{p} refused: {e}");
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool> {
        match self.remote_forwards.remove(&(address.to_string(), port)) {
            Some(t) => {
                t.cancel();
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use ssh_key::{Algorithm, HashAlg};

    use super::accepted_signature_algorithm;

    #[test]
    fn sha1_rsa_signatures_are_not_accepted() {
        assert!(!accepted_signature_algorithm(&Algorithm::Rsa {
            hash: None
        }));
        assert!(accepted_signature_algorithm(&Algorithm::Rsa {
            hash: Some(HashAlg::Sha256)
        }));
        assert!(accepted_signature_algorithm(&Algorithm::Rsa {
            hash: Some(HashAlg::Sha512)
        }));
        assert!(accepted_signature_algorithm(&Algorithm::Ed25519));
    }
}
