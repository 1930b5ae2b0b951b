//! `GET /api/events/stream`: the event log as Server-Sent Events. A client that drops the
//! connection and comes back with `Last-Event-ID` gets every event it missed, once; a new
//! stream starts now; a scoped key streams only what its scopes cover; filters, refusals, the
//! limit on open streams, and streams ending at shutdown. Read by a small SSE reader written
//! from the specification (HTML, "Server-sent events": lines, `id:`, `event:`, `data:`).

use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

use crate::support::*;

/// One message of a stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

/// Reads messages from an open stream.
pub(crate) struct Reader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    /// Comment lines seen (keep-alives).
    pub(crate) comments: usize,
}

impl Reader {
    pub(crate) fn new(response: reqwest::Response) -> Reader {
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Reader { body: Box::pin(response.bytes_stream()), buffer: String::new(), comments: 0 }
    }

    /// The next message with data (at most `wait`); `None` when none came in time.
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // A message ends at a blank line.
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = Message { id: None, event: None, data: String::new() };
                let mut has_data = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (field, value) =
                        line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
                    match field {
                        "id" => message.id = Some(value.to_owned()),
                        "event" => message.event = Some(value.to_owned()),
                        "data" => {
                            if has_data {
                                message.data.push('\n');
                            }
                            message.data.push_str(value);
                            has_data = true;
                        }
                        _ => {}
                    }
                }
                if has_data {
                    return Some(message);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next()).await.ok()??.ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }

    /// The next `count` messages, each within 10 s.
    pub(crate) async fn take(&mut self, count: usize) -> Vec<Message> {
        let mut messages = Vec::new();
        while messages.len() < count {
            let message = self.next(Duration::from_secs(10)).await;
            messages.push(
                message.unwrap_or_else(|| panic!("only {} of {count} messages came: {messages:?}", messages.len())),
            );
        }
        messages
    }
}

/// A client without the suite's overall timeout: a stream lasts as long as it is read.
fn stream_client() -> reqwest::Client {
    reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().unwrap()
}

/// Opens `path` with the admin token, `last_event_id` as the header when given.
async fn open(gateway: &Gateway, path: &str, credential: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = stream_client().get(gateway.url(path)).bearer_auth(credential);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

/// Posts an order to the form hook; returns the event's id.
async fn post_order(gateway: &Gateway, number: u64) -> String {
    let response = gateway.post_raw(ORDER_UPDATE, "application/json", json!({"order": number}).to_string()).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|message| message.id.clone().unwrap()).collect()
}

const FROM_THE_START: &str = "/api/events/stream?after=evt_00000000000000000000000000000000";

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_every_missed_event_once_and_in_order() {
    let gateway = Gateway::start().await;
    let mut posted = Vec::new();
    for number in 0..3 {
        posted.push(post_order(&gateway, number).await);
    }
    let mut reader = Reader::new(open(&gateway, FROM_THE_START, ADMIN_TOKEN, None).await);
    let first = reader.take(3).await;
    assert_eq!(ids(&first), posted, "the events before the connection, oldest first");
    for message in &first {
        assert_eq!(message.event.as_deref(), Some("event"));
        let event: Value = serde_json::from_str(&message.data).unwrap();
        assert_eq!(event["id"].as_str(), message.id.as_deref(), "the message id is the event's");
        assert_eq!(event["name"], ORDER_UPDATE);
    }
    for number in 3..5 {
        posted.push(post_order(&gateway, number).await);
    }
    let live = reader.take(2).await;
    assert_eq!(ids(&live), posted[3..5], "events arriving while connected");
    let last_seen = live[1].id.clone().unwrap();
    drop(reader);

    for number in 5..9 {
        posted.push(post_order(&gateway, number).await);
    }
    let mut resumed = Reader::new(open(&gateway, "/api/events/stream", ADMIN_TOKEN, Some(&last_seen)).await);
    let missed = resumed.take(4).await;
    assert_eq!(ids(&missed), posted[5..9], "exactly the missed events, in order");
    let orders: Vec<Value> =
        missed.iter().map(|m| serde_json::from_str::<Value>(&m.data).unwrap()["data"]["order"].clone()).collect();
    assert_eq!(orders, [json!(5), json!(6), json!(7), json!(8)]);
    // Nothing is repeated: the next message is the next event.
    let next = post_order(&gateway, 9).await;
    assert_eq!(ids(&resumed.take(1).await), [next]);
}

