//! Kept terminals: `airlock-attach NAME` (on a pty) attaches the channel to
//! a login shell that outlives it, as `tmux new -A -s NAME` would.
//!
//! The web UI's terminal runs this, so a closed tab or a network blip does
//! not end the shell: the next attach under the same name finds it, with
//! the last [`RING`] bytes of its output replayed to repaint the screen.
//! One viewer at a time: a new attach takes the shell over and the older
//! channel is told so and closed. A shell nobody is attached to is hung up
//! after [`GRACE`]; a shell that exits ends its viewer's channel with its
//! exit status and is forgotten. `ssh -t S airlock-attach main` reaches
//! the browser's shell from a terminal.
//!
//! Written here rather than by running tmux because the runner must work in
//! any image, which need not have tmux (or anything else).

use std::collections::{HashMap, VecDeque};
use std::process::ExitStatus;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use russh::{ChannelReadHalf, Sig};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::{
    FromClient, PtyIn, PtyReq, Spec, Tx, fail, feed_pty, finish, from_client, group_of,
    spawn_on_pty,
};
use crate::server::ConnCtx;

/// The command word.
pub(crate) const ATTACH: &str = "airlock-attach";

/// Output kept for the next viewer (enough to repaint a screen).
const RING: usize = 64 * 1024;

/// How long a shell nobody is attached to is kept.
pub(crate) const GRACE: Duration = Duration::from_secs(15 * 60);

/// Most kept shells per session (each is a shell and a pty).
const MAX_KEPT: usize = 32;

/// Output chunks in flight to one viewer; the pty's reader waits beyond.
const VIEWER_QUEUE: usize = 64;

