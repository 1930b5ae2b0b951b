//! PostgreSQL going away under load, and coming back.
//!
//! The gateway reaches the test database through a TCP proxy the test controls ([`Proxy`]); the
//! shared server keeps running. While a steady mixed load arrives (a form hook, a web hook with
//! an issued API key, mail over SMTP), the proxy fails in one of two ways ([`Failure`]): every
//! connection closed at once (the server went away), or every connection left open and silent
//! (the server or the network stopped answering). The tests show that the senders are told to
//! retry within seconds (HTTP `503` with `Retry-After`, SMTP `451`; never a 2xx, a 401 or a 500)
//! and `/readyz` says so; that the same process takes events again once the proxy is restored,
//! and listens for other nodes' changes again; and that every event acknowledged before, during
//! or after the outage is stored exactly once, under the id its reply carried (the requests'
//! markers, read back through the API, are compared with the acknowledged ids).

use lettre::AsyncTransport;
use lettre::address::Envelope;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::client::Tls;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::support::*;

/// How long the warm-up, the outage's effects and the recovery each may take.
const PHASE_DEADLINE: Duration = Duration::from_secs(30);
/// The longest a sender may wait for its refusal while the database is away.
const REFUSAL_WITHIN: Duration = Duration::from_secs(7);
/// Requests of each kind that must be acknowledged before the outage and after it.
const PER_PHASE: usize = 5;
/// Requests of each kind that must be refused during the outage (a silent one takes up to
/// `REFUSAL_WITHIN` each).
const REFUSED_PER_KIND: usize = 2;
/// The pause between two requests of one sender: a steady load, not a flood of refusals.
const PACE: Duration = Duration::from_millis(20);
/// The shortest outage: long enough for the node's reconnection attempts to fail several times.
const OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_postgres_goes_away_ingest_asks_senders_to_retry_and_recovers_losing_nothing_acknowledged() {
    outage(Failure::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_postgres_stops_answering_senders_are_told_to_retry_within_seconds_and_nothing_acknowledged_is_lost() {
    outage(Failure::Silent).await;
}

/// A steady mixed load while the database fails and returns; what each sender was told, what
/// `/readyz` said and what the store holds afterwards.
async fn outage(failure: Failure) {
    let schema = fresh_postgres_schema().await;
    let proxy = Proxy::start(&schema).await;
    // Every refused request logs a line; the rest of the log stays.
    let quiet = "warn,hookgate::ingress=off,hookgate::store::postgres::writer=off";
    let mut gateway = Gateway::start_on(Some(proxy.url(&schema)), Options::default().env("RUST_LOG", quiet)).await;
    let listen = ListenQuery::of(&schema).await;
    let key = gateway.issue_key(json!({"name": "outage"})).await["key"].as_str().unwrap().to_owned();
    let targets = Arc::new(Targets {
        form: gateway.hook_url(ORDER_UPDATE).await,
        web: gateway.hook_url(ORDER_SYNC).await,
        key,
        mail: mail_address(&gateway, SHOP_MAIL).await,
        smtp: gateway.smtp,
    });

    let log = Log::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = [Kind::Form, Kind::Web, Kind::Mail]
        .into_iter()
        .map(|kind| tokio::spawn(send_until_stopped(kind, targets.clone(), log.clone(), stop.clone())))
        .collect();
    let start = Instant::now();

    // Before: every kind of ingest is acknowledged.
    eventually(PHASE_DEADLINE, "acknowledgements of every kind before the outage", || async {
        Kind::ALL.iter().all(|&kind| log.count(kind, start, Answer::is_acknowledged) >= PER_PHASE)
    })
    .await;
    assert_eq!(status_of(&gateway, "/readyz").await, 200);
    eventually(PHASE_DEADLINE, "the node to listen for other nodes' changes", || listen.is_listening()).await;

    // The outage: every sender is told to retry, and the node says it is not ready.
    let cutting = Instant::now();
    proxy.fail(failure).await;
    let cut = Instant::now();
    eventually(PHASE_DEADLINE, "/readyz to answer 503 during the outage", || async {
        status_of(&gateway, "/readyz").await == 503
    })
    .await;
    eventually(PHASE_DEADLINE, "refusals of every kind during the outage", || async {
        Kind::ALL.iter().all(|&kind| log.count(kind, cut, Answer::is_retry_later) >= REFUSED_PER_KIND)
    })
    .await;
    eventually(PHASE_DEADLINE, "the server to lose the node's listening connection", || async {
        !listen.is_listening().await
    })
    .await;
    tokio::time::sleep_until(cut + OUTAGE).await;

    // The database returns: the same process takes events again.
    proxy.restore();
    let restored = Instant::now();
    eventually(PHASE_DEADLINE, "acknowledgements of every kind after the database returned", || async {
        Kind::ALL.iter().all(|&kind| log.count(kind, restored, Answer::is_acknowledged) >= PER_PHASE)
    })
    .await;
    eventually(PHASE_DEADLINE, "/readyz to answer 200 after the database returned", || async {
        status_of(&gateway, "/readyz").await == 200
    })
    .await;
    let recovered = Instant::now();
    eventually(PHASE_DEADLINE, "the node to listen for other nodes' changes again", || listen.is_listening()).await;
    let listening_again = Instant::now();
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await.expect("a sender finished");
    }
    assert!(gateway.exited().is_none(), "the gateway kept running through the outage: {:?}", gateway.exited());

    let attempts = log.take();
    let unexpected: Vec<&Attempt> = attempts.iter().filter(|a| matches!(a.answer, Answer::Unexpected(_))).collect();
    assert!(unexpected.is_empty(), "every answer is an acknowledgement or a request to retry: {unexpected:#?}");
    // Sent after the cut and answered before the restore: nothing can have been stored.
    let during: Vec<&Attempt> = attempts.iter().filter(|a| a.sent >= cut && a.answered <= restored).collect();
    assert!(during.len() >= 3 * REFUSED_PER_KIND);
    for attempt in &during {
        assert!(attempt.answer.is_retry_later(), "acknowledged while the database was away: {attempt:#?}");
    }
    let slowest_refusal =
        attempts.iter().filter(|a| a.answer.is_retry_later()).map(|a| a.answered - a.sent).max().unwrap_or_default();
    assert!(slowest_refusal <= REFUSAL_WITHIN, "a sender waited {slowest_refusal:?} to be told to retry");

    // Every acknowledged event is stored once under the id its reply carried; a refused one at
    // most once (its commit may have reached the server just before the connection was cut).
    let stored = stored_events(&gateway).await;
    let mut by_marker: HashMap<String, Vec<&Value>> = HashMap::new();
    for event in &stored {
        by_marker.entry(marker_of(event)).or_default().push(event);
    }
    let sent: HashMap<&str, &Attempt> = attempts.iter().map(|a| (a.marker.as_str(), a)).collect();
    for marker in by_marker.keys() {
        assert!(sent.contains_key(marker.as_str()), "an event nobody sent is stored: {marker}");
    }
    let mut acknowledged = 0;
    let mut refused_but_stored = 0;
    for attempt in &attempts {
        let found = by_marker.get(&attempt.marker).map(Vec::as_slice).unwrap_or_default();
        match &attempt.answer {
            Answer::Acknowledged(id) => {
                acknowledged += 1;
                assert_eq!(found.len(), 1, "acknowledged {id} is stored exactly once: {attempt:#?} {found:#?}");
                assert_eq!(found[0]["id"], id.as_str(), "stored under the acknowledged id");
                assert_eq!(found[0]["name"], attempt.kind.event_name());
            }
            Answer::RetryLater(_) if !found.is_empty() => {
                // Its commit reached the server, the answer did not reach the node: only a request
                // under way when the connections were cut can be stored and refused.
                assert_eq!(found.len(), 1, "a refused request is stored at most once: {found:#?}");
                assert!(
                    attempt.sent <= cut && attempt.answered >= cutting,
                    "refused and stored, but not under way at the cut: {attempt:#?}"
                );
                eprintln!("outage ({failure:?}): refused but stored, under way at the cut: {attempt:?}");
                refused_but_stored += 1;
            }
            Answer::RetryLater(_) => {}
            Answer::Unexpected(_) => unreachable!("checked above"),
        }
    }
    assert_eq!(stored.len(), acknowledged + refused_but_stored);
    eprintln!(
        "outage ({failure:?}): {} requests ({acknowledged} acknowledged, {} refused, {refused_but_stored} refused but stored); \
         warm-up {:?}, outage {:?} (refusals within {slowest_refusal:?}), ingest and /readyz back {:?} \
         and listening {:?} after the restore",
        attempts.len(),
        attempts.iter().filter(|a| a.answer.is_retry_later()).count(),
        cut - start,
        restored - cut,
        recovered - restored,
        listening_again - restored,
    );
}

/// How the database goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The server is gone: every connection is closed, and new ones are closed as soon as they
    /// are accepted (a restart, a crash, a failover that resets connections).
    Closed,
    /// The server stops answering: the node's connections stay open and hear nothing, and new
    /// ones are accepted and hear nothing (a partition, a hung server); the server's side of
    /// each connection is closed, so nothing the node sends afterwards can commit.
    Silent,
}

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passage {
    Open,
    Failed(Failure),
}

