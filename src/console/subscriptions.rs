//! Subscriptions and their deliveries: list and create; one subscription with its delivery
//! history (status, latency, the receiver's answer); edit, pause, resume, rotate the signing
//! secret (the new one shown once), delete, send a test event, and retry one delivery. Every
//! action is the API's own function (`api::subscriptions`), with the viewer's access.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::{Value, json};
use std::sync::Arc;

use super::page::{View, badge, copyable, csrf_field, when};
use super::session::{Note, NoteKind};
use super::{Action, ConsoleState, Fields, QueryMap, Viewer, after, done, failure, render};
use crate::api::ApiError;
use crate::api::subscriptions as api;
use crate::store::Delivery;
use crate::subscriptions::Status;

fn status_badge(status: Status) -> Markup {
    match status {
        Status::Active => badge("active", "good"),
        Status::Paused => badge("paused", "warn"),
        Status::Disabled => badge("disabled", "bad"),
    }
}

fn delivery_badge(status: &str) -> Markup {
    let tone = match status {
        "delivered" => "good",
        "failed" => "bad",
        "dropped" => "plain",
        _ => "warn",
    };
    badge(status, tone)
}

/// The request a create or edit form stands for, in the API's fields.
fn request_from(fields: &Fields) -> Value {
    let mut request = json!({
        "name": fields.get("name").unwrap_or_default(),
        "url": fields.get("url").unwrap_or_default(),
    });
    let events: Vec<&str> = fields
        .get("events")
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|pattern| !pattern.is_empty())
        .collect();
    if !events.is_empty() {
        request["events"] = json!(events);
    }
    request
}

