//! `airlockd up`: gateway and a local agent on this machine.

use airlock_agent::image::{BaseImageOptions, ensure_base_image};
use airlock_gateway::tunnels::{Attaching, ClientLink, Opening};
use airlock_proto::agent::TunnelOrigin;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::cli::UpArgs;
use crate::data::open_store;
use crate::serve::{self, ADMIN_EMAIL, AdminBootstrap};
use crate::shutdown::cancel_on_signals;

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone())?;
    let gw = &args.gateway;
    let store = open_store(&gw.data).await?;
    let admin = serve::bootstrap_admin(&store).await?;

    // The embedded agent and the gateway share a secret made for this run.
    let token = serve::random_secret(40);
    let state = serve::gateway_state(gw, store.clone(), token.clone(), shutdown.clone())?;
    let listener = serve::bind(gw.listen, "gateway").await?;
    let addr = listener.local_addr()?;
    let url = serve::gateway_url(&state, addr);
    let tls = state.config().tls.is_some();

    // Under HTTPS the certificate names the public host, not loopback: the
    // embedded agent reports over a loopback listener that serves nothing
    // but its (token-authenticated) heartbeat.
    let (agent_link_url, agent_link) = if tls {
        let link = serve::bind("127.0.0.1:0".parse()?, "local agent's link").await?;
        let link_url = format!("http://{}", link.local_addr()?);
        let task = tokio::spawn(airlock_gateway::serve_agent_link(link, state.clone()));
        (link_url, Some(task))
    } else {
        (url.clone(), None)
    };

    // The local agent: Docker, the runner, the default image.
    // What the banner says about sessions: `Ok` when they can start, else
    // why not and what to do.
    let (agent_task, sessions) =
        match start_agent(&args, &agent_link_url, token, &state, &shutdown).await {
            Ok((task, image)) => (Some(task), image),
            Err(e) => {
                tracing::error!("sessions are unavailable: {e:#}");
                let hint = e
                    .downcast_ref::<crate::cli::Hinted>()
                    .map(|h| h.hint.clone());
                if let Some(h) = &hint {
                    tracing::error!("hint: {h}");
                }
                (None, Err((format!("{e:#}"), hint)))
            }
        };

    serve::start_metrics(gw, &state).await?;
    let server = tokio::spawn(airlock_gateway::serve(listener, state));

    // Say "running" only once sessions can be created: the local agent
    // has registered (it reports within a second when Docker answers).
    if agent_task.is_some() {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let online = store
                .online_agents(20_000)
                .await
                .map(|a| !a.is_empty())
                .unwrap_or(false);
            if online || tokio::time::Instant::now() > deadline {
                if !online {
                    tracing::warn!(
                        "the local agent has not registered yet; sessions may fail for a moment"
                    );
                }
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    println!("airlock is running at {url}");
    println!("  data directory: {}", gw.data.data.display());
    match &sessions {
        Ok(image) => println!("  sessions: ready (default image {image})"),
        Err((why, hint)) => {
            println!("  sessions: CANNOT START — {why}");
            if let Some(h) = hint {
                println!("  hint: {h}");
            }
        }
    }
    match admin {
        AdminBootstrap::Generated(password) => {
            println!();
            println!("Created the administrator account (the password is shown only once):");
            println!("  email:    {ADMIN_EMAIL}");
            println!("  password: {password}");
            println!("  change it with: airlockd user passwd {ADMIN_EMAIL}");
        }
        AdminBootstrap::FromEnv => {
            println!();
            println!(
                "Created the administrator account {ADMIN_EMAIL} with the password from AIRLOCK_ADMIN_PASSWORD."
            );
        }
        AdminBootstrap::Existing => {}
    }
    println!();
    println!("Log in with the CLI:");
    println!("  printf 'BACKEND_ENDPOINT={url}\\nBACKEND_ENDPOINT_TYPE=session\\n' > .env");
    if tls {
        println!(
            "  (a certificate from a private CA: add AIRLOCK_CA_FILE=/path/to/ca.pem to .env)"
        );
    }
    println!("  airlock login");
    println!(
        "Press Ctrl-C to stop (running sessions keep running and are re-adopted on the next start)."
    );

    let served = server.await?;
    if let Some(link) = agent_link
        && let Err(e) = link.await?
    {
        tracing::warn!("the local agent's link stopped: {e}");
    }
    if let Some(task) = agent_task {
        let _ = task.await;
    }
    store.close().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// The embedded agent, reached by the gateway without an HTTP hop.
#[derive(Debug)]
struct LocalAgent(std::sync::Arc<airlock_agent::Agent>);

impl airlock_gateway::tunnels::LocalAgent for LocalAgent {
    fn connect<'a>(
        &'a self,
        session_id: &'a str,
        origin: Option<&'a TunnelOrigin>,
    ) -> Opening<'a, tokio::net::TcpStream> {
        Box::pin(async move {
            let tcp = self
                .0
                .connect(session_id)
                .await
                .map_err(|e| e.to_string())?;
            self.0.note_origin(session_id, &tcp, origin);
            Ok(tcp)
        })
    }

    fn holds(&self, session_id: &str) -> Result<(), String> {
        self.0
            .container_of(session_id)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn attach<'a>(
        &'a self,
        session_id: &'a str,
        origin: Option<&'a TunnelOrigin>,
        link: &'a mut ClientLink,
    ) -> Attaching<'a> {
        Box::pin(self.0.attach(session_id, origin, link))
    }
}

