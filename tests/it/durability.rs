//! Durability: every event acknowledged to a client is on disk. The gateway is killed with
//! SIGKILL while clients are posting; after a restart every acknowledged id is present.

use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn acknowledged_events_survive_sigkill() {
    let mut gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for sender in 0..16 {
        let http = gateway.http.clone();
        let url = url.clone();
        let acknowledged = acknowledged.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..10_000 {
                let sent = http.post(&url).json(&json!({"sender": sender, "n": n})).send().await;
                let Ok(response) = sent else { break };
                if response.status() != 202 {
                    break;
                }
                let Ok(body) = response.json::<serde_json::Value>().await else { break };
                acknowledged.lock().unwrap().push(body["id"].as_str().unwrap().to_owned());
            }
        }));
    }
    // Let a few hundred events through, then kill the process mid-stream.
    eventually(Duration::from_secs(30), "some acknowledged events", || async {
        acknowledged.lock().unwrap().len() >= 300
    })
    .await;
    gateway.kill();
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();

    gateway.restart().await;
    let mut stored = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/events?limit=1000&cursor={cursor}"),
            None => "/api/events?limit=1000".to_owned(),
        };
        let page = gateway.admin_json(&path).await;
        for event in page["data"].as_array().unwrap() {
            stored.insert(event["id"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events were lost: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(stored.len() >= acknowledged.len());
}
