//! Rejections: the latest requests to platform sources that failed verification, newest first,
//! with a count per source and reason, so that a wrong or missing secret shows in a minute.
//! The admin token's only, as in the API (`api::sources::recent_rejections`).

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::page::{View, badge, when};
use super::{ConsoleState, QueryMap, Viewer, failure, render};

pub async fn page(State(state): State<Arc<ConsoleState>>, viewer: Viewer, Query(query): QueryMap) -> Response {
    let source = query.get("source").map(String::as_str).filter(|source| !source.is_empty());
    let all = match crate::api::sources::recent_rejections(&state.api, &viewer.access, None) {
        Ok(all) => all,
        Err(error) => return failure(Some(&viewer), error),
    };
    let mut by_source: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for rejection in &all {
        *by_source.entry(rejection.source.as_str()).or_default().entry(rejection.reason).or_default() += 1;
    }
    let shown: Vec<_> = all.iter().filter(|rejection| source.is_none_or(|source| rejection.source == source)).collect();
    let content = html! {
        p.lead {
            "Requests to platform sources (" code { "/api/webhooks/…" } ") that failed verification. "
            "The usual cause is a signing secret that is missing or not the platform's: compare the reason with the source's secrets in the "
            a href="/console/directory" { "directory" } "."
        }
        @if by_source.is_empty() {
            p { "No rejected requests since this process started." }
        } @else {
            table.responsive {
                caption { "By source and reason (the latest " (all.len()) " kept)" }
                thead { tr { th scope="col" { "Source" } th scope="col" { "Reasons" } } }
                tbody {
                    @for (name, reasons) in &by_source {
                        tr {
                            td data-label="Source" { a href={ "/console/rejections?source=" (super::encode(name)) } { code { (name) } } }
                            td data-label="Reasons" {
                                @for (reason, count) in reasons { (badge(reason, "bad")) " × " (count) " " }
                            }
                        }
                    }
                }
            }
            form.filters method="get" action="/console/rejections" aria-label="Filter rejections" {
                div.field {
                    label for="filter-source" { "Source" }
                    select #filter-source name="source" {
                        option value="" { "All sources" }
                        @for name in by_source.keys() {
                            option value=(name) selected[source == Some(*name)] { (name) }
                        }
                    }
                }
                button type="submit" { "Apply" }
            }
            ol.rejections {
                @for rejection in shown {
                    li.rejection {
                        p {
                            (when(rejection.at)) " · " code { (rejection.source) } " · " (badge(rejection.reason, "bad"))
                            @if let Some(peer) = &rejection.peer { " · from " (peer) }
                        }
                        p.reason { (rejection.detail) }
                        details {
                            summary { "Headers and body (" (rejection.body_bytes) " bytes)" }
                            p { "Header names: " @for name in &rejection.header_names { code { (name) } " " } }
                            pre.raw tabindex="0" aria-label="Start of the body" { (rejection.body_excerpt) }
                        }
                    }
                }
            }
        }
    };
    render(&state, &viewer, View::Rejections, "Rejections", content)
}
