//! Command-line interface of `airlockd`.

use std::net::SocketAddr;
use std::path::PathBuf;

use airlock_gateway::quotas::{self, Limit};
use clap::{Args, Parser, Subcommand};

/// The airlock server: gateway (users connect here), agent (runs session
/// containers on a node), or both on one machine (`up`).
#[derive(Debug, Parser)]
#[command(name = "airlockd", version = airlock_proto::version_line(), propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); or set AIRLOCK_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr: `text`, or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON objects, one per line.
    Json,
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
    /// Read the audit trail (logins, sessions, tunnels, file transfers) from
    /// the state `up`/`gateway` use; oldest first.
    Audit(AuditArgs),
    /// Agents' own credentials: enroll a node, revoke it, list them.
    #[command(subcommand_required = true)]
    Node(NodeArgs),
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Give agent ID its own token and print it (once): the agent runs with
    /// `--token` set to it (AIRLOCK_AGENT_TOKEN). From then on only that
    /// token is accepted for ID, and only for ID. Enrolling again replaces
    /// it; the old one stops working at once.
    Enroll {
        /// The agent's id (its --id, default its host name).
        id: String,
    },
    /// Delete agent ID's token: its heartbeats and events are refused from
    /// now on and its sessions become unreachable.
    Revoke {
        /// The agent's id.
        id: String,
    },
    /// List enrolled agents (never their tokens).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `airlockd audit` options.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Only this account's events (email or id).
    #[arg(long)]
    pub user: Option<String>,
    /// Only this session's events (name or id).
    #[arg(long)]
    pub session: Option<String>,
    /// Only events since: a duration back from now (90s, 30m, 1h, 7d) or an
    /// RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only the newest N events.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Print JSON lines (one event per line) for export.
    #[arg(long)]
    pub json: bool,
}

/// Options shared by every command that opens the state.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// State directory (database, folders, runtime files).
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_DATA",
        default_value = "./airlock-data",
        value_parser = absolute_path
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
    #[arg(long, env = "AIRLOCK_STORAGE", value_parser = absolute_path)]
    pub storage: Option<PathBuf>,
    /// Add `Secure` to every cookie the gateway sets (when users reach the gateway over
    /// https through a proxy; implied by --tls-cert).
    #[arg(long)]
    pub secure_cookies: bool,
    /// Serve HTTPS with this PEM certificate chain (the server's certificate
    /// first); needs --tls-key. Without both: plain HTTP.
    #[arg(long, env = "AIRLOCK_TLS_CERT", value_name = "FILE", value_parser = absolute_path)]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "AIRLOCK_TLS_KEY", value_name = "FILE", value_parser = absolute_path)]
    pub tls_key: Option<PathBuf>,
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
    /// Serve Prometheus metrics at http://ADDR/metrics (a separate listener;
    /// keep it private). Off when absent.
    #[arg(long, env = "AIRLOCK_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Days audit events are kept (pruned hourly); 0 keeps them forever.
    #[arg(
        long,
        env = "AIRLOCK_AUDIT_RETENTION_DAYS",
        default_value = "365",
        value_name = "DAYS"
    )]
    pub audit_retention_days: u32,
    /// Where new sessions go among the nodes with room: `spread` (the node
    /// with the most free CPU) or `pack` (the fullest that fits).
    #[arg(
        long,
        env = "AIRLOCK_PLACEMENT",
        default_value = "spread",
        value_name = "POLICY"
    )]
    pub placement: airlock_gateway::agents::Placement,
    /// Seconds without a heartbeat after which a node counts as unreachable
    /// (agents report every 5 s): its sessions say so, and it gets no new
    /// ones.
    #[arg(long, env = "AIRLOCK_AGENT_OFFLINE_AFTER", default_value = "12", value_name = "SECS", value_parser = clap::value_parser!(u64).range(6..=3600))]
    pub agent_offline_after: u64,
    #[command(flatten)]
    pub limits: LimitOpts,
}

