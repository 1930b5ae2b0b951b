//! The conformance suite every store backend must pass.
//!
//! Each backend's tests call [`run_all`] on a fresh, empty store. The suite states the store's
//! contract: what `append_events` returns for new and repeated deliveries, how listing filters
//! and pages, that hook tokens never change, how keys and apps are kept, that a raw body is
//! stored once however many events share it, and what retention and erasure delete. It uses
//! only the public [`Store`] interface, and `Store::stored_body_count` (for tests only).

use bytes::Bytes;
use jiff::{Timestamp, ToSpan};

use super::{ApiKeyRecord, EventQuery, InstalledApp, KeyPurpose, Store};
use crate::event::HookType;
use crate::event::{HookIdentity, IdempotencyKey, NewEvent, RequestMeta, normalize};

/// An event for `name` in `app`, received now, with a small JSON payload.
pub(crate) fn sample_event(name: &str, app: &str) -> NewEvent {
    sample_event_at(name, app, Timestamp::now())
}

pub(crate) fn sample_event_at(name: &str, app: &str, at: Timestamp) -> NewEvent {
    let request = RequestMeta {
        peer: Some("127.0.0.1:1234".into()),
        headers: vec![("content-type".into(), "application/json".into())],
    };
    let body = Bytes::from_static(br#"{"order": 42, "status": "shipped"}"#);
    let mut event = normalize(
        HookIdentity { app, event_name: name, hook_type: HookType::Form },
        &request,
        serde_json::from_slice(&body).unwrap(),
        body,
        at,
    );
    event.data_is_raw_json = true;
    event
}

/// Runs every conformance check against an empty store.
pub(crate) async fn run_all(store: &Store) {
    appended_events_read_back_exactly(store).await;
    a_batch_is_appended_in_order(store).await;
    repeated_idempotency_key_returns_the_original(store).await;
    events_list_newest_first_with_filters_and_cursor(store).await;
    events_after_an_id_come_oldest_first_a_page_at_a_time(store).await;
    events_are_counted_by_name_since_a_time(store).await;
    unknown_event_reads_as_none(store).await;
    hook_tokens_are_created_once_and_kept(store).await;
    api_keys_are_found_by_hash_until_revoked(store).await;
    installed_apps_are_replaced_and_removed(store).await;
    settings_are_written_once(store).await;
    subscriptions_are_kept_whole_replaced_and_removed(store).await;
    subscription_secrets_are_sealed_at_rest_once_keys_are_installed(store).await;
    the_outbox_is_written_with_its_event_and_worked_off(store).await;
    raw_bodies_are_stored_once_however_many_events_share_one(store).await;
    retention_deletes_old_events_with_what_they_triggered_and_keeps_the_rest(store).await;
    erasure_deletes_every_event_about_a_resource_and_nothing_else(store).await;
    store.ping().await.expect("ping");
}

async fn the_outbox_is_written_with_its_event_and_worked_off(store: &Store) {
    use crate::store::{AttemptRecord, DeliveryQuery, NextStep};
    use crate::subscriptions::{Status, TargetPolicy, from_request};
    let policy = TargetPolicy { allow_http: true, allow_private: true };
    let now = Timestamp::now();
    let active =
        from_request(&serde_json::json!({"url": "http://127.0.0.1:9/a"}), None, false, policy, now).await.unwrap();
    let mut paused =
        from_request(&serde_json::json!({"url": "http://127.0.0.1:9/b"}), None, false, policy, now).await.unwrap();
    paused.status = Status::Paused;
    store.put_subscription(active.clone()).await.unwrap();
    store.put_subscription(paused.clone()).await.unwrap();

    let mut event = sample_event("kustomer.app.outbox.order", "outbox");
    event.deliver_to = vec![active.id.clone(), paused.id.clone()];
    event.publish_to = Some("hookgate.kustomer.app.outbox.order".into());
    let key = IdempotencyKey { scope: "outbox".into(), key: "once".into(), window: std::time::Duration::from_secs(60) };
    event.idempotency_key = Some(key.clone());
    let mut repeat = sample_event("kustomer.app.outbox.order", "outbox");
    repeat.deliver_to = vec![active.id.clone()];
    repeat.idempotency_key = Some(key);
    let mut held = sample_event("kustomer.app.outbox.order", "outbox");
    held.event.quarantined = true;
    held.deliver_to = vec![active.id.clone()];
    let event_id = event.event.id.clone();
    store.append_events(vec![event, repeat, held]).await.unwrap();

    let later = Timestamp::now() + 1.second();
    let lease = std::time::Duration::from_secs(60);
    let claimed = store.claim_due_deliveries(later, lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "one delivery: the paused one waits, the duplicate and the quarantined make none");
    assert_eq!(
        (claimed[0].subscription_id.as_str(), claimed[0].event_id.as_str(), claimed[0].attempts),
        (active.id.as_str(), event_id.as_str(), 0)
    );
    assert!(
        store.claim_due_deliveries(later, lease, 10).await.unwrap().is_empty(),
        "claimed: not again within the lease"
    );

    let retry_at = crate::event::to_store_precision(later + 5.seconds());
    store
        .record_attempts(vec![AttemptRecord {
            delivery_id: claimed[0].id.clone(),
            attempt: 1,
            at: later,
            status_code: Some(500),
            latency: std::time::Duration::from_millis(12),
            response_excerpt: Some("oops".into()),
            error: None,
            next: NextStep::RetryAt(retry_at),
        }])
        .await
        .unwrap();
    let query = |status: Option<&str>| DeliveryQuery {
        subscription_id: active.id.clone(),
        from: None,
        to: None,
        status: status.map(str::to_owned),
        page: 1,
        per_page: 10,
    };
    let page = store.deliveries(query(Some("pending"))).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.deliveries[0].next_attempt_at, Some(retry_at));
    assert_eq!(page.deliveries[0].history[0].status_code, Some(500));
    assert_eq!(
        store.claim_due_deliveries(retry_at, lease, 10).await.unwrap()[0].attempts,
        1,
        "due again at its retry time"
    );
    assert!(store.retry_delivery(&active.id, &claimed[0].id, later).await.unwrap());
    assert!(!store.retry_delivery(&paused.id, &claimed[0].id, later).await.unwrap(), "only its own subscription's");

    let read = store.events(vec![event_id.clone(), "evt_missing".into()]).await.unwrap();
    assert_eq!(
        read.iter().map(|event| event.id.as_str()).collect::<Vec<_>>(),
        [event_id.as_str()],
        "one read for a batch"
    );

    let paused_query = |status: &str| DeliveryQuery {
        subscription_id: paused.id.clone(),
        status: Some(status.to_owned()),
        ..query(None)
    };
    assert_eq!(store.deliveries(paused_query("pending")).await.unwrap().total, 1);
    let far_later = later + 1.hour();
    assert!(
        !store
            .claim_due_deliveries(far_later, lease, 10)
            .await
            .unwrap()
            .iter()
            .any(|due| due.subscription_id == paused.id),
        "parked however long it waits"
    );
    store.update_subscription(&paused.id, |subscription| subscription.status = Status::Active).await.unwrap();
    let resumed = store.claim_due_deliveries(Timestamp::now() + 1.second(), lease, 10).await.unwrap();
    assert!(resumed.iter().any(|due| due.subscription_id == paused.id), "resumed: what waited is due now");
    store.update_subscription(&paused.id, |subscription| subscription.status = Status::Disabled).await.unwrap();
    assert_eq!(
        (
            store.deliveries(paused_query("pending")).await.unwrap().total,
            store.deliveries(paused_query("failed")).await.unwrap().total
        ),
        (0, 1),
        "disabling fails what was waiting"
    );
    // A delivery routed by a table not yet rebuilt after the disable is claimed, for the worker to fail.
    let late = store.enqueue_deliveries(&event_id, vec![paused.id.clone()], later).await.unwrap();
    let claimed_late = store.claim_due_deliveries(later + 2.minutes(), lease, 10).await.unwrap();
    assert!(claimed_late.iter().any(|due| late.contains(&due.id)), "{claimed_late:?}");

    let publications = store.claim_publications(later, lease, 10).await.unwrap();
    assert_eq!(publications, vec![(event_id.clone(), "hookgate.kustomer.app.outbox.order".to_owned())]);
    store.finish_publications(vec![event_id.clone()], Vec::new(), later).await.unwrap();
    assert!(store.claim_publications(later + 2.minutes(), lease, 10).await.unwrap().is_empty(), "acknowledged: gone");

    let replayed = store.enqueue_deliveries(&event_id, vec![active.id.clone()], later).await.unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(store.deliveries(query(None)).await.unwrap().total, 2);
    assert!(store.delete_subscription(&active.id).await.unwrap());
    assert_eq!(store.deliveries(query(None)).await.unwrap().total, 0, "a deleted subscription's history goes too");
    store.delete_subscription(&paused.id).await.unwrap();
}

