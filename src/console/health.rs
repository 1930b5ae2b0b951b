//! Health: the last hour of this process's activity minute by minute (requests accepted and
//! refused at ingress, deliveries made and failed) as inline SVG charts, from the process's own
//! counters (`telemetry::activity`); whether the store answers; and the latest operator
//! notices (`hookgate.*` events) within the viewer's reach.

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use std::sync::Arc;

use super::page::{View, badge, when};
use super::{ConsoleState, Viewer, failure, render};
use crate::event::Event;
use crate::notice::NoticeKind;
use crate::store::EventQuery;
use crate::telemetry::activity::Minute;

/// Notices listed.
const NOTICES: usize = 20;

/// A chart's series: its name, colour class, and the count it reads from a minute.
struct Series {
    name: &'static str,
    class: &'static str,
    count: fn(&Minute) -> u64,
}

const INGEST: [Series; 2] = [
    Series { name: "accepted", class: "bar-good", count: |minute| minute.accepted },
    Series { name: "refused", class: "bar-bad", count: |minute| minute.refused },
];
const DELIVERIES: [Series; 2] = [
    Series { name: "delivered", class: "bar-good", count: |minute| minute.delivered },
    Series { name: "failed", class: "bar-bad", count: |minute| minute.delivery_failed },
];