/// The name of a kept terminal, if `command` is `airlock-attach NAME`.
pub(crate) fn attach_name(command: &str) -> Option<Result<String, String>> {
    let words = super::split_simple(command)?;
    let (first, rest) = words.split_first()?;
    if first != ATTACH {
        return None;
    }
    Some(match rest {
        [name] if valid_name(name) => Ok(name.clone()),
        [] => Ok("main".to_owned()),
        _ => Err(format!(
            "usage: {ATTACH} [NAME] (NAME: 1 to 64 of A-Z a-z 0-9 . _ -)"
        )),
    })
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What a viewer's channel is sent.
enum Out {
    Data(Bytes),
    Exit(ExitStatus),
}

/// One kept shell.
struct Kept {
    name: String,
    pgid: Option<Pid>,
    /// Input and resizes for the pty; drained by one writer task.
    input: mpsc::UnboundedSender<PtyIn>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last output, replayed to a new viewer.
    ring: VecDeque<u8>,
    /// Bumped at every attach and detach: a grace timer or a leaving viewer
    /// acts only if nothing happened since.
    epoch: u64,
    viewer: Option<mpsc::Sender<Out>>,
    exited: bool,
}

static KEPT: LazyLock<Mutex<HashMap<String, Arc<Kept>>>> = LazyLock::new(Mutex::default);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serve `airlock-attach NAME` on this channel until the client leaves or
/// the shell exits.
pub(super) async fn attach(
    ctx: &ConnCtx,
    spec: Spec,
    name: String,
    mut rx: ChannelReadHalf,
    tx: Tx,
) {
    let Some(req) = spec.pty.clone() else {
        fail(
            &tx,
            format!("{ATTACH} needs a terminal: run it with `ssh -t`"),
        )
        .await;
        return;
    };
    let kept = match find_or_start(ctx, &spec, &name, &req) {
        Ok(k) => k,
        Err(e) => {
            fail(&tx, e).await;
            return;
        }
    };
    // Take the shell over: the ring is snapshotted and the new viewer
    // installed under one lock, so no output is lost or repeated.
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(VIEWER_QUEUE);
    let (replay, epoch) = {
        let mut st = lock(&kept.state);
        st.epoch += 1;
        if let Some(old) = st.viewer.replace(out_tx) {
            drop(old);
        }
        let replay: Vec<u8> = st.ring.iter().copied().collect();
        (replay, st.epoch)
    };
    let _ = kept
        .input
        .send(PtyIn::Resize(pty_process::Size::new_with_pixel(
            req.rows, req.cols, req.px_w, req.px_h,
        )));
    info!(peer = %ctx.peer, terminal = %kept.name, "terminal attached");
    // Output to the client, in its own task: the channel reader below never
    // waits on the client's window (see drive).
    let pump_tx = tx.clone();
    let handle = ctx.handle.clone();
    let pump = tokio::spawn(async move {
        if !replay.is_empty() && pump_tx.data_bytes(Bytes::from(replay)).await.is_err() {
            return None;
        }
        while let Some(out) = out_rx.recv().await {
            match out {
                Out::Data(b) => {
                    if pump_tx.data_bytes(b).await.is_err() {
                        return None;
                    }
                }
                Out::Exit(status) => return Some(status),
            }
        }
        // Another viewer took the shell over: say so, in words for ssh and
        // as a signal name for the web terminal (which then does not
        // reconnect on its own).
        let _ = pump_tx
            .data_bytes(Bytes::from_static(
                b"\r\n[airlock: this terminal was opened elsewhere]\r\n",
            ))
            .await;
        let _ = handle
            .exit_signal_request(
                pump_tx.id(),
                Sig::Custom(airlock_proto::TERMINAL_TAKEN_OVER.to_owned()),
                false,
                "this terminal was opened elsewhere".to_owned(),
                String::new(),
            )
            .await;
        let _ = pump_tx.eof().await;
        let _ = pump_tx.close().await;
        None
    });
    let mut pump = pump;
    let exit = loop {
        tokio::select! {
            // A viewer's EOF is not the shell's: others may attach.
            m = rx.wait() => match from_client(m, kept.pgid) {
                FromClient::Data(data) => {
                    let _ = kept.input.send(PtyIn::Data(data));
                }
                FromClient::Resize(size) => {
                    let _ = kept.input.send(PtyIn::Resize(size));
                }
                FromClient::Closed => break None,
                FromClient::Eof | FromClient::Other => {}
            },
            r = &mut pump => break r.ok().flatten(),
        }
    };
    pump.abort();
    match exit {
        Some(status) => finish(ctx, &tx, status).await,
        None => detach(&kept, epoch),
    }
}

/// The viewer of `epoch` left: keep the shell for [`GRACE`].
fn detach(kept: &Arc<Kept>, epoch: u64) {
    let mut st = lock(&kept.state);
    if st.epoch != epoch || st.exited {
        return;
    }
    st.epoch += 1;
    st.viewer = None;
    let left = st.epoch;
    drop(st);
    debug!(terminal = %kept.name, "terminal detached; kept for {GRACE:?}");
    let kept = kept.clone();
    tokio::spawn(async move {
        tokio::time::sleep(GRACE).await;
        let st = lock(&kept.state);
        if st.epoch == left && !st.exited {
            drop(st);
            info!(terminal = %kept.name, "nobody attached for {GRACE:?}: hanging up the shell");
            if let Some(p) = kept.pgid {
                let _ = nix::sys::signal::killpg(p, Signal::SIGHUP);
            }
        }
    });
}

/// The kept shell `name`, started now if there is none.
fn find_or_start(
    ctx: &ConnCtx,
    spec: &Spec,
    name: &str,
    req: &PtyReq,
) -> Result<Arc<Kept>, String> {
    let mut all = lock(&KEPT);
    if let Some(k) = all.get(name) {
        return Ok(k.clone());
    }
    if all.len() >= MAX_KEPT {
        return Err(format!(
            "this session already keeps {MAX_KEPT} terminals; exit one of them first"
        ));
    }
    let kept = start(ctx, spec, name, req)?;
    all.insert(name.to_owned(), kept.clone());
    Ok(kept)
}

fn start(ctx: &ConnCtx, spec: &Spec, name: &str, req: &PtyReq) -> Result<Arc<Kept>, String> {
    let (pty, mut child) = spawn_on_pty(
        ctx,
        spec,
        None,
        req,
        Some(("AIRLOCK_TERMINAL".into(), name.to_owned())),
    )?;
    let pgid = group_of(&child);
    let (mut pr, pw) = pty.into_split();
    let (in_tx, in_rx) = mpsc::unbounded_channel::<PtyIn>();
    let kept = Arc::new(Kept {
        name: name.to_owned(),
        pgid,
        input: in_tx,
        state: Mutex::new(State::default()),
    });
    info!(peer = %ctx.peer, terminal = %name, "kept terminal started");
    // Input: never waits on anything but the pty.
    tokio::spawn(feed_pty(
        pw,
        futures_util::stream::unfold(in_rx, |mut r| async move { r.recv().await.map(|m| (m, r)) }),
    ));
    // Output: into the ring, and to the viewer if there is one.
    let reader = kept.clone();
    let out_task = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(super::READ_CHUNK);
        loop {
            buf.reserve(super::READ_CHUNK);
            match pr.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let chunk = buf.split().freeze();
                    let viewer = {
                        let mut st = lock(&reader.state);
                        push_ring(&mut st.ring, &chunk);
                        st.viewer.clone()
                    };
                    if let Some(v) = viewer {
                        // A gone viewer is no error: the ring has it.
                        let _ = v.send(Out::Data(chunk)).await;
                    }
                }
            }
        }
    });
    // The shell's end: drain what it printed, tell the viewer, forget it.
    let ender = kept.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        let _ = tokio::time::timeout(super::PTY_DRAIN, out_task).await;
        if let Some(p) = ender.pgid {
            let _ = nix::sys::signal::killpg(p, Signal::SIGHUP);
        }
        let viewer = {
            let mut st = lock(&ender.state);
            st.exited = true;
            st.viewer.take()
        };
        {
            let mut all = lock(&KEPT);
            if all.get(&ender.name).is_some_and(|k| Arc::ptr_eq(k, &ender)) {
                all.remove(&ender.name);
            }
        }
        info!(terminal = %ender.name, "kept terminal ended");
        if let (Some(v), Ok(s)) = (viewer, status) {
            let _ = v.send(Out::Exit(s)).await;
        }
    });
    Ok(kept)
}

