//! `airlockd user limits EMAIL …`: an account's own quotas.

use airlock_gateway::Store;
use airlock_gateway::quotas::{Limit, Unit, UserLimits};

use crate::cli::{LimitsArgs, hinted};

/// A setting from the command line: `None` leaves it, `Some(None)` returns
/// it to the server default.
type Change = Option<Option<Limit>>;

fn change(raw: Option<&str>, flag: &str, unit: Unit) -> anyhow::Result<Change> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.trim().eq_ignore_ascii_case("default") {
        return Ok(Some(None));
    }
    unit.parse(raw)
        .map(|l| Some(Some(l)))
        .map_err(|e| hinted(format!("--{flag}: {}", e.message), e.hint))
}

fn show(l: Option<Limit>, unit: Unit) -> String {
    l.map_or_else(|| "default".to_owned(), |l| unit.show(l))
}

fn json(l: Option<Limit>) -> serde_json::Value {
    match l {
        None => serde_json::Value::Null,
        Some(Limit::Unlimited) => "unlimited".into(),
        Some(Limit::Max(n)) => n.into(),
    }
}

pub async fn run(store: &Store, args: LimitsArgs) -> anyhow::Result<()> {
    let sessions = change(args.sessions.as_deref(), "sessions", Unit::Count)?;
    let tunnels = change(args.tunnels.as_deref(), "tunnels", Unit::Count)?;
    let upload = change(args.upload_size.as_deref(), "upload-size", Unit::Bytes)?;
    let folders = change(args.folders.as_deref(), "folders", Unit::Count)?;
    let user = store.user_by_email(&args.email).await?.ok_or_else(|| {
        hinted(
            format!("no account for {}", args.email),
            "list accounts with `airlockd user list`",
        )
    })?;
    let mut limits: UserLimits = store.user_limits(&user.id).await?;
    let changing = [sessions, tunnels, upload, folders]
        .iter()
        .any(Option::is_some);
    if let Some(v) = sessions {
        limits.sessions = v;
    }
    if let Some(v) = tunnels {
        limits.tunnels = v;
    }
    if let Some(v) = upload {
        limits.upload_bytes = v;
    }
    if let Some(v) = folders {
        limits.folders = v;
    }
    if changing {
        store.set_user_limits(&user.id, &limits).await?;
    }
    if args.json {
        let v = serde_json::json!({
            "email": user.email,
            "sessions": json(limits.sessions),
            "tunnels": json(limits.tunnels),
            "upload_size": json(limits.upload_bytes),
            "folders": json(limits.folders),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if changing {
        println!(
            "limits of {} updated (running gateways apply them to new requests):",
            user.email
        );
    } else {
        println!("limits of {}:", user.email);
    }
    println!("  sessions:    {}", show(limits.sessions, Unit::Count));
    println!("  tunnels:     {}", show(limits.tunnels, Unit::Count));
    println!("  upload size: {}", show(limits.upload_bytes, Unit::Bytes));
    println!("  folders:     {}", show(limits.folders, Unit::Count));
    println!("(\"default\" is the gateway's --max-… setting)");
    Ok(())
}