/// The fields of a subscription, to create one or change it.
fn form_fields(name: &str, url: &str, events: &str, errors: &[crate::subscriptions::FieldError]) -> Markup {
    let error_of = |field: &str| {
        errors
            .iter()
            .filter(|error| error.field == field || error.field.starts_with(&format!("{field}[")))
            .map(|error| error.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let field = |id: &str, label: &str, help: &str, control: Markup| {
        let error = error_of(id);
        html! {
            div.field.invalid[!error.is_empty()] {
                label for={ "subscription-" (id) } { (label) }
                (control)
                p.help id={ "subscription-" (id) "-help" } { (help) }
                @if !error.is_empty() { p.field-error id={ "subscription-" (id) "-error" } { (error) } }
            }
        }
    };
    let described = |id: &str| {
        if error_of(id).is_empty() {
            format!("subscription-{id}-help")
        } else {
            format!("subscription-{id}-help subscription-{id}-error")
        }
    };
    html! {
        (field("url", "Endpoint URL", "Where deliveries are POSTed, signed the Standard Webhooks way.", html! {
            input #subscription-url name="url" type="url" required value=(url) placeholder="https://example.com/webhooks"
                aria-describedby=(described("url")) aria-invalid=[(!error_of("url").is_empty()).then_some("true")];
        }))
        (field("name", "Name", "Optional, for people.", html! {
            input #subscription-name name="name" type="text" value=(name) maxlength="200" aria-describedby=(described("name"));
        }))
        (field("events", "Events", "Event names or patterns, one per line or separated by commas: a name, a prefix ending in .* (kustomer.app.shop.*), or * for all.", html! {
            textarea #subscription-events name="events" rows="3" aria-describedby=(described("events"))
                aria-invalid=[(!error_of("events").is_empty()).then_some("true")] { (events) }
        }))
    }
}

/// `GET /console/subscriptions`.
pub async fn list(State(state): State<Arc<ConsoleState>>, viewer: Viewer) -> Response {
    list_page(&state, &viewer, None).await
}

/// A refused create form, with what was entered and why.
struct Refused<'a> {
    fields: &'a Fields,
    errors: Vec<crate::subscriptions::FieldError>,
    message: Option<String>,
}

async fn list_page(state: &ConsoleState, viewer: &Viewer, refused: Option<Refused<'_>>) -> Response {
    let subscriptions = match api::visible(&state.api, &viewer.access).await {
        Ok(subscriptions) => subscriptions,
        Err(error) => return failure(Some(viewer), error),
    };
    let (name, url, events, errors) = match &refused {
        Some(refused) => (
            refused.fields.get("name").unwrap_or_default(),
            refused.fields.get("url").unwrap_or_default(),
            refused.fields.get("events").unwrap_or_default(),
            refused.errors.as_slice(),
        ),
        None => ("", "", "", &[][..]),
    };
    let content = html! {
        @if subscriptions.is_empty() {
            p { "No subscriptions within your reach yet." }
        } @else {
            table.responsive {
                caption.visually-hidden { "Subscriptions" }
                thead { tr { th scope="col" { "Subscription" } th scope="col" { "Endpoint" } th scope="col" { "Events" } th scope="col" { "Status" } th scope="col" { "Created" } } }
                tbody {
                    @for subscription in &subscriptions {
                        tr {
                            td data-label="Subscription" {
                                a href={ "/console/subscriptions/" (subscription.id) } {
                                    @if subscription.name.is_empty() { code { (subscription.id) } } @else { (subscription.name) }
                                }
                            }
                            td data-label="Endpoint" { code.url { (subscription.url) } }
                            td data-label="Events" { @for pattern in &subscription.events { code { (pattern) } " " } }
                            td data-label="Status" {
                                (status_badge(subscription.status))
                                @if let Some(reason) = &subscription.disabled_reason { " " span.muted { (reason) } }
                            }
                            td data-label="Created" { (when(subscription.created_at)) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="create-heading" {
            h2 #create-heading { "Create a subscription" }
            @if let Some(message) = refused.as_ref().and_then(|refused| refused.message.as_ref()) {
                p.problem role="alert" { (message) }
            }
            form.stacked method="post" action="/console/subscriptions" {
                (csrf_field(viewer))
                (form_fields(name, url, events, errors))
                button.primary type="submit" { "Create subscription" }
            }
        }
    };
    let mut response = render(state, viewer, View::Subscriptions, "Subscriptions", content);
    if refused.is_some() {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    response
}

/// `POST /console/subscriptions`: on success the new subscription's page, with its secret
/// shown once; otherwise the form again, with every problem by its field.
pub async fn create(State(state): State<Arc<ConsoleState>>, action: Action) -> Response {
    let request = request_from(&action.fields);
    match api::create_subscription(&state.api, &action.viewer.access, &request, |_| {}).await {
        Ok(subscription) => {
            let note = Note {
                kind: NoteKind::Done,
                text: "Subscription created. Deliveries are signed with the secret below; it is not shown again \
                       (rotate it to get a new one)."
                    .to_owned(),
                secret: subscription.secrets.first().map(|secret| secret.secret.clone()),
            };
            after(&state, &action.viewer, &format!("/console/subscriptions/{}", subscription.id), Ok(note))
        }
        Err(ApiError::InvalidFields(errors)) => {
            list_page(&state, &action.viewer, Some(Refused { fields: &action.fields, errors, message: None })).await
        }
        Err(error @ (ApiError::Forbidden(_) | ApiError::BadRequest(_))) => {
            let message = Some(error.to_string());
            let refused = Refused { fields: &action.fields, errors: Vec::new(), message };
            let mut response = list_page(&state, &action.viewer, Some(refused)).await;
            if matches!(error, ApiError::Forbidden(_)) {
                *response.status_mut() = StatusCode::FORBIDDEN;
            }
            response
        }
        Err(error) => failure(Some(&action.viewer), error),
    }
}

/// The delivery history's filter and page, from the query.
fn history_query(query: &std::collections::HashMap<String, String>) -> std::collections::HashMap<String, String> {
    let mut kept = std::collections::HashMap::new();
    for key in ["status", "page"] {
        if let Some(value) = query.get(key).filter(|value| !value.is_empty()) {
            kept.insert(key.to_owned(), value.clone());
        }
    }
    kept.insert("per_page".to_owned(), "20".to_owned());
    kept
}

/// `GET /console/subscriptions/{id}`.
pub async fn detail(
    State(state): State<Arc<ConsoleState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): QueryMap,
) -> Response {
    let subscription = match api::find(&state.api, &viewer.access, &id).await {
        Ok(subscription) => subscription,
        Err(error) => return failure(Some(&viewer), error),
    };
    let history = history_query(&query);
    let (page, page_number, per_page) = match api::delivery_page(&state.api, &viewer.access, &id, &history).await {
        Ok(found) => found,
        Err(error) => return failure(Some(&viewer), error),
    };
    let hooks = crate::api::hooks::visible_directory(&state.api, &viewer.access);
    let test_names: Vec<&str> =
        hooks.iter().map(|hook| hook.event_name.as_str()).filter(|name| subscription.wants(name)).collect();
    let title = if subscription.name.is_empty() {
        format!("Subscription {}", subscription.id)
    } else {
        subscription.name.clone()
    };
    let status_filter = history.get("status").cloned().unwrap_or_default();
    let pages = page.total.div_ceil(per_page as u64).max(1);
    let base = format!("/console/subscriptions/{}", subscription.id);
    let content = html! {
        dl.summary {
            dt { "Id" } dd { (copyable(&subscription.id, "subscription id")) }
            dt { "Endpoint" } dd { (copyable(&subscription.url, "endpoint URL")) }
            dt { "Events" } dd { @for pattern in &subscription.events { code { (pattern) } " " } }
            dt { "Status" } dd {
                (status_badge(subscription.status))
                @if let Some(reason) = &subscription.disabled_reason { " " (reason) }
                @if let Some(since) = subscription.failing_since { " · failing since " (when(since)) }
            }
            dt { "Transformation" } dd {
                @match (&subscription.transform, &subscription.transform_version) {
                    (Some(source), Some(version)) => {
                        "version " code.transform-version { (version) }
                        details { summary { "Source" } pre { code { (source) } } }
                    }
                    _ => { "none: events are sent as stored" }
                }
            }
            @if let Some(limit) = &subscription.rate_limit {
                dt { "Rate limit" } dd { (limit.per_second) " a second, bursts of " (limit.burst) }
            }
            @if let Some(ordering) = &subscription.ordering {
                dt { "Ordering" } dd { "one at a time per key " code { (ordering.key) } }
            }
            dt { "Signing secrets" } dd { (subscription.secrets.len()) " active (values are shown only when created or rotated)" }
            dt { "Updated" } dd { (when(subscription.updated_at)) }
        }
        div.actions {
            @match subscription.status {
                Status::Active => {
                    form method="post" action={ (base) "/pause" } {
                        (csrf_field(&viewer))
                        button type="submit" { "Pause deliveries" }
                    }
                }
                Status::Paused | Status::Disabled => {
                    form method="post" action={ (base) "/resume" } {
                        (csrf_field(&viewer))
                        button type="submit" { @if subscription.status == Status::Paused { "Resume deliveries" } @else { "Enable again" } }
                    }
                }
            }
            form.inline method="post" action={ (base) "/rotate-secret" } {
                (csrf_field(&viewer))
                label for="overlap" { "Old secret stops" }
                select #overlap name="overlap_seconds" {
                    option value="0" { "at once" }
                    option value="3600" { "in 1 hour" }
                    option value="86400" { "in 24 hours" }
                }
                button type="submit" { "Rotate secret" }
            }
            @if !test_names.is_empty() {
                form.inline method="post" action={ (base) "/test" } {
                    (csrf_field(&viewer))
                    label for="test-event" { "Test with" }
                    select #test-event name="event" {
                        @for name in &test_names { option value=(name) { (name) } }
                    }
                    button type="submit" { "Send test event" }
                }
            }
            form method="post" action={ (base) "/delete" } data-confirm="Delete this subscription and its delivery history?" {
                (csrf_field(&viewer))
                button.danger type="submit" { "Delete" }
            }
        }
        section aria-labelledby="deliveries-heading" {
            h2 #deliveries-heading { "Deliveries" }
            form.filters method="get" action=(base) aria-label="Filter deliveries" {
                div.field {
                    label for="delivery-status" { "Status" }
                    select #delivery-status name="status" {
                        option value="" { "All" }
                        @for status in ["pending", "delivered", "failed", "dropped"] {
                            option value=(status) selected[status_filter == status] { (status) }
                        }
                    }
                }
                button type="submit" { "Apply" }
            }
            @if page.deliveries.is_empty() {
                p.muted { "No deliveries" @if !status_filter.is_empty() { " " (status_filter) } " yet." }
            } @else {
                table.deliveries.responsive {
                    caption.visually-hidden { "Deliveries, newest first" }
                    thead { tr {
                        th scope="col" { "Delivery" } th scope="col" { "Event" } th scope="col" { "Status" }
                        th scope="col" { "Last answer" } th scope="col" { "Latency" } th scope="col" { "Response" } th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        @for delivery in &page.deliveries { (delivery_row(&viewer, &base, delivery)) }
                    }
                }
                @if pages > 1 {
                    nav.pager aria-label="Delivery pages" {
                        @if page_number > 1 { a href={ (base) "?page=" (page_number - 1) "&status=" (status_filter) } { "Newer" } }
                        span { "Page " (page_number) " of " (pages) }
                        @if (page_number as u64) < pages { a href={ (base) "?page=" (page_number + 1) "&status=" (status_filter) } { "Older" } }
                    }
                }
            }
        }
        section aria-labelledby="edit-heading" {
            h2 #edit-heading { "Edit" }
            form.stacked method="post" action=(base) {
                (csrf_field(&viewer))
                (form_fields(&subscription.name, &subscription.url, &subscription.events.join("\n"), &[]))
                button.primary type="submit" { "Save changes" }
            }
        }
    };
    render(&state, &viewer, View::Subscriptions, &title, content)
}

fn delivery_row(viewer: &Viewer, base: &str, delivery: &Delivery) -> Markup {
    let last = delivery.history.last();
    html! {
        tr data-delivery=(delivery.id) {
            td data-label="Delivery" {
                code { (delivery.id) }
                br;
                span.muted { (when(delivery.created_at)) " · " (delivery.attempts) " " @if delivery.attempts == 1 { "attempt" } @else { "attempts" } }
            }
            td data-label="Event" { a href={ "/console/events/" (delivery.event_id) } { code { (delivery.event_id) } } }
            td data-label="Status" {
                (delivery_badge(&delivery.status))
                @if let (Some(next), "pending") = (delivery.next_attempt_at, delivery.status.as_str()) { br; span.muted { "next " (when(next)) } }
                @if let Some(key) = &delivery.ordering_key { br; span.muted { "key " code { (key) } } }
                @if let Some(earlier) = &delivery.waiting_behind { br; span.muted { "waiting behind " code { (earlier) } } }
            }
            td data-label="Last answer" {
                @match last {
                    Some(attempt) => {
                        @match attempt.status_code { Some(code) => { (code) } None => { "no answer" } }
                    }
                    None => { "—" }
                }
            }
            td data-label="Latency" { @if let Some(attempt) = last { (format!("{:.0}", attempt.latency_ms)) " ms" } @else { "—" } }
            td data-label="Response" {
                @if let Some(attempt) = last {
                    @if delivery.status == "dropped" { span.muted { "dropped by the transformation" } }
                    @if let Some(error) = &attempt.error { span.error-text { (error) } }
                    @if let Some(excerpt) = &attempt.response_excerpt { code.excerpt { (excerpt) } }
                    @if let Some(version) = &attempt.transform_version { br; span.muted { "transformation " code { (version) } } }
                }
                @if delivery.history.len() > 1 {
                    details {
                        summary { "Every attempt" }
                        ol {
                            @for attempt in &delivery.history {
                                li {
                                    (when(attempt.at))
                                    @if let Some(due) = attempt.due_at.filter(|due| attempt.at.duration_since(*due).as_secs() >= 1) {
                                        " (due " (when(due)) ")"
                                    }
                                    " · "
                                    @match attempt.status_code { Some(code) => { (code) } None => { "no answer" } }
                                    " · " (format!("{:.0}", attempt.latency_ms)) " ms"
                                    @if let Some(error) = &attempt.error { " · " (error) }
                                    @if let Some(version) = &attempt.transform_version { " · transformation " (version) }
                                }
                            }
                        }
                    }
                }
            }
            td data-label="Actions" {
                form method="post" action={ (base) "/deliveries/" (delivery.id) "/retry" } {
                    (csrf_field(viewer))
                    button type="submit" aria-label={ "Retry delivery " (delivery.id) } { "Retry" }
                }
            }
        }
    }
}

/// `POST /console/subscriptions/{id}`: name, URL and events changed (the rest kept).
pub async fn edit(State(state): State<Arc<ConsoleState>>, Path(id): Path<String>, action: Action) -> Response {
    let request = request_from(&action.fields);
    let outcome =
        api::change_subscription(&state.api, &action.viewer.access, &id, &request, true).await.map(|_| done("Saved."));
    after(&state, &action.viewer, &format!("/console/subscriptions/{id}"), outcome)
}

async fn set_status(state: &ConsoleState, action: &Action, id: &str, status: &str, text: &str) -> Response {
    let outcome = api::change_subscription(&state.api, &action.viewer.access, id, &json!({"status": status}), true)
        .await
        .map(|_| done(text));
    after(state, &action.viewer, &format!("/console/subscriptions/{id}"), outcome)
}

/// `POST /console/subscriptions/{id}/pause`.
pub async fn pause(State(state): State<Arc<ConsoleState>>, Path(id): Path<String>, action: Action) -> Response {
    set_status(&state, &action, &id, "paused", "Paused: deliveries wait until it is resumed.").await
}

/// `POST /console/subscriptions/{id}/resume`.
pub async fn resume(State(state): State<Arc<ConsoleState>>, Path(id): Path<String>, action: Action) -> Response {
    set_status(&state, &action, &id, "active", "Active: waiting deliveries go out now.").await
}

/// `POST /console/subscriptions/{id}/rotate-secret`: the new secret is shown once.
pub async fn rotate_secret(State(state): State<Arc<ConsoleState>>, Path(id): Path<String>, action: Action) -> Response {
    let overlap = action.fields.get("overlap_seconds").and_then(|seconds| seconds.parse::<u64>().ok()).unwrap_or(0);
    let overlap = overlap.min(7 * 24 * 3600);
    let outcome = api::rotate(&state.api, &action.viewer.access, &id, overlap).await.map(|(secret, old_expire)| Note {
        kind: NoteKind::Done,
        text: format!(
            "Secret rotated. The old one stops at {}. The new one is below; it is not shown again.",
            old_expire.strftime("%Y-%m-%d %H:%M:%S UTC")
        ),
        secret: Some(secret),
    });
    after(&state, &action.viewer, &format!("/console/subscriptions/{id}"), outcome)
}

/// `POST /console/subscriptions/{id}/delete`.
pub async fn delete(State(state): State<Arc<ConsoleState>>, Path(id): Path<String>, action: Action) -> Response {
    match api::remove(&state.api, &action.viewer.access, &id).await {
        Ok(()) => {
            after(&state, &action.viewer, "/console/subscriptions", Ok(done(format!("Subscription {id} deleted."))))
        }
        Err(error) => after(&state, &action.viewer, &format!("/console/subscriptions/{id}"), Err(error)),
    }
}

/// `POST /console/subscriptions/{id}/test`: what the endpoint answered.
pub async fn send_test(State(state): State<Arc<ConsoleState>>, Path(id): Path<String>, action: Action) -> Response {
    let request = json!({"event": action.fields.get("event").unwrap_or_default()});
    let outcome = api::test_send(&state.api, &action.viewer.access, &id, &request).await.map(|answer| {
        let delivered = answer["delivered"].as_bool().unwrap_or(false);
        let latency = answer["latencyMs"].as_f64().unwrap_or_default();
        let text = match (answer["statusCode"].as_u64(), answer["error"].as_str()) {
            (Some(code), _) => format!(
                "Test event sent: the endpoint answered {code} in {latency:.0} ms{}",
                answer["responseExcerpt"].as_str().map(|excerpt| format!(": {excerpt}")).unwrap_or_default()
            ),
            (None, Some(error)) => format!("Test event not delivered: {error}"),
            (None, None) => "Test event not delivered.".to_owned(),
        };
        Note { kind: if delivered { NoteKind::Done } else { NoteKind::Failed }, text, secret: None }
    });
    after(&state, &action.viewer, &format!("/console/subscriptions/{id}"), outcome)
}

/// `POST /console/subscriptions/{id}/deliveries/{delivery_id}/retry`.
pub async fn retry(
    State(state): State<Arc<ConsoleState>>,
    Path((id, delivery_id)): Path<(String, String)>,
    action: Action,
) -> Response {
    let outcome = api::retry(&state.api, &action.viewer.access, &id, &delivery_id)
        .await
        .map(|()| done(format!("Delivery {delivery_id} is due again now.")));
    after(&state, &action.viewer, &format!("/console/subscriptions/{id}"), outcome)
}
