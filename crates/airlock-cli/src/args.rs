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
    /// Compute sessions: create, list, inspect, remove, copy files.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Storage folders that outlive sessions (mounted at /home/work/NAME).
    #[command(subcommand)]
    Vfolder(VfolderCommand),
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Create a session and wait until it runs.
    #[command(alias = "start")]
    Create(CreateArgs),
    /// List your sessions.
    #[command(alias = "list", alias = "ps")]
    Ls {
        /// Include terminated and failed sessions.
        #[arg(short, long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a session.
    Info {
        /// Session name or id.
        session: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Terminate sessions (folders are kept).
    #[command(alias = "destroy", alias = "kill")]
    Rm {
        /// Session names or ids.
        #[arg(required = true)]
        sessions: Vec<String>,
        /// Mark terminated even if its node cannot be reached.
        #[arg(short, long)]
        force: bool,
    },
    /// Print the session's container log.
    Logs {
        /// Session name or id.
        session: String,
    },
    /// Download files from the session's home directory.
    Download {
        /// Session name or id.
        session: String,
        /// Paths relative to /home/work.
        #[arg(required = true)]
        files: Vec<String>,
        /// Destination directory.
        #[arg(long, default_value = ".")]
        dest: PathBuf,
    },
    /// Upload files into the session's home directory.
    Upload {
        /// Session name or id.
        session: String,
        /// Local files; their relative paths are kept under /home/work.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the images sessions can be created from.
    Images {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Session name (4-64 letters, digits, '-', '_', '.'); generated if omitted.
    #[arg(short = 'n', long, alias = "tag")]
    pub name: Option<String>,
    /// Image (default: the server's default, airlock/base:bookworm).
    #[arg(short, long)]
    pub image: Option<String>,
    /// Mount a folder at /home/work/FOLDER (repeatable). Folders whose name
    /// starts with a dot (e.g. .ssh) are always mounted.
    #[arg(short, long = "mount", value_name = "FOLDER")]
    pub mounts: Vec<String>,
    /// CPU cores.
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory, e.g. 2g or 512m.
    #[arg(long)]
    pub mem: Option<String>,
    /// Return at once instead of waiting until the session runs.
    #[arg(long)]
    pub no_wait: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum VfolderCommand {
    /// Create a folder.
    #[command(alias = "mkdir-folder")]
    Create {
        /// Folder name (e.g. data, or .ssh for your own authorized_keys).
        name: String,
    },
    /// List your folders.
    #[command(alias = "ls-folders")]
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a folder and its contents.
    #[command(alias = "delete")]
    Rm {
        /// Folder name.
        name: String,
    },
    /// Rename a folder.
    Rename {
        /// Current name.
        name: String,
        /// New name.
        new_name: String,
    },
    /// List files in a folder.
    Ls {
        /// Folder name.
        name: String,
        /// Directory inside the folder.
        #[arg(default_value = "")]
        path: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upload files into a folder (streamed; large files welcome).
    Upload {
        /// Folder name.
        name: String,
        /// Local files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Directory inside the folder.
        #[arg(long, default_value = "")]
        dest: String,
    },
    /// Download files from a folder (resumes interrupted downloads).
    Download {
        /// Folder name.
        name: String,
        /// Paths inside the folder.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Local destination directory.
        #[arg(long, default_value = ".")]
        dest: PathBuf,
    },
    /// Create a directory in a folder.
    Mkdir {
        /// Folder name.
        name: String,
        /// Directory path.
        path: String,
    },
    /// Delete a file or directory in a folder.
    #[command(name = "rm-file")]
    RmFile {
        /// Folder name.
        name: String,
        /// Path inside the folder.
        path: String,
        /// Delete directories with their contents.
        #[arg(short, long)]
        recursive: bool,
    },
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
