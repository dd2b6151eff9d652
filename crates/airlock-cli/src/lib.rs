//! The `airlock` user CLI: log in, manage settings and keys, create sessions
//! and reach them with OpenSSH through the gateway.
//!
//! Output discipline: data goes to stdout, status lines and logs to stderr
//! (the `proxy` command's stdout carries SSH bytes only).

pub mod args;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod output;
pub mod state;
pub mod tls;
pub mod transfer;
pub mod tunnel;

use crate::args::{Cli, Command};
use crate::client::ApiClient;
use crate::config::{Config, Vars};
use crate::error::CliResult;
use crate::state::StateDir;

/// Resolves configuration and state, then runs the command.
pub async fn run(cli: Cli) -> CliResult<()> {
    // Needs no configuration: works before any `.env` exists.
    if let Command::Completion(args) = &cli.command {
        return commands::completion::run(args.shell);
    }
    let vars = match &cli.env_file {
        Some(path) => Vars::load_file(path)?,
        None => Vars::load(&std::env::current_dir()?)?,
    };
    let config = Config::from_vars(&vars)?;
    let state = StateDir::locate()?;
    let client = ApiClient::new(config, state)?;
    match cli.command {
        Command::Login => commands::login::login(&client).await,
        Command::Logout => commands::login::logout(&client).await,
        Command::Whoami(args) => commands::login::whoami(&client, args.json).await,
        Command::Settings(args) => commands::settings::run(&client, args).await,
        Command::Keys(cmd) => commands::keys::run(&client, cmd).await,
        Command::Keypair(cmd) => commands::keys::keypair(&client, cmd).await,
        Command::Session(cmd) => commands::session::run(&client, cmd).await,
        Command::Vfolder(cmd) => commands::vfolder::run(&client, cmd).await,
        Command::App(args) => commands::app::run(&client, args).await,
        Command::Ssh(args) => commands::ssh::ssh(&client, args).await,
        Command::Scp(args) => commands::ssh::scp(&client, args).await,
        Command::Proxy(args) => commands::proxy::run(&client, args).await,
        Command::ConfigSsh(args) => commands::config_ssh::run(&client, args).await,
        Command::Status(args) => commands::status::run(&client, args).await,
        Command::Ping(args) => commands::ping::run(&client, args).await,
        Command::Speedtest(args) => commands::speedtest::run(&client, args).await,
        Command::Admin(cmd) => commands::admin::run(&client, cmd).await,
        Command::Completion(args) => commands::completion::run(args.shell),
    }
}
