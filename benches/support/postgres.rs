//! The PostgreSQL side of a benchmark: a fresh schema per scenario on the server named by
//! `HOOKGATE_BENCH_POSTGRES_URL`, the URL that points hookgate's nodes at it, what they stored,
//! and the CPU time the database spent serving them.
//!
//! Each scenario's nodes connect with their own `application_name` (`hgbench_…`, the schema's
//! name), so their server processes can be told from everyone else's in `pg_stat_activity`;
//! the bench's own connection is named `hookgate-bench` and is not counted. The server's
//! auxiliary processes (WAL writer, checkpointer, background writer, autovacuum) serve every
//! database on the server, so their CPU is reported apart: on a shared server it includes
//! other users' work.

use std::time::Duration;

use anyhow::Context;

use super::machine::CpuSample;

/// The variable naming the server for the PostgreSQL scenarios, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`. Unset, those scenarios are skipped.
pub const URL_VARIABLE: &str = "HOOKGATE_BENCH_POSTGRES_URL";

/// The server's URL, if the variable is set and not empty.
pub fn server_url() -> Option<String> {
    std::env::var(URL_VARIABLE).ok().filter(|url| !url.is_empty())
}

/// A schema of its own for one scenario, created empty; `drop` removes it with everything in it.
pub struct BenchSchema {
    name: String,
    /// What hookgate's nodes are started with.
    pub url: String,
    /// The bench's own connection, with the schema as its search path.
    client: tokio_postgres::Client,
}

impl BenchSchema {
    pub async fn create(server: &str) -> anyhow::Result<BenchSchema> {
        let name = format!("hgbench_{}", uuid::Uuid::now_v7().simple());
        let separator = if server.contains('?') { '&' } else { '?' };
        let own = format!("{server}{separator}application_name=hookgate-bench");
        let (client, connection) = tokio_postgres::connect(&own, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("cannot connect to {server} ({URL_VARIABLE})"))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("the bench's PostgreSQL connection ended: {error}");
            }
        });
        client.batch_execute(&format!("CREATE SCHEMA {name}; SET search_path TO {name}")).await?;
        let url = format!("{server}{separator}options=-csearch_path%3D{name}&application_name={name}");
        Ok(BenchSchema { name, url, client })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `SELECT count(*)` of a table of the schema.
    pub async fn count(&self, table: &str) -> anyhow::Result<u64> {
        let count: i64 = self.client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0);
        Ok(u64::try_from(count)?)
    }

    /// Rows of `deliveries` by status.
    pub async fn deliveries_by_status(&self) -> anyhow::Result<std::collections::HashMap<String, i64>> {
        let rows = self.client.query("SELECT status, count(*) FROM deliveries GROUP BY status", &[]).await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// The CPU time of the server processes serving this schema's nodes, now.
    pub async fn backends_cpu(&self) -> anyhow::Result<CpuSample> {
        let rows =
            self.client.query("SELECT pid FROM pg_stat_activity WHERE application_name = $1", &[&self.name]).await?;
        Ok(CpuSample::of(rows.iter().map(|row| row.get::<_, i32>(0) as u32)))
    }

    /// The CPU time of the server's auxiliary processes (every process that is not a client
    /// backend), now. Shared by everything on the server.
    pub async fn auxiliary_cpu(&self) -> anyhow::Result<CpuSample> {
        let rows = self
            .client
            .query("SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend' AND pid IS NOT NULL", &[])
            .await?;
        Ok(CpuSample::of(rows.iter().map(|row| row.get::<_, i32>(0) as u32)))
    }

    /// Both samples at once.
    pub async fn sample(&self) -> anyhow::Result<DatabaseSample> {
        Ok(DatabaseSample { backends: self.backends_cpu().await?, auxiliary: self.auxiliary_cpu().await? })
    }

    /// Drops the schema and everything in it. The nodes must be stopped first.
    pub async fn drop(self) -> anyhow::Result<()> {
        self.client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .with_context(|| format!("cannot drop the bench's schema {}", self.name))
    }
}

/// The database's CPU time at one moment: the scenario's backends, and the shared processes.
#[derive(Debug, Clone, Default)]
pub struct DatabaseSample {
    pub backends: CpuSample,
    pub auxiliary: CpuSample,
}

impl DatabaseSample {
    /// What the database spent between `before` and this later sample: (backends, auxiliary).
    pub fn since(&self, before: &DatabaseSample) -> (Duration, Duration) {
        (self.backends.since(&before.backends), self.auxiliary.since(&before.auxiliary))
    }
}
