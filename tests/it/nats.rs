//! Publishing to NATS JetStream against the NATS server on loopback (`HOOKGATE_TEST_NATS_URL`,
//! set by `.ci/run`; skipped, and said, without it): every committed event on
//! `<prefix>.<event name>` with its id as the message id, and an outage that delays events but
//! loses none. Each test uses a stream and subject prefix of its own.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn nats_url() -> Option<String> {
    let url = std::env::var("HOOKGATE_TEST_NATS_URL").ok();
    if url.is_none() {
        eprintln!("skipped: HOOKGATE_TEST_NATS_URL is not set");
    }
    url
}

/// A stream name and subject prefix no other test uses.
fn unique() -> (String, String) {
    let tag = hex::encode(rand::random::<[u8; 6]>());
    (format!("HGTEST_{tag}"), format!("hgtest{tag}"))
}

fn publishing(url: &str, stream: &str, prefix: &str) -> Options {
    Options::default()
        .env("HOOKGATE_NATS", url)
        .env("HOOKGATE_NATS_STREAM", stream)
        .env("HOOKGATE_NATS_SUBJECT_PREFIX", prefix)
}

/// The stream's messages once it holds `count` (at most 20 s).
async fn messages(url: &str, stream: &str, count: u64) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let client = async_nats::connect(url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    for _ in 0..200 {
        if let Ok(mut handle) = jetstream.get_stream(stream).await
            && handle.info().await.unwrap().state.messages >= count
        {
            let mut all = Vec::new();
            for sequence in 1..=count {
                all.push(handle.get_raw_message(sequence).await.unwrap());
            }
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream {stream} never held {count} messages");
}

async fn post(gateway: &Gateway, order: Value) -> String {
    let response = gateway.http.post(gateway.hook_url(ORDER_UPDATE).await).json(&order).send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_committed_event_is_published_with_its_id_as_message_id() {
    let Some(url) = nats_url() else { return };
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
    let Some(url) = nats_url() else { return };
    let (stream, prefix) = unique();
    // A port where NATS is not, yet: the gateway keeps trying.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gateway = Gateway::start_with(publishing(&format!("nats://127.0.0.1:{port}"), &stream, &prefix)).await;
    let ids = [post(&gateway, json!({"n": 1})).await, post(&gateway, json!({"n": 2})).await];
    tokio::time::sleep(Duration::from_millis(500)).await;

    // NATS comes back: a proxy to the real server on that port.
    let upstream = url.trim_start_matches("nats://").to_owned();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let published = messages(&url, &stream, 2).await;
    let published_ids: Vec<String> = published
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(published_ids, ids);
}
