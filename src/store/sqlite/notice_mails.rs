//! The mail outbox of operator notices: hookgate events (`hookgate.*`) are read from the event
//! log in commit order (by `seq`, after a cursor kept in `settings`), and each one either joins
//! the unsent mail of its kind and subject or starts a new one, due at once or when the last
//! mail of its kind and subject is `coalesce` old. Queuing and the cursor move in one
//! transaction, so a crash neither loses nor repeats one.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::store::{NoticeMail, StoreError};

/// The `settings` key of the last event `seq` looked at (a `seq` is never given twice).
const CURSOR: &str = "notice_mails.cursor";
/// Events taken per call.
const BATCH: i64 = 256;

impl SqliteStore {
    pub async fn queue_notice_mails(
        &self,
        names: Vec<String>,
        coalesce: std::time::Duration,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let coalesce_us = i64::try_from(coalesce.as_micros()).unwrap_or(i64::MAX / 2);
        self.write(move |connection| {
            let cursor: Option<i64> = connection
                .query_row("SELECT value FROM settings WHERE key = ?1", [CURSOR], |row| row.get::<_, String>(0))
                .optional()?
                .and_then(|value| value.parse().ok());
            let Some(cursor) = cursor else {
                // The first run mails what happens from now on, not the log's past.
                let last: i64 = connection.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| row.get(0))?;
                put_cursor(connection, last)?;
                return Ok(0);
            };
            let names = serde_json::to_string(&names).expect("names serialize");
            let mut select = connection.prepare(
                "SELECT seq, id, name, json_extract(
                            COALESCE(data, (SELECT CAST(bytes AS TEXT) FROM bodies WHERE id = body_id)),
                            '$.resourceId')
                 FROM events WHERE seq > ?1 AND name IN (SELECT value FROM json_each(?2)) ORDER BY seq LIMIT ?3",
            )?;
            let found: Vec<(i64, String, String, Option<String>)> = select
                .query_map(params![cursor, names, BATCH], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let now_us = now.as_microsecond();
            for (_, event_id, kind, subject) in &found {
                let subject = subject.clone().unwrap_or_default();
                let unsent: Option<(i64, String)> = connection
                    .query_row(
                        "SELECT id, event_ids FROM notice_mails WHERE kind = ?1 AND subject = ?2 AND sent_at_us IS NULL",
                        params![kind, subject],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()?;
                if let Some((id, event_ids)) = unsent {
                    let mut ids: Vec<String> = serde_json::from_str(&event_ids).unwrap_or_default();
                    ids.push(event_id.clone());
                    connection.execute(
                        "UPDATE notice_mails SET event_ids = ?2 WHERE id = ?1",
                        params![id, serde_json::to_string(&ids).expect("ids serialize")],
                    )?;
                    continue;
                }
                let last_sent: Option<i64> = connection.query_row(
                    "SELECT MAX(sent_at_us) FROM notice_mails WHERE kind = ?1 AND subject = ?2",
                    params![kind, subject],
                    |row| row.get(0),
                )?;
                let due_us = last_sent.map_or(now_us, |sent| now_us.max(sent.saturating_add(coalesce_us)));
                connection.execute(
                    "INSERT INTO notice_mails (kind, subject, event_ids, due_at_us, created_at_us) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![kind, subject, serde_json::to_string(&[event_id]).expect("ids serialize"), due_us, now_us],
                )?;
            }
            if let Some((last, ..)) = found.last() {
                put_cursor(connection, *last)?;
            }
            Ok(found.len())
        })
        .await
    }

    pub async fn due_notice_mails(&self, now: Timestamp, limit: usize) -> Result<Vec<NoticeMail>, StoreError> {
        let now_us = now.as_microsecond();
        self.read(move |connection| {
            let mut select = connection.prepare(
                "SELECT id, kind, subject, event_ids, attempts FROM notice_mails
                 WHERE sent_at_us IS NULL AND due_at_us <= ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = select.query_map(params![now_us, limit as i64], |row| {
                let event_ids: String = row.get(3)?;
                Ok(NoticeMail {
                    id: row.get(0)?,
                    kind: row.get(1)?,
                    subject: row.get(2)?,
                    event_ids: serde_json::from_str(&event_ids).unwrap_or_default(),
                    attempts: row.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn finish_notice_mail(
        &self,
        id: i64,
        outcome: Result<Timestamp, (String, Timestamp)>,
    ) -> Result<(), StoreError> {
        self.write(move |connection| {
            match outcome {
                Ok(sent_at) => connection.execute(
                    "UPDATE notice_mails SET sent_at_us = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                    params![id, sent_at.as_microsecond()],
                )?,
                Err((error, retry_at)) => connection.execute(
                    "UPDATE notice_mails SET attempts = attempts + 1, last_error = ?2, due_at_us = ?3 WHERE id = ?1",
                    params![id, error, retry_at.as_microsecond()],
                )?,
            };
            Ok(())
        })
        .await
    }
}

fn put_cursor(connection: &rusqlite::Connection, seq: i64) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![CURSOR, seq.to_string()],
    )?;
    Ok(())
}
