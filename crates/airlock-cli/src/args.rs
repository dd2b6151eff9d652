//! Command-line arguments of `airlock`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The help heading of options every command takes, shown once as a group.
const GLOBAL: &str = "Global options";

/// How the local port is chosen, for `--help`.
const PORT_HELP: &str = "Local port for the temporary proxy (default: your preferred SSH port if you set one, else 9922; if that is taken, a random free port)";

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
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Read the configuration from this file instead of searching for a
    /// `.env` upward from the current directory (used by `config-ssh`).
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
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
    /// Print the account you are logged in as (and the endpoint, on stderr).
    Whoami(WhoamiArgs),
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
    /// Round trips through each hop to a session (you → gateway → agent →
    /// runner) and to its SSH server's greeting: is it the network or the
    /// session?
    Ping(PingArgs),
    /// Throughput to and from a session through the whole tunnel (OpenSSH
    /// over the gateway to the session's SSH server).
    Speedtest(SpeedtestArgs),
    /// Administrators: the cluster (agents, every user's sessions, open
    /// tunnels with live byte counts) and accounts. Terminate anyone's
    /// session with `airlock session rm ID`.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print a shell completion script: `airlock completion bash >
    /// ~/.local/share/bash-completion/completions/airlock` (zsh: into a
    /// directory on $fpath as `_airlock`; fish: ~/.config/fish/completions/airlock.fish).
    Completion(CompletionArgs),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Agents with capacity and load, every user's live sessions, and open
    /// tunnels with their byte counts so far.
    Cluster {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disable or enable an account.
    #[command(subcommand)]
    User(AdminUserCommand),
    /// Drain a node (no new sessions; the ones it runs stay) or end a drain.
    #[command(subcommand)]
    Node(AdminNodeCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminNodeCommand {
    /// Schedule no new sessions on NODE (recorded in the audit trail).
    Drain {
        /// The node's id (`airlock admin cluster`).
        node: String,
    },
    /// Schedule sessions on NODE again.
    Undrain {
        /// The node's id.
        node: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminUserCommand {
    /// Disable an account: its logins end at once and it can neither log
    /// in nor sign requests (recorded in the audit trail).
    Disable {
        /// The account's email.
        email: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// The account's email.
        email: String,
    },
}

#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// Print JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PingArgs {
    /// Session name or id.
    pub session: String,
    /// Number of rounds (1 to 100).
    #[arg(short = 'c', long, default_value_t = 3)]
    pub count: u32,
    /// Print JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// Which way `airlock speedtest` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// To the session.
    Up,
    /// From the session.
    Down,
    /// Down, then up.
    Both,
}

#[derive(Debug, Args)]
pub struct SpeedtestArgs {
    /// Session name or id.
    pub session: String,
    /// How long each direction runs (e.g. 10s; at most 60s).
    #[arg(
        short = 't',
        long = "time",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub time: String,
    /// Which way to measure.
    #[arg(short = 'd', long, value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,
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
    /// Listen on [HOST:]PORT (default: your preferred SSH port if you set
    /// one, else 9922; if that is taken, a random free port).
    #[arg(short = 'b', long = "bind", value_name = "[HOST:]PORT")]
    pub bind: Option<String>,
}

/// `airlock ssh [OPTIONS] SESSION [ssh options] [command…]`: airlock's own
/// options come before the session name; everything after it is ssh's
/// (like `gh codespace ssh`), so `airlock ssh demo -v true` runs `ssh -v`.
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct SshArgs {
    #[arg(long = "local-port", alias = "port", value_name = "PORT", help = PORT_HELP)]
    pub port: Option<u16>,
    /// Print nothing of airlock's own (also the case when stdout is not a
    /// terminal, e.g. in scripts).
    #[arg(short, long)]
    pub quiet: bool,
    /// SESSION, then ssh options and the command, passed to ssh as given.
    #[arg(
        required = true,
        value_name = "SESSION [SSH ARGS]",
        allow_hyphen_values = true,
        num_args = 1..
    )]
    pub rest: Vec<String>,
}

impl SshArgs {
    /// The session name or id (the first word after airlock's options).
    pub fn session(&self) -> &str {
        self.rest.first().map_or("", String::as_str)
    }

    /// What goes to ssh.
    pub fn ssh_args(&self) -> &[String] {
        self.rest.get(1..).unwrap_or_default()
    }
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ScpArgs {
    #[arg(long = "local-port", value_name = "PORT", help = PORT_HELP)]
    pub port: Option<u16>,
    /// scp options and files: SRC... DST, where SESSION:PATH is in the
    /// session (e.g. `airlock scp -r data demo:/home/work/data/`).
    #[arg(allow_hyphen_values = true, required = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Session name or id (or give --ssh-alias).
    #[arg(required_unless_present = "ssh_alias")]
    pub session: Option<String>,
    /// The SSH host alias `airlock-NAME` (OpenSSH's `%n`): names the session
    /// and the alias its host key is pinned under (what `config-ssh` writes).
    #[arg(long, value_name = "ALIAS", conflicts_with_all = ["session", "alias"])]
    pub ssh_alias: Option<String>,
    /// known_hosts file holding the pinned host key (checked before
    /// connecting, so a changed key is explained). With --ssh-alias, a
    /// session not yet pinned there is pinned from the gateway's record.
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// Host key alias of the session in that file.
    #[arg(long, requires = "known_hosts")]
    pub alias: Option<String>,
    /// Write the session's key to FILE (0600) before connecting, for
    /// OpenSSH's `IdentityFile`.
    #[arg(long, value_name = "FILE")]
    pub session_key: Option<PathBuf>,
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
        /// Every user's sessions (administrators).
        #[arg(long)]
        all_users: bool,
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
    /// Print the session's container log (kept after it ends).
    Logs {
        /// Session name or id.
        session: String,
        /// Keep printing new lines until the session stops (Ctrl-C to quit).
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long, value_name = "N")]
        tail: Option<usize>,
    },
    /// Download files from the session's home directory; `tree/a` lands at
    /// DEST/tree/a, the same relative path `upload` uses.
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
    /// Whole NVIDIA GPUs, on a node that has them (seen in the session as
    /// CUDA_VISIBLE_DEVICES).
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Run it on this node (administrators; otherwise the scheduler
    /// picks a node with room).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your folders; with a folder NAME, the files in it.
    #[command(alias = "list", alias = "ls-folders")]
    Ls {
        /// A folder: list its files instead.
        name: Option<String>,
        /// Directory inside the folder.
        #[arg(default_value = "", requires = "name")]
        path: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a folder and its contents (asks first on a terminal).
    #[command(alias = "delete")]
    Rm {
        /// Folder name.
        name: String,
        /// Do not ask (needed when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Rename a folder.
    Rename {
        /// Current name.
        name: String,
        /// New name.
        new_name: String,
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