/// Server-wide quotas (per account, unless `airlockd user limits` sets the
/// account's own) and HTTP connection limits.
#[derive(Debug, Clone, Args)]
pub struct LimitOpts {
    /// Concurrent sessions per account (a number or `unlimited`).
    #[arg(long, env = "AIRLOCK_MAX_SESSIONS", default_value = "10", value_parser = count_limit)]
    pub max_sessions: Limit,
    /// Concurrent tunnels (SSH connections) per account.
    #[arg(long, env = "AIRLOCK_MAX_TUNNELS", default_value = "64", value_parser = count_limit)]
    pub max_tunnels: Limit,
    /// Largest single upload into a folder (e.g. 10G, or `unlimited`).
    #[arg(long, env = "AIRLOCK_MAX_UPLOAD_SIZE", default_value = "unlimited", value_parser = size_limit)]
    pub max_upload_size: Limit,
    /// Folders per account.
    #[arg(long, env = "AIRLOCK_MAX_FOLDERS", default_value = "100", value_parser = count_limit)]
    pub max_folders: Limit,
    /// Seconds a client may take to send a request's headers (idle
    /// kept-alive connections are closed after this too).
    #[arg(long, env = "AIRLOCK_HEADER_TIMEOUT", default_value = "30", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,
    /// Concurrent HTTP connections (open tunnels included).
    #[arg(long, env = "AIRLOCK_MAX_CONNECTIONS", default_value = "4096", value_parser = count_limit)]
    pub max_connections: Limit,
    /// Concurrent HTTP connections from one client address (behind a reverse
    /// proxy every connection comes from the proxy: raise this or set
    /// `unlimited`).
    #[arg(long, env = "AIRLOCK_MAX_CONNECTIONS_PER_IP", default_value = "256", value_parser = count_limit)]
    pub max_connections_per_ip: Limit,
}

fn count_limit(raw: &str) -> Result<Limit, String> {
    quotas::parse_count(raw).map_err(|e| format!("{} ({})", e.message, e.hint))
}

fn size_limit(raw: &str) -> Result<Limit, String> {
    quotas::parse_size(raw).map_err(|e| format!("{} ({})", e.message, e.hint))
}

/// Agent options shared by `up` and `agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentOpts {
    /// The static airlock-runner binary mounted into sessions (default: next
    /// to airlockd, or the static build in the source tree).
    #[arg(long, env = "AIRLOCK_RUNNER", value_parser = absolute_path)]
    pub runner: Option<PathBuf>,
    /// Schedule this many times the node's CPU cores.
    #[arg(long, env = "AIRLOCK_CPU_OVERCOMMIT")]
    pub cpu_overcommit: Option<f64>,
    /// Extra label for every session container (KEY=VALUE, repeatable; in
    /// the environment, comma-separated).
    #[arg(
        long = "container-label",
        value_name = "KEY=VALUE",
        env = "AIRLOCK_CONTAINER_LABELS",
        value_delimiter = ','
    )]
    pub container_labels: Vec<String>,
    /// Outbound connections from sessions beyond this node: `open` (e.g.
    /// `pip install` works) or `none`. Sessions never reach this node's own
    /// services, other sessions or link-local (cloud metadata) addresses.
    #[arg(
        long,
        env = "AIRLOCK_SESSION_EGRESS",
        value_enum,
        default_value = "open"
    )]
    pub session_egress: EgressArg,
    /// The Docker network for this node's sessions (created when missing,
    /// inter-container traffic off). Agents sharing one Docker engine each
    /// take their own, so that each reaches only its own sessions.
    #[arg(
        long,
        env = "AIRLOCK_SESSION_NETWORK",
        default_value = airlock_agent::firewall::NETWORK,
        value_name = "NAME"
    )]
    pub session_network: String,
    /// Install the session firewall in this network namespace (e.g.
    /// `/proc/1/ns/net`): where Docker's bridges live, when this agent runs
    /// in a network namespace of its own.
    #[arg(long, env = "AIRLOCK_FIREWALL_NETNS", value_parser = absolute_path, value_name = "PATH")]
    pub firewall_netns: Option<PathBuf>,
    /// Do not install the host firewall for the session network. Sessions
    /// can then connect to every service on this node (the gateway, the
    /// agent, cloud metadata): only for nodes fenced in some other way.
    #[arg(long)]
    pub no_firewall: bool,
    /// Images users may start sessions from: comma-separated globs (`*`,
    /// `?`), e.g. `airlock/*,python:3.*`. Default: any image on the node.
    #[arg(
        long,
        env = "AIRLOCK_ALLOWED_IMAGES",
        value_delimiter = ',',
        value_name = "GLOB,…"
    )]
    pub allowed_images: Vec<String>,
    /// How long a resumable tunnel whose client lost its connection keeps
    /// the session's SSH connection open for a reconnect (e.g. `90s`,
    /// `2m`, `1h`).
    #[arg(
        long,
        env = "AIRLOCK_TUNNEL_GRACE",
        default_value = "2m",
        value_parser = duration,
        value_name = "DURATION"
    )]
    pub tunnel_grace: std::time::Duration,
    /// Do not record SSH commands and SFTP file operations inside sessions
    /// in the audit trail (gateway events are kept). For comparisons only.
    #[arg(long, env = "AIRLOCK_NO_RUNNER_AUDIT")]
    pub no_runner_audit: bool,
}

