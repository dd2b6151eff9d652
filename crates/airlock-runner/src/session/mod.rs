//! `session` channels: pty, env, shell, exec, subsystem sftp, signals.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::forward::{self, AgentSocket};
use crate::queue::ChannelQueue;
use crate::server::ConnCtx;
use crate::sftp;

mod env;
mod keep;
mod shell;
mod signal;

pub use shell::{scp_fallback, split_simple};

use env::session_env;
use shell::launch_for;

const READ_CHUNK: usize = 64 * 1024;

/// A pty-req.
#[derive(Debug, Clone)]
struct PtyReq {
    term: String,
    cols: u16,
    rows: u16,
    px_w: u16,
    px_h: u16,
}

enum Start {
    Shell,
    Exec(String),
    Sftp,
}

type Tx = Arc<ChannelWriteHalf<Msg>>;

/// Drive one session channel.
pub(crate) async fn run(channel: Channel<Msg>, ctx: ConnCtx) {
    let (mut rx, tx) = channel.split();
    let tx: Tx = Arc::new(tx);
    let mut pty: Option<PtyReq> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut agent: Option<AgentSocket> = None;
    let mut early = Early::default();
    let start = loop {
        match rx.wait().await {
            None | Some(ChannelMsg::Close) => return,
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                ..
            }) => {
                pty = Some(PtyReq {
                    term,
                    cols: clamp16(col_width),
                    rows: clamp16(row_height),
                    px_w: clamp16(pix_width),
                    px_h: clamp16(pix_height),
                });
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            }) => {
                if let Some(p) = pty.as_mut() {
                    p.cols = clamp16(col_width);
                    p.rows = clamp16(row_height);
                    p.px_w = clamp16(pix_width);
                    p.px_h = clamp16(pix_height);
                }
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => env.push((variable_name, variable_value)),
            Some(ChannelMsg::AgentForward { .. }) => {
                if agent.is_none() {
                    crate::audit::emit(ctx.peer, "ssh.agent-forward", serde_json::json!({}));
                    match forward::start_agent(
                        ctx.handle.clone(),
                        ctx.backlog.clone(),
                        ctx.token.child_token(),
                    ) {
                        Ok(a) => agent = Some(a),
                        Err(e) => warn!("agent forwarding unavailable: {e}"),
                    }
                }
            }
            Some(ChannelMsg::Exec { command, .. }) => {
                break Start::Exec(String::from_utf8_lossy(&command).into_owned());
            }
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::RequestSubsystem { name, .. }) => {
                if name == "sftp" {
                    break Start::Sftp;
                }
            }
            Some(ChannelMsg::Data { data }) => early.data.push(data),
            Some(ChannelMsg::Eof) => early.eof = true,
            Some(_) => {}
        }
    };
    match &start {
        Start::Exec(c) => crate::audit::emit(
            ctx.peer,
            "ssh.exec",
            serde_json::json!({ "command": c, "pty": pty.is_some() }),
        ),
        Start::Shell => crate::audit::emit(
            ctx.peer,
            "ssh.shell",
            serde_json::json!({ "pty": pty.is_some() }),
        ),
        Start::Sftp => crate::audit::emit(
            ctx.peer,
            "ssh.subsystem",
            serde_json::json!({ "name": "sftp" }),
        ),
    }
    // A kept terminal (the web UI's), not a new process.
    if let Start::Exec(c) = &start
        && let Some(attach) = keep::attach_name(c)
    {
        let spec = Spec {
            command: None,
            pty,
            client_env: env,
            // The shell outlives this connection and its agent socket.
            agent: None,
        };
        match attach {
            Ok(name) => keep::attach(&ctx, spec, name, rx, tx).await,
            Err(e) => fail(&tx, e).await,
        }
        return;
    }
    match start {
        Start::Sftp => {
            debug!(peer = %ctx.peer, "sftp subsystem");
            sftp::serve_channel(
                rx,
                tx,
                &ctx.settings.home,
                early,
                ctx.peer,
                ctx.backlog.clone(),
            )
            .await;
        }
        Start::Shell | Start::Exec(_) => {
            let command = match start {
                Start::Exec(c) => Some(c),
                _ => None,
            };
            let spec = Spec {
                command,
                pty,
                client_env: env,
                agent: agent.as_ref().map(|a| a.path.clone()),
            };
            run_process(&ctx, spec, rx, tx, early).await;
        }
    }
    drop(agent);
}

