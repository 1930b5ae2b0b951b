//! The directory: every app and hook the viewer may see (the API's `visible_directory`), with
//! where each receives (URL or mail address, with a copy button), how it is verified, the names
//! of a source's secrets and whether each is set, its events of the last 24 hours, and the
//! definitions' errors and warnings beside the app they are about. Secrets and definition
//! problems are the operator's: only the admin token sees them, as only it reaches them in
//! the API.

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use std::collections::HashMap;
use std::sync::Arc;

use super::page::{View, badge, copyable, type_badge, when};
use super::{ConsoleState, Viewer, failure, render};
use crate::api::hooks::{HookView, visible_directory};
use crate::definitions::catalog::Hook;
use crate::definitions::sources::{SecretUse, SourceView};
use crate::definitions::{Diagnostic, Severity};
use crate::event::HookType;

pub async fn page(State(state): State<Arc<ConsoleState>>, viewer: Viewer) -> Response {
    let api = &state.api;
    let hooks = visible_directory(api, &viewer.access);
    let since = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24);
    let counts = match api.store.count_events_by_name(since).await {
        Ok(counts) => counts,
        Err(error) => return failure(Some(&viewer), error.into()),
    };
    let catalog = api.catalog.current();
    let status = api.catalog.status();
    let admin = viewer.is_admin();
    let sources: HashMap<String, SourceView> = if admin {
        crate::definitions::sources::sources(
            catalog.hooks().iter().map(|hook| (hook.app.as_str(), &hook.definition)),
            &api.public_url,
            &status.secrets,
        )
        .into_iter()
        .map(|source| (source.event_name.clone(), source))
        .collect()
    } else {
        HashMap::new()
    };
    // Definition problems by the origin they are about (a file, or an installed app).
    let mut problems: Vec<&Diagnostic> = Vec::new();
    if admin {
        if let Some((_, refused)) = &status.refused {
            problems.extend(refused.iter());
        }
        problems.extend(status.warnings.iter());
    }
    let apps = catalog.apps();
    let mut groups: Vec<(String, Vec<&HookView>)> = Vec::new();
    for hook in &hooks {
        match groups.last_mut() {
            Some((app, members)) if *app == hook.app => members.push(hook),
            _ => groups.push((hook.app.clone(), vec![hook])),
        }
    }
    let total: u64 = hooks.iter().map(|hook| counts.get(&hook.event_name).copied().unwrap_or(0)).sum();
    let content = html! {
        p.lead {
            (hooks.len()) " hooks in " (groups.len()) " apps · " (total) " events in the last 24 hours"
            @if !admin { " · within your key's scopes" }
        }
        @if let Some((at, refused)) = &status.refused {
            @if admin {
                section.refused aria-labelledby="refused-heading" {
                    h2 #refused-heading { "The latest reload was refused" }
                    p {
                        @let errors = refused.iter().filter(|d| d.severity == Severity::Error).count();
                        "At " (when(*at)) ", a change to the definitions had " (errors)
                        @if errors == 1 { " error" } @else { " errors" }
                        ", so the set below keeps serving. Fix it and save again (or send SIGHUP)."
                    }
                }
            }
        }
        @let unplaced: Vec<&&Diagnostic> = problems.iter().filter(|d| !apps.iter().any(|app| app.origin.to_string() == d.origin)).collect();
        @if !unplaced.is_empty() {
            section aria-labelledby="other-problems" {
                h2 #other-problems { "Definition problems" }
                (diagnostics(unplaced.into_iter().copied(), true))
            }
        }
        @if hooks.is_empty() {
            p { "No hooks are within your reach." }
        }
        @for (app_name, members) in &groups {
            @let summary = apps.iter().find(|app| app.app == *app_name);
            section.app aria-labelledby={ "app-" (app_name) } {
                h2 id={ "app-" (app_name) } {
                    @match summary.and_then(|app| app.title.as_ref()).filter(|_| admin) {
                        Some(title) => { (title) " " span.muted { "(" (app_name) ")" } }
                        None => { (app_name) }
                    }
                }
                @if admin {
                    @if let Some(app) = summary {
                        p.muted { "Version " (app.version) " · from " (app.origin.to_string()) }
                        @let own: Vec<&Diagnostic> = problems.iter().filter(|d| d.origin == app.origin.to_string()).copied().collect();
                        @if !own.is_empty() { (diagnostics(own.into_iter(), false)) }
                    }
                }
                div.cards {
                    @for hook in members {
                        (card(hook, catalog.hook_by_event_name(&hook.event_name), sources.get(&hook.event_name), counts.get(&hook.event_name).copied().unwrap_or(0)))
                    }
                }
            }
        }
    };
    render(&state, &viewer, View::Directory, "Directory", content)
}

