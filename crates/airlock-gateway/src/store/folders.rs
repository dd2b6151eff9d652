//! Storage folders (vfolders) records; their bytes live in a
//! [`crate::storage::FolderStorage`].

use super::{Store, StoreError, conflict, now_ms};

/// A folder.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Folder {
    /// UUID.
    pub id: String,
    /// Name (unique per user; mount point under the home directory).
    pub name: String,
    /// Owner.
    pub user_id: String,
    /// Storage host.
    pub host: String,
    /// Creation time (epoch ms).
    pub created_at: i64,
}

impl Folder {
    /// The id as 32 hex digits (Backend.AI's folder URLs use it).
    pub fn hex_id(&self) -> String {
        self.id.replace('-', "")
    }
}

impl Store {
    /// Records a folder.
    pub async fn insert_folder(
        &self,
        user_id: &str,
        name: &str,
        host: &str,
    ) -> Result<Folder, StoreError> {
        let f = Folder {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            user_id: user_id.to_owned(),
            host: host.to_owned(),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO vfolders (id, name, user_id, host, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&f.id)
        .bind(&f.name)
        .bind(&f.user_id)
        .bind(&f.host)
        .bind(f.created_at)
        .execute(&self.pool)
        .await
        .map_err(conflict(&format!("a folder named {name:?}")))?;
        Ok(f)
    }

    /// Folders of a user (or everyone's), by name.
    pub async fn folders(&self, user_id: Option<&str>) -> Result<Vec<Folder>, StoreError> {
        Ok(match user_id {
            Some(u) => {
                sqlx::query_as(
                    "SELECT id, name, user_id, host, created_at FROM vfolders WHERE user_id = $1 ORDER BY name",
                )
                .bind(u)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as("SELECT id, name, user_id, host, created_at FROM vfolders ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?
            }
        })
    }

    /// A folder by id.
    pub async fn folder(&self, id: &str) -> Result<Option<Folder>, StoreError> {
        Ok(
            sqlx::query_as(
                "SELECT id, name, user_id, host, created_at FROM vfolders WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// A user's folder by name.
    pub async fn folder_named(
        &self,
        user_id: &str,
        name: &str,
    ) -> Result<Option<Folder>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, name, user_id, host, created_at FROM vfolders WHERE user_id = $1 AND name = $2",
        )
        .bind(user_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Renames a folder.
    pub async fn rename_folder(&self, id: &str, new_name: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE vfolders SET name = $1 WHERE id = $2")
            .bind(new_name)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(conflict(&format!("a folder named {new_name:?}")))?;
        Ok(())
    }

    /// Deletes a folder record.
    pub async fn delete_folder(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vfolders WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
