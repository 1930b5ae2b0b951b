//! The small records on PostgreSQL: API keys (only their SHA-256), hook URL tokens (created
//! once, kept forever: every node loading the same definitions finds the same tokens),
//! installed apps (announced, so every node reloads its catalog) and settings.

use jiff::Timestamp;
use std::collections::HashMap;

use super::{PostgresStore, announce, deadline, pg_error, timestamp, within};
use crate::store::{ApiKeyRecord, InstalledApp, KeyPurpose, StoreChange, StoreError};

impl PostgresStore {
    pub async fn hook_tokens(&self, event_names: Vec<String>) -> Result<HashMap<String, String>, StoreError> {
        let client = self.client().await?;
        let tokens: Vec<String> = event_names.iter().map(|_| crate::secrets::random_token(32)).collect();
        // The first token stays when several nodes create one at the same time.
        client
            .execute(
                "INSERT INTO hook_tokens (event_name, token) SELECT * FROM unnest($1::text[], $2::text[])
                 ORDER BY 1 ON CONFLICT (event_name) DO NOTHING",
                &[&event_names, &tokens],
            )
            .await
            .map_err(pg_error)?;
        let rows = client
            .query("SELECT event_name, token FROM hook_tokens WHERE event_name = ANY($1)", &[&event_names])
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    pub async fn insert_api_key(&self, key: ApiKeyRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        let list =
            |items: &Option<Vec<String>>| items.as_ref().map(|items| serde_json::to_string(items).unwrap_or_default());
        client
            .execute(
                "INSERT INTO api_keys (id, name, prefix, sha256, apps, created_at_us, revoked_at_us, purpose, scopes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &key.id,
                    &key.name,
                    &key.prefix,
                    &key.sha256,
                    &list(&key.apps),
                    &key.created_at.as_microsecond(),
                    &key.revoked_at.map(|at| at.as_microsecond()),
                    &key.purpose.as_str(),
                    &list(&key.scopes),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at_us, id"), &[])
            .await
            .map_err(pg_error)?;
        rows.iter().map(key_from_row).collect()
    }

    /// On a web hook request's path: answered within `CONNECTION_WAIT`, like the append after it.
    pub async fn active_api_key_by_hash(&self, sha256: String) -> Result<Option<ApiKeyRecord>, StoreError> {
        within(&self.inner.pool, deadline(), async |client| {
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE sha256 = $1 AND revoked_at_us IS NULL"
                ))
                .await
                .map_err(pg_error)?;
            client.query_opt(&statement, &[&sha256]).await.map_err(pg_error)?.map(|row| key_from_row(&row)).transpose()
        })
        .await
    }

    pub async fn revoke_api_key(&self, id: String, at: Timestamp) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE api_keys SET revoked_at_us = $2 WHERE id = $1 AND revoked_at_us IS NULL",
                &[&id, &at.as_microsecond()],
            )
            .await
            .map_err(pg_error)?;
        Ok(changed == 1)
    }

    pub async fn put_app(&self, app: InstalledApp) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        transaction
            .execute(
                "INSERT INTO installed_apps (app, definition, installed_at_us) VALUES ($1, $2, $3)
                 ON CONFLICT (app) DO UPDATE SET definition = excluded.definition, installed_at_us = excluded.installed_at_us",
                &[&app.app, &app.definition, &app.installed_at.as_microsecond()],
            )
            .await
            .map_err(pg_error)?;
        announce(&transaction, StoreChange::Apps, self.node()).await.map_err(pg_error)?;
        transaction.commit().await.map_err(pg_error)
    }

    pub async fn apps(&self) -> Result<Vec<InstalledApp>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT app, definition, installed_at_us FROM installed_apps ORDER BY app", &[])
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                Ok(InstalledApp { app: row.get(0), definition: row.get(1), installed_at: timestamp(row.get(2))? })
            })
            .collect()
    }

    pub async fn delete_app(&self, app: String) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        let deleted =
            transaction.execute("DELETE FROM installed_apps WHERE app = $1", &[&app]).await.map_err(pg_error)?;
        if deleted == 1 {
            announce(&transaction, StoreChange::Apps, self.node()).await.map_err(pg_error)?;
        }
        transaction.commit().await.map_err(pg_error)?;
        Ok(deleted == 1)
    }

    pub async fn setting(&self, key: String) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT value FROM settings WHERE key = $1", &[&key]).await.map_err(pg_error)?;
        Ok(row.map(|row| row.get(0)))
    }

    pub async fn put_setting_if_absent(&self, key: String, value: String) -> Result<String, StoreError> {
        let client = self.client().await?;
        client
            .execute("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", &[&key, &value])
            .await
            .map_err(pg_error)?;
        Ok(client.query_one("SELECT value FROM settings WHERE key = $1", &[&key]).await.map_err(pg_error)?.get(0))
    }

    pub async fn put_setting(&self, key: String, value: String) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}

const KEY_COLUMNS: &str = "id, name, prefix, sha256, apps, created_at_us, revoked_at_us, purpose, scopes";

fn key_from_row(row: &tokio_postgres::Row) -> Result<ApiKeyRecord, StoreError> {
    let list = |text: Option<String>| -> Result<Option<Vec<String>>, StoreError> {
        text.map(|text| serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))).transpose()
    };
    let purpose: &str = row.get(7);
    Ok(ApiKeyRecord {
        id: row.get(0),
        name: row.get(1),
        purpose: match purpose {
            "ingest" => KeyPurpose::Ingest,
            "management" => KeyPurpose::Management,
            other => return Err(StoreError::Corrupt(format!("key purpose {other:?}"))),
        },
        prefix: row.get(2),
        sha256: row.get(3),
        apps: list(row.get(4))?,
        scopes: list(row.get(8))?,
        created_at: timestamp(row.get(5))?,
        revoked_at: row.get::<_, Option<i64>>(6).map(timestamp).transpose()?,
    })
}