fn clamp16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

struct Spec {
    command: Option<String>,
    pty: Option<PtyReq>,
    client_env: Vec<(String, String)>,
    agent: Option<PathBuf>,
}

async fn fail(tx: &Tx, msg: String) {
    warn!("{msg}");
    let _ = tx
        .extended_data_bytes(1, Bytes::from(format!("airlock: {msg}\r\n")))
        .await;
    let _ = tx.exit_status(127).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// What the client sent on a channel before its command or subsystem
/// started: data to feed it first, and whether the client already said EOF.
#[derive(Debug, Default)]
pub(crate) struct Early {
    pub data: Vec<Bytes>,
    pub eof: bool,
}

async fn run_process(ctx: &ConnCtx, spec: Spec, rx: ChannelReadHalf, tx: Tx, early: Early) {
    if spec.pty.is_some() {
        run_pty(ctx, spec, rx, tx, early).await;
    } else {
        run_pipes(ctx, spec, rx, tx, early).await;
    }
}

async fn pump_output<R: AsyncRead + Unpin>(mut r: R, tx: Tx, ext: Option<u32>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                let chunk = buf.split().freeze();
                let sent = match ext {
                    None => tx.data_bytes(chunk).await,
                    Some(e) => tx.extended_data_bytes(e, chunk).await,
                };
                if sent.is_err() {
                    break;
                }
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break,
            Err(_) => break,
        }
    }
}

/// Run a command on pipes (no pty); see [`drive`].
async fn run_pipes(ctx: &ConnCtx, spec: Spec, rx: ChannelReadHalf, tx: Tx, early: Early) {
    use std::process::Stdio;
    let launch = launch_for(ctx, spec.command.as_deref());
    let env = session_env(ctx, &spec, None);
    let mut cmd = tokio::process::Command::new(&launch.program);
    if let Some(a0) = &launch.arg0 {
        cmd.arg0(a0);
    }
    cmd.args(&launch.args)
        .env_clear()
        .envs(env)
        .current_dir(&ctx.settings.home)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            fail(&tx, format!("cannot run {}: {e}", launch.program.display())).await;
            return;
        }
    };
    let pgid = group_of(&child);
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        fail(&tx, "cannot set up pipes".into()).await;
        return;
    };
    let out_task = tokio::spawn(pump_output(stdout, tx.clone(), None));
    let err_task = tokio::spawn(pump_output(stderr, tx.clone(), Some(1)));
    let (in_tx, mut in_rx) = ctx.backlog.queue::<Bytes>();
    let in_task = tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(b) = in_rx.recv().await {
            if stdin.write_all(&b).await.is_err() {
                // The command closed its stdin; keep draining so the
                // channel never blocks.
                while in_rx.recv().await.is_some() {}
                return;
            }
        }
        let _ = stdin.shutdown().await;
    });
    let running = Running {
        kind: Kind::Pipes,
        child,
        pgid,
        input: Input::Pipe(Some(in_tx)),
        out_task,
        err_task: Some(err_task),
        in_task,
    };
    drive(ctx, rx, &tx, running, early).await;
}

/// How a command's terminal is set up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// stdin, stdout and stderr are pipes.
    Pipes,
    /// A pty.
    Pty,
}

