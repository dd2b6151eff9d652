//! How every airlock binary logs, in one place: events go to stderr (stdout
//! carries data: `airlock proxy` is a ProxyCommand), coloured only on a
//! terminal, filtered by `AIRLOCK_LOG` (`tracing` directives, e.g.
//! `debug,hyper=info`) or else by the binary's default.
//!
//! The mains compose [`stderr`] with any layer of their own:
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//! tracing_subscriber::registry()
//!     .with(airlock_log::stderr("info", airlock_log::Format::Text))
//!     .init();
//! ```

use std::io::IsTerminal as _;

use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The environment variable that overrides a binary's default filter.
pub const ENV: &str = "AIRLOCK_LOG";

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Human-readable lines.
    #[default]
    Text,
    /// JSON objects, one per line.
    Json,
}

/// The filter: `AIRLOCK_LOG` when it is set and valid, else `default`.
pub fn filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env(ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

/// The stderr layer every binary uses, with its filter.
pub fn stderr<S>(default: &str, format: Format) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        Format::Json => layer.json().with_filter(filter(default)).boxed(),
        Format::Text => layer
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter(default))
            .boxed(),
    }
}
