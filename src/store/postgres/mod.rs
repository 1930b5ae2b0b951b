//! The PostgreSQL backend, for several gateway nodes on one database.
//!
//! A pool of connections (deadpool-postgres over tokio-postgres; TLS by rustls when the URL's
//! `sslmode` is `require`) serves reads and the small writes, each in its own transaction.
//! Appends go through group commit (`writer`): every append queued while a transaction commits
//! joins the next one, and each waiter is answered after its commit, as on SQLite. What may
//! happen on two nodes at once is decided by the database, never by a read before a write: a
//! duplicate by the unique index on the idempotency key, a claim by `FOR UPDATE SKIP LOCKED`
//! with a lease.
//!
//! When the database is away, callers are told so (`StoreError::Unavailable`, which ingress
//! answers with 503 or SMTP 451) within `CONNECTION_WAIT`, whether the server closes
//! connections or stops answering: an append not committed by then is answered `Unavailable`
//! (`writer`), and so are the readiness check and the API-key lookup of a web hook, the reads on
//! a request's path (`within`). A connection that did not answer in time leaves the pool, since
//! the next caller would wait on it too; the pool opens new ones when the database returns.
//!
//! Changes that other nodes must act on (new deliveries or publications, subscriptions, apps)
//! are announced with NOTIFY (on a channel of the database and schema) in the transaction that makes them; `changes` listens on a
//! dedicated connection and hands them to the node as [`StoreChange`]s, with a polled
//! configuration counter as the fallback. The queries are grouped as SQLite's are: `events`,
//! `deliveries`, `rate_limits`, `retry_jobs`, `subscriptions`, `records`, `notice_mails`, `retention` (retention and
//! erasure); `migrations` holds the schema.

mod changes;
mod deliveries;
mod events;
mod migrations;
mod notice_mails;
mod rate_limits;
mod records;
mod retention;
mod retry_jobs;
mod subscriptions;
mod writer;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use jiff::Timestamp;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;

use super::{StoreChange, StoreError};

pub(super) use notice_mails::cursor_from_sqlite;

/// Connections in each node's pool.
const POOL_SIZE: usize = 16;
/// How long a caller waits for a connection from the pool, or for a new one to open; and how
/// long a request waits for the database (its append, its reads) before it is told to retry.
pub(super) const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// The PostgreSQL store. Cloning shares the pool, the writer and the change listener.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    appends: mpsc::Sender<writer::AppendJob>,
    changes: broadcast::Sender<StoreChange>,
    node: Arc<Node>,
    /// What subscription secrets are sealed with, once installed (`Store::install_secrets_keys`).
    secrets: std::sync::OnceLock<Arc<crate::store::sealed::SecretsKeys>>,
    /// Stops the listener and the writer when the last clone goes.
    _stop: tokio::sync::watch::Sender<()>,
}

/// This process among the nodes sharing the database.
pub(super) struct Node {
    /// Its name in NOTIFY payloads, so that it does not act on its own announcements.
    name: String,
    /// The NOTIFY channel of this database and schema: deployments in other schemas of the same
    /// database do not hear each other (NOTIFY channels are per database).
    channel: String,
    /// When this node last woke the others' workers, per kind (`wake_others`).
    last_woken: std::sync::Mutex<[Option<std::time::Instant>; 2]>,
}

impl Node {
    /// A NOTIFY payload: `<change> <node>`.
    fn payload(&self, change: StoreChange) -> String {
        format!("{} {}", change.as_str(), self.name)
    }

    /// Tells the other nodes' workers that deliveries or publications were committed, at most
    /// every `writer::WAKE_INTERVAL` per kind, outside any transaction (see `writer`). A lost
    /// wake-up costs a worker's polling interval, nothing more.
    async fn wake_others(&self, client: &Object, change: StoreChange) {
        let kind = usize::from(change == StoreChange::Publications);
        {
            let Ok(mut last_woken) = self.last_woken.lock() else { return };
            let now = std::time::Instant::now();
            if last_woken[kind].is_some_and(|at| now.duration_since(at) < writer::WAKE_INTERVAL) {
                return;
            }
            last_woken[kind] = Some(now);
        }
        if let Err(error) = client.execute("SELECT pg_notify($1, $2)", &[&self.channel, &self.payload(change)]).await {
            tracing::debug!(%error, "Other nodes could not be woken; their workers will poll.");
        }
    }
}

