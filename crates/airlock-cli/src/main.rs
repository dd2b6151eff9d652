//! `airlock`: wiring only.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let cli = airlock_cli::args::Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::registry()
        .with(airlock_log::stderr(default, airlock_log::Format::Text))
        .init();
    // One thread: the CLI only moves bytes, and one thread keeps both
    // directions of a tunnel on one core (fewer cross-CPU wake-ups).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(airlock_cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("error: {}", e.message);
            }
            if let Some(h) = &e.hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(e.code)
        }
    }
}
