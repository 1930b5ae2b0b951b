//! The console's page shell and the small pieces every view uses: the header with its
//! navigation and sign-out, messages, times, badges, copy buttons and the CSRF field.
//!
//! Everything is written with maud, which escapes every value it is given: no view builds
//! HTML from strings. Pages carry no inline script or style (the content security policy
//! forbids them): behaviour is in `assets/console.js`, looks in `assets/console.css`.

use maud::{DOCTYPE, Markup, html};

use super::session::{Note, NoteKind};
use super::{ASSET_VERSION, Viewer};

/// The views, as the navigation lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Directory,
    Events,
    Subscriptions,
    Rejections,
    Health,
    SignIn,
    Other,
}

impl View {
    fn navigation(admin: bool) -> Vec<(View, &'static str, &'static str)> {
        let mut views = vec![
            (View::Directory, "Directory", "/console/directory"),
            (View::Events, "Events", "/console/events"),
            (View::Subscriptions, "Subscriptions", "/console/subscriptions"),
        ];
        if admin {
            views.push((View::Rejections, "Rejections", "/console/rejections"));
        }
        views.push((View::Health, "Health", "/console/health"));
        views
    }
}

/// A whole page: `title` in the tab and as the heading, `content` in `<main>`.
pub fn page(view: View, title: &str, viewer: Option<&Viewer>, notes: &[Note], content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light";
                title { (title) " · hookgate console" }
                link rel="stylesheet" href={ "/console/assets/console.css?v=" (ASSET_VERSION.as_str()) };
                script src={ "/console/assets/console.js?v=" (ASSET_VERSION.as_str()) } defer {}
            }
            body {
                a.skip-link href="#content" { "Skip to content" }
                header.top {
                    div.brand {
                        a href="/console/" { span.logo aria-hidden="true" { "⇢" } "hookgate" }
                        span.product { "console" }
                    }
                    @if let Some(viewer) = viewer {
                        nav aria-label="Views" {
                            ul {
                                @for (item, label, href) in View::navigation(viewer.is_admin()) {
                                    li {
                                        a href=(href) aria-current=[(item == view).then_some("page")] { (label) }
                                    }
                                }
                            }
                        }
                        div.who {
                            span.signed-in { "Signed in with " strong { (viewer.session.label) } }
                            form method="post" action="/console/sign-out" {
                                (csrf_field(viewer))
                                button.link-button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #content tabindex="-1" {
                    h1 { (title) }
                    (notes_block(notes))
                    (content)
                }
                footer.bottom {
                    "hookgate " (env!("CARGO_PKG_VERSION")) " · "
                    a href="/api/openapi.json" { "API (OpenAPI)" }
                }
            }
        }
    }
}

/// The messages of the last action, announced to screen readers as they appear.
fn notes_block(notes: &[Note]) -> Markup {
    html! {
        div.notes role="status" aria-live="polite" {
            @for note in notes {
                div.note.done[note.kind == NoteKind::Done].failed[note.kind == NoteKind::Failed] {
                    p { (note.text) }
                    @if let Some(secret) = &note.secret {
                        div.secret-once {
                            label for="secret-once" { "Signing secret (shown this once; copy it now)" }
                            div.copy-row {
                                input #secret-once type="text" readonly value=(secret) spellcheck="false" autocomplete="off";
                                (copy_button(secret, "signing secret"))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The hidden field that carries the session's CSRF token in every form that changes something.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.session.csrf); }
}

/// A button that copies `text` (works with the keyboard; says "Copied" when done).
pub fn copy_button(text: &str, what: &str) -> Markup {
    html! {
        button.copy type="button" data-copy=(text) aria-label={ "Copy " (what) } { "Copy" }
    }
}

/// A value shown in full with a copy button beside it.
pub fn copyable(text: &str, what: &str) -> Markup {
    html! {
        span.copy-row {
            code.value { (text) }
            (copy_button(text, what))
        }
    }
}

/// A time, in UTC, machine-readable too.
pub fn when(at: jiff::Timestamp) -> Markup {
    html! {
        time datetime=(at.to_string()) { (at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()) }
    }
}

/// A small label with a tone: `good`, `bad`, `warn` or `plain`.
pub fn badge(text: &str, tone: &str) -> Markup {
    html! { span class={ "badge " (tone) } { (text) } }
}

/// A hook type as a badge.
pub fn type_badge(hook_type: crate::event::HookType) -> Markup {
    badge(hook_type.as_str(), "plain")
}

/// A page that says what went wrong and what to do.
pub fn problem(viewer: Option<&Viewer>, title: &str, message: &str) -> Markup {
    page(
        View::Other,
        title,
        viewer,
        &[],
        html! {
            p.problem { (message) }
            p { a href="/console/" { "Back to the console" } }
        },
    )
}

/// Pretty JSON for a `<pre>`.
pub fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}
