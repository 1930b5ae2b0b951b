//! Durability: every event acknowledged to a client is on disk. The gateway is killed with
//! SIGKILL while clients are posting; after a restart every acknowledged id is present. On a
//! disk that fills up, the gateway refuses with 503 instead of acknowledging, loses nothing it
//! acknowledged, SMTP gets `452`, and both accept again, without a restart, once there is room.

use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
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
            // Whether the kill cut this sender off (rather than it running out of events).
            for n in 0..10_000 {
                let sent = http.post(&url).json(&json!({"sender": sender, "n": n})).send().await;
                let Ok(response) = sent else { return true };
                if response.status() != 202 {
                    return true;
                }
                let Ok(body) = response.json::<Value>().await else { return true };
                acknowledged.lock().unwrap().push(body["id"].as_str().unwrap().to_owned());
            }
            false
        }));
    }
    // Let a few hundred events through, then kill the process mid-stream.
    eventually(Duration::from_secs(30), "some acknowledged events", || async {
        acknowledged.lock().unwrap().len() >= 300
    })
    .await;
    gateway.kill();
    for sender in senders {
        assert!(sender.await.unwrap(), "every sender was still posting when the gateway was killed");
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();

    gateway.restart().await;
    let stored = stored_ids(&gateway).await;
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

/// Every stored event id, read page by page.
pub(crate) async fn stored_ids(gateway: &Gateway) -> HashSet<String> {
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
            None => return stored,
        }
    }
}

/// A tmpfs of a fixed size mounted on a folder: a disk that really fills up. Unmounted (lazily,
/// so that a process still holding files does not keep it) when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts it, or says why not (mounting needs root, which CI has).
    fn mount(path: &Path, size: &str) -> Result<SmallDisk, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|error| format!("mount cannot run: {error}"))?;
        if !output.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
        }
        Ok(SmallDisk { path: path.to_owned() })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system under `folder` with a file there until nothing more fits; deleting
/// the file gives the room back.
fn fill(folder: &Path) -> PathBuf {
    use std::io::Write;
    let filler = folder.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    for chunk in [64 * 1024, 4096, 512] {
        let block = vec![0u8; chunk];
        loop {
            match file.write(&block) {
                Ok(written) if written == chunk => {}
                Ok(_) => break,
                Err(error) => {
                    assert_eq!(error.raw_os_error(), Some(28), "the disk filled (ENOSPC): {error}");
                    break;
                }
            }
        }
    }
    filler
}

/// A message with a JSON value in its text, `pad` bytes of padding and a Message-ID of its own.
fn order_mail(to: &str, order: &str, pad: usize) -> Vec<u8> {
    format!(
        "From: orders@shop.example\r\nTo: {to}\r\nSubject: Order {order}\r\nMessage-ID: <{order}@shop.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
        json!({"order": order, "pad": "x".repeat(pad)})
    )
    .into_bytes()
}

/// The event id of a `250 2.0.0 OK: queued as evt_…` reply's text.
fn queued_id(reply: &str) -> String {
    reply
        .split_whitespace()
        .find(|word| word.starts_with("evt_"))
        .unwrap_or_else(|| panic!("no id in {reply:?}"))
        .to_owned()
}

#[tokio::test]
async fn a_full_disk_gets_503_and_smtp_452_stores_nothing_unacknowledged_and_recovers_without_a_restart() {
    let test =
        "durability::a_full_disk_gets_503_and_smtp_452_stores_nothing_unacknowledged_and_recovers_without_a_restart";
    let mut gateway = Gateway::start().await;
    // The gateway starts again on a new, empty database on a disk of 8 MiB.
    gateway.kill();
    let data = gateway.dir.path().join("data");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    let _disk = match SmallDisk::mount(&data, "8m") {
        Ok(disk) => disk,
        Err(why) => return skip(test, &why),
    };
    gateway.restart().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let to = crate::email::address_of(&gateway, SHOP_MAIL).await;
    let mut acknowledged = HashSet::new();
    let before = gateway.http.post(&url).json(&json!({"n": "before"})).send().await.unwrap();
    assert_eq!(before.status(), 202);
    acknowledged.insert(before.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());

    let filler = fill(&data);
    // What SQLite had already allocated may still take a few events: each success is kept.
    let pad = "x".repeat(32 * 1024);
    let (refused, refused_body) = loop {
        assert!(acknowledged.len() < 100, "100 events of 32 KiB were acknowledged on a full disk");
        let body = json!({"n": acknowledged.len(), "pad": pad});
        let response = gateway.http.post(&url).json(&body).send().await.unwrap();
        if response.status() != 202 {
            break (response, body);
        }
        acknowledged.insert(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    };
    assert_eq!(refused.headers()["retry-after"], "30", "a full disk asks for a longer wait");
    let (code, message) = error_code(refused, 503).await;
    assert_eq!(code, "storage_full", "{message}");
    assert!(message.contains("storage is full"), "the reason is given: {message}");
    let (refused_mail, refusal) = loop {
        assert!(acknowledged.len() < 200, "100 messages of 64 KiB were accepted on a full disk");
        let mail = order_mail(&to, &format!("full-{}", acknowledged.len()), 64 * 1024);
        match crate::email::send_raw(&gateway, "orders@shop.example", &to, &mail).await {
            Ok(reply) => acknowledged.insert(queued_id(&reply)),
            Err(error) => break (mail, error),
        };
    };
    assert!(refusal.contains("452"), "SMTP is told to retry later for lack of storage: {refusal}");

    // Room again: the same gateway takes the retries.
    std::fs::remove_file(filler).unwrap();
    let retried = gateway.http.post(&url).json(&refused_body).send().await.unwrap();
    assert_eq!(retried.status(), 202, "the sender's retry succeeds once there is room");
    acknowledged.insert(retried.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    let resent = crate::email::send_raw(&gateway, "orders@shop.example", &to, &refused_mail).await;
    acknowledged.insert(queued_id(&resent.expect("the mail is accepted once there is room")));

    gateway.restart().await;
    assert_eq!(stored_ids(&gateway).await, acknowledged, "exactly the acknowledged events are stored");
    gateway.kill();
}
