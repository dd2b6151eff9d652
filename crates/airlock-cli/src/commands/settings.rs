//! `airlock settings`.

use airlock_proto::api::{UserSettings, UserSettingsSaved, UserSettingsUpdate};
use airlock_proto::validate;
use reqwest::Method;

use crate::args::SettingsArgs;
use crate::client::{ApiClient, Body};
use crate::error::CliResult;
use crate::output;

fn show(settings: &UserSettings) {
    match settings.ssh_port {
        Some(p) => println!("Preferred SSH port: {p}"),
        None => println!(
            "Preferred SSH port: not set, so {} is used (a random free port when it is taken)",
            airlock_proto::recipes::DEFAULT_LOCAL_PORT
        ),
    }
}

/// `airlock settings [--ssh-port PORT] [--json]`.
pub async fn run(client: &ApiClient, args: SettingsArgs) -> CliResult<()> {
    let Some(raw) = args.ssh_port else {
        let settings: UserSettings = client.get("/user/settings").await?;
        if args.json {
            return output::json(&settings);
        }
        show(&settings);
        return Ok(());
    };
    // Check locally first for an immediate, identical message.
    let port = validate::parse_ssh_port(&raw)?;
    let update = UserSettingsUpdate {
        ssh_port: Some(port.map_or(serde_json::Value::Null, |p| serde_json::json!(p))),
    };
    let saved: UserSettingsSaved = client
        .call(Method::PATCH, "/user/settings", Body::json(&update)?)
        .await?;
    for w in &saved.warnings {
        output::warning(w);
    }
    if args.json {
        return output::json(&saved.settings);
    }
    match saved.settings.ssh_port {
        Some(p) => output::success(&format!("Preferred SSH port set to {p}.")),
        None => output::success("Preferred SSH port cleared."),
    }
    Ok(())
}
