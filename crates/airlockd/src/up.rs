//! `airlockd up`: everything on one machine.

use airlock_gateway::store::{NewUser, Role};
use airlock_gateway::{AppState, GatewayConfig};
use rand::RngExt;
use rand::distr::Alphanumeric;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{UpArgs, hinted};
use crate::data::open_store;
use crate::shutdown::cancel_on_signals;

/// The account created on first start.
pub const ADMIN_EMAIL: &str = "admin@airlock.local";

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone())?;
    let store = open_store(&args.data).await?;

    let created_admin = if store.user_count().await? == 0 {
        let (password, generated) = match std::env::var("AIRLOCK_ADMIN_PASSWORD") {
            Ok(p) if !p.is_empty() => (p, false),
            _ => (
                rand::rng()
                    .sample_iter(Alphanumeric)
                    .take(20)
                    .map(char::from)
                    .collect::<String>(),
                true,
            ),
        };
        store
            .create_user(NewUser {
                email: ADMIN_EMAIL,
                password: &password,
                role: Role::Admin,
            })
            .await?;
        Some(if generated { Some(password) } else { None })
    } else {
        None
    };

    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        hinted(
            format!("cannot listen on {}: {e}", args.listen),
            "stop whatever uses that port or pick another with --listen HOST:PORT",
        )
    })?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let config = GatewayConfig {
        secure_cookies: args.secure_cookies,
        trust_forwarded: args.trust_forwarded,
        ..GatewayConfig::default()
    };
    let state = AppState::new(store.clone(), config, shutdown.clone());

    println!("airlock is running at {url}");
    println!("  data directory: {}", args.data.data.display());
    match created_admin {
        Some(Some(password)) => {
            println!();
            println!("Created the administrator account (the password is shown only once):");
            println!("  email:    {ADMIN_EMAIL}");
            println!("  password: {password}");
            println!("  change it with: airlockd user passwd {ADMIN_EMAIL}");
        }
        Some(None) => {
            println!();
            println!(
                "Created the administrator account {ADMIN_EMAIL} with the password from AIRLOCK_ADMIN_PASSWORD."
            );
        }
        None => {}
    }
    println!();
    println!("Log in with the CLI:");
    println!("  printf 'BACKEND_ENDPOINT={url}\\nBACKEND_ENDPOINT_TYPE=session\\n' > .env");
    println!("  airlock login");
    println!("Press Ctrl-C to stop.");

    airlock_gateway::serve(listener, state).await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
