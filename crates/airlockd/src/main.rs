//! `airlockd`: the airlock server. Wiring only: parse arguments, set up
//! logging, hand off to the command modules.

mod agent;
mod audit;
mod cli;
mod data;
mod gateway;
mod image;
mod limits;
mod node;
mod runner;
mod serve;
mod shutdown;
mod up;
mod user;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::prelude::*;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Gateway(args) => gateway::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::User(args) => user::run(args).await,
            Command::Image(cmd) => image::run(cmd).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Node(args) => node::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = e.downcast_ref::<cli::Hinted>().map(|h| h.hint.clone()) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8, format: cli::LogFormat) {
    let default = match verbose {
        0 => "info,sqlx=warn",
        1 => "debug,sqlx=warn,hyper=info",
        _ => "trace",
    };
    let format = match format {
        cli::LogFormat::Json => airlock_log::Format::Json,
        cli::LogFormat::Text => airlock_log::Format::Text,
    };
    tracing_subscriber::registry()
        .with(airlock_log::stderr(default, format))
        .init();
}
