//! `airlockd user …`: account administration against the data directory.

use std::io::{BufRead, IsTerminal};

use airlock_gateway::Store;
use airlock_gateway::store::{Account, NewEvent, NewUser, Role, StoreError, User, now_ms};
use airlock_proto::validate::check_email;

use crate::cli::{UserArgs, UserCommand, hinted};
use crate::data::open_existing_store;

/// Minimum password length for new passwords.
const MIN_PASSWORD: usize = 8;

/// Reads a new password: twice from the terminal, or one line from stdin.
pub fn read_new_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ")?;
        let second = rpassword::prompt_password("Repeat password: ")?;
        if first != second {
            return Err(hinted("the passwords do not match", "try again"));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.chars().count() < MIN_PASSWORD {
        return Err(hinted(
            format!("the password is too short (at least {MIN_PASSWORD} characters)"),
            "choose a longer password",
        ));
    }
    Ok(password)
}

async fn find(store: &Store, email: &str) -> anyhow::Result<User> {
    store.user_by_email(email).await?.ok_or_else(|| {
        hinted(
            format!("no account for {email}"),
            "list accounts with `airlockd user list`",
        )
    })
}

/// Records an administrator's change made with `airlockd user` (no client
/// address: it ran on the server, by whoever can read its state).
async fn audit(store: &Store, user: &User, kind: &str) {
    let event = NewEvent {
        at: now_ms(),
        kind: kind.to_owned(),
        user_id: Some(user.id.clone()),
        user: Some(user.email.clone()),
        detail: serde_json::json!({ "by": "airlockd user" }),
        ..NewEvent::default()
    };
    if let Err(e) = store.append_events(&[event]).await {
        tracing::warn!(error = %e, "cannot record an audit event");
    }
}

pub async fn run(args: UserArgs) -> anyhow::Result<()> {
    let store = open_existing_store(&args.data).await?;
    let result = match args.command {
        UserCommand::Add { email, admin } => {
            check_email(&email).map_err(|e| hinted(e.message, e.hint))?;
            let password = read_new_password()?;
            let role = if admin { Role::Admin } else { Role::User };
            let (user, keypair) = store
                .create_user(NewUser {
                    email: &email,
                    password: &password,
                    role,
                })
                .await
                .map_err(|e| match e {
                    StoreError::Conflict(_) => hinted(
                        format!("an account for {email} already exists"),
                        format!("change its password with `airlockd user passwd {email}`"),
                    ),
                    other => other.into(),
                })?;
            println!("created {} account {}", user.role.as_str(), user.email);
            println!("  access key: {}", keypair.access_key);
            println!("  secret key: {}", keypair.secret_key);
            println!("(the keys are for BACKEND_ENDPOINT_TYPE=api; keep the secret key private)");
            Ok(())
        }
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "id": u.id, "email": u.email, "role": u.role.as_str(),
                            "is_active": u.is_active,
                            "created_at": airlock_gateway::store::rfc3339(u.created_at),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<36}  {:<6}  {:<8}  CREATED", "EMAIL", "ROLE", "STATUS");
                for u in users {
                    println!(
                        "{:<36}  {:<6}  {:<8}  {}",
                        u.email,
                        u.role.as_str(),
                        if u.is_active { "active" } else { "inactive" },
                        airlock_gateway::store::rfc3339(u.created_at)
                    );
                }
            }
            Ok(())
        }
        UserCommand::Passwd { email } => {
            let user = find(&store, &email).await?;
            let password = read_new_password()?;
            store.set_password(&user.id, &password).await?;
            audit(&store, &user, "password.changed").await;
            println!(
                "password changed for {}; its web sessions ended",
                user.email
            );
            Ok(())
        }
        UserCommand::Disable { email } => {
            let user = find(&store, &email).await?;
            store.set_account(&user.id, Account::Disabled).await?;
            audit(&store, &user, "user.disabled").await;
            println!(
                "disabled {}; its web sessions ended and its keys are refused",
                user.email
            );
            Ok(())
        }
        UserCommand::Enable { email } => {
            let user = find(&store, &email).await?;
            store.set_account(&user.id, Account::Enabled).await?;
            audit(&store, &user, "user.enabled").await;
            println!("enabled {}", user.email);
            Ok(())
        }
        UserCommand::Keypair {
            email,
            regenerate,
            revoke,
        } => {
            let user = find(&store, &email).await?;
            if regenerate {
                let kp = store.regenerate_keypair(&user.id).await?;
                println!(
                    "new keypair for {} (the old one no longer works)",
                    user.email
                );
                println!("  access key: {}", kp.access_key);
                println!("  secret key: {}", kp.secret_key);
                println!("(shown once; keep the secret key private)");
            } else if revoke {
                let n = store.revoke_keypairs(&user.id).await?;
                println!(
                    "revoked {n} keypair{} of {}; signed requests are refused until `airlockd user keypair {} --regenerate`",
                    if n == 1 { "" } else { "s" },
                    user.email,
                    user.email
                );
            } else {
                match store.keypair_of(&user.id).await? {
                    Some(kp) => println!("access key: {}", kp.access_key),
                    None => println!(
                        "{} has no keypair (generate one with --regenerate)",
                        user.email
                    ),
                }
            }
            Ok(())
        }
        UserCommand::Limits(args) => crate::limits::run(&store, args).await,
    };
    store.close().await;
    result
}
