//! Command-line interface of `airlockd`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The airlock server: gateway (users connect here), agent (runs session
/// containers on a node), or both on one machine (`up`).
#[derive(Debug, Parser)]
#[command(name = "airlockd", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); or set AIRLOCK_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything on this machine: gateway, local agent, SQLite, Docker.
    Up(UpArgs),
    /// Run only the gateway (agents on other nodes register with it).
    Gateway(GatewayArgs),
    /// Run only an agent: session containers on this node's Docker engine.
    Agent(AgentArgs),
    /// Manage accounts in the data directory.
    #[command(subcommand_required = true)]
    User(UserArgs),
    /// Session images.
    #[command(subcommand)]
    Image(ImageCommand),
}

/// Options shared by every command that opens the state.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// State directory (database, folders, runtime files).
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_DATA",
        default_value = "./airlock-data"
    )]
    pub data: PathBuf,
    /// Database URL; default: SQLite in the data directory.
    /// PostgreSQL works too: postgres://user:pass@host/db.
    #[arg(long, global = true, env = "AIRLOCK_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// Gateway options shared by `up` and `gateway`.
#[derive(Debug, Clone, Args)]
pub struct GatewayOpts {
    /// Address the gateway listens on.
    #[arg(long, env = "AIRLOCK_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub data: DataArgs,
    /// Where folder contents are stored (default: DATA/vfolders). With
    /// several nodes this must be a shared filesystem at the same path on
    /// every node.
    #[arg(long, env = "AIRLOCK_STORAGE")]
    pub storage: Option<PathBuf>,
    /// Add `Secure` to login cookies (when users reach the gateway over https).
    #[arg(long)]
    pub secure_cookies: bool,
    /// A reverse proxy in front whose X-Forwarded-For/-Proto/-Host headers
    /// are believed (address or CIDR, repeatable; e.g. 127.0.0.1 or
    /// 10.0.0.0/8). From any other peer those headers are ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<airlock_gateway::config::IpCidr>,
    /// The URL users open (https://airlock.example.com), when it differs
    /// from the Host header the gateway sees; browsers may send
    /// state-changing requests from this origin (repeatable).
    #[arg(long = "public-url", value_name = "URL")]
    pub public_urls: Vec<String>,
    /// Image for sessions created without one.
    #[arg(
        long,
        env = "AIRLOCK_DEFAULT_IMAGE",
        default_value = "airlock/base:bookworm"
    )]
    pub default_image: String,
}

/// Agent options shared by `up` and `agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentOpts {
    /// The static airlock-runner binary mounted into sessions (default: next
    /// to airlockd, or the static build in the source tree).
    #[arg(long, env = "AIRLOCK_RUNNER")]
    pub runner: Option<PathBuf>,
    /// Schedule this many times the node's CPU cores.
    #[arg(long, env = "AIRLOCK_CPU_OVERCOMMIT")]
    pub cpu_overcommit: Option<f64>,
    /// Extra label for every session container (KEY=VALUE, repeatable).
    #[arg(long = "container-label", value_name = "KEY=VALUE")]
    pub container_labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub gateway: GatewayOpts,
    #[command(flatten)]
    pub agent: AgentOpts,
    /// Do not build the default session image when it is missing.
    #[arg(long)]
    pub no_build_image: bool,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub gateway: GatewayOpts,
    /// Shared secret agents authenticate with (and that the gateway
    /// presents to them).
    #[arg(long, env = "AIRLOCK_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: String,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Gateway URL to register with.
    #[arg(long, env = "AIRLOCK_GATEWAY")]
    pub gateway: String,
    /// Shared secret (same as the gateway's --agent-token).
    #[arg(long, env = "AIRLOCK_AGENT_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Address the agent API listens on (the gateway must reach it).
    #[arg(long, env = "AIRLOCK_AGENT_LISTEN", default_value = "127.0.0.1:8091")]
    pub listen: SocketAddr,
    /// URL the gateway uses to reach this agent (default: http://LISTEN).
    #[arg(long, env = "AIRLOCK_AGENT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Node id (default: the host name).
    #[arg(long, env = "AIRLOCK_AGENT_ID")]
    pub id: Option<String>,
    /// Agent state directory.
    #[arg(
        long,
        env = "AIRLOCK_AGENT_DATA",
        default_value = "./airlock-agent-data"
    )]
    pub data: PathBuf,
    #[command(flatten)]
    pub agent: AgentOpts,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is read from stdin when it is not a
    /// terminal, else prompted for (twice).
    Add {
        /// Login email.
        email: String,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// List accounts.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set an account's password (stdin or prompt); ends its web sessions.
    Passwd {
        /// Login email.
        email: String,
    },
    /// Disable an account: it can no longer log in or call the API; its web
    /// sessions end.
    Disable {
        /// Login email.
        email: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// Login email.
        email: String,
    },
    /// Show, regenerate or revoke an account's API keypair.
    Keypair {
        /// Login email.
        email: String,
        /// Replace the keypair with a new one (the old keys stop working at
        /// once) and print it.
        #[arg(long, conflicts_with = "revoke")]
        regenerate: bool,
        /// Delete the keypair: signed requests stop working.
        #[arg(long)]
        revoke: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the default session image (Debian rootfs via debootstrap,
    /// imported into Docker). Needs root and debootstrap.
    BuildBase {
        /// Image tag.
        #[arg(long, default_value = "airlock/base:bookworm")]
        tag: String,
        /// Debian mirror.
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
        /// Do nothing when the image already exists.
        #[arg(long)]
        if_missing: bool,
    },
}

/// An error with advice for the user.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// Builds a hinted error.
pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}
