//! Events: the live list (the latest events, then the API's event stream through
//! `console.js`, filtered by app, name and hook type), one event in full (its data, where it
//! came from with credentials masked, how it was verified, the raw body, and for mail the
//! extracted values beside the message's parts), its raw bytes, and replaying it.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use std::sync::Arc;

use super::page::{View, badge, copyable, csrf_field, pretty, type_badge, when};
use super::{Action, ConsoleState, NotSignedIn, QueryMap, Viewer, after, done, encode, failure, render};
use crate::api::ApiError;
use crate::api::stream::StreamParameters;
use crate::definitions::catalog::Catalog;
use crate::event::{Event, HookType};
use crate::store::EventQuery;

/// Events listed when the page opens; the stream adds to them.
const LISTED: usize = 50;
/// The largest raw body shown in the page; bigger ones are downloaded.
const SHOWN_RAW_BYTES: usize = 64 * 1024;

const TYPES: [HookType; 4] = [HookType::Form, HookType::Web, HookType::Email, HookType::Internal];

/// The filters a page was asked for, empty ones left out.
struct Filters {
    app: Option<String>,
    name: Option<String>,
    hook_type: Option<HookType>,
}

impl Filters {
    fn from(query: &std::collections::HashMap<String, String>) -> Filters {
        let given = |key: &str| query.get(key).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        Filters {
            app: given("app"),
            name: given("name"),
            hook_type: given("type").and_then(|text| HookType::parse(&text)),
        }
    }

    /// The query string for the stream, with `after`.
    fn stream_url(&self, after: &str) -> String {
        let mut url = format!("/console/events/stream?after={}", encode(after));
        for (key, value) in [("app", &self.app), ("name", &self.name)] {
            if let Some(value) = value {
                url.push_str(&format!("&{key}={}", encode(value)));
            }
        }
        if let Some(hook_type) = self.hook_type {
            url.push_str(&format!("&type={}", hook_type.as_str()));
        }
        url
    }
}

/// `GET /console/events`: the latest events, and the live stream after them.
pub async fn live(State(state): State<Arc<ConsoleState>>, viewer: Viewer, Query(query): QueryMap) -> Response {
    let api = &state.api;
    let filters = Filters::from(&query);
    // Taken before the read: the stream resends what the read may also have found, never less.
    let after = crate::api::stream::start_cursor(&api.committer, api.store.shared(), jiff::Timestamp::now());
    let listed = if viewer.access.is_scoped() && filters.name.is_none() {
        // As in the API, a scoped key lists by name; the stream shows what arrives.
        None
    } else {
        // The store filters by name and app; a hook type is filtered here, from a longer read.
        let limit = if filters.hook_type.is_some() { LISTED * 10 } else { LISTED };
        let query = EventQuery { name: filters.name.clone(), app: filters.app.clone(), limit, ..EventQuery::default() };
        match crate::api::events::list_events(api, &viewer.access, query).await {
            Ok(page) => Some(page.events),
            Err(error) => return failure(Some(&viewer), error),
        }
    };
    let listed_by_name_only = listed.is_none();
    let mut events = listed.unwrap_or_default();
    events.retain(|event| filters.hook_type.is_none_or(|hook_type| event.hook_type == hook_type));
    events.truncate(LISTED);
    let hooks = crate::api::hooks::visible_directory(api, &viewer.access);
    let mut apps: Vec<&str> = hooks.iter().map(|hook| hook.app.as_str()).collect();
    apps.dedup();
    if viewer.access.covers_event("hookgate.*") {
        apps.push(crate::notice::APP);
    }
    let content = html! {
        form.filters method="get" action="/console/events" aria-label="Filter events" {
            div.field {
                label for="filter-app" { "App" }
                select #filter-app name="app" {
                    option value="" { "All apps" }
                    @for app in &apps {
                        option value=(app) selected[filters.app.as_deref() == Some(*app)] { (app) }
                    }
                }
            }
            div.field {
                label for="filter-name" { "Event name" }
                select #filter-name name="name" {
                    option value="" { @if viewer.access.is_scoped() { "All within your scopes" } @else { "All names" } }
                    @for hook in &hooks {
                        option value=(hook.event_name) selected[filters.name.as_deref() == Some(hook.event_name.as_str())] {
                            (hook.display_event_name.as_deref().unwrap_or(&hook.event_name))
                        }
                    }
                }
            }
            div.field {
                label for="filter-type" { "Hook type" }
                select #filter-type name="type" {
                    option value="" { "All types" }
                    @for hook_type in TYPES {
                        option value=(hook_type.as_str()) selected[filters.hook_type == Some(hook_type)] { (hook_type.as_str()) }
                    }
                }
            }
            button type="submit" { "Apply" }
        }
        div #live-events data-stream=(filters.stream_url(&after)) {
            p #live-status .live-status role="status" aria-live="polite" { "Loading the live stream…" }
            noscript { p { "New events appear here as they arrive when JavaScript is on; otherwise reload the page." } }
            @if listed_by_name_only {
                p.help { "Your key is scoped: new events within its scopes appear below as they arrive. To see earlier ones, choose an event name." }
            }
            table.events.responsive {
                caption.visually-hidden { "Events, newest first" }
                thead { tr { th scope="col" { "Received" } th scope="col" { "Event" } th scope="col" { "App" } th scope="col" { "Type" } th scope="col" { "Id" } } }
                tbody #event-rows {
                    @for event in &events { (row(event)) }
                }
            }
            @if events.is_empty() {
                p #no-events .muted { "No events yet. They appear here as they arrive." }
            }
        }
    };
    render(&state, &viewer, View::Events, "Events", content)
}