/// How connections are made: plain, or TLS when the URL asks for it.
#[derive(Clone)]
enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl PostgresStore {
    /// Connects, migrates (under an advisory lock), and starts the writer and the listener.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let (config, tls) = connection_config(url)?;
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match &tls {
            Tls::None => Manager::from_config(config.clone(), tokio_postgres::NoTls, manager_config),
            Tls::Rustls(connector) => Manager::from_config(config.clone(), connector.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECTION_WAIT))
            .create_timeout(Some(CONNECTION_WAIT))
            .recycle_timeout(Some(CONNECTION_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|error| StoreError::Unavailable(format!("cannot build the connection pool: {error}")))?;
        let mut client = get(&pool).await?;
        migrations::migrate(&mut client).await?;
        let schema: String = client.query_one("SELECT current_schema()", &[]).await.map_err(pg_error)?.get(0);
        drop(client);
        let channel = format!("hookgate_{}", &crate::secrets::sha256_hex(&schema)[..16]);
        let node = Arc::new(Node {
            name: format!("node_{}", uuid::Uuid::now_v7().simple()),
            channel,
            last_woken: std::sync::Mutex::new([None, None]),
        });
        let (changes, _) = broadcast::channel(256);
        let (stop, stopped) = tokio::sync::watch::channel(());
        let (appends, jobs) = mpsc::channel(writer::QUEUE);
        tokio::spawn(writer::run(pool.clone(), jobs, node.clone()));
        tokio::spawn(changes::listen(config, tls, pool.clone(), node.clone(), changes.clone(), stopped));
        Ok(PostgresStore {
            inner: Arc::new(Inner { pool, appends, changes, node, secrets: std::sync::OnceLock::new(), _stop: stop }),
        })
    }

    /// A connection from the pool.
    pub(in crate::store) async fn client(&self) -> Result<Object, StoreError> {
        get(&self.inner.pool).await
    }

    /// Closes the pool: every acknowledged append has committed already, and the connections
    /// end now rather than when the process does; later calls are refused.
    pub fn close(&self) {
        self.inner.pool.close();
    }

    /// Changes announced by other nodes (and the fallback's findings).
    pub fn changes(&self) -> broadcast::Receiver<StoreChange> {
        self.inner.changes.subscribe()
    }

    /// Whether the database answers, within `CONNECTION_WAIT`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        within(&self.inner.pool, deadline(), async |client| {
            client.execute("SELECT 1", &[]).await.map_err(pg_error)?;
            Ok(())
        })
        .await
    }

    fn node(&self) -> &Node {
        &self.inner.node
    }
}

async fn get(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(|error| match error {
        deadpool_postgres::PoolError::Backend(error) => pg_error(error),
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    })
}

/// When a request that starts now must have its answer from the database.
pub(super) fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + CONNECTION_WAIT
}

/// Runs `work` on a connection from the pool, and fails it as `Unavailable` if the connection or
/// the work is not done by `deadline`. A connection that did not answer in time leaves the pool:
/// it may be stalled (a server that stopped answering, a network that drops everything), and the
/// pool cannot tell, since such a connection is not closed.
pub(super) async fn within<T>(
    pool: &Pool,
    deadline: tokio::time::Instant,
    work: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let late =
        || StoreError::Unavailable(format!("the database did not answer within {} s", CONNECTION_WAIT.as_secs()));
    let mut client = tokio::time::timeout_at(deadline, get(pool)).await.map_err(|_| late())??;
    match tokio::time::timeout_at(deadline, work(&mut client)).await {
        Ok(outcome) => outcome,
        Err(_) => {
            drop(Object::take(client));
            Err(late())
        }
    }
}

