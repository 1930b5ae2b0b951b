//! The mail outbox of operator notices on PostgreSQL (see `sqlite::notice_mails` for what a
//! notice mail is). Two things differ, both because several nodes share the table:
//! - hookgate's own events are read in commit order by `(txid, seq)`, and only those of
//!   transactions older than every transaction still running (`pg_snapshot_xmin`), so an event
//!   committed late with a small sequence number is not skipped by the cursor; the cursor is
//!   moved under a row lock, so two nodes never queue the same event twice;
//! - due mails are claimed (`FOR UPDATE SKIP LOCKED`, pushed out by a lease), so two nodes do not
//!   send the same mail at once.

use jiff::Timestamp;

use super::{PostgresStore, micros, pg_error};
use crate::store::{NoticeMail, StoreError};

/// The `settings` key of the last event looked at, as `txid:seq`.
const CURSOR: &str = "notice_mails.cursor";
/// Events taken per call.
const BATCH: i64 = 256;
/// How long a claimed mail is kept from the other nodes while one sends it.
const SEND_LEASE: std::time::Duration = std::time::Duration::from_secs(120);

impl PostgresStore {
    pub async fn queue_notice_mails(
        &self,
        names: Vec<String>,
        coalesce: std::time::Duration,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let coalesce_us = micros(coalesce);
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        let cursor: Option<String> = transaction
            .query_opt("SELECT value FROM settings WHERE key = $1 FOR UPDATE", &[&CURSOR])
            .await
            .map_err(pg_error)?
            .map(|row| row.get(0));
        let Some((cursor_txid, cursor_seq)) = cursor.as_deref().and_then(parse_cursor) else {
            // The first run mails what happens from now on, not the log's past.
            let last = transaction
                .query_one(
                    // (No max() of xid8 before PostgreSQL 15: the last row in the index's order.)
                    "SELECT COALESCE((SELECT txid::text || ':' || seq FROM events WHERE name LIKE 'hookgate.%'
                                      ORDER BY txid DESC, seq DESC LIMIT 1), '0:0')",
                    &[],
                )
                .await
                .map_err(pg_error)?;
            let value: String = last.get(0);
            transaction
                .execute(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    &[&CURSOR, &value],
                )
                .await
                .map_err(pg_error)?;
            transaction.commit().await.map_err(pg_error)?;
            return Ok(0);
        };
        let found = transaction
            .query(
                "SELECT e.txid::text, e.seq, e.id, e.name,
                        COALESCE(e.data, (SELECT convert_from(b.bytes, 'UTF8') FROM bodies b WHERE b.sha256 = e.body_sha256))::json ->> 'resourceId'
                 FROM events e
                 WHERE e.name LIKE 'hookgate.%' AND e.name = ANY($3)
                   AND (e.txid, e.seq) > ($1::text::xid8, $2)
                   AND e.txid < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY e.txid, e.seq LIMIT $4",
                &[&cursor_txid, &cursor_seq, &names, &BATCH],
            )
            .await
            .map_err(pg_error)?;
        let now_us = now.as_microsecond();
        for row in &found {
            let event_id: String = row.get(2);
            let kind: String = row.get(3);
            let subject: String = row.get::<_, Option<String>>(4).unwrap_or_default();
            let unsent = transaction
                .query_opt(
                    "SELECT id, event_ids FROM notice_mails WHERE kind = $1 AND subject = $2 AND sent_at_us IS NULL
                     ORDER BY id LIMIT 1 FOR UPDATE",
                    &[&kind, &subject],
                )
                .await
                .map_err(pg_error)?;
            if let Some(unsent) = unsent {
                let mut ids: Vec<String> = serde_json::from_str(unsent.get(1)).unwrap_or_default();
                ids.push(event_id);
                transaction
                    .execute(
                        "UPDATE notice_mails SET event_ids = $2 WHERE id = $1",
                        &[&unsent.get::<_, i64>(0), &serde_json::to_string(&ids).expect("ids serialize")],
                    )
                    .await
                    .map_err(pg_error)?;
                continue;
            }
            let last_sent: Option<i64> = transaction
                .query_one(
                    "SELECT max(sent_at_us) FROM notice_mails WHERE kind = $1 AND subject = $2",
                    &[&kind, &subject],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            let due_us = last_sent.map_or(now_us, |sent| now_us.max(sent.saturating_add(coalesce_us)));
            transaction
                .execute(
                    "INSERT INTO notice_mails (kind, subject, event_ids, due_at_us, created_at_us) VALUES ($1, $2, $3, $4, $5)",
                    &[&kind, &subject, &serde_json::to_string(&[event_id]).expect("ids serialize"), &due_us, &now_us],
                )
                .await
                .map_err(pg_error)?;
        }
        if let Some(last) = found.last() {
            let value = format!("{}:{}", last.get::<_, String>(0), last.get::<_, i64>(1));
            transaction
                .execute("UPDATE settings SET value = $2 WHERE key = $1", &[&CURSOR, &value])
                .await
                .map_err(pg_error)?;
        }
        transaction.commit().await.map_err(pg_error)?;
        Ok(found.len())
    }

    pub async fn due_notice_mails(&self, now: Timestamp, limit: usize) -> Result<Vec<NoticeMail>, StoreError> {
        let client = self.client().await?;
        let now_us = now.as_microsecond();
        let rows = client
            .query(
                "WITH due AS (
                     SELECT id FROM notice_mails WHERE sent_at_us IS NULL AND due_at_us <= $1
                     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
                 UPDATE notice_mails m SET due_at_us = $3 FROM due WHERE m.id = due.id
                 RETURNING m.id, m.kind, m.subject, m.event_ids, m.attempts",
                &[&now_us, &(limit as i64), &(now_us + micros(SEND_LEASE))],
            )
            .await
            .map_err(pg_error)?;
        let mut mails: Vec<NoticeMail> = rows
            .iter()
            .map(|row| NoticeMail {
                id: row.get(0),
                kind: row.get(1),
                subject: row.get(2),
                event_ids: serde_json::from_str(row.get(3)).unwrap_or_default(),
                attempts: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
            })
            .collect();
        mails.sort_by_key(|mail| mail.id);
        Ok(mails)
    }

    pub async fn finish_notice_mail(
        &self,
        id: i64,
        outcome: Result<Timestamp, (String, Timestamp)>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        match outcome {
            Ok(sent_at) => client
                .execute(
                    "UPDATE notice_mails SET sent_at_us = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1",
                    &[&id, &sent_at.as_microsecond()],
                )
                .await,
            Err((error, retry_at)) => client
                .execute(
                    "UPDATE notice_mails SET attempts = attempts + 1, last_error = $2, due_at_us = $3 WHERE id = $1",
                    &[&id, &error, &retry_at.as_microsecond()],
                )
                .await,
        }
        .map_err(pg_error)?;
        Ok(())
    }
}