/// An event of `name` made from `body`; its data is the body parsed as JSON when `data` is
/// `None`, else `data` (kept beside the body, as for a form or an element of a split batch).
fn event_with_body(name: &str, body: &Bytes, data: Option<serde_json::Value>, at: Timestamp) -> NewEvent {
    let mut event = sample_event_at(name, "conformance", at);
    event.raw_body = body.clone();
    match data {
        None => event.event.data = serde_json::from_slice(body).unwrap(),
        Some(data) => {
            event.event.data = data;
            event.data_is_raw_json = false;
        }
    }
    event
}

/// Text no other test writes, so that bodies made with it are new to the store.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// An active subscription that takes every event, stored.
async fn stored_subscription(store: &Store) -> crate::subscriptions::Subscription {
    use crate::subscriptions::{TargetPolicy, from_request};
    let policy = TargetPolicy { allow_http: true, allow_private: true };
    let body = serde_json::json!({"url": "http://127.0.0.1:9/kept"});
    let subscription = from_request(&body, None, false, policy, Timestamp::now()).await.unwrap();
    store.put_subscription(subscription.clone()).await.unwrap();
    subscription
}

async fn raw_bodies_are_stored_once_however_many_events_share_one(store: &Store) {
    let before = store.stored_body_count().await.unwrap();
    // A split batch: every element is an event, and every event was made from the one buffer.
    let batch_body = Bytes::from(format!(r#"{{"batch": "{}", "items": [0, 1, 2]}}"#, unique("split")));
    let split: Vec<NewEvent> = (0..100)
        .map(|index| {
            let data = Some(serde_json::json!({"index": index}));
            event_with_body("conformance.split", &batch_body, data, Timestamp::now())
        })
        .collect();
    store.append_events(split.clone()).await.unwrap();
    assert_eq!(store.stored_body_count().await.unwrap(), before + 1, "100 events sharing a body store it once");
    for event in &split {
        assert_eq!(store.event(&event.event.id).await.unwrap().as_ref(), Some(&event.event));
        assert_eq!(store.raw_body(&event.event.id).await.unwrap().unwrap().bytes, batch_body.to_vec());
    }

    // One mail to two hooks: separate events, appended separately, from equal bytes.
    let message = format!("From: shop@example.com\r\n\r\n{{\"orderId\": \"{}\"}}\r\n", unique("mail"));
    let data = serde_json::json!({"orderId": "from the mail"});
    let to_orders =
        event_with_body("conformance.mail.orders", &Bytes::from(message.clone()), Some(data.clone()), Timestamp::now());
    let to_crm = event_with_body("conformance.mail.crm", &Bytes::from(message.clone()), Some(data), Timestamp::now());
    store.append_events(vec![to_orders.clone()]).await.unwrap();
    store.append_events(vec![to_crm.clone()]).await.unwrap();
    assert_eq!(store.stored_body_count().await.unwrap(), before + 2, "the mail's body is stored once for both hooks");
    for event in [&to_orders, &to_crm] {
        assert_eq!(store.raw_body(&event.event.id).await.unwrap().unwrap().bytes, message.as_bytes());
        assert_eq!(store.event(&event.event.id).await.unwrap().as_ref(), Some(&event.event));
    }
}

async fn retention_deletes_old_events_with_what_they_triggered_and_keeps_the_rest(store: &Store) {
    use crate::store::{AttemptRecord, DeliveryQuery, NextStep};
    let subscription = stored_subscription(store).await;
    let long_ago: Timestamp = "2001-06-01T00:00:00Z".parse().unwrap();
    let cutoff: Timestamp = "2002-01-01T00:00:00Z".parse().unwrap();
    let only_old = Bytes::from(format!(r#"{{"old": "{}"}}"#, unique("old")));
    let shared = Bytes::from(format!(r#"{{"shared": "{}"}}"#, unique("shared")));
    let mut old: Vec<NewEvent> = (0..4)
        .map(|minute| {
            event_with_body("conformance.retention.old", &only_old, None, long_ago + (minute as i64).minutes())
        })
        .collect();
    old.push(event_with_body("conformance.retention.old", &shared, None, long_ago + 5.minutes()));
    for event in &mut old {
        event.deliver_to = vec![subscription.id.clone()];
        event.publish_to = Some("hookgate.conformance.retention.old".into());
    }
    let mut recent = event_with_body("conformance.retention.recent", &shared, None, Timestamp::now());
    recent.deliver_to = vec![subscription.id.clone()];
    store.append_events(old.clone()).await.unwrap();
    store.append_events(vec![recent.clone()]).await.unwrap();
    // History of the recent event older than the cutoff: one delivery finished then, one pending.
    let finished = store.enqueue_deliveries(&recent.event.id, vec![subscription.id.clone()], long_ago).await.unwrap();
    let pending = store.enqueue_deliveries(&recent.event.id, vec![subscription.id.clone()], long_ago).await.unwrap();
    store
        .record_attempts(vec![AttemptRecord {
            delivery_id: finished[0].clone(),
            attempt: 1,
            at: long_ago,
            status_code: Some(200),
            latency: std::time::Duration::from_millis(3),
            response_excerpt: None,
            error: None,
            next: NextStep::Delivered,
        }])
        .await
        .unwrap();
    let history = || DeliveryQuery {
        subscription_id: subscription.id.clone(),
        from: None,
        to: None,
        status: None,
        page: 1,
        per_page: 100,
    };
    assert_eq!(store.deliveries(history()).await.unwrap().total, 8);
    let bodies_before = store.stored_body_count().await.unwrap();

    let first = store.prune_before(cutoff, 2).await.unwrap();
    assert_eq!(first.events, 2, "at most one batch per call");
    let mut total = first;
    loop {
        let count = store.prune_before(cutoff, 2).await.unwrap();
        if count.is_empty() {
            break;
        }
        total.events += count.events;
        total.deliveries += count.deliveries;
        total.bodies += count.bodies;
    }
    assert_eq!(
        total,
        crate::store::PruneCount { events: 5, deliveries: 6, bodies: 1 },
        "the old events with their deliveries, the finished old delivery, and the body only old events had"
    );
    for event in &old {
        assert!(store.event(&event.event.id).await.unwrap().is_none(), "an old event is gone");
        assert!(store.raw_body(&event.event.id).await.unwrap().is_none());
    }
    assert_eq!(store.event(&recent.event.id).await.unwrap().as_ref(), Some(&recent.event), "a recent one is kept");
    assert_eq!(store.raw_body(&recent.event.id).await.unwrap().unwrap().bytes, shared.to_vec(), "with its body");
    assert_eq!(store.stored_body_count().await.unwrap(), bodies_before - 1);
    let kept: Vec<String> =
        store.deliveries(history()).await.unwrap().deliveries.into_iter().map(|delivery| delivery.id).collect();
    assert_eq!(kept.len(), 2, "the recent event's delivery and the pending old one: {kept:?}");
    assert!(kept.contains(&pending[0]) && !kept.contains(&finished[0]));
    let publications = store.claim_publications(Timestamp::now(), std::time::Duration::from_secs(60), 100).await;
    assert!(
        !publications.unwrap().iter().any(|(event_id, _)| old.iter().any(|event| &event.event.id == event_id)),
        "the old events' publications are gone"
    );
    store.delete_subscription(&subscription.id).await.unwrap();
}

async fn erasure_deletes_every_event_about_a_resource_and_nothing_else(store: &Store) {
    let subscription = stored_subscription(store).await;
    let resource = unique("cust");
    let other = unique("cust");
    let now = Timestamp::now();
    let json = |value: serde_json::Value| Bytes::from(serde_json::to_vec(&value).unwrap());
    let mut by_resource_id = event_with_body(
        "conformance.erasure",
        &json(serde_json::json!({"resourceId": resource, "total": 12})),
        None,
        now,
    );
    by_resource_id.deliver_to = vec![subscription.id.clone()];
    by_resource_id.publish_to = Some("hookgate.conformance.erasure".into());
    let form_body = Bytes::from(format!("resource_id={resource}&total=12"));
    let by_snake_case =
        event_with_body("conformance.erasure", &form_body, Some(serde_json::json!({"resource_id": resource})), now);
    let by_id = event_with_body("conformance.erasure", &json(serde_json::json!({"id": resource})), None, now);
    // One mail naming two resources: two events that share its body.
    let mail = Bytes::from(format!(
        "From: crm@example.com

{resource} and {other}
"
    ));
    let mut mail_about_it =
        event_with_body("conformance.erasure.mail", &mail, Some(serde_json::json!({"resourceId": resource})), now);
    mail_about_it.deliver_to = vec![subscription.id.clone()];
    let mail_about_other =
        event_with_body("conformance.erasure.mail", &mail, Some(serde_json::json!({"resourceId": other})), now);
    let kept = [
        event_with_body("conformance.erasure", &json(serde_json::json!({"resourceId": other})), None, now),
        event_with_body("conformance.erasure", &json(serde_json::json!({"customer": {"id": resource}})), None, now),
        event_with_body("conformance.erasure", &json(serde_json::json!({"id": format!("{resource}-2")})), None, now),
        mail_about_other,
    ];
    let erased = [by_resource_id, by_snake_case, by_id, mail_about_it];
    store.append_events(erased.iter().chain(&kept).cloned().collect()).await.unwrap();
    let bodies_before = store.stored_body_count().await.unwrap();

    let purged = store.purge_resource(&resource).await.unwrap();
    assert_eq!(
        purged,
        crate::store::PurgeCount { events: 4, deliveries: 2, bodies: 3 },
        "the mail's body stays for the event about the other resource"
    );
    for event in &erased {
        assert!(store.event(&event.event.id).await.unwrap().is_none(), "{} is erased", event.event.data);
        assert!(store.raw_body(&event.event.id).await.unwrap().is_none());
    }
    for event in &kept {
        assert_eq!(store.event(&event.event.id).await.unwrap().as_ref(), Some(&event.event), "kept");
        assert_eq!(store.raw_body(&event.event.id).await.unwrap().unwrap().bytes, event.raw_body.to_vec());
    }
    assert_eq!(store.stored_body_count().await.unwrap(), bodies_before - 3);
    let query = crate::store::DeliveryQuery {
        subscription_id: subscription.id.clone(),
        from: None,
        to: None,
        status: None,
        page: 1,
        per_page: 10,
    };
    assert_eq!(store.deliveries(query).await.unwrap().total, 0, "their deliveries are gone");
    let publications = store.claim_publications(Timestamp::now(), std::time::Duration::from_secs(60), 100).await;
    assert!(
        !publications.unwrap().iter().any(|(event_id, _)| event_id == &erased[0].event.id),
        "its publication is gone"
    );
    assert_eq!(store.purge_resource(&resource).await.unwrap(), crate::store::PurgeCount::default(), "nothing left");

    // Numbers name a resource as routes read them: `42` is "42", `1.5` is "1.5".
    let number = uuid::Uuid::now_v7().as_u128() as u32;
    let numbered = event_with_body("conformance.erasure", &json(serde_json::json!({"id": number})), None, now);
    let real = event_with_body("conformance.erasure", &json(serde_json::json!({"resourceId": 1.5})), None, now);
    store.append_events(vec![numbered.clone(), real.clone()]).await.unwrap();
    assert_eq!(store.purge_resource(&number.to_string()).await.unwrap().events, 1);
    assert!(store.event(&numbered.event.id).await.unwrap().is_none());
    assert_eq!(store.purge_resource("1.5").await.unwrap().events, 1);
    assert!(store.event(&real.event.id).await.unwrap().is_none());
    store.delete_subscription(&subscription.id).await.unwrap();
}

async fn subscriptions_are_kept_whole_replaced_and_removed(store: &Store) {
    use crate::subscriptions::{TargetPolicy, from_request};
    let policy = TargetPolicy { allow_http: true, allow_private: true };
    let at: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    let body = serde_json::json!({"url": "http://127.0.0.1:9/a", "name": "first", "events": ["stripe.*"],
        "resource_id": "r-1", "filter": "$.data.total", "headers": {"x-team": "ops"}});
    let first = from_request(&body, None, false, policy, at).await.unwrap();
    let later = at + jiff::SignedDuration::from_secs(1);
    let second =
        from_request(&serde_json::json!({"url": "http://127.0.0.1:9/b"}), None, false, policy, later).await.unwrap();
    store.put_subscription(first.clone()).await.unwrap();
    store.put_subscription(second.clone()).await.unwrap();
    assert_eq!(store.subscription(&first.id).await.unwrap().as_ref(), Some(&first), "kept whole, secrets included");
    assert_eq!(store.subscriptions().await.unwrap(), vec![first.clone(), second.clone()], "oldest first");

    let mut paused = first.clone();
    paused.status = crate::subscriptions::Status::Paused;
    store.put_subscription(paused.clone()).await.unwrap();
    assert_eq!(store.subscription(&first.id).await.unwrap(), Some(paused.clone()));

    let failing_at = later + jiff::SignedDuration::from_secs(60);
    let updated = store.update_subscription(&first.id, move |s| s.failing_since = Some(failing_at)).await.unwrap();
    let expected = crate::subscriptions::Subscription { failing_since: Some(failing_at), ..paused };
    assert_eq!(updated.as_ref(), Some(&expected), "the changed subscription is returned");
    assert_eq!(store.subscription(&first.id).await.unwrap(), Some(expected), "and stored");
    assert_eq!(store.update_subscription("sub_missing", |s| s.name = "x".into()).await.unwrap(), None);
    assert!(store.delete_subscription(&first.id).await.unwrap());
    assert!(!store.delete_subscription(&first.id).await.unwrap());
    assert_eq!(store.subscription(&first.id).await.unwrap(), None);
    assert_eq!(store.subscriptions().await.unwrap(), vec![second]);
}

/// The keys the conformance suite installs; [`OTHER_SECRETS_KEY`] is not them.
pub(crate) const SECRETS_KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";
pub(crate) const OTHER_SECRETS_KEY: &str = "0202020202020202020202020202020202020202020202020202020202020202";

/// True when no stored subscription document contains `secret`.
async fn nowhere_at_rest(store: &Store, secret: &str) -> bool {
    store.subscription_bodies().await.unwrap().iter().all(|(_, body)| !body.contains(secret))
}

/// Secrets stored before keys were installed are sealed by `seal_stored_secrets`; from then on
/// every write seals, every read opens, and no stored document holds a plaintext secret.
async fn subscription_secrets_are_sealed_at_rest_once_keys_are_installed(store: &Store) {
    use crate::store::sealed::{SEALED_PREFIX, SecretsKeys, seal_stored_secrets};
    use crate::subscriptions::{TargetPolicy, from_request, new_secret};
    assert!(store.secrets_keys().is_none(), "the suite installs the keys here");
    let policy = TargetPolicy { allow_http: true, allow_private: true };
    let now = Timestamp::now();
    let before =
        from_request(&serde_json::json!({"url": "http://127.0.0.1:9/sealed"}), None, false, policy, now).await.unwrap();
    let plaintext = before.secrets[0].secret.clone();
    store.put_subscription(before.clone()).await.unwrap();
    assert!(!nowhere_at_rest(store, &plaintext).await, "without keys a secret is stored as given");

    store.install_secrets_keys(std::sync::Arc::new(SecretsKeys::parse(SECRETS_KEY, &[]).unwrap()));
    let sealing = seal_stored_secrets(store).await.unwrap();
    assert!(sealing.resealed >= 1, "{sealing:?}");
    assert!(nowhere_at_rest(store, &plaintext).await, "sealed in place");
    assert!(store.subscription_bodies().await.unwrap().iter().all(|(_, body)| body.contains(SEALED_PREFIX)));
    assert_eq!(store.subscription(&before.id).await.unwrap(), Some(before.clone()), "read back opened");
    let again = seal_stored_secrets(store).await.unwrap();
    assert_eq!(again.resealed, 0, "nothing left to seal: {again:?}");

    let after = from_request(&serde_json::json!({"url": "http://127.0.0.1:9/sealed-too"}), None, false, policy, now)
        .await
        .unwrap();
    store.put_subscription(after.clone()).await.unwrap();
    let rotated = new_secret();
    let secret = rotated.clone();
    let updated = store
        .update_subscription(&after.id, move |subscription| {
            subscription.rotate_secret(secret, now, now + jiff::SignedDuration::from_secs(3600));
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.secrets[0].secret, rotated, "the change sees and returns opened secrets");
    let listed = store.subscriptions().await.unwrap();
    let stored = listed.iter().find(|subscription| subscription.id == after.id).unwrap();
    assert_eq!(stored.signing_secrets(now).collect::<Vec<_>>(), [rotated.as_str(), after.secrets[0].secret.as_str()]);
    for secret in [&plaintext, &after.secrets[0].secret, &rotated] {
        assert!(nowhere_at_rest(store, secret).await, "no plaintext secret at rest");
    }
    assert!(store.delete_subscription(&before.id).await.unwrap());
    assert!(store.delete_subscription(&after.id).await.unwrap());
}

/// `reopened` is the same database as `store` (after the suite) with other keys installed: the
/// start-up check refuses it, names the subscription, and changes nothing.
pub(crate) async fn a_wrong_secrets_key_is_refused_and_changes_nothing(store: &Store, reopened: &Store) {
    use crate::store::sealed::{SealingError, SecretsKeys, seal_stored_secrets};
    use crate::subscriptions::{TargetPolicy, from_request};
    let policy = TargetPolicy { allow_http: true, allow_private: true };
    let subscription = from_request(
        &serde_json::json!({"url": "http://127.0.0.1:9/wrong-key"}),
        None,
        false,
        policy,
        Timestamp::now(),
    )
    .await
    .unwrap();
    store.put_subscription(subscription.clone()).await.unwrap();
    let before = store.subscription_bodies().await.unwrap();
    reopened.install_secrets_keys(std::sync::Arc::new(SecretsKeys::parse(OTHER_SECRETS_KEY, &[]).unwrap()));
    let error = seal_stored_secrets(reopened).await.unwrap_err();
    assert!(matches!(&error, SealingError::WrongKey { subscription: id, .. } if id.starts_with("sub_")), "{error}");
    let text = error.to_string();
    assert!(text.contains("is not configured") && !text.contains(&subscription.secrets[0].secret), "{text}");
    assert!(reopened.subscription(&subscription.id).await.is_err(), "a read says so too, never a wrong secret");
    assert_eq!(store.subscription_bodies().await.unwrap(), before, "nothing was changed");
    assert_eq!(store.subscription(&subscription.id).await.unwrap(), Some(subscription), "the right key still reads it");
}

async fn appended_events_read_back_exactly(store: &Store) {
    let new = sample_event("conformance.read.back", "conformance");
    let appended = store.append_events(vec![new.clone()]).await.unwrap();
    assert_eq!(appended.len(), 1);
    assert_eq!(appended[0].id, new.event.id);
    assert!(!appended[0].duplicate);
    let stored = store.event(&new.event.id).await.unwrap().expect("stored event");
    assert_eq!(stored, new.event);
    let raw = store.raw_body(&new.event.id).await.unwrap().expect("raw body");
    assert_eq!(raw.bytes, new.raw_body.to_vec());
    assert_eq!(raw.content_type.as_deref(), Some("application/json"));

    // Data that is not the body parsed as JSON (a form, XML) is kept beside the body.
    let mut form = sample_event("conformance.read.back", "conformance");
    form.raw_body = Bytes::from_static(b"order=42&status=shipped");
    form.event.data = serde_json::json!({"order": "42", "status": "shipped"});
    form.data_is_raw_json = false;
    store.append_events(vec![form.clone()]).await.unwrap();
    assert_eq!(store.event(&form.event.id).await.unwrap().expect("stored form event"), form.event);
    assert_eq!(store.raw_body(&form.event.id).await.unwrap().unwrap().bytes, form.raw_body.to_vec());
}

async fn a_batch_is_appended_in_order(store: &Store) {
    let batch: Vec<NewEvent> = (0..5).map(|_| sample_event("conformance.batch", "conformance")).collect();
    let appended = store.append_events(batch.clone()).await.unwrap();
    let ids: Vec<&str> = appended.iter().map(|a| a.id.as_str()).collect();
    let expected: Vec<&str> = batch.iter().map(|e| e.event.id.as_str()).collect();
    assert_eq!(ids, expected);
}

async fn repeated_idempotency_key_returns_the_original(store: &Store) {
    let key =
        IdempotencyKey { scope: "stripe".into(), key: "evt_123".into(), window: crate::event::DEFAULT_DEDUP_WINDOW };
    let mut first = sample_event("conformance.idempotent", "conformance");
    first.idempotency_key = Some(key.clone());
    let mut repeat = sample_event("conformance.idempotent", "conformance");
    repeat.idempotency_key = Some(key.clone());
    let mut other_scope = sample_event("conformance.idempotent", "conformance");
    other_scope.idempotency_key = Some(IdempotencyKey {
        scope: "github".into(),
        key: "evt_123".into(),
        window: crate::event::DEFAULT_DEDUP_WINDOW,
    });

    let original = store.append_events(vec![first.clone()]).await.unwrap().remove(0);
    let again = store.append_events(vec![repeat.clone()]).await.unwrap().remove(0);
    assert_eq!(again.id, original.id);
    assert!(again.duplicate);
    assert!(store.event(&repeat.event.id).await.unwrap().is_none(), "no second event");
    assert_eq!(store.event(&original.id).await.unwrap().unwrap().receive_count, 2);

    let separate = store.append_events(vec![other_scope.clone()]).await.unwrap().remove(0);
    assert!(!separate.duplicate, "keys are unique per scope only");

    let mut in_one_batch = sample_event("conformance.idempotent", "conformance");
    in_one_batch.idempotency_key = Some(IdempotencyKey {
        scope: "stripe".into(),
        key: "evt_batch".into(),
        window: crate::event::DEFAULT_DEDUP_WINDOW,
    });
    let mut twin = sample_event("conformance.idempotent", "conformance");
    twin.idempotency_key = in_one_batch.idempotency_key.clone();
    let both = store.append_events(vec![in_one_batch.clone(), twin]).await.unwrap();
    assert_eq!(both[1].id, in_one_batch.event.id);
    assert!(both[1].duplicate, "a repeat inside one batch is a duplicate too");

    let window = std::time::Duration::from_secs(3600);
    let at: Timestamp = "2029-01-01T00:00:00Z".parse().unwrap();
    let keyed = |at: Timestamp| {
        let mut event = sample_event_at("conformance.window", "conformance", at);
        event.idempotency_key = Some(IdempotencyKey { scope: "window".into(), key: "delivery-1".into(), window });
        event
    };
    let original = store.append_events(vec![keyed(at)]).await.unwrap().remove(0);
    let within = store.append_events(vec![keyed(at + 59.minutes())]).await.unwrap().remove(0);
    assert_eq!((within.id.as_str(), within.duplicate), (original.id.as_str(), true), "a repeat within the window");
    let later = store.append_events(vec![keyed(at + 2.hours())]).await.unwrap().remove(0);
    assert!(!later.duplicate && later.id != original.id, "past the window the same id is a new event");
    let again = store.append_events(vec![keyed(at + 2.hours() + 1.minutes())]).await.unwrap().remove(0);
    assert_eq!(again.id, later.id, "the key now belongs to the newer event");
    assert!(store.event(&original.id).await.unwrap().is_some(), "the old event is kept");
}

async fn events_list_newest_first_with_filters_and_cursor(store: &Store) {
    let base: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let mut written = Vec::new();
    for i in 0..7 {
        let app = if i % 2 == 0 { "listing-even" } else { "listing-odd" };
        let name = format!("conformance.listing.{app}");
        let event = sample_event_at(&name, app, base + (i as i64).minutes());
        store.append_events(vec![event.clone()]).await.unwrap();
        written.push(event.event);
    }
    let newest_first: Vec<String> = written.iter().rev().map(|e| e.id.clone()).collect();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_events(EventQuery { since: Some(base), before_id: cursor.clone(), limit: 3, ..Default::default() })
            .await
            .unwrap();
        assert!(page.events.len() <= 3);
        seen.extend(page.events.iter().map(|e| e.id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, newest_first, "pages cover every event once, newest first");

    let even = store
        .list_events(EventQuery { app: Some("listing-even".into()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(even.events.len(), 4);
    assert!(even.next_cursor.is_none());

    let by_name = store
        .list_events(EventQuery {
            name: Some("conformance.listing.listing-odd".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_name.events.len(), 3);

    let window = store
        .list_events(EventQuery {
            since: Some(base + 2.minutes()),
            until: Some(base + 4.minutes()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let expected: Vec<String> = vec![written[3].id.clone(), written[2].id.clone()];
    assert_eq!(window.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), expected);
}

async fn events_after_an_id_come_oldest_first_a_page_at_a_time(store: &Store) {
    let app = "conformance-after";
    let mut ids = Vec::new();
    for i in 0..5 {
        let name = format!("conformance.after.{}", if i == 2 { "other" } else { "order" });
        let event = sample_event(&name, app);
        ids.push(event.event.id.clone());
        store.append_events(vec![event]).await.unwrap();
    }
    let after = |id: &str, limit: usize| EventQuery {
        app: Some(app.into()),
        after_id: Some(id.to_owned()),
        limit,
        ..Default::default()
    };
    let ids_of = |page: &crate::store::EventPage| page.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();

    let first = store.list_events(after(&ids[0], 2)).await.unwrap();
    assert_eq!(ids_of(&first), [ids[1].clone(), ids[2].clone()], "only later ids, oldest first");
    assert_eq!(first.next_cursor.as_deref(), Some(ids[2].as_str()), "more match: the cursor is the last id");
    let second = store.list_events(after(first.next_cursor.as_deref().unwrap(), 2)).await.unwrap();
    assert_eq!(ids_of(&second), [ids[3].clone(), ids[4].clone()]);
    assert_eq!(second.next_cursor, None, "nothing after the last");
    assert!(store.list_events(after(&ids[4], 10)).await.unwrap().events.is_empty());

    let from_the_start = store.list_events(after(&format!("evt_{}", "0".repeat(32)), 10)).await.unwrap();
    assert_eq!(ids_of(&from_the_start), ids, "an id never stored is a position all the same");
    let named = EventQuery { name: Some("conformance.after.order".into()), ..after(&ids[1], 10) };
    assert_eq!(
        ids_of(&store.list_events(named).await.unwrap()),
        [ids[3].clone(), ids[4].clone()],
        "with the other filters"
    );
}

async fn events_are_counted_by_name_since_a_time(store: &Store) {
    let now = Timestamp::now();
    let app = "conformance-count";
    let recent = |name: &str| sample_event_at(name, app, now - 1.hour());
    store
        .append_events(vec![
            recent("conformance.count.a"),
            recent("conformance.count.a"),
            recent("conformance.count.b"),
            sample_event_at("conformance.count.a", app, now - 30.hours()),
            sample_event_at("conformance.count.old", app, now - 30.hours()),
        ])
        .await
        .unwrap();
    let counts = store.count_events_by_name(now - 24.hours()).await.unwrap();
    assert_eq!(counts.get("conformance.count.a"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("conformance.count.b"), Some(&1));
    assert_eq!(counts.get("conformance.count.old"), None, "names with no event since are left out");
}

async fn unknown_event_reads_as_none(store: &Store) {
    assert!(store.event("evt_doesnotexist").await.unwrap().is_none());
    assert!(store.raw_body("evt_doesnotexist").await.unwrap().is_none());
}

async fn hook_tokens_are_created_once_and_kept(store: &Store) {
    let first = store.hook_tokens(vec!["tokens.a".into(), "tokens.b".into()]).await.unwrap();
    assert_eq!(first.len(), 2);
    assert_ne!(first["tokens.a"], first["tokens.b"]);
    assert!(first["tokens.a"].len() >= 43, "tokens carry at least 256 bits");
    let again = store.hook_tokens(vec!["tokens.b".into(), "tokens.c".into()]).await.unwrap();
    assert_eq!(again["tokens.b"], first["tokens.b"]);
    assert!(!again.contains_key("tokens.a"), "only asked names are returned");
}

async fn api_keys_are_found_by_hash_until_revoked(store: &Store) {
    let created_at: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let scoped = ApiKeyRecord {
        id: "key_conformance_scoped".into(),
        name: "scoped".into(),
        purpose: KeyPurpose::Ingest,
        prefix: "hgk_abcd".into(),
        sha256: "a".repeat(64),
        apps: Some(vec!["ecommstore".into()]),
        scopes: None,
        created_at,
        revoked_at: None,
    };
    let global = ApiKeyRecord {
        id: "key_conformance_global".into(),
        name: "global".into(),
        purpose: KeyPurpose::Ingest,
        prefix: "hgk_efgh".into(),
        sha256: "b".repeat(64),
        apps: None,
        scopes: None,
        created_at: created_at + 1.second(),
        revoked_at: None,
    };
    let management = ApiKeyRecord {
        id: "key_conformance_management".into(),
        name: "management".into(),
        purpose: KeyPurpose::Management,
        prefix: "hgm_ijkl".into(),
        sha256: "c".repeat(64),
        apps: None,
        scopes: Some(vec!["stripe.*".into(), "github.push".into()]),
        created_at: created_at + 2.seconds(),
        revoked_at: None,
    };
    store.insert_api_key(scoped.clone()).await.unwrap();
    store.insert_api_key(global.clone()).await.unwrap();
    store.insert_api_key(management.clone()).await.unwrap();
    assert_eq!(store.active_api_key_by_hash(&"a".repeat(64)).await.unwrap(), Some(scoped.clone()));
    assert_eq!(
        store.active_api_key_by_hash(&"c".repeat(64)).await.unwrap(),
        Some(management.clone()),
        "purpose and scopes come back as stored"
    );
    assert_eq!(store.api_keys().await.unwrap(), vec![scoped.clone(), global.clone(), management.clone()]);

    let revoked_at = created_at + 1.hour();
    assert!(store.revoke_api_key(&scoped.id, revoked_at).await.unwrap());
    assert!(!store.revoke_api_key(&scoped.id, revoked_at).await.unwrap(), "revoking twice reports nothing changed");
    assert!(!store.revoke_api_key("key_missing", revoked_at).await.unwrap());
    assert_eq!(store.active_api_key_by_hash(&"a".repeat(64)).await.unwrap(), None);
    let listed = store.api_keys().await.unwrap();
    assert_eq!(listed[0].revoked_at, Some(revoked_at));
    assert!(store.active_api_key_by_hash(&"b".repeat(64)).await.unwrap().is_some());
}

async fn installed_apps_are_replaced_and_removed(store: &Store) {
    let at: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let first = InstalledApp {
        app: "installed".into(),
        definition: r#"{"app":"installed","version":"1"}"#.into(),
        installed_at: at,
    };
    store.put_app(first.clone()).await.unwrap();
    let second = InstalledApp { definition: r#"{"app":"installed","version":"2"}"#.into(), ..first.clone() };
    store.put_app(second.clone()).await.unwrap();
    assert_eq!(store.apps().await.unwrap(), vec![second]);
    assert!(store.delete_app("installed").await.unwrap());
    assert!(!store.delete_app("installed").await.unwrap());
    assert!(store.apps().await.unwrap().is_empty());
}

async fn settings_are_written_once(store: &Store) {
    assert_eq!(store.setting("conformance").await.unwrap(), None);
    assert_eq!(store.put_setting_if_absent("conformance", "first").await.unwrap(), "first");
    assert_eq!(store.put_setting_if_absent("conformance", "second").await.unwrap(), "first");
    assert_eq!(store.setting("conformance").await.unwrap().as_deref(), Some("first"));
    store.put_setting("conformance", "replaced").await.unwrap();
    assert_eq!(store.setting("conformance").await.unwrap().as_deref(), Some("replaced"));
}
