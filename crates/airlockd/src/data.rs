//! Opening the state directory and its database.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use airlock_gateway::Store;
use anyhow::Context;

use crate::cli::{DataArgs, hinted};

/// Creates the data directory (0700) if needed and opens the database.
pub async fn open_store(args: &DataArgs) -> anyhow::Result<Store> {
    if !args.data.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.data)
            .map_err(|e| {
                hinted(
                    format!(
                        "cannot create the data directory {}: {e}",
                        args.data.display()
                    ),
                    "choose another place with --data DIR",
                )
            })?;
    } else if let Ok(meta) = std::fs::metadata(&args.data) {
        if !meta.is_dir() {
            return Err(hinted(
                format!("{} is not a directory", args.data.display()),
                "choose another place with --data DIR",
            ));
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %args.data.display(),
                "the data directory is readable by other users; consider chmod 700"
            );
        }
    }
    let store = match &args.database_url {
        Some(url) => Store::open(url).await,
        None => Store::open_sqlite(&args.data.join("airlock.db")).await,
    };
    store.with_context(|| match &args.database_url {
        Some(_) => "cannot open the database given by --database-url".to_owned(),
        None => format!("cannot open the database in {}", args.data.display()),
    })
}

/// Opens the state an `airlockd up` or `airlockd gateway` created, for
/// administrative commands: a data directory without a database is refused
/// (a mistyped `--data` must not create an empty state and report on it).
pub async fn open_existing_store(args: &DataArgs) -> anyhow::Result<Store> {
    if args.database_url.is_none() && !args.data.join("airlock.db").is_file() {
        return Err(hinted(
            format!(
                "no airlock state in {} (it has no airlock.db)",
                args.data.display()
            ),
            "pass the --data DIR (or AIRLOCK_DATA, or --database-url) that `airlockd up` uses; it creates the state on its first start",
        ));
    }
    open_store(args).await
}