/// Where the client's input goes: a command's stdin, or its pty.
enum Input {
    /// The stdin queue; `None` once the client sent EOF or the command
    /// stopped reading.
    Pipe(Option<ChannelQueue<Bytes>>),
    /// The pty's queue (a pty ignores the channel's EOF).
    Pty(ChannelQueue<PtyIn>),
}

impl Input {
    fn data(&mut self, data: Bytes) {
        let n = data.len();
        match self {
            Input::Pipe(q) => {
                if let Some(t) = q.as_ref()
                    && t.push(data, n).is_err()
                {
                    *q = None;
                }
            }
            Input::Pty(q) => {
                let _ = q.push(PtyIn::Data(data), n);
            }
        }
    }

    fn eof(&mut self) {
        if let Input::Pipe(q) = self {
            *q = None;
        }
    }

    fn resize(&mut self, size: pty_process::Size) {
        if let Input::Pty(q) = self {
            let _ = q.push(PtyIn::Resize(size), 0);
        }
    }
}

/// A started command and the tasks that move its bytes.
struct Running {
    kind: Kind,
    child: tokio::process::Child,
    pgid: Option<Pid>,
    input: Input,
    /// stdout's (or the pty's) pump.
    out_task: JoinHandle<()>,
    /// stderr's pump (pipes only).
    err_task: Option<JoinHandle<()>>,
    /// The writer of `input` into the command.
    in_task: JoinHandle<()>,
}

/// After the shell of a pty exited, how long its output may still drain
/// while something else holds the pty (as OpenSSH does).
const PTY_DRAIN: Duration = Duration::from_millis(300);

/// The one event loop of a running command (pipes or pty), until it is done
/// or the client is gone; then the exit status, or a hang-up.
//
// The channel reader below never waits on the command: stdin data goes into
// the connection's accounted queue (queue.rs), which steers russh's window.
// Awaiting room here instead stopped russh's session loop, and with it the
// window adjusts the stdout pump waits for; a filter (`cat`, `gzip -c`) that
// stops reading stdin while its stdout is full then never moved again
// (`ssh host cat < 512MiB` stopped after ~19 MB; tests/exec_echo.rs).
async fn drive(ctx: &ConnCtx, mut rx: ChannelReadHalf, tx: &Tx, running: Running, early: Early) {
    let Running {
        kind,
        mut child,
        pgid,
        mut input,
        mut out_task,
        mut err_task,
        in_task,
    } = running;
    for b in early.data {
        input.data(b);
    }
    if early.eof {
        input.eof();
    }
    let mut status: Option<ExitStatus> = None;
    let mut out_done = false;
    let mut err_done = err_task.is_none();
    let mut closed = false;
    let eow_reg = (kind == Kind::Pipes).then(|| crate::eow::register(ctx.conn_id));
    while !(status.is_some() && out_done && err_done) {
        tokio::select! {
            // The client stopped reading stdout (eow@openssh.com): close the
            // pipe so the command gets SIGPIPE, as OpenSSH's sshd does.
            _ = eow_notified(eow_reg.as_ref()), if eow_reg.is_some() && !out_done => {
                debug!("eow@openssh.com: closing the command's stdout");
                out_task.abort();
                out_done = true;
            }
            m = rx.wait(), if !closed => match from_client(m, pgid) {
                FromClient::Data(data) => input.data(data),
                FromClient::Eof => input.eof(),
                FromClient::Resize(size) => input.resize(size),
                FromClient::Closed => {
                    closed = true;
                    break;
                }
                FromClient::Other => {}
            },
            r = child.wait(), if status.is_none() => match r {
                Ok(s) => status = Some(s),
                Err(e) => {
                    warn!("wait: {e}");
                    break;
                }
            },
            _ = &mut out_task, if !out_done => out_done = true,
            _ = join_some(&mut err_task), if !err_done => err_done = true,
            // The shell exited but something still holds the pty: stop
            // after a short drain.
            _ = tokio::time::sleep(PTY_DRAIN), if kind == Kind::Pty && status.is_some() && !out_done => break,
        }
    }
    drop(input);
    drop(eow_reg);
    in_task.abort();
    let Some(status) = status.filter(|_| !closed) else {
        // The client went away (or stopped reading, e.g. `ssh h yes | head -1`):
        // close the command's pipes so it gets SIGPIPE, and hang up its group.
        out_task.abort();
        if let Some(t) = err_task {
            t.abort();
        }
        hang_up(pgid, child);
        return;
    };
    if !out_done {
        out_task.abort();
    }
    if kind == Kind::Pty {
        if let Some(p) = pgid {
            let _ = nix::sys::signal::killpg(p, Signal::SIGHUP);
        }
        info!(peer = %ctx.peer, "shell exited: {status}");
    }
    finish(ctx, tx, status).await;
}

