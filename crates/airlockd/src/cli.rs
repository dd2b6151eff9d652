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
    /// Manage accounts in the data directory.
    #[command(subcommand_required = true)]
    User(UserArgs),
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

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address the gateway listens on.
    #[arg(long, env = "AIRLOCK_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub data: DataArgs,
    /// Add `Secure` to login cookies (when users reach the gateway over https).
    #[arg(long)]
    pub secure_cookies: bool,
    /// Trust X-Forwarded-For/-Proto from a reverse proxy in front.
    #[arg(long)]
    pub trust_forwarded: bool,
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
