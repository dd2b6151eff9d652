//! `airlock keys add|ls|rm`.

use std::io::Read;
use std::path::PathBuf;

use airlock_proto::api::{AddSshKey, KeypairInfo, SshKeyInfo};
use airlock_proto::sshkey::parse_public_key;
use reqwest::Method;

use crate::args::{KeypairCommand, KeysCommand};
use crate::client::{ApiClient, Body};
use crate::error::{CliError, CliResult};
use crate::output;

fn default_key() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".ssh/id_ed25519.pub");
    p.is_file().then_some(p)
}

fn read_key(file: Option<PathBuf>) -> CliResult<(String, String)> {
    let path = match file {
        Some(p) => p,
        None => default_key().ok_or_else(|| {
            CliError::new("no key file given and ~/.ssh/id_ed25519.pub does not exist")
                .hint("create one with `ssh-keygen -t ed25519`, or pass the .pub file: airlock keys add PATH")
        })?,
    };
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok((s, "stdin".into()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::new(format!("cannot read {}: {e}", path.display()))
            .hint("pass the path of your public key, e.g. ~/.ssh/id_ed25519.pub")
    })?;
    Ok((text, path.display().to_string()))
}

fn print_table(keys: &[SshKeyInfo]) {
    if keys.is_empty() {
        println!("No SSH keys registered. Add one with `airlock keys add`.");
        return;
    }
    let w = keys
        .iter()
        .map(|k| k.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<w$}  {:<20}  {:<50}  ADDED",
        "NAME", "TYPE", "FINGERPRINT"
    );
    for k in keys {
        println!(
            "{:<w$}  {:<20}  {:<50}  {}",
            k.name, k.algorithm, k.fingerprint, k.created_at
        );
    }
}

/// Runs a `keys` subcommand.
pub async fn run(client: &ApiClient, cmd: KeysCommand) -> CliResult<()> {
    match cmd {
        KeysCommand::Add { file, name, json } => {
            let (text, source) = read_key(file)?;
            let parsed = parse_public_key(&text)
                .map_err(|e| CliError::new(format!("{source}: {e}")).hint(e.hint()))?;
            let info: SshKeyInfo = client
                .call(
                    Method::POST,
                    "/user/ssh-keys",
                    Body::json(&AddSshKey {
                        name,
                        public_key: parsed.line,
                    })?,
                )
                .await?;
            if json {
                return output::json(&info);
            }
            output::success(&format!(
                "Added key {:?} ({}).",
                info.name, info.fingerprint
            ));
            Ok(())
        }
        KeysCommand::Ls { json } => {
            let keys: Vec<SshKeyInfo> = client.get("/user/ssh-keys").await?;
            if json {
                return output::json(&keys);
            }
            print_table(&keys);
            Ok(())
        }
        KeysCommand::Rm { key } => {
            let path = format!(
                "/user/ssh-keys/{}",
                percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC)
            );
            let info: SshKeyInfo = client.call(Method::DELETE, &path, Body::Empty).await?;
            output::success(&format!(
                "Removed key {:?} ({}).",
                info.name, info.fingerprint
            ));
            Ok(())
        }
    }
}

/// Runs a `keypair` subcommand.
pub async fn keypair(client: &ApiClient, cmd: KeypairCommand) -> CliResult<()> {
    match cmd {
        KeypairCommand::Show => {
            let kp: KeypairInfo = client.get("/user/keypair").await?;
            match kp.access_key {
                Some(ak) => println!("access key: {ak}"),
                None => println!("No keypair. Create one with `airlock keypair regenerate`."),
            }
            Ok(())
        }
        KeypairCommand::Regenerate => {
            let kp: KeypairInfo = client
                .call(Method::POST, "/user/keypair", Body::Empty)
                .await?;
            let (Some(ak), Some(sk)) = (kp.access_key, kp.secret_key) else {
                return Err(CliError::new("the gateway returned no keypair")
                    .hint("is the gateway the same version as this CLI?"));
            };
            println!("BACKEND_ACCESS_KEY={ak}");
            println!("BACKEND_SECRET_KEY={sk}");
            output::success(
                "New keypair created; the old one no longer works. The secret key is shown only now.",
            );
            Ok(())
        }
        KeypairCommand::Revoke => {
            let _: serde_json::Value = client
                .call(Method::DELETE, "/user/keypair", Body::Empty)
                .await?;
            output::success(
                "Keypair revoked: signed requests are refused until `airlock keypair regenerate`.",
            );
            Ok(())
        }
    }
}
