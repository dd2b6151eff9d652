//! `airlockd image …`.

use airlock_agent::image::{BaseImageOptions, build_base_image};

use crate::cli::{ImageCommand, hinted};

pub async fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::BuildBase {
            tag,
            mirror,
            if_missing,
        } => {
            let engine = airlock_agent::docker::Engine::connect()
                .await
                .map_err(|e| hinted(e.to_string(), "start Docker and try again"))?;
            if if_missing && engine.has_image(&tag).await? {
                println!("{tag} is already present");
                return Ok(());
            }
            let opts = BaseImageOptions {
                tag: tag.clone(),
                mirror,
                ..BaseImageOptions::default()
            };
            build_base_image(&engine, &opts)
                .await
                .map_err(|e| match e {
                    airlock_agent::AgentError::Invalid { message, hint, .. } => {
                        hinted(message, hint.unwrap_or_default())
                    }
                    other => other.into(),
                })?;
            println!("built {tag}");
            Ok(())
        }
    }
}
