//! airlock-runner binary: argument parsing and wiring only.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use airlock_runner::init::{InitOptions, STATE_DIR};
use airlock_runner::server::Tuning;

#[derive(Parser, Debug)]
#[command(
    name = "airlock-runner",
    version,
    about = "In-session SSH/SFTP server for compute sessions (invoked as `scp`: legacy scp server)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Prepare user `work`, the session key, authorized keys and the host key (as root, idempotent).
    Init(InitArgs),
    /// Run the SSH server.
    Sshd(SshdArgs),
    /// Container entrypoint (PID 1): init, then run sshd as `work`, reap zombies, forward signals.
    Boot(BootArgs),
    /// File transfer for the agent, run as the session user (stat, pack,
    /// unpack, ls, mv, rm, mkdir), confined to --root.
    #[command(subcommand)]
    Files(FilesCmd),
}

#[derive(Subcommand, Debug)]
enum FilesCmd {
    /// Check paths (exit 3: not found, 4: permission denied, 2: invalid).
    Stat(FilesArgs),
    /// Write a tar of one path to stdout.
    Pack(FilesArgs),
    /// Receive a framed upload from stdin.
    Unpack(FilesArgs),
    /// List a directory as JSON.
    Ls(FilesArgs),
    /// Rename SRC to DST (DST must not exist; links are renamed, not followed).
    Mv(FilesArgs),
    /// Remove a file, a link or a directory tree (never the home itself).
    Rm(FilesArgs),
    /// Create one directory.
    Mkdir(FilesArgs),
}

#[derive(Args, Debug)]
struct FilesArgs {
    /// Directory every path is confined to.
    #[arg(long, default_value = airlock_proto::CONTAINER_HOME)]
    root: PathBuf,
    /// Paths (relative to --root, or absolute inside it).
    paths: Vec<String>,
}

#[derive(Args, Debug, Clone)]
struct InitArgs {
    /// Prefix for every path touched (etc/passwd, home/work, var/lib/airlock, …).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// uid of `work`.
    #[arg(long, env = "LOCAL_USER_ID", default_value_t = 1000)]
    uid: u32,
    /// gid of `work`.
    #[arg(long, env = "LOCAL_GROUP_ID", default_value_t = 1000)]
    gid: u32,
}

#[derive(Args, Debug, Clone)]
struct TuningArgs {
    /// russh per-channel message queue length.
    #[arg(long, default_value_t = Tuning::default().channel_buffer_size)]
    channel_buffer_size: usize,
    /// Channel window size in bytes.
    #[arg(long, default_value_t = Tuning::default().window_size)]
    window_size: u32,
    /// Server keepalive interval in seconds.
    #[arg(long, default_value_t = 15)]
    keepalive: u64,
}

impl TuningArgs {
    fn tuning(&self) -> Tuning {
        Tuning {
            channel_buffer_size: self.channel_buffer_size.max(1),
            window_size: self.window_size,
            keepalive_interval: std::time::Duration::from_secs(self.keepalive.max(1)),
            ..Tuning::default()
        }
    }
}

#[derive(Args, Debug, Clone)]
struct SshdArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "0.0.0.0:2200")]
    listen: SocketAddr,
    /// State directory of container mode.
    #[arg(long, default_value = STATE_DIR)]
    state_dir: PathBuf,
    /// Standalone mode: serve as the current user with this home.
    #[arg(long, requires_all = ["authorized_keys", "host_key"])]
    home: Option<PathBuf>,
    /// Standalone mode: authorized keys file.
    #[arg(long, requires = "home")]
    authorized_keys: Option<PathBuf>,
    /// Standalone mode: host key file (generated if missing).
    #[arg(long, requires = "home")]
    host_key: Option<PathBuf>,
    #[command(flatten)]
    tuning: TuningArgs,
}

#[derive(Args, Debug, Clone)]
struct BootArgs {
    /// Address the sshd listens on.
    #[arg(long, default_value = "0.0.0.0:2200")]
    listen: SocketAddr,
    #[command(flatten)]
    tuning: TuningArgs,
}

fn init_tracing() {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(airlock_log::stderr("info", airlock_log::Format::Text))
        // Turns russh's eow@openssh.com warning into an event (see eow.rs).
        .with(airlock_runner::eow::layer().with_filter(LevelFilter::WARN))
        .init();
}