pub async fn page(State(state): State<Arc<ConsoleState>>, viewer: Viewer) -> Response {
    let now = jiff::Timestamp::now();
    let hour = crate::telemetry::activity().last_hour(now);
    let store_ready = state.api.store.ping().await.is_ok();
    let notices = match notices(&state, &viewer).await {
        Ok(notices) => notices,
        Err(error) => return failure(Some(&viewer), error),
    };
    let content = html! {
        p.lead {
            "This process, over the last hour. The store "
            @if store_ready { (badge("answers", "good")) } @else { (badge("does not answer", "bad")) }
            ". Counts start when the process starts; each node counts its own. "
            a href="/metrics" { "Prometheus metrics" } " have the totals."
        }
        div.charts {
            (chart("ingest", "Ingest", "requests and messages received per minute", &hour, &INGEST))
            (chart("deliveries", "Deliveries", "delivery attempts per minute", &hour, &DELIVERIES))
        }
        details {
            summary { "Every minute as numbers" }
            table.responsive {
                caption.visually-hidden { "Per-minute counts, oldest first" }
                thead { tr { th scope="col" { "Minute (UTC)" } th scope="col" { "Accepted" } th scope="col" { "Refused" } th scope="col" { "Delivered" } th scope="col" { "Failed" } } }
                tbody {
                    @for minute in hour.iter().filter(|m| m.accepted + m.refused + m.delivered + m.delivery_failed > 0) {
                        tr {
                            td data-label="Minute" { (minute.start.strftime("%H:%M").to_string()) }
                            td data-label="Accepted" { (minute.accepted) }
                            td data-label="Refused" { (minute.refused) }
                            td data-label="Delivered" { (minute.delivered) }
                            td data-label="Failed" { (minute.delivery_failed) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="notices-heading" {
            h2 #notices-heading { "Operator notices" }
            @if notices.is_empty() {
                p.muted { "No hookgate.* notices within your reach." }
            } @else {
                ol.notices {
                    @for notice in &notices {
                        li {
                            p {
                                (when(notice.received_at)) " · "
                                a href={ "/console/events/" (notice.id) } { code { (notice.name) } }
                            }
                            @if let Some(summary) = notice.data["summary"].as_str() { p { (summary) } }
                            @if let Some(fix) = notice.data["fix"].as_str() { p.muted { "Fix: " (fix) } }
                        }
                    }
                }
            }
        }
    };
    render(&state, &viewer, View::Health, "Health", content)
}

/// The latest `hookgate.*` events the viewer may read, newest first: as the API lists them, by
/// name for a scoped key.
async fn notices(state: &ConsoleState, viewer: &Viewer) -> Result<Vec<Event>, crate::api::ApiError> {
    let queries: Vec<EventQuery> = if viewer.access.is_scoped() {
        NoticeKind::ALL
            .into_iter()
            .map(NoticeKind::event_name)
            .filter(|name| viewer.access.covers_event(name))
            .map(|name| EventQuery { name: Some(name.to_owned()), limit: NOTICES, ..EventQuery::default() })
            .collect()
    } else {
        vec![EventQuery { app: Some(crate::notice::APP.to_owned()), limit: NOTICES, ..EventQuery::default() }]
    };
    let mut events = Vec::new();
    for query in queries {
        events.extend(crate::api::events::list_events(&state.api, &viewer.access, query).await?.events);
    }
    events.sort_by(|a, b| b.id.cmp(&a.id));
    events.truncate(NOTICES);
    Ok(events)
}

/// One minute's bars: its tooltip, where it starts, and each series' class, top and height.
struct Column {
    title: String,
    x: f64,
    bars: Vec<(&'static str, f64, f64)>,
}

/// A stacked bar chart of `series` over the hour, with a title and a description for screen
/// readers (the table below has the numbers).
fn chart(id: &str, title: &str, what: &str, hour: &[Minute], series: &[Series]) -> Markup {
    const WIDTH: f64 = 600.0;
    const HEIGHT: f64 = 160.0;
    const LEFT: f64 = 0.0;
    const BOTTOM: f64 = 2.0;
    let totals: Vec<u64> = series.iter().map(|s| hour.iter().map(s.count).sum()).collect();
    let peak =
        hour.iter().map(|minute| series.iter().map(|s| (s.count)(minute)).sum::<u64>()).max().unwrap_or(0).max(1);
    let plot_height = HEIGHT - BOTTOM - 8.0;
    let slot = (WIDTH - LEFT) / hour.len().max(1) as f64;
    let bar_width = (slot - 2.0).max(1.0);
    let columns: Vec<Column> = hour
        .iter()
        .enumerate()
        .map(|(index, minute)| {
            let mut base = HEIGHT - BOTTOM;
            let mut bars = Vec::new();
            for s in series {
                let count = (s.count)(minute);
                if count > 0 {
                    let height = (count as f64 / peak as f64 * plot_height).max(1.5);
                    base -= height;
                    bars.push((s.class, base, height));
                }
            }
            let counts = series.iter().map(|s| format!("{} {}", (s.count)(minute), s.name)).collect::<Vec<_>>();
            Column {
                title: format!("{}: {}", minute.start.strftime("%H:%M UTC"), counts.join(", ")),
                x: LEFT + index as f64 * slot + 1.0,
                bars,
            }
        })
        .collect();
    let description =
        series.iter().zip(&totals).map(|(s, total)| format!("{total} {}", s.name)).collect::<Vec<_>>().join(", ");
    html! {
        figure.chart {
            figcaption {
                h2 id={ (id) "-title" } { (title) }
                p.totals {
                    @for (s, total) in series.iter().zip(&totals) {
                        span class={ "legend " (s.class) } aria-hidden="true" {}
                        (total) " " (s.name) " "
                    }
                    span.muted { "in the last hour (" (what) ")" }
                }
            }
            p.peak aria-hidden="true" { "dashed line: " (peak) " per minute" }
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby={ (id) "-title " (id) "-desc" } preserveAspectRatio="none" {
                desc id={ (id) "-desc" } { (title) " over the last hour: " (description) "; at most " (peak) " in one minute." }
                line.axis x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) {}
                line.axis x1=(LEFT) y1="8" x2=(WIDTH) y2="8" stroke-dasharray="4 4" {}
                @for column in &columns {
                    g {
                        title { (column.title) }
                        @for (class, y, height) in &column.bars {
                            rect class=(class) x=(format!("{:.1}", column.x)) y=(format!("{y:.1}")) width=(format!("{bar_width:.1}")) height=(format!("{height:.1}")) {}
                        }
                        rect.hit x=(format!("{:.1}", column.x)) y="0" width=(format!("{slot:.1}")) height=(HEIGHT - BOTTOM) {}
                    }
                }
            }
            div.axis-labels aria-hidden="true" { span { "60 min ago" } span { "now" } }
        }
    }
}
