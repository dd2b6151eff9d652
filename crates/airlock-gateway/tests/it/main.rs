//! In-process gateway tests: a real gateway on 127.0.0.1:0 over a temporary
//! SQLite database, driven with a real HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth;
mod cross_origin;
mod events;
mod fake_agent;
mod harness;
mod logins;
mod quotas;
mod sessions;
mod store;
mod tls;
mod user;