/// Resolves when the client sends eow@openssh.com; never without a registration.
async fn eow_notified(reg: Option<&crate::eow::Registration>) {
    match reg {
        Some(r) => r.notify.notified().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the task ends; never without a task.
async fn join_some(task: &mut Option<JoinHandle<()>>) {
    match task {
        Some(t) => {
            let _ = t.await;
        }
        None => std::future::pending().await,
    }
}

/// Send EOF, exit-status/exit-signal and close, in that order.
async fn finish(ctx: &ConnCtx, tx: &Tx, status: ExitStatus) {
    use std::os::unix::process::ExitStatusExt as _;
    let _ = tx.eof().await;
    crate::audit::emit(
        ctx.peer,
        "ssh.exit",
        serde_json::json!({ "status": status.code(), "signal": status.signal() }),
    );
    if let Some(code) = status.code() {
        let _ = tx.exit_status(u32::try_from(code).unwrap_or(255)).await;
    } else if let Some(sig) = status.signal() {
        let _ = ctx
            .handle
            .exit_signal_request(
                tx.id(),
                signal::to_ssh(sig),
                status.core_dumped(),
                String::new(),
                String::new(),
            )
            .await;
    }
    let _ = tx.close().await;
}

/// The process group a spawned command leads.
fn group_of(child: &tokio::process::Child) -> Option<Pid> {
    child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw)
}

/// The client is gone: hang up the command's process group and reap it in
/// the background (SIGKILL for the group if it is still there after 5 s).
fn hang_up(pgid: Option<Pid>, mut child: tokio::process::Child) {
    if let Some(p) = pgid {
        let _ = nix::sys::signal::killpg(p, Signal::SIGHUP);
    }
    tokio::spawn(async move {
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            if let Some(p) = pgid {
                let _ = nix::sys::signal::killpg(p, Signal::SIGKILL);
            }
            let _ = child.wait().await;
        }
    });
}

/// What the client sent on a session channel, decoded once for both
/// loops that feed a command (this file's `drive` and a kept terminal's
/// viewer in `keep.rs`). Signals are delivered here.
enum FromClient {
    Data(Bytes),
    Eof,
    Resize(pty_process::Size),
    /// The channel closed (or the connection ended).
    Closed,
    /// Nothing for the command.
    Other,
}

fn from_client(m: Option<ChannelMsg>, pgid: Option<Pid>) -> FromClient {
    match m {
        Some(ChannelMsg::Data { data }) => FromClient::Data(data),
        Some(ChannelMsg::Eof) => FromClient::Eof,
        Some(ChannelMsg::WindowChange {
            col_width,
            row_height,
            pix_width,
            pix_height,
        }) => FromClient::Resize(pty_process::Size::new_with_pixel(
            clamp16(row_height),
            clamp16(col_width),
            clamp16(pix_width),
            clamp16(pix_height),
        )),
        Some(ChannelMsg::Signal { signal }) => {
            signal_group(pgid, &signal);
            FromClient::Other
        }
        Some(ChannelMsg::Close) | None => FromClient::Closed,
        Some(_) => FromClient::Other,
    }
}

