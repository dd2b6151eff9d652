//! The web UI's terminal: the browser's WebSocket ⇄ a kept shell in the
//! session.
//!
//! The gateway opens the same stream a tunnel uses (gateway → agent →
//! runner, [`crate::tunnels::open_runner`]), logs in to the runner as its
//! one user with the session's own key (`~/id_container`, read through the
//! agent), pins the host key the gateway recorded for the session, asks
//! for a pty and runs `airlock-attach NAME`: the runner keeps that shell
//! when the WebSocket goes away, so a reload or a network blip re-attaches
//! to the same shell (runner `session/keep.rs`). This is the one place the
//! gateway speaks SSH rather than relaying it.
//!
//! The WebSocket carries: browser → gateway BINARY frames of keystrokes
//! and TEXT frames of JSON control messages (`{"resize":{"cols":C,"rows":R}}`);
//! gateway → browser BINARY frames of terminal output and one TEXT frame
//! `{"exit":STATUS}` when the shell ends (then a normal close). Close code
//! 4000 ([`TAKEN_OVER`]) says another viewer took the shell over.

use std::sync::Arc;
use std::time::Duration;

use airlock_tunnel::Counters;
use futures_util::{SinkExt as _, StreamExt as _};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, client};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::store::SessionRow;
use crate::tunnels::RunnerStream;

/// The runner's command that attaches to a kept shell.
const ATTACH: &str = "airlock-attach";

/// The WebSocket close code for [`Ended::TakenOver`] (4000–4999 are the
/// application's); the page then waits for the user instead of
/// reconnecting.
pub const TAKEN_OVER: u16 = 4000;

/// How long logging in to the runner may take.
const LOGIN_DEADLINE: Duration = Duration::from_secs(20);

/// Why a terminal could not be opened (a reason for people).
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// The session has no recorded host key to pin.
    #[error("the session has not reported its host key yet; try again in a moment")]
    NoHostKey,
    /// The session's key could not be used.
    #[error("the session key ~/id_container cannot be used: {0}")]
    BadKey(String),
    /// SSH to the runner failed.
    #[error("cannot log in to the session: {0}")]
    Ssh(String),
    /// Logging in took too long.
    #[error("logging in to the session timed out")]
    Timeout,
}

/// A terminal name: 1–64 of `A-Z a-z 0-9 . _ -` (the runner checks too).
pub fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The terminal's first size.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Columns.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
}

impl Size {
    /// Within what a pty takes (1–1000 each way; 80×24 when unknown).
    pub fn clamped(cols: Option<u32>, rows: Option<u32>) -> Self {
        Self {
            cols: cols.unwrap_or(80).clamp(1, 1000),
            rows: rows.unwrap_or(24).clamp(1, 1000),
        }
    }
}

/// Checks the runner's host key against the recorded one.
struct Pinned {
    expected: PublicKey,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Only the recorded key itself; a certificate is never expected.
        Ok(key.certificate().is_none() && key.public_key().key_data() == self.expected.key_data())
    }
}

/// A logged-in shell channel, ready to relay.
pub struct Shell {
    handle: client::Handle<Pinned>,
    channel: russh::Channel<client::Msg>,
}

/// Logs in to session `s`'s runner over `stream` with `key` (the
/// session's `id_container`) and attaches to kept shell `name`.
pub async fn open(
    stream: Box<dyn RunnerStream>,
    s: &SessionRow,
    key: &[u8],
    name: &str,
    size: Size,
) -> Result<Shell, TerminalError> {
    let line = s.host_key.as_deref().ok_or(TerminalError::NoHostKey)?;
    let expected = PublicKey::from_openssh(line.trim()).map_err(|_| TerminalError::NoHostKey)?;
    let key = std::str::from_utf8(key)
        .map_err(|_| TerminalError::BadKey("not an OpenSSH private key".into()))
        .and_then(|pem| {
            russh::keys::decode_secret_key(pem, None)
                .map_err(|e| TerminalError::BadKey(e.to_string()))
        })?;
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        ..Default::default()
    });
    let login = async {
        let mut handle = client::connect_stream(config, stream, Pinned { expected })
            .await
            .map_err(|e| TerminalError::Ssh(e.to_string()))?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| TerminalError::Ssh(e.to_string()))?
            .flatten();
        let auth = handle
            .authenticate_publickey(
                airlock_proto::CONTAINER_USER,
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(|e| TerminalError::Ssh(e.to_string()))?;
        if !auth.success() {
            return Err(TerminalError::Ssh(
                "the session no longer accepts its ~/id_container key".into(),
            ));
        }
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| TerminalError::Ssh(e.to_string()))?;
        channel
            .request_pty(false, "xterm-256color", size.cols, size.rows, 0, 0, &[])
            .await
            .map_err(|e| TerminalError::Ssh(e.to_string()))?;
        channel
            .exec(false, format!("{ATTACH} {name}"))
            .await
            .map_err(|e| TerminalError::Ssh(e.to_string()))?;
        Ok(Shell { handle, channel })
    };
    tokio::time::timeout(LOGIN_DEADLINE, login)
        .await
        .map_err(|_| TerminalError::Timeout)?
}