/// One event in the list; `console.js` builds the same row for streamed events.
fn row(event: &Event) -> Markup {
    let href = format!("/console/events/{}", event.id);
    html! {
        tr data-id=(event.id) {
            td data-label="Received" { (when(event.received_at)) }
            td data-label="Event" {
                a href=(href) { (event.name) }
                @if event.quarantined { " " (badge("quarantined", "warn")) }
            }
            td data-label="App" { (event.app) }
            td data-label="Type" { (type_badge(event.hook_type)) }
            td data-label="Id" { code { (event.id) } }
        }
    }
}

/// `GET /console/events/stream`: the API's event stream, for the signed-in viewer.
pub async fn stream(
    State(state): State<Arc<ConsoleState>>,
    viewer: Result<Viewer, NotSignedIn>,
    headers: HeaderMap,
    parameters: Result<Query<StreamParameters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(viewer) = viewer else {
        return (StatusCode::UNAUTHORIZED, "sign in to the console first").into_response();
    };
    let parameters = match parameters {
        Ok(Query(parameters)) => parameters,
        Err(error) => return ApiError::BadRequest(error.body_text()).into_response(),
    };
    let last_event_id = headers.get("last-event-id").and_then(|value| value.to_str().ok()).map(str::trim);
    crate::api::stream::open(state.api.clone(), viewer.access, &viewer.session.key_hash, parameters, last_event_id)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Whether a header's value is a credential or close to one, and so is not shown.
fn masked(name: &str) -> bool {
    const WORDS: &[&str] =
        &["signature", "token", "secret", "auth", "key", "password", "cookie", "session", "credential", "hmac"];
    let name = name.to_ascii_lowercase();
    WORDS.iter().any(|word| name.contains(word))
}

/// How the event's request was checked, in words.
fn verification(catalog: &Catalog, event: &Event) -> String {
    if event.hook_type == HookType::Internal {
        return "None needed: hookgate's own event, not received from outside.".to_owned();
    }
    let hook = catalog.hook_by_event_name(&event.name).or_else(|| {
        // Sources may name events from the payload: the app's one source hook.
        let mut sources =
            catalog.hooks().iter().filter(|hook| hook.app == event.app && hook.definition.source.is_some());
        match (sources.next(), sources.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    });
    let Some(hook) = hook else {
        return "Its hook is no longer defined; it passed the checks its hook had when it arrived.".to_owned();
    };
    if let Some(source) = &hook.definition.source {
        return format!(
            "Passed: the {} signature over the raw body was valid (requests that fail are refused, stored nowhere, and listed under Rejections).",
            source.scheme_name
        );
    }
    match event.hook_type {
        HookType::Web => "Passed: the request carried a valid API key.".to_owned(),
        HookType::Form => "None: a public form hook takes any request; origins are checked for browsers.".to_owned(),
        HookType::Email => {
            let mail = event.source.mail.as_ref();
            match mail.and_then(|mail| mail.authentication.as_ref()) {
                Some(authentication) => {
                    let dkim: Vec<String> = authentication
                        .dkim
                        .iter()
                        .map(|check| format!("{} for {}", check.result, check.domain.as_deref().unwrap_or("?")))
                        .collect();
                    let dkim = if dkim.is_empty() {
                        "DKIM: none (unsigned)".to_owned()
                    } else {
                        format!("DKIM: {}", dkim.join(", "))
                    };
                    match &authentication.spf {
                        Some(spf) => format!("{dkim}; SPF: {} for {}.", spf.result, spf.domain),
                        None => format!("{dkim}; SPF: not checked (mail over HTTP)."),
                    }
                }
                None => "DKIM and SPF were not checked for this message.".to_owned(),
            }
        }
        HookType::Internal => String::new(),
    }
}

/// `GET /console/events/{id}`.
pub async fn detail(State(state): State<Arc<ConsoleState>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let api = &state.api;
    let event = match crate::api::events::find(api, &viewer.access, &id).await {
        Ok(event) => event,
        Err(error) => return failure(Some(&viewer), error),
    };
    let raw = match crate::api::events::raw_body(api, &viewer.access, &id).await {
        Ok(raw) => Some(raw),
        Err(ApiError::NotFound(_)) => None,
        Err(error) => return failure(Some(&viewer), error),
    };
    let subscriptions = match api.store.subscriptions().await {
        Ok(subscriptions) => subscriptions
            .into_iter()
            .filter(|subscription| viewer.access.reaches(subscription) && subscription.wants(&event.name))
            .collect::<Vec<_>>(),
        Err(error) => return failure(Some(&viewer), error.into()),
    };
    let catalog = api.catalog.current();
    let is_mime =
        event.source.content_type.as_deref().is_none_or(|content_type| content_type.starts_with("message/rfc822"));
    let parts = match (&raw, event.source.mail.is_some() && is_mime) {
        (Some(raw), true) => crate::email::extract::outline(&raw.bytes),
        _ => None,
    };
    let title = format!("Event {}", event.name);
    let content = html! {
        dl.summary {
            dt { "Id" } dd { (copyable(&event.id, "event id")) }
            dt { "Name" } dd { code { (event.name) } }
            dt { "App" } dd { (event.app) }
            dt { "Type" } dd { (type_badge(event.hook_type)) }
            dt { "Received" } dd { (when(event.received_at)) }
            dt { "Receive count" } dd { (event.receive_count) " " @if event.receive_count == 1 { "time" } @else { "times (repeats of one delivery id)" } }
            @if event.quarantined {
                dt { "Held" } dd { (badge("quarantined", "warn")) " Its payload did not fit the hook's shape; it is stored and never delivered." }
            }
        }
        section aria-labelledby="verification" {
            h2 #verification { "Verification" }
            p { (verification(&catalog, &event)) }
        }
        @if let Some(mail) = &event.source.mail {
            section aria-labelledby="message" {
                h2 #message { "Message" }
                dl.summary {
                    dt { "From" } dd { (mail.facts.from.as_deref().unwrap_or("—")) }
                    dt { "To" } dd { (mail.facts.to.join(", ")) }
                    dt { "Subject" } dd { (mail.facts.subject.as_deref().unwrap_or("—")) }
                    dt { "Date" } dd { (mail.facts.date.as_deref().unwrap_or("—")) }
                    dt { "Envelope" } dd { (mail.envelope_from.as_deref().unwrap_or("<>")) " → " (mail.envelope_to) }
                    @if let Some(message_id) = &mail.facts.message_id { dt { "Message-ID" } dd { code { (message_id) } } }
                }
                div.side-by-side {
                    div {
                        h3 { "Extracted values" }
                        p.muted { "Found in: " (if mail.found_in.is_empty() { "—".to_owned() } else { mail.found_in.join(", ") }) }
                        pre.json tabindex="0" aria-label="Extracted values" { (pretty(&event.data)) }
                        @if !mail.skipped.is_empty() {
                            h4 { "Looked like data, but skipped" }
                            ul {
                                @for skipped in &mail.skipped { li { (crate::email::extract::describe(skipped)) } }
                                @if mail.skipped_not_listed > 0 { li { (mail.skipped_not_listed) " more" } }
                            }
                        }
                    }
                    div {
                        h3 { "Parts" }
                        @match &parts {
                            Some(parts) => {
                                table.parts.responsive {
                                    thead { tr { th scope="col" { "Part" } th scope="col" { "Type" } th scope="col" { "Size" } th scope="col" { "Start" } } }
                                    tbody {
                                        @for part in parts {
                                            tr {
                                                td data-label="Part" { code { (if part.part.is_empty() { "(root)" } else { part.part.as_str() }) } }
                                                td data-label="Type" { (part.content_type.as_deref().unwrap_or("—")) @if let Some(name) = &part.name { " " span.muted { (name) } } }
                                                td data-label="Size" { (part.size) " B" }
                                                td data-label="Start" { @if let Some(excerpt) = &part.excerpt { span.excerpt { (excerpt) } } }
                                            }
                                        }
                                    }
                                }
                            }
                            None => { p.muted { "The message came in a provider's format; its parts are in the raw body below." } }
                        }
                        @if !mail.facts.attachments.is_empty() {
                            h4 { "Attachments" }
                            ul {
                                @for attachment in &mail.facts.attachments {
                                    li { (attachment.name.as_deref().unwrap_or("unnamed")) " · " (attachment.content_type.as_deref().unwrap_or("?")) " · " (attachment.size) " B" }
                                }
                            }
                        }
                    }
                }
            }
        } @else {
            section aria-labelledby="data" {
                h2 #data { "Data" }
                pre.json tabindex="0" aria-label="Event data" { (pretty(&event.data)) }
            }
        }
        section aria-labelledby="source" {
            h2 #source { "Source" }
            dl.summary {
                dt { "Peer" } dd { (event.source.peer.as_deref().unwrap_or("—")) }
                dt { "User agent" } dd { (event.source.user_agent.as_deref().unwrap_or("—")) }
                dt { "Content type" } dd { (event.source.content_type.as_deref().unwrap_or("—")) }
            }
            @if !event.source.headers.is_empty() {
                table.headers.responsive {
                    caption { "Request headers (credentials are never stored; signatures and tokens are masked here)" }
                    thead { tr { th scope="col" { "Header" } th scope="col" { "Value" } } }
                    tbody {
                        @for (name, value) in &event.source.headers {
                            tr {
                                td data-label="Header" { code { (name) } }
                                td data-label="Value" {
                                    @if masked(name) { span.masked { "•••••• (" (value.chars().count()) " characters, masked)" } }
                                    @else { (value) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="raw" {
            h2 #raw { "Raw body" }
            @match &raw {
                Some(raw) => {
                    p {
                        (raw.bytes.len()) " bytes as received"
                        @if let Some(content_type) = &raw.content_type { " (" (content_type) ")" }
                        " · " a href={ "/console/events/" (event.id) "/raw" } download { "Download" }
                    }
                    @match std::str::from_utf8(&raw.bytes) {
                        Ok(text) if raw.bytes.len() <= SHOWN_RAW_BYTES => { pre.raw tabindex="0" aria-label="Raw body" { (text) } }
                        Ok(_) => { p.muted { "Too large to show here; download it." } }
                        Err(_) => { p.muted { "Not text; download it." } }
                    }
                }
                None => { p.muted { "Not kept." } }
            }
        }
        section aria-labelledby="replay" {
            h2 #replay { "Replay" }
            @if event.quarantined || event.hook_type == HookType::Internal && subscriptions.is_empty() {
                p.muted { "This event cannot be replayed." }
            } @else if subscriptions.is_empty() {
                p.muted { "No subscription within your reach wants this event. " a href="/console/subscriptions" { "Create one" } "." }
            } @else {
                form method="post" action={ "/console/events/" (event.id) "/replay" } {
                    (csrf_field(&viewer))
                    label for="replay-to" { "Send it again to" }
                    select #replay-to name="subscription" {
                        option value="" { "Every subscription that wants it (" (subscriptions.len()) ")" }
                        @for subscription in &subscriptions {
                            option value=(subscription.id) { (if subscription.name.is_empty() { &subscription.url } else { &subscription.name }) " (" (subscription.id) ")" }
                        }
                    }
                    button type="submit" { "Replay" }
                }
            }
        }
    };
    render(&state, &viewer, View::Events, &title, content)
}

/// `GET /console/events/{id}/raw`: the bytes, as a download (as the API serves them).
pub async fn raw(State(state): State<Arc<ConsoleState>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    match crate::api::events::raw_download(&state.api, &viewer.access, &id).await {
        Ok(response) => response,
        Err(error) => failure(Some(&viewer), error),
    }
}

/// `POST /console/events/{id}/replay`.
pub async fn replay(State(state): State<Arc<ConsoleState>>, Path(id): Path<String>, action: Action) -> Response {
    let subscription = action.fields.get("subscription").filter(|id| !id.is_empty());
    let outcome = crate::api::events::replay_event(&state.api, &action.viewer.access, &id, subscription).await.map(
        |deliveries| match deliveries.len() {
            0 => done("Nothing to replay: no subscription wants this event now."),
            1 => done(format!("Replayed: delivery {} is queued.", deliveries[0])),
            count => done(format!("Replayed: {count} deliveries are queued.")),
        },
    );
    after(&state, &action.viewer, &format!("/console/events/{id}"), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_and_token_headers_are_masked_and_plain_ones_are_not() {
        for name in [
            "stripe-signature",
            "x-hub-signature-256",
            "x-slack-request-timestamp-token",
            "x-shopify-hmac-sha256",
            "x-auth",
        ] {
            assert!(masked(name), "{name}");
        }
        for name in ["content-type", "user-agent", "x-github-event", "x-request-id"] {
            assert!(!masked(name), "{name}");
        }
    }
}