/// A TCP proxy on 127.0.0.1 to the PostgreSQL server, which the test can make fail and restore.
struct Proxy {
    address: std::net::SocketAddr,
    /// Every connection follows it: forwarded while open, closed or held silent otherwise.
    passage: watch::Sender<Passage>,
    /// Connections open to the server.
    upstream: Arc<AtomicUsize>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards to the host and port of `database` (a `postgres://` URL).
    async fn start(database: &str) -> Proxy {
        let url = reqwest::Url::parse(database).expect("the database URL parses");
        let server = format!("{}:{}", url.host_str().expect("a host"), url.port().unwrap_or(5432));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (passage, watching) = watch::channel(Passage::Open);
        let upstream = Arc::new(AtomicUsize::new(0));
        let accepting = tokio::spawn(accept(listener, server, watching, upstream.clone()));
        Proxy { address, passage, upstream, accepting }
    }

    /// `database` with its host and port replaced by the proxy's.
    fn url(&self, database: &str) -> String {
        let mut url = reqwest::Url::parse(database).unwrap();
        url.set_host(Some(&self.address.ip().to_string())).unwrap();
        url.set_port(Some(self.address.port())).unwrap();
        url.to_string()
    }

    /// Fails every connection at once, and every new one; returns once the server has none.
    async fn fail(&self, failure: Failure) {
        self.passage.send_replace(Passage::Failed(failure));
        let upstream = self.upstream.clone();
        eventually(Duration::from_secs(5), "every connection to the server to close", || {
            let upstream = upstream.clone();
            async move { upstream.load(Ordering::SeqCst) == 0 }
        })
        .await;
    }

