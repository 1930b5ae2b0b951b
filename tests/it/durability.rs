//! Durability: every event acknowledged to a client is on disk. The gateway is killed with
//! SIGKILL while clients are posting; after a restart every acknowledged id is present. On a
//! disk that fills up, the gateway refuses with 503 instead of acknowledging, loses nothing it
//! acknowledged, and accepts again once there is room.

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
async fn stored_ids(gateway: &Gateway) -> HashSet<String> {
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

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "the tmpfs was resized to {size}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test]
async fn a_full_disk_gets_503_and_loses_nothing_that_was_acknowledged() {
    let test = "durability::a_full_disk_gets_503_and_loses_nothing_that_was_acknowledged";
    let mut gateway = Gateway::start().await;
    // The gateway starts again on a new, empty database on a 2 MiB disk.
    gateway.kill();
    let data = gateway.dir.path().join("data");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    let disk = match SmallDisk::mount(&data, "2m") {
        Ok(disk) => disk,
        Err(why) => return skip(test, &why),
    };
    gateway.restart().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let pad = "x".repeat(32 * 1024);

    let mut acknowledged = Vec::new();
    let refused = loop {
        assert!(acknowledged.len() < 500, "500 events of 32 KiB fit on a 2 MiB disk: it never filled");
        let body = json!({"n": acknowledged.len(), "pad": pad});
        let response = gateway.http.post(&url).json(&body).send().await.unwrap();
        if response.status() != 202 {
            break (response, body);
        }
        acknowledged.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    };
    let (response, refused_body) = refused;
    assert!(acknowledged.len() >= 5, "the disk filled after {} events", acknowledged.len());
    assert_eq!(response.headers()["retry-after"], "5");
    let (code, message) = error_code(response, 503).await;
    assert_eq!(code, "store_unavailable", "{message}");
    // The refusal was the disk being full, not something else.
    let probe = std::fs::write(data.join("probe"), vec![0u8; 64 * 1024]).unwrap_err();
    assert_eq!(probe.raw_os_error(), Some(28), "ENOSPC: {probe}");
    std::fs::remove_file(data.join("probe")).unwrap();

    disk.resize("64m");
    let retried = gateway.http.post(&url).json(&refused_body).send().await.unwrap();
    assert_eq!(retried.status(), 202, "the sender's retry succeeds once there is room");
    let retried = retried.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    gateway.restart().await;
    let mut expected: HashSet<String> = acknowledged.into_iter().collect();
    expected.insert(retried);
    assert_eq!(stored_ids(&gateway).await, expected, "exactly the acknowledged events are stored");
    gateway.kill();
}