#[tokio::test]
async fn many_events_posted_at_once_arrive_each_exactly_once() {
    let gateway = Gateway::start().await;
    let mut reader = Reader::new(open(&gateway, "/api/events/stream", ADMIN_TOKEN, None).await);
    let posts = (0..60).map(|number| post_order(&gateway, number));
    let mut posted: Vec<String> = futures::future::join_all(posts).await;
    let mut received = ids(&reader.take(60).await);
    let in_order = received.clone();
    posted.sort();
    received.sort();
    assert_eq!(received, posted, "every concurrent post, once");
    assert_eq!(in_order, received, "sent in id order");
}

#[tokio::test]
async fn a_stream_without_a_cursor_starts_with_the_events_of_its_last_moment() {
    let gateway = Gateway::start().await;
    let before = post_order(&gateway, 1).await;
    // The stream opens with what is not yet settled (the last 750 ms, or 7 s on a store other
    // nodes share), so that nothing on its way is missed: open it once the earlier event is
    // older than that.
    let received: jiff::Timestamp = gateway.event(&before).await["receivedAt"].as_str().unwrap().parse().unwrap();
    let settle = match crate::BACKEND {
        Backend::Sqlite => jiff::SignedDuration::from_millis(1000),
        Backend::Postgres => jiff::SignedDuration::from_millis(7500),
    };
    let settled = received + settle;
    let wait = settled.duration_since(jiff::Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(wait.unsigned_abs()).await;
    }
    let mut reader = Reader::new(open(&gateway, "/api/events/stream", ADMIN_TOKEN, None).await);
    let after = post_order(&gateway, 2).await;
    assert_eq!(ids(&reader.take(1).await), [after], "not the event from before the connection");
}

#[tokio::test]
async fn filters_by_name_app_and_hook_type() {
    let gateway = Gateway::start().await;
    let mail = gateway.post_raw(SHOP_MAIL, "message/rfc822", "From: a@example.com\r\nTo: b@example.com\r\nSubject: Hi\r\nContent-Type: text/plain\r\n\r\n{\"order\": 7}\r\n").await;
    assert_eq!(mail.status(), 202, "{}", mail.text().await.unwrap());
    let crm = gateway.post_raw(LEAD_CREATED, "application/json", "{}").await;
    assert_eq!(crm.status(), 401, "a web hook without a key is refused: nothing stored");
    let order = post_order(&gateway, 1).await;

    let only = |query: &str| format!("{FROM_THE_START}&{query}");
    let mut by_type = Reader::new(open(&gateway, &only("type=email"), ADMIN_TOKEN, None).await);
    let email: Value = serde_json::from_str(&by_type.take(1).await[0].data).unwrap();
    assert_eq!(email["name"], SHOP_MAIL);
    let mut by_name = Reader::new(open(&gateway, &only(&format!("name={ORDER_UPDATE}")), ADMIN_TOKEN, None).await);
    assert_eq!(ids(&by_name.take(1).await), std::slice::from_ref(&order));
    let mut by_app = Reader::new(open(&gateway, &only("app=shop&type=form"), ADMIN_TOKEN, None).await);
    assert_eq!(ids(&by_app.take(1).await), [order]);
}