    /// Lets new connections through again; those held silent are closed.
    fn restore(&self) {
        self.passage.send_replace(Passage::Open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.passage.send_replace(Passage::Failed(Failure::Closed));
    }
}

async fn accept(listener: TcpListener, server: String, passage: watch::Receiver<Passage>, upstream: Arc<AtomicUsize>) {
    loop {
        let Ok((node, _)) = listener.accept().await else { continue };
        let now = *passage.borrow();
        match now {
            // The node sees its connection closed at once.
            Passage::Failed(Failure::Closed) => drop(node),
            Passage::Failed(Failure::Silent) => {
                tokio::spawn(hold_silent(node, passage.clone()));
            }
            Passage::Open => {
                tokio::spawn(forward(node, server.clone(), passage.clone(), upstream.clone()));
            }
        }
    }
}

/// Copies both ways until either side closes or the proxy fails; a silent failure then holds
/// the node's side.
async fn forward(
    mut node: TcpStream,
    server: String,
    mut passage: watch::Receiver<Passage>,
    upstream: Arc<AtomicUsize>,
) {
    let counted = Live::enter(&upstream);
    let Ok(mut to_server) = TcpStream::connect(&server).await else { return };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut node, &mut to_server) => return,
        _ = passage.wait_for(|passage| *passage != Passage::Open) => {}
    }
    drop(to_server);
    drop(counted);
    hold_silent(node, passage).await;
}