/// `--session-egress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EgressArg {
    /// Sessions may connect out to the world beyond the node.
    Open,
    /// Sessions cannot open any connection beyond the node.
    None,
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
    /// Shared secret for agents that have no credential of their own (the
    /// gateway presents it to them too). Without it, only agents enrolled
    /// with `airlockd node enroll ID` are accepted.
    #[arg(long, env = "AIRLOCK_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Gateway URL to register with.
    #[arg(long, env = "AIRLOCK_GATEWAY")]
    pub gateway: String,
    /// This agent's own token (`airlockd node enroll ID` on the gateway
    /// prints it), or the gateway's shared --agent-token.
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
        default_value = "./airlock-agent-data",
        value_parser = absolute_path
    )]
    pub data: PathBuf,
    /// The gateway's folder storage (`--storage` there), at the same path
    /// on this node. The agent mounts only its direct subdirectories into
    /// sessions; without it, sessions get no folders.
    #[arg(long, env = "AIRLOCK_STORAGE", value_parser = absolute_path)]
    pub storage: Option<PathBuf>,
    /// Serve the agent API over HTTPS with this certificate chain (PEM,
    /// server certificate first; with --tls-key). The gateway must trust
    /// its issuer (system roots, or SSL_CERT_FILE in its environment).
    #[arg(long, env = "AIRLOCK_AGENT_TLS_CERT", value_name = "FILE", value_parser = absolute_path)]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "AIRLOCK_AGENT_TLS_KEY", value_name = "FILE", value_parser = absolute_path)]
    pub tls_key: Option<PathBuf>,
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
    /// Show or set an account's quotas. Each takes a number, `unlimited`, or
    /// `default` (the server's --max-… flag). Without options: show them.
    Limits(LimitsArgs),
}

/// `airlockd user limits EMAIL [--sessions N] …`.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// Login email.
    pub email: String,
    /// Concurrent sessions.
    #[arg(long, value_name = "N|unlimited|default")]
    pub sessions: Option<String>,
    /// Concurrent tunnels (SSH connections through the gateway).
    #[arg(long, value_name = "N|unlimited|default")]
    pub tunnels: Option<String>,
    /// Largest single file upload into a folder, or into a session through
    /// the web UI (bytes, or 500M, 10G, …).
    #[arg(long, value_name = "SIZE|unlimited|default")]
    pub upload_size: Option<String>,
    /// Folders the account may own.
    #[arg(long, value_name = "N|unlimited|default")]
    pub folders: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
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

/// Makes a path argument absolute, once, at start-up (against the working
/// directory airlockd was started in): nothing relative is ever stored or
/// handed to Docker, which takes `./x` in a bind mount for a volume name.
fn absolute_path(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err("a path must not be empty".into());
    }
    std::path::absolute(s).map_err(|e| format!("cannot make {s:?} absolute: {e}"))
}

/// Parses `500ms`, `90s`, `2m`, `1h` (a bare number is seconds).
fn duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 2m or 1h"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(duration("2 weeks").is_err());
        assert!(duration("m").is_err());
    }

    #[test]
    fn every_path_is_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        let cli = Cli::try_parse_from(["airlockd", "up", "--storage", "st", "--runner", "bin/r"])
            .unwrap();
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up.gateway.data.data, cwd.join("airlock-data"));
        assert_eq!(up.gateway.storage, Some(cwd.join("st")));
        assert!(up.gateway.data.data.is_absolute());
        let cli = Cli::try_parse_from([
            "airlockd",
            "agent",
            "--gateway",
            "http://g:1",
            "--token",
            "t",
        ])
        .unwrap();
        let Command::Agent(a) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(a.data, cwd.join("airlock-agent-data"));
        assert!(Cli::try_parse_from(["airlockd", "up", "--data", ""]).is_err());
    }

    #[test]
    fn audit_metrics_and_log_options() {
        let cli = Cli::try_parse_from([
            "airlockd",
            "--log-format",
            "json",
            "up",
            "--metrics-listen",
            "127.0.0.1:9100",
            "--audit-retention-days",
            "0",
            "--no-runner-audit",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(
            up.gateway.metrics_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(up.gateway.audit_retention_days, 0);
        assert!(up.agent.no_runner_audit);
        let cli = Cli::try_parse_from(["airlockd", "up"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Text);
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up.gateway.metrics_listen, None);
        assert_eq!(up.gateway.audit_retention_days, 365);
        assert!(Cli::try_parse_from(["airlockd", "--log-format", "xml", "up"]).is_err());
        let cli = Cli::try_parse_from([
            "airlockd",
            "audit",
            "--user",
            "a@b.c",
            "--session",
            "s1",
            "--since",
            "1h",
            "--json",
        ])
        .unwrap();
        let Command::Audit(a) = cli.command else {
            panic!("not audit")
        };
        assert!(a.json);
        assert_eq!(a.since.as_deref(), Some("1h"));
    }
}