/// The connection settings from a `postgres://` URL. TLS is used when `sslmode=require`
/// (the server's certificate is checked against the Web PKI roots); otherwise connections are
/// plain, whatever the server offers.
fn connection_config(url: &str) -> Result<(tokio_postgres::Config, Tls), StoreError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|error| StoreError::Unavailable(format!("the database URL is not valid: {error}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECTION_WAIT);
    }
    if config.get_application_name().is_none() {
        config.application_name("hookgate");
    }
    // A server that vanished without closing its connections (a partition, a crashed host) is
    // noticed in about a minute by every connection, not after the kernel's 15-minute retries.
    config.keepalives(true).keepalives_idle(Duration::from_secs(30)).tcp_user_timeout(Duration::from_secs(60));
    let tls = match config.get_ssl_mode() {
        SslMode::Require => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
            Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(client))
        }
        _ => {
            config.ssl_mode(SslMode::Disable);
            Tls::None
        }
    };
    Ok((config, tls))
}

/// A database error as the rest of hookgate sees it: the database's disk full is `Full` (503
/// `storage_full`, SMTP 452, as on SQLite); the database being away (connection lost, shutting
/// down, too many connections) is `Unavailable`, which ingress answers with 503 or 451 so that
/// senders retry.
pub(super) fn pg_error(error: tokio_postgres::Error) -> StoreError {
    match error.code() {
        None => StoreError::Unavailable(format!("the database connection failed: {error}")),
        Some(code) if *code == SqlState::DISK_FULL => StoreError::Full(format!("the database's disk is full: {error}")),
        Some(code) if is_unavailable(code) => {
            StoreError::Unavailable(format!("the database is not available: {error}"))
        }
        Some(_) => StoreError::Database(match error.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => error.to_string(),
        }),
    }
}

fn is_unavailable(code: &SqlState) -> bool {
    [
        SqlState::INSUFFICIENT_RESOURCES,
        SqlState::OUT_OF_MEMORY,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::CONNECTION_EXCEPTION,
        SqlState::CONNECTION_FAILURE,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ]
    .contains(code)
}

/// Whether a transaction failed only because another one ran beside it: worth running again.
/// (A body deleted by retention while an append referenced it again fails the append's
/// reference check; run again, the append writes the body anew.)
fn is_conflict(error: &tokio_postgres::Error) -> bool {
    [SqlState::T_R_DEADLOCK_DETECTED, SqlState::T_R_SERIALIZATION_FAILURE, SqlState::FOREIGN_KEY_VIOLATION]
        .iter()
        .any(|code| error.code() == Some(code))
}

fn timestamp(microseconds: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(microseconds).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX / 2)
}