/// Keeps the node's side open, reading nothing and sending nothing, while the failure is silent.
async fn hold_silent(node: TcpStream, mut passage: watch::Receiver<Passage>) {
    let _ = passage.wait_for(|passage| *passage != Passage::Failed(Failure::Silent)).await;
    drop(node);
}

/// One forwarded connection, counted while it lives.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn enter(live: &Arc<AtomicUsize>) -> Live {
        live.fetch_add(1, Ordering::SeqCst);
        Live(live.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether the node's change listener is connected, seen from the server: a backend whose last
/// query is the LISTEN on the channel the store names after its schema (`postgres::Node`).
struct ListenQuery {
    direct: tokio_postgres::Client,
    listen: String,
}

impl ListenQuery {
    /// Reads the server through `schema`'s own URL, not through the proxy.
    async fn of(schema: &str) -> ListenQuery {
        let (direct, connection) = tokio_postgres::connect(schema, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let name: String = direct.query_one("SELECT current_schema()", &[]).await.unwrap().get(0);
        let channel = format!("hookgate_{}", &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(name))[..16]);
        ListenQuery { direct, listen: format!("LISTEN \"{channel}\"") }
    }

    async fn is_listening(&self) -> bool {
        let row = self
            .direct
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query = $1", &[&self.listen])
            .await
            .unwrap();
        row.get::<_, i64>(0) > 0
    }
}

/// The three ways in that the load takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Form,
    Web,
    Mail,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Form, Kind::Web, Kind::Mail];

    fn event_name(self) -> &'static str {
        match self {
            Kind::Form => ORDER_UPDATE,
            Kind::Web => ORDER_SYNC,
            Kind::Mail => SHOP_MAIL,
        }
    }
}

struct Targets {
    form: String,
    web: String,
    /// An issued ingest key: checking it reads the store.
    key: String,
    mail: String,
    smtp: std::net::SocketAddr,
}

#[derive(Debug)]
enum Answer {
    /// 2xx or SMTP 250, with the event's id.
    Acknowledged(String),
    /// 503 with `Retry-After`, or SMTP 451.
    RetryLater(String),
    /// Anything else: the test fails.
    Unexpected(String),
}

impl Answer {
    fn is_acknowledged(&self) -> bool {
        matches!(self, Answer::Acknowledged(_))
    }

    fn is_retry_later(&self) -> bool {
        matches!(self, Answer::RetryLater(_))
    }
}

#[derive(Debug)]
struct Attempt {
    kind: Kind,
    /// Unique to this request, and found in the stored event's data.
    marker: String,
    sent: Instant,
    answered: Instant,
    answer: Answer,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Attempt>>>);

impl Log {
    /// Attempts of `kind` sent at or after `since` whose answer satisfies `which`.
    fn count(&self, kind: Kind, since: Instant, which: fn(&Answer) -> bool) -> usize {
        let attempts = self.0.lock().unwrap();
        attempts.iter().filter(|a| a.kind == kind && a.sent >= since && which(&a.answer)).count()
    }

