//! `airlockd audit`: the audit trail from the database, as a table or as
//! JSON lines (data on stdout).

use std::io::Write;

use airlock_gateway::audit::parse_since;
use airlock_gateway::store::{Event, EventFilter, now_ms};

use crate::cli::{AuditArgs, hinted};
use crate::data::open_store;

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, now_ms()))
        .transpose()
        .map_err(|e| {
            hinted(
                e,
                "for example --since 1h, --since 7d or --since 2026-01-31T00:00:00Z",
            )
        })?;
    let store = open_store(&args.data).await?;
    let events = store
        .events(&EventFilter {
            user: args.user,
            user_id: None,
            session: args.session,
            since,
            after_id: None,
            limit: args.limit,
        })
        .await;
    store.close().await;
    let events = events?;
    let mut out = std::io::stdout().lock();
    for e in &events {
        if args.json {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        } else {
            writeln!(out, "{}", line(e))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// One event as a line for people: time, kind, who, from where, which
/// session, then the details as `key=value`.
fn line(e: &Event) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let mut s = format!(
        "{} {:<20} {} {} {}",
        e.time,
        e.what.kind,
        dash(&e.what.user),
        dash(&e.what.client),
        dash(&e.what.session),
    );
    for (k, v) in e.what.details() {
        match v {
            serde_json::Value::String(t) => s.push_str(&format!(" {k}={t:?}")),
            other => s.push_str(&format!(" {k}={other}")),
        }
    }
    s
}
