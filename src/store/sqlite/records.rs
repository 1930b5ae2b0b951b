//! The small records: API keys (only their SHA-256), hook URL tokens (created once, kept
//! forever), installed apps and settings.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;

use super::{SqliteStore, timestamp};
use crate::store::{ApiKeyRecord, InstalledApp, KeyPurpose, StoreError};

impl SqliteStore {
    pub async fn hook_tokens(&self, event_names: Vec<String>) -> Result<HashMap<String, String>, StoreError> {
        self.write(move |connection| {
            let mut tokens = HashMap::with_capacity(event_names.len());
            // INSERT OR IGNORE keeps the first token when another process creates one at the same time.
            let mut insert =
                connection.prepare_cached("INSERT OR IGNORE INTO hook_tokens (event_name, token) VALUES (?1, ?2)")?;
            let mut select = connection.prepare_cached("SELECT token FROM hook_tokens WHERE event_name = ?1")?;
            for name in event_names {
                insert.execute(params![name, crate::secrets::random_token(32)])?;
                let token: String = select.query_row([&name], |row| row.get(0))?;
                tokens.insert(name, token);
            }
            Ok(tokens)
        })
        .await
    }

    pub async fn insert_api_key(&self, key: ApiKeyRecord) -> Result<(), StoreError> {
        self.write(move |connection| {
            let apps = key.apps.as_ref().map(|apps| serde_json::to_string(apps).unwrap_or_default());
            let scopes = key.scopes.as_ref().map(|scopes| serde_json::to_string(scopes).unwrap_or_default());
            connection.execute(
                "INSERT INTO api_keys (id, name, prefix, sha256, apps, created_at_us, revoked_at_us, purpose, scopes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    key.id,
                    key.name,
                    key.prefix,
                    key.sha256,
                    apps,
                    key.created_at.as_microsecond(),
                    key.revoked_at.map(|at| at.as_microsecond()),
                    key.purpose.as_str(),
                    scopes
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|connection| {
            let mut statement =
                connection.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at_us, id"))?;
            let rows = statement.query_map([], key_from_row)?;
            rows.map(|row| row?).collect()
        })
        .await
    }

    pub async fn active_api_key_by_hash(&self, sha256: String) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE sha256 = ?1 AND revoked_at_us IS NULL"
                ))?
                .query_row([sha256], key_from_row)
                .optional()?
                .transpose()
        })
        .await
    }

    pub async fn revoke_api_key(&self, id: String, at: Timestamp) -> Result<bool, StoreError> {
        self.write(move |connection| {
            let changed = connection.execute(
                "UPDATE api_keys SET revoked_at_us = ?2 WHERE id = ?1 AND revoked_at_us IS NULL",
                params![id, at.as_microsecond()],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    pub async fn put_app(&self, app: InstalledApp) -> Result<(), StoreError> {
        self.write(move |connection| {
            connection.execute(
                "INSERT INTO installed_apps (app, definition, installed_at_us) VALUES (?1, ?2, ?3)
                 ON CONFLICT (app) DO UPDATE SET definition = excluded.definition, installed_at_us = excluded.installed_at_us",
                params![app.app, app.definition, app.installed_at.as_microsecond()],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn apps(&self) -> Result<Vec<InstalledApp>, StoreError> {
        self.read(|connection| {
            let mut statement = connection
                .prepare_cached("SELECT app, definition, installed_at_us FROM installed_apps ORDER BY app")?;
            let rows = statement
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?)))?;
            rows.map(|row| {
                let (app, definition, installed_at_us) = row?;
                Ok(InstalledApp { app, definition, installed_at: timestamp(installed_at_us)? })
            })
            .collect()
        })
        .await
    }

    pub async fn delete_app(&self, app: String) -> Result<bool, StoreError> {
        self.write(move |connection| Ok(connection.execute("DELETE FROM installed_apps WHERE app = ?1", [app])? == 1))
            .await
    }

    pub async fn setting(&self, key: String) -> Result<Option<String>, StoreError> {
        self.read(move |connection| {
            Ok(connection.query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| row.get(0)).optional()?)
        })
        .await
    }

    pub async fn put_setting_if_absent(&self, key: String, value: String) -> Result<String, StoreError> {
        self.write(move |connection| {
            connection.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![key, value],
            )?;
            Ok(connection.query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| row.get(0))?)
        })
        .await
    }

    pub async fn put_setting(&self, key: String, value: String) -> Result<(), StoreError> {
        self.write(move |connection| {
            connection.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
        .await
    }
}

const KEY_COLUMNS: &str = "id, name, prefix, sha256, apps, created_at_us, revoked_at_us, purpose, scopes";

fn key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ApiKeyRecord, StoreError>> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let prefix: String = row.get(2)?;
    let sha256: String = row.get(3)?;
    let apps: Option<String> = row.get(4)?;
    let created_at_us: i64 = row.get(5)?;
    let revoked_at_us: Option<i64> = row.get(6)?;
    let purpose: String = row.get(7)?;
    let scopes: Option<String> = row.get(8)?;
    let list = |text: Option<String>| -> Result<Option<Vec<String>>, StoreError> {
        text.map(|text| serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))).transpose()
    };
    Ok((|| {
        Ok(ApiKeyRecord {
            id,
            name,
            purpose: match purpose.as_str() {
                "ingest" => KeyPurpose::Ingest,
                "management" => KeyPurpose::Management,
                other => return Err(StoreError::Corrupt(format!("key purpose {other:?}"))),
            },
            prefix,
            sha256,
            apps: list(apps)?,
            scopes: list(scopes)?,
            created_at: timestamp(created_at_us)?,
            revoked_at: revoked_at_us.map(timestamp).transpose()?,
        })
    })())
}
