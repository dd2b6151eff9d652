//! `airlock app SESSION sshd [-b [HOST:]PORT]`: the local proxy of Backend.AI's guide.

use tokio_util::sync::CancellationToken;

use crate::args::AppArgs;
use crate::client::ApiClient;
use crate::commands::{session, ssh};
use crate::error::{CliError, CliResult};
use crate::output;
use crate::tunnel::{self, PortChoice};

/// Runs the local proxy until Ctrl-C.
pub async fn run(client: &ApiClient, args: AppArgs) -> CliResult<()> {
    if args.app != "sshd" {
        return Err(CliError::new(format!(
            "the app {:?} is not provided by session {:?}",
            args.app, args.session
        ))
        .hint(format!(
            "sessions provide `sshd`: `airlock app {} sshd`",
            args.session
        )));
    }
    let explicit = args.bind.as_deref().map(tunnel::parse_bind).transpose()?;
    // Fail fast (and clearly) when the session is not there or not running.
    let info = session::get_running(client, &args.session).await?;
    let preferred = if explicit.is_none() {
        Some(ssh::default_local_port(client).await?)
    } else {
        None
    };
    let (listener, choice) = tunnel::bind_local(explicit, preferred).await?;
    let addr = listener.local_addr()?;
    if let PortChoice::Fallback(p) = choice {
        output::warning(&format!(
            "port {p} is in use; using the random port {} instead",
            addr.port()
        ));
    }
    // Listen for Ctrl-C/SIGINT before saying we are ready: a script that
    // interrupts right after the banner must stop us (a background job of a
    // non-interactive shell otherwise inherits SIGINT as ignored).
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    output::info(&format!(
        "A local proxy to the application \"sshd\" provided by the session \"{}\" is available at:",
        args.session
    ));
    eprintln!("  tcp://{addr}");
    if addr.ip().is_unspecified() {
        eprintln!(
            "  NOTE: it listens on all interfaces; anyone who can reach this machine can try to connect."
        );
    }
    if let (Some(fp), Some(key)) = (&info.host_key_fingerprint, &info.host_key) {
        eprintln!("  host key: {fp}");
        eprintln!(
            "  to pin it: echo '{}' >> known_hosts",
            airlock_proto::recipes::known_hosts_line(&info.name, key)
        );
        eprintln!(
            "  connect:   {}",
            airlock_proto::recipes::local_commands(&info.name, addr.port()).ssh
        );
    }
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    tokio::spawn(async move {
        if interrupt.recv().await.is_some() {
            s2.cancel();
        }
    });
    tunnel::accept_loop(client.clone(), args.session.clone(), listener, stop).await;
    eprintln!("Shutting down....");
    eprintln!("The local proxy to \"sshd\" has terminated.");
    Ok(())
}
