//! The storage limit of `bench/run`: how many events per second the disk and SQLite on this
//! machine can commit durably, with nothing of HTTP, parsing or verification in the way.
//!
//! ```text
//! cargo run --release --example bench_storage -- FILE SECONDS BATCH [TABLE,TABLE...]
//! ```
//!
//! FILE is a SQLite database that the real `hookgate` binary made and stored at least one event
//! in (so the schema, indexes and rows are exactly hookgate's, whatever its migrations are today).
//! For each TABLE (default `bodies,events`, in that order), the newest row is the template; the
//! program then inserts copies of the templates, one copy of each table's template per event,
//! as fast as it can for SECONDS: BATCH events per transaction, with hookgate's settings
//! (`journal_mode=WAL`, `synchronous=FULL`, `foreign_keys=ON`, `temp_store=MEMORY`, a passive
//! checkpoint between two batches every 500 ms). Like hookgate's appends, events run without
//! savepoints of their own. A copy differs from its template only in the
//! columns a unique index or primary key covers (text gets a suffix, blobs keep their length
//! with the last 8 bytes replaced, integers an offset); an `INTEGER PRIMARY KEY` is left to
//! SQLite. So every event writes the same bytes and index entries hookgate's writer thread does.
//!
//! It prints one JSON line: events, seconds, events per second, the batch size, and the commit
//! time (the latency of a batch: its inserts and its `COMMIT`) at p50, p99 and p99.9.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// One table's template row and the insert that copies it.
struct Template {
    table: String,
    insert: String,
    values: Vec<Value>,
    /// Positions in `values` that must differ between copies.
    unique: Vec<usize>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ensure!(args.len() >= 3, "usage: bench_storage FILE SECONDS BATCH [TABLE,TABLE...]");
    let seconds: f64 = args[1].parse().context("SECONDS is not a number")?;
    let batch: usize = args[2].parse().context("BATCH is not a whole number")?;
    ensure!(batch > 0, "BATCH must be at least 1");
    let tables = args.get(3).map_or("bodies,events", String::as_str);
    let connection = Connection::open(&args[0]).with_context(|| format!("cannot open {}", args[0]))?;
    connection.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    connection.execute_batch("PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=-16384; PRAGMA temp_store=MEMORY;")?;
    let templates =
        tables.split(',').map(|table| template(&connection, table.trim())).collect::<Result<Vec<_>, _>>()?;

    let run = std::process::id();
    let mut commits = Vec::new();
    let mut events: u64 = 0;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut last_checkpoint = started;
    while Instant::now() < deadline {
        let batch_started = Instant::now();
        connection.execute_batch("BEGIN IMMEDIATE")?;
        for _ in 0..batch {
            events += 1;
            for template in &templates {
                let values = template.copy(run, events);
                let mut statement = connection.prepare_cached(&template.insert)?;
                statement
                    .execute(params_from_iter(values.iter()))
                    .with_context(|| format!("insert into {}", template.table))?;
            }
        }
        connection.execute_batch("COMMIT")?;
        commits.push(batch_started.elapsed());
        if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            last_checkpoint = Instant::now();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    commits.sort();
    let percentile = |p: f64| {
        let index = ((commits.len() as f64 * p).ceil() as usize).clamp(1, commits.len()) - 1;
        commits[index].as_micros()
    };
    println!(
        "{{\"events\":{events},\"seconds\":{elapsed:.3},\"events_per_s\":{:.1},\"batch\":{batch},\"commits\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{}}}",
        events as f64 / elapsed,
        commits.len(),
        percentile(0.50),
        percentile(0.99),
        percentile(0.999)
    );
    Ok(())
}

/// Reads `table`'s columns, which of them are unique, and its newest row.
fn template(connection: &Connection, table: &str) -> anyhow::Result<Template> {
    ensure!(table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "odd table name {table:?}");
    let mut columns = Vec::new();
    let mut primary_key = Vec::new();
    let mut info = connection.prepare(&format!("PRAGMA table_info({table})"))?;
    let mut rows = info.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(1)?;
        let declared: String = row.get(2)?;
        let pk: i64 = row.get(5)?;
        if pk > 0 {
            primary_key.push((name.clone(), declared.to_ascii_uppercase()));
        }
        columns.push(name);
    }
    if columns.is_empty() {
        bail!("the database has no table {table}");
    }
    let mut unique: BTreeSet<String> = primary_key.iter().map(|(name, _)| name.clone()).collect();
    let mut indexes = connection.prepare(&format!("PRAGMA index_list({table})"))?;
    let unique_indexes: Vec<String> = indexes
        .query_map([], |row| Ok((row.get::<_, String>(1)?, row.get::<_, i64>(2)?)))?
        .filter_map(Result::ok)
        .filter(|(_, is_unique)| *is_unique == 1)
        .map(|(name, _)| name)
        .collect();
    for index in unique_indexes {
        let mut info = connection.prepare(&format!("PRAGMA index_info(\"{index}\")"))?;
        for name in info.query_map([], |row| row.get::<_, Option<String>>(2))? {
            if let Some(name) = name? {
                unique.insert(name);
            }
        }
    }
    // A lone INTEGER PRIMARY KEY is the rowid: SQLite assigns it.
    let rowid_alias = match primary_key.as_slice() {
        [(name, declared)] if declared == "INTEGER" => Some(name.clone()),
        _ => None,
    };
    let copied: Vec<String> = columns.into_iter().filter(|name| Some(name) != rowid_alias.as_ref()).collect();
    let list = copied.iter().map(|name| format!("\"{name}\"")).collect::<Vec<_>>().join(", ");
    let values: Vec<Value> = connection
        .query_row(&format!("SELECT {list} FROM {table} ORDER BY rowid DESC LIMIT 1"), [], |row| {
            (0..copied.len()).map(|i| row.get::<_, Value>(i)).collect()
        })
        .with_context(|| format!("{table} holds no row to copy: store one event with hookgate first"))?;
    let placeholders = (1..=copied.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    let unique = copied.iter().enumerate().filter(|(_, name)| unique.contains(*name)).map(|(i, _)| i).collect();
    Ok(Template {
        table: table.to_owned(),
        insert: format!("INSERT INTO {table} ({list}) VALUES ({placeholders})"),
        values,
        unique,
    })
}

impl Template {
    /// The template with its unique columns made distinct for event `n` of run `run`.
    fn copy(&self, run: u32, n: u64) -> Vec<Value> {
        let mut values = self.values.clone();
        for &i in &self.unique {
            values[i] = match &values[i] {
                Value::Text(text) => Value::Text(format!("{text}-{run}-{n}")),
                Value::Blob(bytes) => {
                    let mut bytes = bytes.clone();
                    let tag = ((u64::from(run) << 40) ^ n).to_be_bytes();
                    let keep = bytes.len().saturating_sub(tag.len());
                    bytes.truncate(keep);
                    bytes.extend_from_slice(&tag);
                    Value::Blob(bytes)
                }
                Value::Integer(number) => Value::Integer(number.wrapping_add((i64::from(run) << 32) + n as i64)),
                other => other.clone(),
            };
        }
        values
    }
}