/// Appends `chunk`, keeping the last [`RING`] bytes.
fn push_ring(ring: &mut VecDeque<u8>, chunk: &[u8]) {
    let chunk = &chunk[chunk.len().saturating_sub(RING)..];
    let over = (ring.len() + chunk.len()).saturating_sub(RING);
    ring.drain(..over);
    ring.extend(chunk);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(attach_name("airlock-attach web"), Some(Ok("web".into())));
        assert_eq!(attach_name("airlock-attach"), Some(Ok("main".into())));
        assert!(matches!(attach_name("airlock-attach a b"), Some(Err(_))));
        assert!(matches!(attach_name("airlock-attach ../x/y"), Some(Err(_))));
        assert!(matches!(attach_name("airlock-attach 'a b'"), Some(Err(_))));
        assert_eq!(attach_name("ls -l"), None);
        assert_eq!(attach_name("airlock-attachx"), None);
    }

    #[test]
    fn ring_keeps_the_last_bytes() {
        let mut r = VecDeque::new();
        push_ring(&mut r, b"abc");
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), b"abc");
        let big = vec![7u8; RING + 10];
        push_ring(&mut r, &big);
        assert_eq!(r.len(), RING);
        push_ring(&mut r, b"xyz");
        assert_eq!(r.len(), RING);
        let v: Vec<u8> = r.iter().copied().collect();
        assert_eq!(&v[RING - 3..], b"xyz");
    }
}