fn main() -> Result<()> {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let base = std::path::Path::new(&argv0)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    if base == "scp" {
        let args: Vec<String> = std::env::args().skip(1).collect();
        std::process::exit(airlock_runner::scp::run(&args));
    }
    if base == airlock_runner::speedtest::NAME {
        let args: Vec<String> = std::env::args().skip(1).collect();
        std::process::exit(airlock_runner::speedtest::run(&args));
    }
    let cli = Cli::parse();
    init_tracing();
    match cli.cmd {
        Cmd::Files(f) => std::process::exit(files(f)),
        Cmd::Init(a) => {
            let report = airlock_runner::init::run(&init_options(&a))?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{}{}",
                airlock_proto::recipes::readiness::HOST_KEY_PREFIX,
                report.host_public_key
            )?;
            out.flush()?;
            Ok(())
        }
        Cmd::Sshd(a) => sshd(a),
        Cmd::Boot(a) => {
            let opts = airlock_runner::boot::BootOptions {
                init: init_options(&InitArgs {
                    root: PathBuf::from("/"),
                    uid: env_u32("LOCAL_USER_ID", 1000),
                    gid: env_u32("LOCAL_GROUP_ID", 1000),
                }),
                self_exe: airlock_runner::self_exe(),
                sshd_args: vec![
                    "--listen".into(),
                    a.listen.to_string(),
                    "--channel-buffer-size".into(),
                    a.tuning.channel_buffer_size.to_string(),
                    "--window-size".into(),
                    a.tuning.window_size.to_string(),
                    "--keepalive".into(),
                    a.tuning.keepalive.to_string(),
                ],
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let code = rt.block_on(airlock_runner::boot::run(opts))?;
            std::process::exit(code);
        }
    }
}

fn files(cmd: FilesCmd) -> i32 {
    use airlock_runner::files;
    let mut out = std::io::stdout().lock();
    let result = match cmd {
        FilesCmd::Stat(a) => files::stat(&a.root, &a.paths, &mut out),
        FilesCmd::Pack(a) => match a.paths.as_slice() {
            [p] => files::pack(
                &a.root,
                p,
                std::io::BufWriter::with_capacity(256 * 1024, &mut out),
            ),
            _ => Err(files::FilesError::Invalid(
                "pack takes exactly one path".into(),
            )),
        },
        FilesCmd::Unpack(a) => files::unpack(&a.root, std::io::stdin().lock(), &mut out),
        FilesCmd::Ls(a) => {
            let p = a.paths.first().map(String::as_str).unwrap_or(".");
            files::ls(&a.root, p, &mut out)
        }
        FilesCmd::Mv(a) => match a.paths.as_slice() {
            [from, to] => files::mv(&a.root, from, to),
            _ => Err(files::FilesError::Invalid(
                "mv takes exactly two paths: SRC DST".into(),
            )),
        },
        FilesCmd::Rm(a) => match a.paths.as_slice() {
            [p] => files::rm(&a.root, p),
            _ => Err(files::FilesError::Invalid(
                "rm takes exactly one path".into(),
            )),
        },
        FilesCmd::Mkdir(a) => match a.paths.as_slice() {
            [p] => files::mkdir(&a.root, p),
            _ => Err(files::FilesError::Invalid(
                "mkdir takes exactly one path".into(),
            )),
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn init_options(a: &InitArgs) -> InitOptions {
    InitOptions {
        root: a.root.clone(),
        uid: a.uid,
        gid: a.gid,
        account_keys: std::env::var("AIRLOCK_AUTHORIZED_KEYS").unwrap_or_default(),
        mounts: std::env::var("AIRLOCK_MOUNTS")
            .unwrap_or_default()
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

fn sshd(a: SshdArgs) -> Result<()> {
    let tuning = a.tuning.tuning();
    let settings = match (&a.home, &a.authorized_keys, &a.host_key) {
        (Some(home), Some(ak), Some(hk)) => {
            airlock_runner::standalone_settings(home, ak, hk, tuning)?
        }
        (None, None, None) => {
            let (settings, uid, gid) = airlock_runner::container_settings(&a.state_dir, tuning)
                .context("container mode")?;
            let me = nix::unistd::geteuid().as_raw();
            if me == 0 && uid != 0 {
                airlock_runner::drop_privileges(uid, gid).context("dropping privileges")?;
            } else if me != uid {
                tracing::warn!("running as uid {me}, not as {} (uid {uid})", settings.user);
            }
            // Processes of the session run under the same uid: without
            // this they could ptrace the server, or open its stdout (the
            // audit channel) through /proc/PID/fd. Non-dumpable, its /proc
            // entries belong to root and ptrace needs CAP_SYS_PTRACE.
            nix::sys::prctl::set_dumpable(false).context("making the server non-dumpable")?;
            // The audit trail (see audit.rs); AIRLOCK_AUDIT=off turns it off.
            if std::env::var("AIRLOCK_AUDIT").as_deref() != Ok("off") {
                airlock_runner::audit::enable();
            }
            settings
        }
        _ => bail!("standalone mode needs --home, --authorized-keys and --host-key"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listen on {}", a.listen))?;
        let bound = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{}{bound}",
                airlock_proto::recipes::readiness::LISTENING_PREFIX
            )?;
            out.flush()?;
        }
        tracing::info!(
            "serving SSH for user {:?} on {bound} (home {})",
            settings.user,
            settings.home.display()
        );
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down");
            t.cancel();
        });
        airlock_runner::server::serve(listener, Arc::new(settings), token).await?;
        Ok(())
    })
}