/// Definition problems; `with_origin` names the file or installed app of each.
fn diagnostics<'a>(list: impl Iterator<Item = &'a Diagnostic>, with_origin: bool) -> Markup {
    html! {
        ul.diagnostics {
            @for diagnostic in list {
                li.error[diagnostic.severity == Severity::Error].warning[diagnostic.severity == Severity::Warning] {
                    (badge(if diagnostic.severity == Severity::Error { "error" } else { "warning" }, if diagnostic.severity == Severity::Error { "bad" } else { "warn" }))
                    " "
                    @if with_origin { strong { (diagnostic.origin) } " " }
                    @if !diagnostic.pointer.is_empty() { code { (diagnostic.pointer) } " " }
                    (diagnostic.message)
                }
            }
        }
    }
}

/// How a hook's requests are checked, in words.
fn verification(hook: &Hook) -> String {
    let definition = &hook.definition;
    if let Some(source) = &definition.source {
        return format!("{} signature", source.scheme_name);
    }
    match definition.hook_type {
        HookType::Web => {
            let statics = definition.static_key_hashes.len();
            if statics > 0 {
                format!("API key ({statics} from the definition, or an issued ingest key)")
            } else {
                "API key (an issued ingest key)".to_owned()
            }
        }
        HookType::Form => match &definition.allowed_origins {
            Some(origins) => format!("none: a public form; browsers only from {}", origins.join(", ")),
            None => "none: a public form".to_owned(),
        },
        HookType::Email => {
            let mut checks = Vec::new();
            if definition.email.require_dkim {
                checks.push("DKIM required");
            }
            if definition.email.mailgun_signing_key.is_some() {
                checks.push("Mailgun signature");
            }
            if !definition.email.allowed_senders.is_empty() {
                checks.push("sender allowlist");
            }
            if checks.is_empty() { "none; DKIM and SPF results are recorded".to_owned() } else { checks.join(", ") }
        }
        HookType::Internal => "internal".to_owned(),
    }
}

fn card(view: &HookView, hook: Option<&Arc<Hook>>, source: Option<&SourceView>, count: u64) -> Markup {
    let title = view.display_event_name.as_deref().unwrap_or(&view.event_name);
    let events_link = format!("/console/events?name={}", super::encode(&view.event_name));
    html! {
        article.card aria-label=(title) {
            header {
                h3 { (title) }
                (type_badge(view.hook_type))
            }
            @if let Some(description) = &view.description { p { (description) } }
            dl {
                dt { "Event name" } dd { code { (view.event_name) } }
                @if let Some(address) = &view.address {
                    dt { "Address" } dd { (copyable(address, "mail address")) }
                }
                @if let Some(url) = &view.url {
                    dt { @if view.address.is_some() { "Inbound URL" } @else { "URL" } }
                    dd { (copyable(url, "URL")) }
                }
                @if let Some(hook) = hook {
                    dt { "Verification" } dd { (verification(hook)) }
                }
                @if let Some(source) = source {
                    dt { "Secrets" }
                    dd {
                        ul.secrets {
                            @for secret in &source.secrets {
                                li {
                                    code { (secret.name) }
                                    @if secret.used_for == SecretUse::VerifyToken { span.muted { " (handshake)" } }
                                    " "
                                    @if secret.set { (badge("set", "good")) } @else { (badge("not set", "bad")) }
                                }
                            }
                        }
                        @if source.waits_for_a_secret() {
                            p.warning-text { "No signature secret is set: every request is refused (no_secret_configured)." }
                        }
                    }
                }
                dt { "Last 24 hours" }
                dd { a href=(events_link) { (count) " " @if count == 1 { "event" } @else { "events" } } }
            }
        }
    }
}
