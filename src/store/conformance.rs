//! The conformance suite every store backend must pass.
//!
//! Each backend's tests call [`run_all`] on a fresh, empty store. The suite states the store's
//! contract: what `append_events` returns for new and repeated deliveries, how listing filters
//! and pages, that hook tokens never change, how keys and apps are kept, that a raw body is
//! stored once however many events share it, what retention and erasure delete, and that a
//! closed store refuses writes. It uses only the public [`Store`] interface, and
//! `Store::stored_body_count` (for tests only).

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
    events_read_for_deliveries_keep_their_stored_json_texts(store).await;
    a_batch_is_appended_in_order(store).await;
    repeated_idempotency_key_returns_the_original(store).await;
    events_list_newest_first_with_filters_and_cursor(store).await;
    events_after_an_id_come_oldest_first_a_page_at_a_time(store).await;
    a_page_ends_at_its_byte_bound_and_the_cursor_continues_without_loss(store).await;
    events_are_counted_by_name_since_a_time(store).await;
    unknown_event_reads_as_none(store).await;
    hook_tokens_are_created_once_and_kept(store).await;
    api_keys_are_found_by_hash_until_revoked(store).await;
    installed_apps_are_replaced_and_removed(store).await;
    settings_are_written_once(store).await;
    subscriptions_are_kept_whole_replaced_and_removed(store).await;
    a_transformation_is_kept_with_its_subscription_and_each_attempt_records_its_version(store).await;
    subscription_secrets_are_sealed_at_rest_once_keys_are_installed(store).await;
    the_outbox_is_written_with_its_event_and_worked_off(store).await;
    raw_bodies_are_stored_once_however_many_events_share_one(store).await;
    retention_deletes_old_events_with_what_they_triggered_and_keeps_the_rest(store).await;
    erasure_deletes_every_event_about_a_resource_and_nothing_else(store).await;
    a_rate_limited_subscription_is_claimed_at_most_its_tokens_while_others_flow(store).await;
    dead_letters_are_listed_across_subscriptions_and_retried_in_bulk_a_batch_at_a_time(store).await;
    ordered_deliveries_of_a_key_are_claimed_one_at_a_time_in_order_and_others_flow(store).await;
    a_rate_limited_ordered_subscription_spends_its_tokens_only_on_each_keys_first_delivery(store).await;
    store.ping().await.expect("ping");
}

/// Last, after [`run_all`] and the key checks, since it ends the store's use: a write
/// acknowledged before `close` stays, and a write after it is refused as `Unavailable` (which
/// ingress answers with a retry).
pub(crate) async fn closing_refuses_later_writes(store: &Store) {
    assert_eq!(store.put_setting_if_absent("before-close", "kept").await.unwrap(), "kept");
    store.close().await;
    let refused = store.put_setting_if_absent("after-close", "refused").await;
    assert!(matches!(refused, Err(super::StoreError::Unavailable(_))), "a write after close: {refused:?}");
}

