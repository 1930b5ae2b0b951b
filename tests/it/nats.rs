//! Publishing to NATS JetStream against the NATS server on loopback (`HOOKGATE_TEST_NATS_URL`,
//! set by `.ci/run`): every committed event on `<prefix>.<event name>` with its id as the message
//! id, and an outage that delays events but loses none. Without the variable the tests are
//! skipped (`support::skip`; a strict run fails); with it, a server that does not answer there
//! fails them at once. Each test uses a stream and subject prefix of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use serde_json::{Value, json};

use crate::support::*;

/// The NATS server `test` runs against, once it has answered with JetStream enabled; `None`
/// (skipped) when `HOOKGATE_TEST_NATS_URL` is not set.
pub(crate) async fn nats_url(test: &str) -> Option<String> {
    let url = required_env(test, "HOOKGATE_TEST_NATS_URL", "a NATS server with JetStream, which .ci/run starts")?;
    let info =
        tokio::time::timeout(Duration::from_secs(10), client(&url).await.request("$JS.API.INFO", bytes::Bytes::new()))
            .await
            .unwrap_or_else(|_| panic!("NATS at {url} (HOOKGATE_TEST_NATS_URL) did not answer within 10 s"))
            .unwrap_or_else(|error| panic!("JetStream does not answer at {url} (HOOKGATE_TEST_NATS_URL): {error}"));
    let info: Value = serde_json::from_slice(&info.payload).expect("JetStream answers JSON");
    assert!(info.get("error").is_none(), "JetStream at {url} (HOOKGATE_TEST_NATS_URL) refuses: {info}");
    Some(url)
}

/// A client of the server at `url`, failing the test within 10 s if it does not answer.
async fn client(url: &str) -> async_nats::Client {
    let connecting = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)).connect(url);
    tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .unwrap_or_else(|_| panic!("NATS at {url} (HOOKGATE_TEST_NATS_URL) did not answer within 10 s"))
        .unwrap_or_else(|error| panic!("NATS at {url} (HOOKGATE_TEST_NATS_URL) does not answer: {error}"))
}

pub(crate) async fn jetstream(url: &str) -> jetstream::Context {
    jetstream::new(client(url).await)
}

/// A stream name and subject prefix no other test uses.
pub(crate) fn unique() -> (String, String) {
    let tag = hex::encode(rand::random::<[u8; 6]>());
    (format!("HGTEST_{tag}"), format!("hgtest{tag}"))
}

fn publishing(url: &str, stream: &str, prefix: &str) -> Options {
    Options::default()
        .env("HOOKGATE_NATS", url)
        .env("HOOKGATE_NATS_STREAM", stream)
        .env("HOOKGATE_NATS_SUBJECT_PREFIX", prefix)
}

/// How many messages the stream holds; 0 while it does not exist.
pub(crate) async fn stream_messages(jetstream: &jetstream::Context, stream: &str) -> u64 {
    match jetstream.get_stream(stream).await {
        Ok(mut handle) => handle.info().await.expect("the stream's info").state.messages,
        Err(_) => 0,
    }
}

/// The stream's first `count` messages, once it holds them (at most 20 s).
async fn messages(url: &str, stream: &str, count: u64) -> Vec<jetstream::message::StreamMessage> {
    let jetstream = jetstream(url).await;
    eventually(Duration::from_secs(20), &format!("{count} messages in the stream {stream}"), || async {
        stream_messages(&jetstream, stream).await >= count
    })
    .await;
    let handle = jetstream.get_stream(stream).await.unwrap();
    let mut all = Vec::new();
    for sequence in 1..=count {
        all.push(handle.get_raw_message(sequence).await.unwrap());
    }
    all
}

async fn post(gateway: &Gateway, order: Value) -> String {
    let response = gateway.http.post(gateway.hook_url(ORDER_UPDATE).await).json(&order).send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_committed_event_is_published_with_its_id_as_message_id() {
    let Some(url) = nats_url("nats::every_committed_event_is_published_with_its_id_as_message_id").await else {
        return;
    };
    let (stream, prefix) = unique();
    let gateway = Gateway::start_with(publishing(&url, &stream, &prefix)).await;
    let first = post(&gateway, json!({"n": 1})).await;
    let second = post(&gateway, json!({"n": 2})).await;
    let published = messages(&url, &stream, 2).await;
    for (message, id) in published.iter().zip([&first, &second]) {
        assert_eq!(message.subject.as_str(), format!("{prefix}.{ORDER_UPDATE}"));
        assert_eq!(message.headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some(id.as_str()));
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(&event["id"], id);
    }
    assert_eq!(serde_json::from_slice::<Value>(&published[1].payload).unwrap()["data"], json!({"n": 2}));
}

#[tokio::test]
async fn a_nats_outage_delays_events_but_loses_none() {
    let Some(url) = nats_url("nats::a_nats_outage_delays_events_but_loses_none").await else { return };
    let (stream, prefix) = unique();
    // The gateway's NATS is a port of the test's own: while NATS is "down" it closes every
    // connection at once (and counts them), once "up" it passes them to the real server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (up, tries) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let upstream = url.trim_start_matches("nats://").to_owned();
    let (proxy_up, proxy_tries) = (up.clone(), tries.clone());
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !proxy_up.load(Ordering::SeqCst) {
                proxy_tries.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let gateway = Gateway::start_with(publishing(&format!("nats://127.0.0.1:{port}"), &stream, &prefix)).await;
    let ids = [post(&gateway, json!({"n": 1})).await, post(&gateway, json!({"n": 2})).await];

    // The outage, checked: a try after both events were committed found no NATS, and nothing of
    // them reached the real server.
    let tries_before = tries.load(Ordering::SeqCst);
    eventually(Duration::from_secs(20), "the gateway to try NATS again during the outage", || async {
        tries.load(Ordering::SeqCst) > tries_before
    })
    .await;
    assert_eq!(stream_messages(&jetstream(&url).await, &stream).await, 0, "nothing is published during the outage");

    up.store(true, Ordering::SeqCst);
    let published = messages(&url, &stream, 2).await;
    let published_ids: Vec<String> = published
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(published_ids, ids);
}