/// A control message from the browser.
#[derive(Debug, Deserialize)]
struct Control {
    resize: Option<Resize>,
}

#[derive(Debug, Deserialize)]
struct Resize {
    cols: u32,
    rows: u32,
}

/// How a terminal connection ended.
#[derive(Debug)]
pub enum Ended {
    /// The shell exited with this status (or a signal: `None`).
    Exited(Option<u32>),
    /// The browser went away; the shell is kept.
    Detached,
    /// Another viewer (a second tab, `ssh -t S airlock-attach`) took the
    /// shell over; it is kept.
    TakenOver,
    /// The session's side closed.
    Closed,
    /// The gateway is shutting down.
    Shutdown,
}

/// Relays between the browser and the shell until one side ends, counting
/// keystroke bytes in `from_ws` and output bytes in `to_ws`.
pub async fn relay<S>(
    ws: WebSocketStream<S>,
    shell: Shell,
    counters: &Counters,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use std::sync::atomic::Ordering::Relaxed;
    let Shell { handle, channel } = shell;
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut rd, wr) = channel.split();
    let mut status: Option<u32> = None;
    let mut taken_over = false;
    let ended = loop {
        tokio::select! {
            m = ws_rx.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    counters.from_ws.fetch_add(b.len() as u64, Relaxed);
                    if wr.data_bytes(b).await.is_err() {
                        break Ended::Closed;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(Control { resize: Some(r) }) = serde_json::from_str::<Control>(&t) {
                        let size = Size::clamped(Some(r.cols), Some(r.rows));
                        let _ = wr.window_change(size.cols, size.rows, 0, 0).await;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break Ended::Detached,
                Some(Ok(_)) => {}
            },
            m = rd.wait() => match m {
                Some(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                    counters.to_ws.fetch_add(data.len() as u64, Relaxed);
                    if ws_tx.send(Message::Binary(data)).await.is_err() {
                        break Ended::Detached;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::ExitSignal { signal_name: russh::Sig::Custom(n), .. })
                    if n == airlock_proto::TERMINAL_TAKEN_OVER => taken_over = true,
                Some(ChannelMsg::ExitSignal { .. }) => status = None,
                Some(ChannelMsg::Close) | None => {
                    break if taken_over {
                        Ended::TakenOver
                    } else if status.is_some() {
                        Ended::Exited(status)
                    } else {
                        Ended::Closed
                    };
                }
                Some(_) => {}
            },
            _ = shutdown.cancelled() => break Ended::Shutdown,
        }
    };
    let (code, reason) = match &ended {
        Ended::Exited(s) => {
            let _ = ws_tx
                .send(Message::Text(
                    serde_json::json!({ "exit": s }).to_string().into(),
                ))
                .await;
            (CloseCode::Normal, "the shell exited")
        }
        Ended::Detached => (CloseCode::Normal, ""),
        Ended::TakenOver => (
            CloseCode::Library(TAKEN_OVER),
            "this terminal was opened elsewhere",
        ),
        Ended::Closed => (CloseCode::Again, "the session closed the terminal"),
        Ended::Shutdown => (CloseCode::Restart, "the gateway is restarting"),
    };
    let _ = ws_tx
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    // Leaves the shell to the runner's grace period.
    let _ = wr.close().await;
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sizes() {
        assert!(valid_name("main"));
        assert!(valid_name("a.b_c-1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(&"x".repeat(65)));
        let s = Size::clamped(None, Some(0));
        assert_eq!((s.cols, s.rows), (80, 1));
        let s = Size::clamped(Some(5000), Some(40));
        assert_eq!((s.cols, s.rows), (1000, 40));
    }
}
