//! Listing events (`GET /api/events`) over large events: a page is bounded by bytes as well as
//! by count (its events' JSON, 8 MiB; `limit` is a maximum), `nextCursor` continues where the
//! bytes stopped it without losing or repeating an event, and the reply is streamed, so that
//! the gateway's memory does not grow with what is listed and the first bytes come at once.

use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::support::*;

const LARGE: &str = "kustomer.app.listing.large";
/// The byte bound of a page, as documented.
const PAGE_MAX_BYTES: usize = 8 * 1024 * 1024;

fn listing_app() -> Value {
    json!({"app": "listing", "version": "1", "hooks": [
        {"eventName": LARGE, "type": "form", "maxBodyBytes": 4 * 1024 * 1024}
    ]})
}

fn options() -> Options {
    Options { definitions: vec![("listing.json".into(), listing_app())], env: vec![] }
}

/// Posts `count` JSON events of about `bytes` bytes each, a few at a time; returns their ids.
async fn post_large_events(gateway: &Gateway, count: usize, bytes: usize) -> Vec<String> {
    let url = gateway.hook_url(LARGE).await;
    let pad = "x".repeat(bytes);
    let mut ids = Vec::new();
    for batch in (0..count).collect::<Vec<_>>().chunks(4) {
        let posts = batch.iter().map(|i| {
            let request = gateway.http.post(&url).json(&json!({"i": i, "pad": pad}));
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 202);
                response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
            }
        });
        ids.extend(futures::future::join_all(posts).await);
    }
    ids
}

/// The ids of a listing's events.
fn ids_of(page: &Value) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(|event| event["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_page_ends_at_its_byte_bound_and_next_cursor_continues_without_loss_or_repeats() {
    let gateway = Gateway::start_with(options()).await;
    let mut posted = post_large_events(&gateway, 12, 1_000_000).await;
    // Ids sort by time: the listing's order, newest first.
    posted.sort();
    posted.reverse();
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/events?app=listing&limit=1000&cursor={cursor}"),
            None => "/api/events?app=listing&limit=1000".to_owned(),
        };
        let reply = gateway.admin_get(&path).await;
        assert_eq!(reply.status(), 200);
        let bytes = reply.bytes().await.unwrap();
        let page: Value = serde_json::from_slice(&bytes).expect("the streamed reply is one JSON document");
        let events = ids_of(&page);
        pages += 1;
        assert!(!events.is_empty(), "page {pages} is empty");
        // The last event may take the page past the bound; the one before it did not reach it.
        assert!(bytes.len() < PAGE_MAX_BYTES + 1_100_000, "page {pages} is {} bytes", bytes.len());
        listed.extend(events);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 2, "twelve events of 1 MB take two pages of at most 8 MiB");
    assert_eq!(listed, posted, "every event once, newest first");

    // `limit` still bounds a page by count, and the cursor continues from there.
    let first = gateway.admin_json("/api/events?app=listing&limit=2").await;
    assert_eq!(ids_of(&first), posted[..2]);
    let cursor = first["nextCursor"].as_str().expect("more events match");
    let second = gateway.admin_json(&format!("/api/events?app=listing&limit=2&cursor={cursor}")).await;
    assert_eq!(ids_of(&second), posted[2..4]);
    let none = gateway.admin_json("/api/events?app=nothing-here").await;
    assert_eq!(none, json!({"data": [], "nextCursor": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_over_300_mb_of_events_stays_under_300_mb_and_answers_within_a_second() {
    let gateway = Gateway::start_with(options()).await;
    let stored = post_large_events(&gateway, 105, 3_000_000).await;
    let before = status_kb(gateway.pid(), "VmRSS");
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let (pid, peak) = (gateway.pid(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(status_kb(pid, "VmRSS"), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // One client: the first bytes of a whole page come at once.
    let asked = Instant::now();
    let mut reply = gateway.admin_get("/api/events?limit=1000").await;
    reply.chunk().await.unwrap().expect("the reply has a body");
    let first_byte = asked.elapsed();
    while reply.chunk().await.unwrap().is_some() {}
    let started = Instant::now();
    // Four clients list at once, each a whole page (`limit=1000`) and the next.
    let clients = (0..4).map(|_| async {
        let mut slowest_first_byte = Duration::ZERO;
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..2 {
            let path = match &cursor {
                Some(cursor) => format!("/api/events?limit=1000&cursor={cursor}"),
                None => "/api/events?limit=1000".to_owned(),
            };
            let asked = Instant::now();
            let mut reply = gateway.admin_get(&path).await;
            let first = reply.chunk().await.unwrap().expect("the reply has a body");
            slowest_first_byte = slowest_first_byte.max(asked.elapsed());
            let mut body = first.to_vec();
            while let Some(chunk) = reply.chunk().await.unwrap() {
                body.extend_from_slice(&chunk);
            }
            let page: Value = serde_json::from_slice(&body).unwrap();
            listed.extend(ids_of(&page));
            cursor = Some(page["nextCursor"].as_str().expect("more events match").to_owned());
        }
        (slowest_first_byte, listed)
    });
    let listings = futures::future::join_all(clients).await;
    // A client that gives up after the first bytes.
    let mut abandoned = gateway.admin_get("/api/events?limit=1000").await;
    abandoned.chunk().await.unwrap();
    drop(abandoned);
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let slowest_first_byte = listings.iter().map(|(first_byte, _)| *first_byte).max().unwrap();
    println!(
        "first byte of a page after {first_byte:?}; 4 clients listed two pages each over {} events of 3 MB in \
         {:?} (slowest first byte {slowest_first_byte:?}); RSS before {before} kB, peak while listing {peak} kB",
        stored.len(),
        started.elapsed()
    );
    let mut newest_first = stored.clone();
    newest_first.sort();
    newest_first.reverse();
    for (_, listed) in &listings {
        assert_eq!(listed[..], newest_first[..listed.len()], "each page continues the one before");
    }
    assert!(peak < 300 * 1024, "the gateway reached {peak} kB while listing");
    assert!(first_byte < Duration::from_secs(1), "a page's first bytes took {first_byte:?}");
}