/// Announces a change to the other nodes when the transaction commits; a change of
/// configuration also moves the counter their fallback polls.
async fn announce(
    transaction: &deadpool_postgres::Transaction<'_>,
    change: StoreChange,
    node: &Node,
) -> Result<(), tokio_postgres::Error> {
    transaction.execute("SELECT pg_notify($1, $2)", &[&node.channel, &node.payload(change)]).await?;
    if matches!(change, StoreChange::Subscriptions | StoreChange::Apps) {
        transaction.execute("UPDATE config_version SET version = version + 1", &[]).await?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fresh schema of the test database per test, so parallel tests and runs never meet.

    /// The test server's URL, or `None` (the test then says it was skipped, and fails in a strict
    /// run).
    pub(crate) fn server_url(test: &str) -> Option<String> {
        match std::env::var("HOOKGATE_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty()) {
            Some(url) => Some(url),
            None => {
                let strict = std::env::var("HOOKGATE_TEST_STRICT").is_ok_and(|value| value == "1");
                assert!(!strict, "{test}: HOOKGATE_TEST_POSTGRES_URL is not set and this run is strict");
                eprintln!("skipped {test}: HOOKGATE_TEST_POSTGRES_URL is not set");
                None
            }
        }
    }

    /// Creates an empty schema and returns a URL whose connections use it.
    pub(crate) async fn fresh_schema(server: &str) -> String {
        let schema = format!("hg_unit_{}", uuid::Uuid::now_v7().simple());
        let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
        let separator = if server.contains('?') { '&' } else { '?' };
        format!("{server}{separator}options=-csearch_path%3D{schema}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, conformance};

    #[tokio::test]
    async fn postgres_passes_the_store_conformance_suite() {
        let Some(server) = testing::server_url("postgres_passes_the_store_conformance_suite") else { return };
        let url = testing::fresh_schema(&server).await;
        let store = Store::Postgres(PostgresStore::open(&url).await.unwrap());
        crate::store::conformance::run_all(&store).await;
        let reopened = Store::Postgres(PostgresStore::open(&url).await.unwrap());
        crate::store::conformance::a_wrong_secrets_key_is_refused_and_changes_nothing(&store, &reopened).await;
        crate::store::conformance::closing_refuses_later_writes(&store).await;
    }

    #[tokio::test]
    async fn several_nodes_migrating_one_new_database_at_once_all_start() {
        let Some(server) = testing::server_url("several_nodes_migrating_one_new_database_at_once_all_start") else {
            return;
        };
        let url = testing::fresh_schema(&server).await;
        let opened = futures_util::future::join_all((0..4).map(|_| PostgresStore::open(&url))).await;
        for store in opened {
            store.expect("every node starts").ping().await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_database_newer_than_this_hookgate_is_refused() {
        let Some(server) = testing::server_url("a_database_newer_than_this_hookgate_is_refused") else { return };
        let url = testing::fresh_schema(&server).await;
        PostgresStore::open(&url).await.unwrap();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.execute("UPDATE hookgate_schema SET version = version + 1", &[]).await.unwrap();
        let error = PostgresStore::open(&url).await.err().expect("refused");
        assert!(error.to_string().contains("newer than this hookgate"), "{error}");
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_is_unavailable_not_a_database_error() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let error = PostgresStore::open(&format!("postgres://postgres@127.0.0.1:{port}/test")).await.err().unwrap();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    }

    /// Two nodes (two stores) on one fresh schema, and a plain client to look inside it.
    async fn two_nodes(test: &str) -> Option<(Store, Store, tokio_postgres::Client)> {
        let server = testing::server_url(test)?;
        let url = testing::fresh_schema(&server).await;
        let a = Store::Postgres(PostgresStore::open(&url).await.unwrap());
        let b = Store::Postgres(PostgresStore::open(&url).await.unwrap());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        Some((a, b, client))
    }

    async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
        client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
    }

    async fn subscription(store: &Store) -> crate::subscriptions::Subscription {
        let policy = crate::subscriptions::TargetPolicy::new(true, ["127.0.0.0/8".parse().unwrap()]);
        let request = serde_json::json!({"url": "http://127.0.0.1:9/hook"});
        let subscription =
            crate::subscriptions::from_request(&request, None, false, &policy, Timestamp::now()).await.unwrap();
        store.put_subscription(subscription.clone()).await.unwrap();
        subscription
    }

    /// `count` events, each with a delivery to `subscription`.
    fn routed_to(subscription: &crate::subscriptions::Subscription, count: usize) -> Vec<crate::event::NewEvent> {
        (0..count)
            .map(|_| {
                let mut event = conformance::sample_event("kustomer.app.shop.order", "shop");
                event.deliver_to = vec![subscription.id.clone()];
                event
            })
            .collect()
    }

    #[tokio::test]
    async fn the_same_platform_retry_reaching_two_nodes_at_once_is_one_event() {
        let Some((a, b, client)) = two_nodes("the_same_platform_retry_reaching_two_nodes_at_once_is_one_event").await
        else {
            return;
        };
        for round in 0..50 {
            let key = crate::event::IdempotencyKey {
                scope: "stripe".into(),
                key: format!("evt_{round}"),
                window: crate::event::DEFAULT_DEDUP_WINDOW,
            };
            let mut on_a = conformance::sample_event("stripe.charge.succeeded", "stripe");
            on_a.idempotency_key = Some(key.clone());
            let mut on_b = conformance::sample_event("stripe.charge.succeeded", "stripe");
            on_b.idempotency_key = Some(key);
            let (from_a, from_b) = tokio::join!(a.append_events(vec![on_a]), b.append_events(vec![on_b]));
            let (from_a, from_b) = (from_a.unwrap().remove(0), from_b.unwrap().remove(0));
            assert_eq!(from_a.id, from_b.id, "both replies carry the one event's id");
            assert!(from_a.duplicate != from_b.duplicate, "exactly one is the original: {from_a:?} {from_b:?}");
        }
        assert_eq!(count(&client, "events").await, 50);
    }

    #[tokio::test]
    async fn two_nodes_claiming_at_once_never_take_the_same_delivery() {
        let Some((a, b, _)) = two_nodes("two_nodes_claiming_at_once_never_take_the_same_delivery").await else {
            return;
        };
        let subscription = subscription(&a).await;
        a.append_events(routed_to(&subscription, 300)).await.unwrap();
        let lease = Duration::from_secs(60);
        let claim_all = |store: Store| async move {
            let mut claimed = Vec::new();
            loop {
                let batch = store.claim_due_deliveries(Timestamp::now(), lease, 7).await.unwrap();
                if batch.is_empty() {
                    return claimed;
                }
                claimed.extend(batch.into_iter().map(|due| due.id));
            }
        };
        let (by_a, by_b) = tokio::join!(claim_all(a.clone()), claim_all(b.clone()));
        let all: std::collections::HashSet<&String> = by_a.iter().chain(&by_b).collect();
        assert_eq!(all.len(), 300, "every delivery claimed once: {} by a, {} by b", by_a.len(), by_b.len());
        assert_eq!(by_a.len() + by_b.len(), 300, "none claimed twice");
    }

    #[tokio::test]
    async fn two_nodes_claiming_a_rate_limited_subscription_together_spend_each_token_once() {
        let test = "two_nodes_claiming_a_rate_limited_subscription_together_spend_each_token_once";
        let Some((a, b, _)) = two_nodes(test).await else { return };
        let mut limited = subscription(&a).await;
        limited.rate_limit = Some(crate::subscriptions::RateLimit { per_second: 5.0, burst: 5 });
        a.put_subscription(limited.clone()).await.unwrap();
        a.append_events(routed_to(&limited, 200)).await.unwrap();
        let lease = Duration::from_secs(600);
        let started = std::time::Instant::now();
        let claim_for = |store: Store| async move {
            let mut claimed = Vec::new();
            while started.elapsed() < Duration::from_secs(2) {
                let batch = store.claim_due_deliveries(Timestamp::now(), lease, 7).await.unwrap();
                claimed.extend(batch.into_iter().map(|due| due.id));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            claimed
        };
        let (by_a, by_b) = tokio::join!(claim_for(a.clone()), claim_for(b.clone()));
        let seconds = started.elapsed().as_secs_f64();
        let all: std::collections::HashSet<&String> = by_a.iter().chain(&by_b).collect();
        assert_eq!(all.len(), by_a.len() + by_b.len(), "none claimed twice");
        let allowed = 5.0 + 5.0 * seconds;
        assert!(
            (all.len() as f64) <= allowed,
            "{} claimed in {seconds:.2} s ({} by a, {} by b), more than the burst and 5/s allow ({allowed:.1})",
            all.len(),
            by_a.len(),
            by_b.len()
        );
        assert!(all.len() >= 10, "the limit paces, it does not stop: {} claimed", all.len());
    }

    #[tokio::test]
    async fn two_nodes_working_off_ordered_keys_together_deliver_each_key_one_at_a_time_in_event_order() {
        use crate::store::{AttemptRecord, NextStep};
        use std::collections::HashMap;
        use std::sync::Mutex;
        let test = "two_nodes_working_off_ordered_keys_together_deliver_each_key_one_at_a_time_in_event_order";
        let Some((a, b, _)) = two_nodes(test).await else { return };
        let subscription = subscription(&a).await;
        // 120 events over 6 keys, each key's deliveries waiting behind the one before.
        let mut events = routed_to(&subscription, 120);
        let mut key_of = HashMap::new();
        for (index, event) in events.iter_mut().enumerate() {
            let key = format!("key-{}", index % 6);
            event.ordering_keys = [(subscription.id.clone(), key.clone())].into_iter().collect();
            key_of.insert(event.event.id.clone(), (key, index));
        }
        a.append_events(events).await.unwrap();
        let lease = Duration::from_secs(60);
        // Per key: the delivery a node holds now, and the events delivered so far in order.
        let in_flight: Mutex<HashMap<String, String>> = Mutex::new(HashMap::new());
        let delivered: Mutex<HashMap<String, Vec<usize>>> = Mutex::new(HashMap::new());
        let work_off = |store: Store| {
            let (key_of, in_flight, delivered) = (&key_of, &in_flight, &delivered);
            async move {
                let started = std::time::Instant::now();
                while delivered.lock().unwrap().values().map(Vec::len).sum::<usize>() < 120 {
                    assert!(started.elapsed() < Duration::from_secs(60), "the backlog is worked off within a minute");
                    let batch = store.claim_due_deliveries(Timestamp::now(), lease, 4).await.unwrap();
                    if batch.is_empty() {
                        // Each key's next waits for the other node's write.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    for due in &batch {
                        let (key, _) = &key_of[&due.event_id];
                        let earlier = in_flight.lock().unwrap().insert(key.clone(), due.id.clone());
                        assert!(earlier.is_none(), "{key}: {} claimed while {earlier:?} was in flight", due.id);
                    }
                    let records = batch
                        .iter()
                        .map(|due| {
                            let (key, index) = &key_of[&due.event_id];
                            in_flight.lock().unwrap().remove(key);
                            delivered.lock().unwrap().entry(key.clone()).or_default().push(*index);
                            AttemptRecord {
                                delivery_id: due.id.clone(),
                                attempt: 1,
                                at: Timestamp::now(),
                                status_code: Some(200),
                                latency: Duration::from_millis(1),
                                response_excerpt: None,
                                error: None,
                                next: NextStep::Delivered,
                                due_at: Some(due.due_at),
                                transform_version: None,
                            }
                        })
                        .collect();
                    store.record_attempts(records).await.unwrap();
                }
            }
        };
        tokio::join!(work_off(a.clone()), work_off(b.clone()));
        for (key, indexes) in delivered.into_inner().unwrap() {
            let in_event_order: Vec<usize> = (0..120).filter(|index| format!("key-{}", index % 6) == key).collect();
            assert_eq!(indexes, in_event_order, "{key}: every delivery once, in event order");
        }
    }

    #[tokio::test]
    async fn an_expired_lease_gives_the_delivery_to_another_node() {
        let Some((a, b, _)) = two_nodes("an_expired_lease_gives_the_delivery_to_another_node").await else { return };
        let subscription = subscription(&a).await;
        a.append_events(routed_to(&subscription, 1)).await.unwrap();
        let now = Timestamp::now();
        let lease = Duration::from_secs(30);
        let taken = a.claim_due_deliveries(now, lease, 10).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert!(b.claim_due_deliveries(now, lease, 10).await.unwrap().is_empty(), "held while the lease runs");
        let after_lease = now + jiff::SignedDuration::from_secs(31);
        let retaken = b.claim_due_deliveries(after_lease, lease, 10).await.unwrap();
        assert_eq!(retaken.iter().map(|due| &due.id).collect::<Vec<_>>(), vec![&taken[0].id]);
    }

    #[tokio::test]
    async fn an_attempt_recorded_by_two_nodes_counts_once() {
        let Some((a, b, client)) = two_nodes("an_attempt_recorded_by_two_nodes_counts_once").await else { return };
        let subscription = subscription(&a).await;
        a.append_events(routed_to(&subscription, 1)).await.unwrap();
        let due = a.claim_due_deliveries(Timestamp::now(), Duration::from_secs(1), 1).await.unwrap().remove(0);
        let record = |status_code: u16, next: crate::store::NextStep| crate::store::AttemptRecord {
            delivery_id: due.id.clone(),
            attempt: 1,
            at: Timestamp::now(),
            status_code: Some(status_code),
            latency: Duration::from_millis(3),
            response_excerpt: None,
            error: None,
            transform_version: None,
            next,
            due_at: None,
        };
        a.record_attempts(vec![record(200, crate::store::NextStep::Delivered)]).await.unwrap();
        // The node that outlived its lease reports the same attempt number: it changes nothing.
        let retry_at = Timestamp::now() + jiff::SignedDuration::from_secs(60);
        b.record_attempts(vec![record(500, crate::store::NextStep::RetryAt(retry_at))]).await.unwrap();
        assert_eq!(count(&client, "delivery_attempts").await, 1);
        let status: String = client.query_one("SELECT status FROM deliveries", &[]).await.unwrap().get(0);
        assert_eq!(status, "delivered");
    }

    #[tokio::test]
    async fn attempts_recorded_in_one_batch_leave_each_delivery_at_its_latest_and_count_each_number_once() {
        let Some((a, _, client)) =
            two_nodes("attempts_recorded_in_one_batch_leave_each_delivery_at_its_latest_and_count_each_number_once")
                .await
        else {
            return;
        };
        let subscription = subscription(&a).await;
        a.append_events(routed_to(&subscription, 2)).await.unwrap();
        let claimed = a.claim_due_deliveries(Timestamp::now(), Duration::from_secs(60), 10).await.unwrap();
        let (retried, delivered) = (&claimed[0].id, &claimed[1].id);
        let retry_at = Timestamp::now() + jiff::SignedDuration::from_secs(60);
        let record = |delivery: &String, attempt: u32, status_code: u16, next: crate::store::NextStep| {
            crate::store::AttemptRecord {
                delivery_id: delivery.clone(),
                attempt,
                at: Timestamp::now(),
                status_code: Some(status_code),
                latency: Duration::from_millis(3),
                response_excerpt: None,
                error: None,
                transform_version: None,
                next,
                due_at: None,
            }
        };
        a.record_attempts(vec![
            // The later attempt first: the delivery still ends at it.
            record(delivered, 2, 200, crate::store::NextStep::Delivered),
            record(delivered, 1, 500, crate::store::NextStep::RetryAt(retry_at)),
            // The same number again: the first record of it counts.
            record(delivered, 2, 503, crate::store::NextStep::RetryAt(retry_at)),
            record(retried, 1, 500, crate::store::NextStep::RetryAt(retry_at)),
        ])
        .await
        .unwrap();
        let state = |id: &String| {
            let client = &client;
            let id = id.clone();
            async move {
                let row = client
                    .query_one("SELECT status, attempts, next_attempt_at_us FROM deliveries WHERE id = $1", &[&id])
                    .await
                    .unwrap();
                (row.get::<_, String>(0), row.get::<_, i32>(1), row.get::<_, Option<i64>>(2))
            }
        };
        assert_eq!(state(delivered).await, ("delivered".to_owned(), 2, None));
        assert_eq!(state(retried).await, ("pending".to_owned(), 1, Some(retry_at.as_microsecond())));
        let codes: Vec<(i32, Option<i32>)> = client
            .query(
                "SELECT attempt, status_code FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
                &[delivered],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(codes, vec![(1, Some(500)), (2, Some(200))]);
    }

    #[tokio::test]
    async fn changes_on_one_node_are_announced_to_the_others_and_not_to_itself() {
        let Some((a, b, _)) = two_nodes("changes_on_one_node_are_announced_to_the_others_and_not_to_itself").await
        else {
            return;
        };
        let mut heard_by_a = a.changes().unwrap();
        let mut heard_by_b = b.changes().unwrap();
        // The listeners connect in the background: announce until one is heard.
        let heard = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                subscription(&a).await;
                if let Ok(Ok(change)) = tokio::time::timeout(Duration::from_millis(200), heard_by_b.recv()).await {
                    return change;
                }
            }
        })
        .await
        .expect("node b hears node a's change");
        assert_eq!(heard, StoreChange::Subscriptions);
        // The fallback's counter poll may report the change to a as well; notifications of its
        // own never do: nothing a hears names deliveries, which only a NOTIFY carries.
        a.append_events(routed_to(&subscription(&b).await, 1)).await.unwrap();
        let woken = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if heard_by_b.recv().await.unwrap() == StoreChange::Deliveries {
                    return;
                }
            }
        })
        .await;
        assert!(woken.is_ok(), "b's workers are woken by a's new deliveries");
        while let Ok(change) = heard_by_a.try_recv() {
            assert_ne!(change, StoreChange::Deliveries, "a is not told of its own deliveries");
        }
    }

    #[tokio::test]
    async fn a_body_shared_by_many_events_is_stored_once() {
        let Some((a, b, client)) = two_nodes("a_body_shared_by_many_events_is_stored_once").await else { return };
        let body = bytes::Bytes::from_static(br#"[{"id": 1}, {"id": 2}]"#);
        let split = |count: usize| -> Vec<crate::event::NewEvent> {
            (0..count)
                .map(|index| {
                    let mut event = conformance::sample_event("kustomer.app.shop.item", "shop");
                    event.raw_body = body.clone();
                    event.event.data = serde_json::json!({"id": index});
                    event.data_is_raw_json = false;
                    event
                })
                .collect()
        };
        let appended = a.append_events(split(100)).await.unwrap();
        // The same body again, from another node (an email to two hooks, say).
        b.append_events(split(2)).await.unwrap();
        assert_eq!(count(&client, "events").await, 102);
        assert_eq!(count(&client, "bodies").await, 1);
        let raw = b.raw_body(&appended[99].id).await.unwrap().unwrap();
        assert_eq!(raw.bytes, body.to_vec());
        assert_eq!(b.event(&appended[99].id).await.unwrap().unwrap().data, serde_json::json!({"id": 99}));
    }

    #[tokio::test]
    async fn a_platform_retry_with_another_body_leaves_no_body_behind() {
        let Some((a, _, client)) = two_nodes("a_platform_retry_with_another_body_leaves_no_body_behind").await else {
            return;
        };
        let key = crate::event::IdempotencyKey {
            scope: "stripe".into(),
            key: "evt_retried".into(),
            window: crate::event::DEFAULT_DEDUP_WINDOW,
        };
        let attempt = |body: &'static [u8]| {
            let mut event = conformance::sample_event("stripe.charge.succeeded", "stripe");
            event.raw_body = bytes::Bytes::from_static(body);
            event.idempotency_key = Some(key.clone());
            event
        };
        a.append_events(vec![attempt(br#"{"attempt": 1}"#)]).await.unwrap();
        let again = a.append_events(vec![attempt(br#"{"attempt": 2}"#)]).await.unwrap().remove(0);
        assert!(again.duplicate);
        assert_eq!(count(&client, "bodies").await, 1, "the retry's body is not kept: no event uses it");
    }

    #[tokio::test]
    async fn erasure_finds_events_whose_data_holds_a_nul_character() {
        let Some((a, _, _)) = two_nodes("erasure_finds_events_whose_data_holds_a_nul_character").await else { return };
        let mut event = conformance::sample_event("kustomer.app.shop.contact", "shop");
        event.event.data = serde_json::json!({"id": "cust_nul", "note": "a\u{0}b"});
        event.data_is_raw_json = false;
        let other = conformance::sample_event("kustomer.app.shop.contact", "shop");
        a.append_events(vec![event, other]).await.unwrap();
        let purged = a.purge_resource("cust_nul").await.unwrap();
        assert_eq!(purged.events, 1);
    }

    #[test]
    fn tls_is_used_exactly_when_the_url_requires_it() {
        let (config, tls) = connection_config("postgres://u@db.example/x?sslmode=require").unwrap();
        assert!(matches!(tls, Tls::Rustls(_)));
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        for url in ["postgres://u@db.example/x", "postgres://u@db.example/x?sslmode=prefer"] {
            let (config, tls) = connection_config(url).unwrap();
            assert!(matches!(tls, Tls::None), "{url}");
            assert_eq!(config.get_ssl_mode(), SslMode::Disable, "{url}");
        }
    }
}