fn signal_group(pgid: Option<Pid>, sig: &Sig) {
    let Some(s) = signal::from_ssh(sig) else {
        return;
    };
    if let Some(p) = pgid {
        debug!("signal {s} to process group {p}");
        let _ = nix::sys::signal::killpg(p, s);
    }
}

enum PtyIn {
    Data(Bytes),
    Resize(pty_process::Size),
}

/// Feeds a pty from its input queue until the queue ends; waits on nothing
/// but the pty. After a failed write the rest of the input is dropped (the
/// queue is still drained, so its sender never waits).
async fn feed_pty(
    mut pw: pty_process::OwnedWritePty,
    input: impl futures_util::Stream<Item = PtyIn>,
) {
    use futures_util::StreamExt as _;
    let mut input = std::pin::pin!(input);
    let mut broken = false;
    while let Some(m) = input.next().await {
        match m {
            PtyIn::Data(b) => {
                if !broken && pw.write_all(&b).await.is_err() {
                    broken = true;
                }
            }
            PtyIn::Resize(s) => {
                let _ = pw.resize(s);
            }
        }
    }
}

/// Opens a pty of `req`'s size and starts `command` (the login shell when
/// `None`) on it, with the session's environment plus `extra_env`; returns
/// the pty's master side and the child. Errors are the user's message.
fn spawn_on_pty(
    ctx: &ConnCtx,
    spec: &Spec,
    command: Option<&str>,
    req: &PtyReq,
    extra_env: Option<(String, String)>,
) -> Result<(pty_process::Pty, tokio::process::Child), String> {
    use std::os::fd::AsRawFd as _;
    let (pty, pts) = pty_process::open().map_err(|e| format!("cannot allocate a pty: {e}"))?;
    let size = pty_process::Size::new_with_pixel(req.rows, req.cols, req.px_w, req.px_h);
    if let Err(e) = pty.resize(size) {
        debug!("pty resize: {e}");
    }
    // (A readlink in /proc: no disk behind it.)
    let tty = std::fs::read_link(format!("/proc/self/fd/{}", pts.as_raw_fd()))
        .ok()
        .map(|p| p.display().to_string());
    let launch = launch_for(ctx, command);
    let mut env = session_env(ctx, spec, tty.as_deref());
    env.extend(extra_env);
    let mut cmd = pty_process::Command::new(&launch.program);
    if let Some(a0) = &launch.arg0 {
        cmd = cmd.arg0(a0);
    }
    cmd = cmd
        .args(&launch.args)
        .env_clear()
        .envs(env)
        .current_dir(&ctx.settings.home);
    // `spawn` consumes the pts, so the parent keeps no slave fd (docs/ssh-server-notes.md N8).
    let child = cmd
        .spawn(pts)
        .map_err(|e| format!("cannot run {}: {e}", launch.program.display()))?;
    Ok((pty, child))
}

/// Run a command on a pty; see [`drive`].
async fn run_pty(ctx: &ConnCtx, spec: Spec, rx: ChannelReadHalf, tx: Tx, early: Early) {
    let Some(req) = spec.pty.clone() else {
        return;
    };
    let (pty, child) = match spawn_on_pty(ctx, &spec, spec.command.as_deref(), &req, None) {
        Ok(x) => x,
        Err(e) => {
            fail(&tx, e).await;
            return;
        }
    };
    let pgid = group_of(&child);
    let (pr, pw) = pty.into_split();
    let out_task = tokio::spawn(pump_output(pr, tx.clone(), None));
    // Never waits on the pty: see drive.
    let (in_tx, in_rx) = ctx.backlog.queue::<PtyIn>();
    let in_task = tokio::spawn(feed_pty(pw, in_rx.into_stream()));
    let running = Running {
        kind: Kind::Pty,
        child,
        pgid,
        input: Input::Pty(in_tx),
        out_task,
        err_task: None,
        in_task,
    };
    drive(ctx, rx, &tx, running, early).await;
}