async fn the_outbox_is_written_with_its_event_and_worked_off(store: &Store) {
    use crate::store::{AttemptRecord, DeliveryQuery, NextStep};
    use crate::subscriptions::{Status, TargetPolicy, from_request};
    let policy = TargetPolicy::new(true, ["127.0.0.0/8".parse().unwrap()]);
    let now = Timestamp::now();
    let active =
        from_request(&serde_json::json!({"url": "http://127.0.0.1:9/a"}), None, false, &policy, now).await.unwrap();
    let mut paused =
        from_request(&serde_json::json!({"url": "http://127.0.0.1:9/b"}), None, false, &policy, now).await.unwrap();
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
            transform_version: None,
            next: NextStep::RetryAt(retry_at),
            due_at: Some(claimed[0].due_at),
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
    let policy = TargetPolicy::new(true, ["127.0.0.0/8".parse().unwrap()]);
    let body = serde_json::json!({"url": "http://127.0.0.1:9/kept"});
    let subscription = from_request(&body, None, false, &policy, Timestamp::now()).await.unwrap();
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

    // One mail to two hooks: separate events from equal bytes in separate buffers, committed
    // together (as `pipeline::mail` commits every event of a message in one append).
    let message = format!("From: shop@example.com\r\n\r\n{{\"orderId\": \"{}\"}}\r\n", unique("mail"));
    let data = serde_json::json!({"orderId": "from the mail"});
    let to_orders =
        event_with_body("conformance.mail.orders", &Bytes::from(message.clone()), Some(data.clone()), Timestamp::now());
    let to_crm = event_with_body("conformance.mail.crm", &Bytes::from(message.clone()), Some(data), Timestamp::now());
    store.append_events(vec![to_orders.clone(), to_crm.clone()]).await.unwrap();
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
    // One append, so that the old and the recent event share one stored body (bodies are shared
    // within an append on every backend).
    store.append_events(old.iter().cloned().chain([recent.clone()]).collect()).await.unwrap();
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
            transform_version: None,
            next: NextStep::Delivered,
            due_at: None,
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
    let policy = TargetPolicy::new(true, ["127.0.0.0/8".parse().unwrap()]);
    let at: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    let body = serde_json::json!({"url": "http://127.0.0.1:9/a", "name": "first", "events": ["stripe.*"],
        "resource_id": "r-1", "filter": "$.data.total", "headers": {"x-team": "ops"}});
    let first = from_request(&body, None, false, &policy, at).await.unwrap();
    let later = at + jiff::SignedDuration::from_secs(1);
    let second =
        from_request(&serde_json::json!({"url": "http://127.0.0.1:9/b"}), None, false, &policy, later).await.unwrap();
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

async fn a_transformation_is_kept_with_its_subscription_and_each_attempt_records_its_version(store: &Store) {
    use crate::store::{AttemptRecord, DeliveryQuery, NextStep};
    use crate::subscriptions::{TargetPolicy, from_request};
    let policy = &TargetPolicy::new(true, ["127.0.0.1/32".parse().unwrap()]);
    let now = Timestamp::now();
    let source = "function transform(event) { return event.data.order > 40 ? event : null; }";
    let body = serde_json::json!({"url": "http://127.0.0.1:9/t", "transform": source});
    let transformed = from_request(&body, None, false, policy, now).await.unwrap();
    let version = crate::transform::version_of(source);
    store.put_subscription(transformed.clone()).await.unwrap();
    let kept = store.subscription(&transformed.id).await.unwrap().unwrap();
    assert_eq!((kept.transform.as_deref(), kept.transform_version.as_deref()), (Some(source), Some(version.as_str())));
    let plain =
        from_request(&serde_json::json!({"url": "http://127.0.0.1:9/p"}), None, false, policy, now).await.unwrap();
    store.put_subscription(plain.clone()).await.unwrap();

    let mut event = sample_event("kustomer.app.transformed.order", "transformed");
    event.deliver_to = vec![transformed.id.clone(), plain.id.clone()];
    store.append_events(vec![event]).await.unwrap();
    let later = Timestamp::now() + 1.second();
    let lease = std::time::Duration::from_secs(60);
    let claimed = store.claim_due_deliveries(later, lease, 10).await.unwrap();
    let of = |subscription: &str| claimed.iter().find(|due| due.subscription_id == subscription).unwrap().id.clone();
    let attempt = |delivery_id: String, attempt: u32, version: Option<&str>, error: Option<&str>, next| AttemptRecord {
        delivery_id,
        attempt,
        at: later,
        status_code: None,
        latency: std::time::Duration::ZERO,
        response_excerpt: None,
        error: error.map(str::to_owned),
        transform_version: version.map(str::to_owned),
        next,
        due_at: None,
    };
    let retry_at = crate::event::to_store_precision(later + 5.seconds());
    let threw = "the transformation threw TypeError: x";
    store
        .record_attempts(vec![
            attempt(of(&transformed.id), 1, Some(&version), Some(threw), NextStep::RetryAt(retry_at)),
            attempt(of(&plain.id), 1, None, None, NextStep::Delivered),
        ])
        .await
        .unwrap();
    store
        .record_attempts(vec![attempt(of(&transformed.id), 2, Some(&version), None, NextStep::Dropped)])
        .await
        .unwrap();

    let history = |subscription: &str, status: Option<&str>| DeliveryQuery {
        subscription_id: subscription.to_owned(),
        from: None,
        to: None,
        status: status.map(str::to_owned),
        page: 1,
        per_page: 10,
    };
    let page = store.deliveries(history(&transformed.id, Some("dropped"))).await.unwrap();
    assert_eq!(page.total, 1, "a dropped delivery is listed by its own status");
    let delivery = &page.deliveries[0];
    assert_eq!((delivery.status.as_str(), delivery.next_attempt_at), ("dropped", None));
    let versions: Vec<Option<&str>> =
        delivery.history.iter().map(|attempt| attempt.transform_version.as_deref()).collect();
    assert_eq!(versions, [Some(version.as_str()), Some(version.as_str())], "each attempt names the version that ran");
    assert_eq!(delivery.history[0].error.as_deref(), Some(threw));
    let plain_page = store.deliveries(history(&plain.id, None)).await.unwrap();
    assert_eq!(plain_page.deliveries[0].history[0].transform_version, None, "no transformation ran");
    assert!(
        store
            .claim_due_deliveries(later + 1.hour(), lease, 10)
            .await
            .unwrap()
            .iter()
            .all(|due| due.subscription_id != transformed.id),
        "a dropped delivery is never due again"
    );
    store.delete_subscription(&transformed.id).await.unwrap();
    store.delete_subscription(&plain.id).await.unwrap();
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
    let policy = &TargetPolicy::new(true, ["127.0.0.1/32".parse().unwrap()]);
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
    let policy = &TargetPolicy::new(true, ["127.0.0.1/32".parse().unwrap()]);
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

async fn events_read_for_deliveries_keep_their_stored_json_texts(store: &Store) {
    // A JSON post: its data is its body, as it came (spaces included), not serialized again.
    let posted = sample_event("conformance.stored", "conformance");
    let mut form = sample_event("conformance.stored", "conformance");
    form.raw_body = Bytes::from_static(b"order=42&status=shipped");
    form.event.data = serde_json::json!({"order": "42", "status": "shipped"});
    form.data_is_raw_json = false;
    store.append_events(vec![posted.clone(), form.clone()]).await.unwrap();

    let mut read =
        store.stored_events(vec![form.event.id.clone(), "evt_missing".into(), posted.event.id.clone()]).await.unwrap();
    read.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(read.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [&posted.event.id, &form.event.id]);
    assert_eq!(read[0].data.get(), r#"{"order": 42, "status": "shipped"}"#, "the body's own text");
    assert_eq!(serde_json::to_value(&read[0]).unwrap(), serde_json::to_value(&posted.event).unwrap());
    // Data kept apart from the body reads back as the very JSON the event serializes to.
    assert_eq!(serde_json::to_string(&read[1]).unwrap(), serde_json::to_string(&form.event).unwrap());
    assert!(store.stored_events(Vec::new()).await.unwrap().is_empty());
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
    // A repeated delivery may be named otherwise (its payload changed): the original's name
    // comes back.
    let mut repeat = sample_event("conformance.idempotent.renamed", "conformance");
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
    assert_eq!(original.name, "conformance.idempotent");
    assert_eq!(again.name, "conformance.idempotent", "a duplicate carries the stored event's name");
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

async fn a_page_ends_at_its_byte_bound_and_the_cursor_continues_without_loss(store: &Store) {
    let app = "conformance-bytes";
    let mut ids = Vec::new();
    // Ten events of about 10 kB each, one as parsed data and one as a raw JSON body in turn:
    // both count.
    for i in 0..10 {
        let mut event = sample_event("conformance.bytes.order", app);
        let body = Bytes::from(serde_json::to_vec(&serde_json::json!({"i": i, "pad": "x".repeat(10_000)})).unwrap());
        event.event.data = serde_json::from_slice(&body).unwrap();
        event.raw_body = body;
        event.data_is_raw_json = i % 2 == 0;
        ids.push(event.event.id.clone());
        store.append_events(vec![event]).await.unwrap();
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let page = |cursor: Option<String>, max_bytes: Option<u64>| EventQuery {
        app: Some(app.into()),
        before_id: cursor,
        limit: 100,
        max_bytes,
        ..Default::default()
    };
    let ids_of = |page: &crate::store::EventPage| page.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();

    // 25 kB: the third event is added (20 kB before it), the fourth is not.
    let first = store.list_events(page(None, Some(25_000))).await.unwrap();
    assert_eq!(ids_of(&first), newest_first[..3], "the event that passes the bound ends the page");
    assert_eq!(first.next_cursor.as_deref(), Some(newest_first[2].as_str()));
    let one = store.list_events(page(None, Some(1))).await.unwrap();
    assert_eq!(ids_of(&one), newest_first[..1], "a page has at least one event, whatever its size");

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let listed = store.list_events(page(cursor, Some(25_000))).await.unwrap();
        assert!(!listed.events.is_empty() && listed.events.len() <= 3, "{} events", listed.events.len());
        seen.extend(ids_of(&listed));
        match listed.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, newest_first, "pages cut by bytes cover every event once, newest first");
    let whole = store.list_events(page(None, None)).await.unwrap();
    assert_eq!(ids_of(&whole), newest_first, "without a byte bound only the count bounds a page");
    assert_eq!(whole.next_cursor, None);
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

/// `count` events for each of `subscriptions`, appended now; their deliveries are due at once.
async fn events_for(store: &Store, subscriptions: &[&crate::subscriptions::Subscription], count: usize) {
    let events: Vec<NewEvent> = (0..count)
        .map(|_| {
            let mut event = sample_event("conformance.delivery.control", "conformance");
            event.deliver_to = subscriptions.iter().map(|subscription| subscription.id.clone()).collect();
            event
        })
        .collect();
    store.append_events(events).await.unwrap();
}

async fn a_rate_limited_subscription_is_claimed_at_most_its_tokens_while_others_flow(store: &Store) {
    let mut limited = stored_subscription(store).await;
    limited.rate_limit = Some(crate::subscriptions::RateLimit { per_second: 2.0, burst: 3 });
    store.put_subscription(limited.clone()).await.unwrap();
    let unlimited = stored_subscription(store).await;
    events_for(store, &[&limited, &unlimited], 10).await;
    // Longer than the test's clock runs: nothing claimed comes due again.
    let lease = std::time::Duration::from_secs(100 * 3600);
    let (limited_id, unlimited_id) = (limited.id.as_str(), unlimited.id.as_str());
    let claim_at = |at: Timestamp| async move {
        let claimed = store.claim_due_deliveries(at, lease, 100).await.unwrap();
        let of = |id: &str| claimed.iter().filter(|due| due.subscription_id == id).count();
        (of(limited_id), of(unlimited_id), claimed)
    };
    let start = Timestamp::now() + 10.milliseconds();
    let (first, others, claimed) = claim_at(start).await;
    assert_eq!((first, others), (3, 10), "the burst of the limited one; all of the other");
    assert!(
        claimed.iter().all(|due| due.due_at <= start && due.due_at > start - 1.minute()),
        "each claim says when its delivery came due"
    );
    assert_eq!(claim_at(start).await.0, 0, "the bucket is empty");
    assert_eq!(claim_at(start + 500.milliseconds()).await.0, 1, "one token after half a second at 2/s");
    assert_eq!(claim_at(start + 1.second()).await.0, 1, "and the next");
    assert_eq!(claim_at(start + 1250.milliseconds()).await.0, 0, "half a token is not a delivery");
    assert_eq!(claim_at(start + 1500.milliseconds()).await.0, 1, "the half kept adds up");
    assert_eq!(claim_at(start + 1.hour()).await.0, 3, "a quiet spell refills it up to the burst, no further");

    let mut unlimited_now = limited.clone();
    unlimited_now.rate_limit = None;
    store.put_subscription(unlimited_now).await.unwrap();
    assert_eq!(claim_at(start + 2.hours()).await.0, 1, "without its limit, what is left goes at once");
    store.delete_subscription(&limited.id).await.unwrap();
    store.delete_subscription(&unlimited.id).await.unwrap();
}

async fn dead_letters_are_listed_across_subscriptions_and_retried_in_bulk_a_batch_at_a_time(store: &Store) {
    use crate::store::{AttemptRecord, DeliveryListQuery, DeliverySelection, NextStep};
    let (first, second) = (stored_subscription(store).await, stored_subscription(store).await);
    events_for(store, &[&first, &second], 3).await;
    let ours = Some(vec![first.id.clone(), second.id.clone()]);
    let claimed: Vec<_> = store
        .claim_due_deliveries(Timestamp::now() + 10.milliseconds(), std::time::Duration::from_secs(600), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|due| ours.as_ref().unwrap().contains(&due.subscription_id))
        .collect();
    assert_eq!(claimed.len(), 6);
    // One of each subscription's is delivered; the others give up with an error.
    let mut delivered = std::collections::HashSet::new();
    let records = claimed
        .iter()
        .map(|due| {
            let next =
                if delivered.insert(due.subscription_id.clone()) { NextStep::Delivered } else { NextStep::Failed };
            AttemptRecord {
                delivery_id: due.id.clone(),
                attempt: 1,
                at: Timestamp::now(),
                status_code: (next == NextStep::Delivered).then_some(200),
                latency: std::time::Duration::from_millis(5),
                response_excerpt: None,
                error: (next == NextStep::Failed).then(|| "connection refused".to_owned()),
                next,
                due_at: Some(due.due_at),
                transform_version: None,
            }
        })
        .collect();
    store.record_attempts(records).await.unwrap();

    let failed = |subscription_ids: Option<Vec<String>>, before_id: Option<String>, limit: usize| DeliveryListQuery {
        selection: DeliverySelection { subscription_ids, status: Some("failed".into()), from: None, to: None },
        before_id,
        limit,
    };
    let page = store.list_deliveries(failed(ours.clone(), None, 10)).await.unwrap();
    assert_eq!(page.deliveries.len(), 4, "two failed of each");
    assert!(page.next_cursor.is_none());
    let ids: Vec<&str> = page.deliveries.iter().map(|delivery| delivery.id.as_str()).collect();
    let mut newest_first = ids.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, newest_first, "newest first");
    let last = page.deliveries[0].last_attempt.as_ref().expect("with its last attempt");
    assert_eq!((last.error.as_deref(), last.status_code), (Some("connection refused"), None));
    assert!(last.due_at.is_some(), "the attempt says when it was due");
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_deliveries(failed(ours.clone(), cursor, 3)).await.unwrap();
        paged.extend(page.deliveries.into_iter().map(|delivery| delivery.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, ids, "the cursor walks every page once");
    let only_first = store.list_deliveries(failed(Some(vec![first.id.clone()]), None, 10)).await.unwrap();
    assert!(only_first.deliveries.iter().all(|delivery| delivery.subscription_id == first.id));
    assert_eq!(only_first.deliveries.len(), 2);

    let selection =
        DeliverySelection { subscription_ids: ours.clone(), status: Some("failed".into()), from: None, to: None };
    let job = store.create_retry_job(selection.clone(), Timestamp::now()).await.unwrap();
    assert_eq!((job.state.as_str(), job.total, job.queued), ("running", 4, 0));
    // Meanwhile one of them is retried by hand: at its turn it no longer matches, and is skipped.
    let retried_by_hand = &page.deliveries[3];
    store.retry_delivery(&retried_by_hand.subscription_id, &retried_by_hand.id, Timestamp::now()).await.unwrap();
    let mut steps = Vec::new();
    while let Some(advanced) = store.advance_retry_job(Timestamp::now(), 2).await.unwrap() {
        steps.push((advanced.state.clone(), advanced.queued));
    }
    assert_eq!(steps, [("running".to_owned(), 2), ("done".to_owned(), 3)], "two batches, then nothing to do");
    let done = store.retry_job(&job.id).await.unwrap().expect("the job is kept");
    assert_eq!((done.total, done.queued, done.skipped), (4, 3, 1));
    assert!(done.finished_at.is_some());
    assert!(store.list_deliveries(failed(ours.clone(), None, 10)).await.unwrap().deliveries.is_empty(), "all queued");
    let due_again = store
        .claim_due_deliveries(Timestamp::now() + 10.milliseconds(), std::time::Duration::from_secs(600), 100)
        .await
        .unwrap();
    let ours_again = due_again.iter().filter(|due| ours.as_ref().unwrap().contains(&due.subscription_id)).count();
    assert_eq!(ours_again, 4, "due now: the three the job queued and the one retried by hand");

    let nothing = store.create_retry_job(selection, Timestamp::now()).await.unwrap();
    assert_eq!((nothing.state.as_str(), nothing.total), ("done", 0), "a job with nothing to do is done at once");
    assert!(store.retry_job("job_missing").await.unwrap().is_none());
    store.delete_subscription(&first.id).await.unwrap();
    store.delete_subscription(&second.id).await.unwrap();
}

async fn ordered_deliveries_of_a_key_are_claimed_one_at_a_time_in_order_and_others_flow(store: &Store) {
    use crate::store::{AttemptRecord, DeliveryQuery, NextStep};
    let subscription = stored_subscription(store).await;
    // Keys as the committer computes them: a, b, a, (none), a, b.
    let keys = [Some("a"), Some("b"), Some("a"), None, Some("a"), Some("b")];
    let events: Vec<NewEvent> = keys
        .iter()
        .map(|key| {
            let mut event = sample_event("conformance.ordered", "conformance");
            event.deliver_to = vec![subscription.id.clone()];
            event.ordering_keys = key.map(|key| (subscription.id.clone(), key.to_owned())).into_iter().collect();
            event
        })
        .collect();
    let event_ids: Vec<String> = events.iter().map(|event| event.event.id.clone()).collect();
    store.append_events(events).await.unwrap();
    let lease = std::time::Duration::from_secs(600);
    let claim = || async {
        let claimed = store.claim_due_deliveries(Timestamp::now() + 10.milliseconds(), lease, 100).await.unwrap();
        let mut ours: Vec<_> = claimed.into_iter().filter(|due| due.subscription_id == subscription.id).collect();
        ours.sort_by(|x, y| x.event_id.cmp(&y.event_id));
        ours
    };
    let event_of = |claimed: &[crate::store::DueDelivery]| -> Vec<usize> {
        claimed.iter().map(|due| event_ids.iter().position(|id| *id == due.event_id).unwrap()).collect()
    };
    let first = claim().await;
    assert_eq!(event_of(&first), [0, 1, 3], "the first of each key, and the one with no key");
    assert!(claim().await.is_empty(), "each key's next waits while its first is in flight");

    let record = |due: &crate::store::DueDelivery, attempt: u32, next: NextStep| AttemptRecord {
        delivery_id: due.id.clone(),
        attempt,
        at: Timestamp::now(),
        status_code: Some(if next == NextStep::Delivered { 200 } else { 500 }),
        latency: std::time::Duration::from_millis(2),
        response_excerpt: None,
        error: None,
        next,
        due_at: Some(due.due_at),
        transform_version: None,
    };
    let retry_at = Timestamp::now() + 10.milliseconds();
    store
        .record_attempts(vec![
            record(&first[0], 1, NextStep::RetryAt(retry_at)),
            record(&first[1], 1, NextStep::Delivered),
        ])
        .await
        .unwrap();
    let history = store
        .deliveries(DeliveryQuery {
            subscription_id: subscription.id.clone(),
            from: None,
            to: None,
            status: Some("pending".into()),
            page: 1,
            per_page: 100,
        })
        .await
        .unwrap();
    let waiting: Vec<(Option<&str>, Option<&str>)> = history
        .deliveries
        .iter()
        .rev()
        .map(|delivery| (delivery.ordering_key.as_deref(), delivery.waiting_behind.as_deref()))
        .collect();
    let a1 = first[0].id.as_str();
    assert_eq!(
        waiting,
        [(Some("a"), None), (Some("a"), Some(a1)), (None, None), (Some("a"), Some(a1)), (Some("b"), None)],
        "the history says which wait behind which"
    );

    let second = claim().await;
    assert_eq!(event_of(&second), [0, 5], "a's first again (its retry is due: b flowed meanwhile), and b's next");
    store.record_attempts(vec![record(&second[0], 2, NextStep::Failed)]).await.unwrap();
    assert_eq!(event_of(&claim().await), [2], "a's first gave up: a's next goes");
    store.delete_subscription(&subscription.id).await.unwrap();
}

async fn a_rate_limited_ordered_subscription_spends_its_tokens_only_on_each_keys_first_delivery(store: &Store) {
    use crate::store::{AttemptRecord, NextStep};
    let mut subscription = stored_subscription(store).await;
    subscription.rate_limit = Some(crate::subscriptions::RateLimit { per_second: 0.001, burst: 4 });
    store.put_subscription(subscription.clone()).await.unwrap();
    // Keys a, a, a, b, b: two heads and three deliveries waiting behind them.
    let keys = ["a", "a", "a", "b", "b"];
    let events: Vec<NewEvent> = keys
        .iter()
        .map(|key| {
            let mut event = sample_event("conformance.ordered.limited", "conformance");
            event.deliver_to = vec![subscription.id.clone()];
            event.ordering_keys = [(subscription.id.clone(), (*key).to_owned())].into_iter().collect();
            event
        })
        .collect();
    let event_ids: Vec<String> = events.iter().map(|event| event.event.id.clone()).collect();
    store.append_events(events).await.unwrap();
    let lease = std::time::Duration::from_secs(600);
    let at = Timestamp::now() + 10.milliseconds();
    let claim = || async {
        let claimed = store.claim_due_deliveries(at, lease, 100).await.unwrap();
        let mut ours: Vec<_> = claimed.into_iter().filter(|due| due.subscription_id == subscription.id).collect();
        ours.sort_by(|x, y| x.event_id.cmp(&y.event_id));
        ours
    };
    let event_of = |claimed: &[crate::store::DueDelivery]| -> Vec<usize> {
        claimed.iter().map(|due| event_ids.iter().position(|id| *id == due.event_id).unwrap()).collect()
    };
    let delivered = |due: &crate::store::DueDelivery| AttemptRecord {
        delivery_id: due.id.clone(),
        attempt: 1,
        at,
        status_code: Some(200),
        latency: std::time::Duration::from_millis(2),
        response_excerpt: None,
        error: None,
        next: NextStep::Delivered,
        due_at: Some(due.due_at),
        transform_version: None,
    };
    let heads = claim().await;
    assert_eq!(event_of(&heads), [0, 3], "the first of each key, though the bucket holds four tokens");
    store.record_attempts(vec![delivered(&heads[0]), delivered(&heads[1])]).await.unwrap();
    let next = claim().await;
    assert_eq!(event_of(&next), [1, 4], "each key's next: the blocked ones took no token");
    store.record_attempts(vec![delivered(&next[0]), delivered(&next[1])]).await.unwrap();
    assert!(claim().await.is_empty(), "the bucket is empty: a's last waits for a token");
    store.delete_subscription(&subscription.id).await.unwrap();
}