async fn start_agent(
    args: &UpArgs,
    gateway_url: &str,
    token: String,
    state: &airlock_gateway::AppState,
    shutdown: &CancellationToken,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, SessionsState)> {
    let data_dir = args.gateway.data.data.join("agent");
    std::fs::create_dir_all(&data_dir)?;
    let listener = serve::bind("127.0.0.1:0".parse()?, "local agent").await?;
    let advertise = format!("http://{}", listener.local_addr()?);
    // Stable for a data directory (re-adoption after a restart) and distinct
    // between data directories that share one Docker engine.
    let canonical = std::fs::canonicalize(&args.gateway.data.data)?;
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let agent_id = format!("local-{}", hex::encode(&digest[..4]));
    let mut config = serve::agent_config(
        &args.agent,
        agent_id,
        gateway_url.to_owned(),
        token,
        advertise,
        data_dir.clone(),
        4.0,
    )?;
    config.storage_root = Some(serve::storage_root(&args.gateway));
    let engine = airlock_agent::docker::Engine::connect()
        .await
        .map_err(|e| {
            crate::cli::hinted(
                format!("{e}"),
                "start Docker (and make its socket reachable), then restart `airlockd up`",
            )
        })?;
    let image = &args.gateway.default_image;
    let image_state: SessionsState = if !args.no_build_image
        && image.as_str() == airlock_agent::image::BASE_IMAGE
    {
        let opts = BaseImageOptions {
            tag: image.clone(),
            work_dir: data_dir.join("build"),
            ..BaseImageOptions::default()
        };
        match ensure_base_image(&engine, &opts).await {
            Ok(built) => {
                if built {
                    tracing::info!(image = %opts.tag, "built the default session image");
                }
                Ok(image.clone())
            }
            Err(e) => {
                tracing::error!("cannot build the default session image: {e}");
                let hint = e.hint().map(str::to_owned);
                if let Some(h) = &hint {
                    tracing::error!("hint: {h}");
                }
                Err((format!("the default image {image} is missing: {e}"), hint))
            }
        }
    } else {
        match engine.has_image(image).await {
            Ok(true) => Ok(image.clone()),
            Ok(false) => Err((
                format!("the default image {image} is not on this Docker engine"),
                Some(
                    "build it with `airlockd image build-base`, or load it with `docker load` (or start without --no-build-image)"
                        .to_owned(),
                ),
            )),
            Err(e) => Err((format!("cannot ask Docker for {image}: {e}"), None)),
        }
    };
    let agent_id = config.agent_id.clone();
    let agent = airlock_agent::start(config, shutdown.clone())
        .await
        .map_err(serve::agent_start_error)?;
    state.register_local_agent(&agent_id, std::sync::Arc::new(LocalAgent(agent.clone())));
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = airlock_agent::serve(agent, listener, None, shutdown).await {
            tracing::error!("the local agent stopped: {e}");
        }
    });
    Ok((task, image_state))
}

/// Whether sessions can start: the default image's name, or why not (and
/// what to do).
type SessionsState = Result<String, (String, Option<String>)>;