/// Turns the cursor of an embedded store, copied into `settings` by `store::copy`, into this
/// backend's. SQLite's cursor is the `seq` of the last event looked at (`sqlite::notice_mails`);
/// here a position in the log is `txid:seq`, and the copy kept every event's `seq`. So the copied
/// event with the greatest `seq` at or before the old cursor marks the same place: every event
/// after it was not looked at yet, and is after it here too (the copy writes events in `seq`
/// order, and later events have later transactions). With no such event left, the cursor is
/// before every event. A cursor that is not a number is removed, as SQLite ignores one: the next
/// run then starts from the events then stored.
pub(in crate::store) async fn cursor_from_sqlite(
    transaction: &deadpool_postgres::Transaction<'_>,
) -> Result<(), StoreError> {
    let copied: Option<String> = transaction
        .query_opt("SELECT value FROM settings WHERE key = $1", &[&CURSOR])
        .await
        .map_err(pg_error)?
        .map(|row| row.get(0));
    let Some(copied) = copied else { return Ok(()) };
    match copied.parse::<i64>() {
        Ok(seq) => transaction
            .execute(
                "UPDATE settings SET value = COALESCE(
                     (SELECT txid::text || ':' || seq FROM events WHERE seq <= $2 ORDER BY seq DESC LIMIT 1), '0:0')
                 WHERE key = $1",
                &[&CURSOR, &seq],
            )
            .await
            .map_err(pg_error)?,
        Err(_) => transaction.execute("DELETE FROM settings WHERE key = $1", &[&CURSOR]).await.map_err(pg_error)?,
    };
    Ok(())
}

fn parse_cursor(value: &str) -> Option<(String, i64)> {
    let (txid, seq) = value.split_once(':')?;
    Some((txid.to_owned(), seq.parse().ok()?))
}