#[tokio::test]
async fn a_scoped_key_streams_only_what_its_scopes_cover() {
    let gateway = Gateway::start().await;
    let issued = gateway
        .issue_key(json!({"name": "mail only", "purpose": "management", "scopes": ["kustomer.app.shop.mail"]}))
        .await;
    let key = issued["key"].as_str().unwrap();
    let mut reader = Reader::new(open(&gateway, FROM_THE_START, key, None).await);
    post_order(&gateway, 1).await;
    let mail = gateway
        .post_raw(SHOP_MAIL, "message/rfc822", "From: a@example.com\r\nSubject: x\r\n\r\n{\"order\": 2}\r\n")
        .await;
    assert_eq!(mail.status(), 202);
    let message = reader.take(1).await.remove(0);
    let event: Value = serde_json::from_str(&message.data).unwrap();
    assert_eq!(event["name"], SHOP_MAIL, "the order before it is out of the key's sight");

    let outside = open(&gateway, &format!("/api/events/stream?name={ORDER_UPDATE}"), key, None).await;
    let (code, message) = error_code(outside, 403).await;
    assert_eq!(code, "forbidden", "{message}");
}

#[tokio::test]
async fn a_cursor_that_is_not_an_event_id_or_an_unknown_type_is_refused() {
    let gateway = Gateway::start().await;
    let (code, message) = error_code(open(&gateway, "/api/events/stream", ADMIN_TOKEN, Some("42")).await, 400).await;
    assert_eq!(code, "bad_request");
    assert!(message.contains("Last-Event-ID"), "{message}");
    let (_, message) = error_code(open(&gateway, "/api/events/stream?type=fax", ADMIN_TOKEN, None).await, 400).await;
    assert!(message.contains("type"), "{message}");
    let (_, message) = error_code(open(&gateway, "/api/events/stream?colour=red", ADMIN_TOKEN, None).await, 400).await;
    assert!(message.contains("colour"), "{message}");
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused_until_one_closes() {
    let gateway = Gateway::start().await;
    // 64 streams in all, at most 8 per credential: eight management keys, eight streams each.
    let mut keys = Vec::new();
    for n in 0..8 {
        let issued = gateway.issue_key(json!({"name": format!("reader {n}"), "purpose": "management"})).await;
        keys.push(issued["key"].as_str().unwrap().to_owned());
    }
    let mut open_streams = Vec::new();
    for key in &keys {
        for _ in 0..8 {
            open_streams.push(Reader::new(open(&gateway, "/api/events/stream", key, None).await));
        }
    }
    let refused = open(&gateway, "/api/events/stream", ADMIN_TOKEN, None).await;
    assert_eq!(refused.headers()["retry-after"], "5");
    let (code, message) = error_code(refused, 503).await;
    assert_eq!(code, "too_many_streams", "{message}");
    drop(open_streams.pop());
    eventually(Duration::from_secs(10), "a freed slot", || async {
        open(&gateway, "/api/events/stream", ADMIN_TOKEN, None).await.status() == 200
    })
    .await;
}

#[tokio::test]
async fn one_credential_may_hold_eight_streams_and_others_still_open_theirs() {
    let gateway = Gateway::start().await;
    let mut open_streams = Vec::new();
    for _ in 0..8 {
        open_streams.push(Reader::new(open(&gateway, "/api/events/stream", ADMIN_TOKEN, None).await));
    }
    let (code, message) = error_code(open(&gateway, "/api/events/stream", ADMIN_TOKEN, None).await, 503).await;
    assert_eq!(code, "too_many_streams");
    assert!(message.contains("this credential has 8 event streams open"), "{message}");
    let issued = gateway.issue_key(json!({"name": "another reader", "purpose": "management"})).await;
    let other = open(&gateway, "/api/events/stream", issued["key"].as_str().unwrap(), None).await;
    assert_eq!(other.status(), 200, "another credential is not held back");
    drop(open_streams.pop());
    eventually(Duration::from_secs(10), "the credential's freed slot", || async {
        open(&gateway, "/api/events/stream", ADMIN_TOKEN, None).await.status() == 200
    })
    .await;
}

#[tokio::test]
async fn open_streams_end_when_the_gateway_stops() {
    let mut gateway = Gateway::start().await;
    let mut reader = Reader::new(open(&gateway, "/api/events/stream", ADMIN_TOKEN, None).await);
    let started = std::time::Instant::now();
    assert!(gateway.stop().await, "a clean exit");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the stream did not hold the shutdown: {:?}",
        started.elapsed()
    );
    assert!(reader.next(Duration::from_secs(5)).await.is_none(), "the stream ended");
}
