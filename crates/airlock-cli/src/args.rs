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
#[command(name = "airlock", version = airlock_proto::version_line(), propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Read the configuration from this file instead of searching for a
    /// `.env` upward from the current directory (used by `config-ssh`).
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
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
    /// Your API keypair (BACKEND_ACCESS_KEY/SECRET_KEY): show, regenerate, revoke.
    #[command(subcommand)]
    Keypair(KeypairCommand),
    /// Compute sessions: create, list, inspect, remove, copy files.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Storage folders that outlive sessions (mounted at /home/work/NAME).
    #[command(subcommand)]
    Vfolder(VfolderCommand),
    /// Start a local proxy to a session's app (sshd): one tunnel per connection.
    App(AppArgs),
    /// Open an SSH shell (or run a command) in a session with OpenSSH.
    Ssh(SshArgs),
    /// Copy files to or from a session with OpenSSH scp (SESSION:PATH is remote).
    Scp(ScpArgs),
    /// Bridge stdin/stdout to a session's SSH server (for OpenSSH ProxyCommand).
    Proxy(ProxyArgs),
    /// Write ~/.ssh config entries (Host airlock-SESSION) for your running
    /// sessions: ssh, sftp, rsync and VS Code connect without a local port.
    ConfigSsh(ConfigSshArgs),
    /// Show the endpoint, your login, and whether the gateway answers (and
    /// its version). Exits non-zero when the gateway cannot be reached.
    Status(StatusArgs),
    /// Print a shell completion script: `airlock completion bash >
    /// ~/.local/share/bash-completion/completions/airlock` (zsh: into a
    /// directory on $fpath as `_airlock`; fish: ~/.config/fish/completions/airlock.fish).
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// Shells `airlock completion` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

#[derive(Debug, Args)]
pub struct AppArgs {
    /// Session name or id.
    pub session: String,
    /// App name (sessions provide `sshd`).
    pub app: String,
    /// Listen on [HOST:]PORT (default: your preferred SSH port, else a random
    /// free port).
    #[arg(short = 'b', long = "bind", value_name = "[HOST:]PORT")]
    pub bind: Option<String>,
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct SshArgs {
    /// Session name or id.
    pub session: String,
    /// Local port for the temporary proxy (default: your preferred SSH port,
    /// else 9922, else a random free port).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Arguments and command passed to ssh.
    #[arg(allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ScpArgs {
    /// Local port for the temporary proxy.
    #[arg(long = "local-port")]
    pub port: Option<u16>,
    /// scp options and files: SRC... DST, where SESSION:PATH is in the
    /// session (e.g. `airlock scp -r data demo:/home/work/data/`).
    #[arg(allow_hyphen_values = true, required = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Session name or id.
    pub session: String,
    /// known_hosts file holding the pinned host key (checked before
    /// connecting, so a changed key is explained).
    #[arg(long, requires = "alias")]
    pub known_hosts: Option<PathBuf>,
    /// Host key alias of the session in that file.
    #[arg(long)]
    pub alias: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConfigSshArgs {
    /// Show what would change (a diff) without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// The ssh directory (default ~/.ssh).
    #[arg(long, value_name = "DIR")]
    pub ssh_dir: Option<PathBuf>,
    /// Write `ForwardAgent yes` (default: no). Risk: whoever controls the
    /// session can use your laptop's SSH agent keys while you are connected.
    #[arg(long)]
    pub forward_agent: bool,
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
    /// Write the session's SSH key: OpenSSH format, or PPK for PuTTY,
    /// FileZilla and WinSCP.
    Key {
        /// Session name or id.
        session: String,
        /// Key format.
        #[arg(long, value_enum, default_value = "openssh")]
        format: KeyFormat,
        /// Write to FILE (mode 0600) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List the images sessions can be created from.
    Images {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Private key file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyFormat {
    /// OpenSSH (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    Openssh,
    /// PuTTY private key v3.
    Ppk,
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
    /// Set an environment variable in the session, also seen by SSH logins
    /// (repeatable).
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
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
pub enum KeypairCommand {
    /// Show your access key (the secret key is never shown again).
    Show,
    /// Replace your keypair with a new one; the old one stops working at
    /// once. Prints the new secret key (once).
    Regenerate,
    /// Delete your keypair: signed (api mode) requests stop working until
    /// you regenerate one.
    Revoke,
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