    fn take(&self) -> Vec<Attempt> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// One sender: requests of one kind, one after another, until told to stop.
async fn send_until_stopped(kind: Kind, targets: Arc<Targets>, log: Log, stop: Arc<AtomicBool>) {
    let http = client();
    let smtp = AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(targets.smtp.ip().to_string())
        .port(targets.smtp.port())
        .tls(Tls::None)
        .timeout(Some(Duration::from_secs(20)))
        .build();
    let mut number = 0;
    while !stop.load(Ordering::SeqCst) {
        number += 1;
        let marker = format!("outage-{kind:?}-{number}").to_lowercase();
        let sent = Instant::now();
        let answer = match kind {
            Kind::Form => {
                let request = http
                    .post(&targets.form)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("marker={marker}"));
                http_answer(request.send().await).await
            }
            Kind::Web => {
                let request =
                    http.post(&targets.web).header("x-api-key", &targets.key).json(&json!({"marker": marker}));
                http_answer(request.send().await).await
            }
            Kind::Mail => mail_answer(&smtp, &targets.mail, &marker).await,
        };
        let answered = Instant::now();
        log.0.lock().unwrap().push(Attempt { kind, marker, sent, answered, answer });
        tokio::time::sleep(PACE).await;
    }
}

async fn http_answer(response: reqwest::Result<reqwest::Response>) -> Answer {
    let response = match response {
        Ok(response) => response,
        Err(error) => return Answer::Unexpected(format!("no HTTP answer: {error}")),
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match (status, retry_after) {
        (202, _) => match body["id"].as_str() {
            Some(id) => Answer::Acknowledged(id.to_owned()),
            None => Answer::Unexpected(format!("202 without an id: {body}")),
        },
        (503, Some(after)) if after.parse::<u64>().is_ok_and(|seconds| seconds > 0) => {
            Answer::RetryLater(format!("503 Retry-After {after}: {body}"))
        }
        (status, retry_after) => Answer::Unexpected(format!("{status} (Retry-After {retry_after:?}): {body}")),
    }
}

async fn mail_answer(smtp: &AsyncSmtpTransport<lettre::Tokio1Executor>, to: &str, marker: &str) -> Answer {
    let from = "orders@shop.example";
    let envelope = Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
    let message = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Order {marker}\r\nMessage-ID: <{marker}@shop.example>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
         <html><body><script type=\"application/ld+json\">\
         {{\"@context\":\"https://schema.org\",\"@type\":\"Order\",\"orderNumber\":\"{marker}\"}}\
         </script></body></html>\r\n"
    );
    match smtp.send_raw(&envelope, message.as_bytes()).await {
        Ok(response) => {
            let text = response.message().collect::<Vec<_>>().join(" ");
            match text.split_whitespace().find(|word| word.starts_with("evt_")) {
                Some(id) if response.code().to_string() == "250" => Answer::Acknowledged(id.to_owned()),
                _ => Answer::Unexpected(format!("{}: {text}", response.code())),
            }
        }
        Err(error) => match error.status() {
            Some(code) if code.to_string() == "451" => Answer::RetryLater(error.to_string()),
            _ => Answer::Unexpected(format!("SMTP: {error}")),
        },
    }
}

/// The address `GET /api/hooks` shows for an email hook.
async fn mail_address(gateway: &Gateway, event_name: &str) -> String {
    let hooks = gateway.admin_json("/api/hooks").await;
    let hook = hooks["data"].as_array().unwrap().iter().find(|hook| hook["eventName"] == event_name).unwrap();
    hook["address"].as_str().expect("an email hook has an address").to_owned()
}

async fn status_of(gateway: &Gateway, path: &str) -> u16 {
    gateway.http.get(gateway.url(path)).send().await.map(|response| response.status().as_u16()).unwrap_or(0)
}

/// Every event of the shop app, page by page.
async fn stored_events(gateway: &Gateway) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/events?app=shop&limit=1000".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = gateway.admin_json(&path).await;
        events.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return events,
        }
    }
}

/// The marker a stored event carries: in the form's or the web hook's data, or the order
/// number of the mail's JSON-LD.
fn marker_of(event: &Value) -> String {
    let data = &event["data"];
    data["marker"]
        .as_str()
        .or_else(|| data["orderNumber"].as_str())
        .unwrap_or_else(|| panic!("a stored event without a marker: {event}"))
        .to_owned()
}
