//! `airlock-runner boot`: the container entrypoint (PID 1).

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use airlock_proto::recipes::readiness::{HOST_KEY_PREFIX, LISTENING_PREFIX, READY};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::init::{self, InitOptions};

/// Boot options.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Init options (root `/` in a container).
    pub init: InitOptions,
    /// This executable.
    pub self_exe: PathBuf,
    /// Extra arguments for the `sshd` child (e.g. `--listen`).
    pub sshd_args: Vec<String>,
}

/// Run init, start the sshd as `work`, reap zombies, forward signals; returns
/// the exit code to exit with.
pub async fn run(opts: BootOptions) -> Result<i32> {
    let report = init::run(&opts.init)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{HOST_KEY_PREFIX}{}", report.host_public_key);
        let _ = out.flush();
    }
    // Register the handlers before the child exists so no SIGCHLD is lost.
    let mut sigchld = signal(SignalKind::child()).map_err(|e| Error::io("SIGCHLD handler", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Error::io("SIGTERM handler", e))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler", e))?;

    let mut cmd = Command::new(&opts.self_exe);
    cmd.arg("sshd")
        .args(&opts.sshd_args)
        .env_remove("AIRLOCK_AUTHORIZED_KEYS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .current_dir(Path::new("/"));
    if nix::unistd::geteuid().is_root() {
        // std calls setgroups([]) before setgid/setuid when uid is set.
        std::os::unix::process::CommandExt::uid(&mut cmd, opts.init.uid);
        std::os::unix::process::CommandExt::gid(&mut cmd, opts.init.gid);
    }
    let mut child = cmd.spawn().map_err(|e| Error::io("spawn sshd", e))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let stdout = child.stdout.take();
    // We reap with waitpid(-1) ourselves; the Child handle is not waited on.
    drop(child);
    if let Some(out) = stdout {
        std::thread::spawn(move || {
            let r = std::io::BufReader::new(out);
            for line in r.lines() {
                let Ok(line) = line else { break };
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{line}");
                if line.starts_with(LISTENING_PREFIX) {
                    let _ = writeln!(o, "{READY}");
                }
                let _ = o.flush();
            }
        });
    }
    info!("sshd started as pid {pid}");
    loop {
        tokio::select! {
            _ = sigchld.recv() => {}
            _ = sigterm.recv() => { let _ = kill(pid, Signal::SIGTERM); }
            _ = sigint.recv() => { let _ = kill(pid, Signal::SIGTERM); }
        }
        // Reap every exited child (we are PID 1: orphans are ours too).
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(WaitStatus::Exited(p, code)) if p == pid => {
                    info!("sshd exited with status {code}");
                    return Ok(code);
                }
                Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                    warn!("sshd killed by {sig}");
                    return Ok(128 + sig as i32);
                }
                Ok(_) => continue,
                Err(nix::errno::Errno::ECHILD) => return Ok(1),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("waitpid", e)),
            }
        }
    }
}
