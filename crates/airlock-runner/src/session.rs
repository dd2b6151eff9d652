//! `session` channels: pty, env, shell, exec, subsystem sftp, signals.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tracing::{debug, info, warn};

use crate::forward::{self, AgentSocket};
use crate::server::ConnCtx;
use crate::sftp;

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
    let mut early: Vec<Bytes> = Vec::new();
    let mut early_eof = false;
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
                    match forward::start_agent(ctx.handle.clone(), ctx.backlog.clone(), ctx.token.child_token()) {
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
            Some(ChannelMsg::Data { data }) => early.push(data),
            Some(ChannelMsg::Eof) => early_eof = true,
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
    match start {
        Start::Sftp => {
            debug!(peer = %ctx.peer, "sftp subsystem");
            sftp::serve_channel(
                rx,
                tx,
                &ctx.settings.home,
                early,
                early_eof,
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
            run_process(&ctx, spec, rx, tx, early, early_eof).await;
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

/// What to execute.
struct Launch {
    program: PathBuf,
    arg0: Option<String>,
    args: Vec<String>,
}

fn launch_for(ctx: &ConnCtx, command: Option<&str>) -> Launch {
    let s = &ctx.settings;
    match command {
        None => {
            let base = Path::new(&s.shell)
                .file_name()
                .map(|b| b.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sh".into());
            Launch {
                program: PathBuf::from(&s.shell),
                arg0: Some(format!("-{base}")),
                args: Vec::new(),
            }
        }
        Some(cmd) => {
            if let Some(l) = direct_launch(cmd, &s.path_env, &s.self_exe) {
                debug!("running {cmd:?} without the shell: {}", l.program.display());
                return l;
            }
            Launch {
                program: PathBuf::from(&s.shell),
                arg0: None,
                args: vec!["-c".into(), cmd.into()],
            }
        }
    }
}

/// File-transfer server commands (`scp -t/-f …`, `rsync --server …`) are run
/// directly, not through the user's shell, so rc files that print text
/// cannot corrupt their protocol streams (docs/ssh-server-notes.md N9). When the
/// image has no `scp`, the runner itself serves it (multi-call binary).
/// Anything that needs the shell (globs, variables, `~` for a system
/// binary, pipes) still goes through it.
fn direct_launch(cmd: &str, path: &str, self_exe: &Path) -> Option<Launch> {
    let words = split_simple(cmd)?;
    let (first, rest) = words.split_first()?;
    // The built-in speedtest (`airlock speedtest`), always the runner's own.
    if first == crate::speedtest::NAME {
        return Some(Launch {
            program: self_exe.to_path_buf(),
            arg0: Some(first.clone()),
            args: rest.to_vec(),
        });
    }
    let server_mode = match first.as_str() {
        "scp" => rest
            .iter()
            .any(|w| w.starts_with('-') && (w.contains('t') || w.contains('f'))),
        "rsync" => rest.iter().any(|w| w == "--server"),
        _ => false,
    };
    if !server_mode {
        return None;
    }
    match find_in_path(first, path) {
        Some(p) => {
            if rest.iter().any(|w| w.starts_with('~')) {
                return None;
            }
            Some(Launch {
                program: p,
                arg0: Some(first.clone()),
                args: rest.to_vec(),
            })
        }
        None if first == "scp" => Some(Launch {
            program: self_exe.to_path_buf(),
            arg0: Some("scp".into()),
            args: rest.to_vec(),
        }),
        None => None,
    }
}

/// If `cmd` is an scp server command and no `scp` is in `path`, the
/// arguments for the built-in scp.
pub fn scp_fallback(cmd: &str, path: &str) -> Option<Vec<String>> {
    let l = direct_launch(cmd, path, Path::new("/self"))?;
    (l.program == Path::new("/self")).then_some(l.args)
}

fn find_in_path(name: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Split a command line into words with sh-like quoting; `None` if it uses
/// shell features beyond quoting (pipes, variables, globs, …).
pub fn split_simple(cmd: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return None,
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return None,
                        },
                        Some('$' | '`') => return None,
                        Some(x) => cur.push(x),
                        None => return None,
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '$' | '`' | '*' | '?' | '[' => return None,
            x => {
                in_word = true;
                cur.push(x);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

fn session_env(ctx: &ConnCtx, spec: &Spec, tty: Option<&str>) -> Vec<(String, String)> {
    let s = &ctx.settings;
    const OURS: &[&str] = &[
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PATH",
        "MAIL",
        "SSH_CONNECTION",
        "SSH_CLIENT",
        "SSH_TTY",
        "SSH_AUTH_SOCK",
        "TERM",
    ];
    let mut env: Vec<(String, String)> = s.base_env.clone();
    let mut has_lang = false;
    for (k, v) in &spec.client_env {
        if OURS.contains(&k.as_str()) || k.is_empty() || k.contains('=') {
            continue;
        }
        if k == "LANG" {
            has_lang = true;
        }
        env.push((k.clone(), v.clone()));
    }
    let home = s.home.display().to_string();
    env.push(("HOME".into(), home));
    env.push(("USER".into(), s.user.clone()));
    env.push(("LOGNAME".into(), s.user.clone()));
    env.push(("SHELL".into(), s.shell.clone()));
    env.push(("PATH".into(), s.path_env.clone()));
    if !has_lang {
        env.push(("LANG".into(), s.lang.clone()));
    }
    let (pip, pport) = (ctx.peer.ip().to_canonical(), ctx.peer.port());
    let (lip, lport) = (ctx.local.ip().to_canonical(), ctx.local.port());
    env.push((
        "SSH_CONNECTION".into(),
        format!("{pip} {pport} {lip} {lport}"),
    ));
    env.push(("SSH_CLIENT".into(), format!("{pip} {pport} {lport}")));
    if let Some(p) = &spec.pty {
        env.push((
            "TERM".into(),
            if p.term.is_empty() {
                "xterm".into()
            } else {
                p.term.clone()
            },
        ));
    }
    if let Some(t) = tty {
        env.push(("SSH_TTY".into(), t.to_string()));
    }
    if let Some(a) = &spec.agent {
        env.push(("SSH_AUTH_SOCK".into(), a.display().to_string()));
    }
    env
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

async fn run_process(
    ctx: &ConnCtx,
    spec: Spec,
    rx: ChannelReadHalf,
    tx: Tx,
    early: Vec<Bytes>,
    early_eof: bool,
) {
    if spec.pty.is_some() {
        run_pty(ctx, spec, rx, tx, early).await;
    } else {
        run_pipes(ctx, spec, rx, tx, early, early_eof).await;
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

// The channel reader below never waits on the command: stdin data goes into
// the connection's accounted queue (queue.rs), which steers russh's window.
// Awaiting room here instead stopped russh's session loop, and with it the
// window adjusts the stdout pump waits for; a filter (`cat`, `gzip -c`) that
// stops reading stdin while its stdout is full then never moved again
// (`ssh host cat < 512MiB` stopped after ~19 MB; tests/exec_echo.rs).
async fn run_pipes(
    ctx: &ConnCtx,
    spec: Spec,
    mut rx: ChannelReadHalf,
    tx: Tx,
    early: Vec<Bytes>,
    early_eof: bool,
) {
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
    let mut out_task = tokio::spawn(pump_output(stdout, tx.clone(), None));
    let mut err_task = tokio::spawn(pump_output(stderr, tx.clone(), Some(1)));
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
    let mut in_tx = Some(in_tx);
    for b in early {
        if let Some(q) = &in_tx {
            let n = b.len();
            let _ = q.push(b, n);
        }
    }
    if early_eof {
        in_tx = None;
    }
    let mut status: Option<ExitStatus> = None;
    let mut out_done = false;
    let mut err_done = false;
    let mut closed = false;
    let eow_reg = crate::eow::register(ctx.conn_id);
    while !(status.is_some() && out_done && err_done) {
        tokio::select! {
            // The client stopped reading stdout (eow@openssh.com): close the
            // pipe so the command gets SIGPIPE, as OpenSSH's sshd does.
            _ = eow_reg.notify.notified(), if !out_done => {
                debug!("eow@openssh.com: closing the command's stdout");
                out_task.abort();
                out_done = true;
            }
            m = rx.wait(), if !closed => match m {
                Some(ChannelMsg::Data { data }) => {
                    let n = data.len();
                    if let Some(q) = &in_tx && q.push(data, n).is_err() {
                        in_tx = None;
                    }
                }
                Some(ChannelMsg::Eof) => in_tx = None,
                Some(ChannelMsg::Signal { signal }) => signal_group(pgid, &signal),
                Some(ChannelMsg::Close) | None => {
                    closed = true;
                    break;
                }
                Some(_) => {}
            },
            r = child.wait(), if status.is_none() => match r {
                Ok(s) => status = Some(s),
                Err(e) => {
                    warn!("wait: {e}");
                    break;
                }
            },
            _ = &mut out_task, if !out_done => out_done = true,
            _ = &mut err_task, if !err_done => err_done = true,
        }
    }
    drop(in_tx);
    drop(eow_reg);
    if closed || status.is_none() {
        // The client went away (or stopped reading, e.g. `ssh h yes | head -1`):
        // close the command's pipes so it gets SIGPIPE, and hang up its group.
        out_task.abort();
        err_task.abort();
        in_task.abort();
        hang_up(pgid, child);
        return;
    }
    in_task.abort();
    if let Some(s) = status {
        finish(ctx, &tx, s).await;
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
                sig_from_num(sig),
                status.core_dumped(),
                String::new(),
                String::new(),
            )
            .await;
    }
    let _ = tx.close().await;
}

fn sig_from_num(n: i32) -> Sig {
    match Signal::try_from(n) {
        Ok(Signal::SIGABRT) => Sig::ABRT,
        Ok(Signal::SIGALRM) => Sig::ALRM,
        Ok(Signal::SIGFPE) => Sig::FPE,
        Ok(Signal::SIGHUP) => Sig::HUP,
        Ok(Signal::SIGILL) => Sig::ILL,
        Ok(Signal::SIGINT) => Sig::INT,
        Ok(Signal::SIGKILL) => Sig::KILL,
        Ok(Signal::SIGPIPE) => Sig::PIPE,
        Ok(Signal::SIGQUIT) => Sig::QUIT,
        Ok(Signal::SIGSEGV) => Sig::SEGV,
        Ok(Signal::SIGTERM) => Sig::TERM,
        Ok(Signal::SIGUSR1) => Sig::USR1,
        Ok(s) => Sig::Custom(s.as_str().trim_start_matches("SIG").to_string()),
        Err(_) => Sig::Custom(format!("{n}")),
    }
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

fn signal_group(pgid: Option<Pid>, sig: &Sig) {
    let s = match sig {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) => match format!("SIG{name}").parse::<Signal>() {
            Ok(s) => s,
            Err(_) => return,
        },
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

async fn run_pty(ctx: &ConnCtx, spec: Spec, mut rx: ChannelReadHalf, tx: Tx, early: Vec<Bytes>) {
    use std::os::fd::AsRawFd as _;
    let Some(req) = spec.pty.clone() else {
        return;
    };
    let (pty, pts) = match pty_process::open() {
        Ok(x) => x,
        Err(e) => {
            fail(&tx, format!("cannot allocate a pty: {e}")).await;
            return;
        }
    };
    let size = pty_process::Size::new_with_pixel(req.rows, req.cols, req.px_w, req.px_h);
    if let Err(e) = pty.resize(size) {
        debug!("pty resize: {e}");
    }
    let tty = std::fs::read_link(format!("/proc/self/fd/{}", pts.as_raw_fd()))
        .ok()
        .map(|p| p.display().to_string());
    let launch = launch_for(ctx, spec.command.as_deref());
    let env = session_env(ctx, &spec, tty.as_deref());
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
    let mut child = match cmd.spawn(pts) {
        Ok(c) => c,
        Err(e) => {
            fail(&tx, format!("cannot run {}: {e}", launch.program.display())).await;
            return;
        }
    };
    let pgid = group_of(&child);
    let (pr, mut pw) = pty.into_split();
    let mut out_task = tokio::spawn(pump_output(pr, tx.clone(), None));
    // Never waits on the pty: see run_pipes.
    let (in_tx, mut in_rx) = ctx.backlog.queue::<PtyIn>();
    let in_task = tokio::spawn(async move {
        let mut broken = false;
        while let Some(m) = in_rx.recv().await {
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
    });
    for b in early {
        let n = b.len();
        let _ = in_tx.push(PtyIn::Data(b), n);
    }
    let mut status: Option<ExitStatus> = None;
    let mut out_done = false;
    let mut closed = false;
    loop {
        tokio::select! {
            m = rx.wait(), if !closed => match m {
                Some(ChannelMsg::Data { data }) => {
                    let n = data.len();
                    let _ = in_tx.push(PtyIn::Data(data), n);
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height }) => {
                    let s = pty_process::Size::new_with_pixel(
                        clamp16(row_height), clamp16(col_width), clamp16(pix_width), clamp16(pix_height));
                    let _ = in_tx.push(PtyIn::Resize(s), 0);
                }
                Some(ChannelMsg::Signal { signal }) => signal_group(pgid, &signal),
                Some(ChannelMsg::Close) | None => {
                    closed = true;
                    break;
                }
                Some(_) => {}
            },
            r = child.wait(), if status.is_none() => match r {
                Ok(s) => {
                    status = Some(s);
                    if out_done { break; }
                }
                Err(e) => {
                    warn!("wait: {e}");
                    break;
                }
            },
            _ = &mut out_task, if !out_done => {
                out_done = true;
                if status.is_some() { break; }
            }
            // The shell exited but something still holds the pty: stop
            // after a short drain, like OpenSSH does.
            _ = tokio::time::sleep(Duration::from_millis(300)), if status.is_some() && !out_done => break,
        }
    }
    in_task.abort();
    if closed || status.is_none() {
        out_task.abort();
        hang_up(pgid, child);
        return;
    }
    if !out_done {
        out_task.abort();
    }
    if let Some(p) = pgid {
        let _ = nix::sys::signal::killpg(p, Signal::SIGHUP);
    }
    if let Some(s) = status {
        info!(peer = %ctx.peer, "shell exited: {s}");
        finish(ctx, &tx, s).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn split() {
        assert_eq!(
            split_simple("scp -t -- 'a b' c\\ d \"e\\\"f\"").unwrap(),
            vec!["scp", "-t", "--", "a b", "c d", "e\"f"]
        );
        assert!(split_simple("scp -f *.txt").is_none());
        assert!(split_simple("echo hi; ls").is_none());
    }

    #[test]
    fn scp_detection() {
        assert!(scp_fallback("scp -t /tmp", "/nonexistent").is_some());
        assert!(scp_fallback("scp -v -r -f -- ~/x", "/nonexistent").is_some());
        assert!(scp_fallback("ls -l", "/nonexistent").is_none());
        assert!(scp_fallback("scp -t /tmp", "/usr/bin:/bin").is_none());
    }
}
