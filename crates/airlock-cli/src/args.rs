//! Command-line arguments of `airlock`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// airlock: reach your compute sessions over SSH and SFTP.
///
/// Configuration comes from the environment or a `.env` file in the current
/// directory or above: BACKEND_ENDPOINT (gateway URL), BACKEND_ENDPOINT_TYPE
/// (`session` to log in with email/password, `api` for access keys),
/// BACKEND_ACCESS_KEY, BACKEND_SECRET_KEY. AIRLOCK_* names work as well.
#[derive(Debug, Parser)]
#[command(name = "airlock", version, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in with your email and password (BACKEND_ENDPOINT_TYPE=session).
    Login,
    /// Log out and forget the saved login.
    Logout,
    /// Show or change your settings (preferred SSH port).
    Settings(SettingsArgs),
    /// Manage the SSH public keys of your account (used in new sessions).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// Set the preferred local SSH port (1025-65534, 10000-65000
    /// recommended); 0 or '' clears it.
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Register a public key (default: ~/.ssh/id_ed25519.pub; `-` reads stdin).
    Add {
        /// The .pub file.
        file: Option<PathBuf>,
        /// A name for the key (default: its comment).
        #[arg(long)]
        name: Option<String>,
    },
    /// List your keys with their fingerprints.
    #[command(alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a key by name, id or fingerprint.
    #[command(alias = "remove")]
    Rm {
        /// Name, id or SHA256 fingerprint.
        key: String,
    },
}
