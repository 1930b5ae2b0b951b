//! The console: web pages at `/console` to see the hooks, watch events arrive, find why a
//! platform's requests are refused, and fix deliveries. Served by `hookgate serve` itself,
//! with its assets compiled into the binary: nothing is fetched from anywhere else.
//!
//! It is a face of the management API, not a second one. Signing in takes the admin token or
//! a management key, resolved by the API's own `api::access_for_key_hash` on every request
//! into the same [`Access`]; every read and every action calls the function the API's handler
//! calls (`api::subscriptions::create_subscription`, `api::events::replay_event`,
//! `api::hooks::visible_directory`, `api::stream::open`, ...), so a scoped key sees and may do
//! here exactly what the API lets it, and a refusal reads as the API's. The console never
//! writes to the store or the catalog itself.
//!
//! Pages are rendered on the server (maud) and work without JavaScript; `console.js` adds the
//! live event list (the API's event stream), copy buttons and confirmations. Sessions are kept
//! on the server (`session`); the cookie is `HttpOnly`, `SameSite=Strict`, and `Secure` (with
//! the `__Host-` prefix) when the public URL is https. Every form that changes something
//! carries the session's CSRF token and is refused without it, or when the browser says it
//! came from another site. Every reply forbids framing and inline scripts.
//!
//! Views, one file each: `directory`, `events` (live list, detail, replay), `rejections`,
//! `subscriptions` (with deliveries) and `health`; `page` is the shell they share.

mod directory;
mod events;
mod health;
mod page;
mod rejections;
pub mod session;
mod subscriptions;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::api::{Access, ApiError, ApiState};
use crate::secrets::sha256_hex;
use page::View;
use session::{Note, NoteKind, Session, Sessions};

/// What the console works with: the API's own state, and the sessions.
pub struct ConsoleState {
    pub api: Arc<ApiState>,
    pub sessions: Sessions,
    /// Whether the console is reached over https (the public URL says so).
    secure: bool,
}

impl ConsoleState {
    fn cookie_name(&self) -> &'static str {
        cookie_name(self.secure)
    }

    fn cookie(&self, id: Option<&str>) -> String {
        session_cookie(self.secure, id)
    }
}

/// The session cookie's name: with the `__Host-` prefix over https, which binds it to this
/// host and path `/` and requires `Secure`.
fn cookie_name(secure: bool) -> &'static str {
    if secure { "__Host-hookgate_console" } else { "hookgate_console" }
}

/// The `Set-Cookie` value that keeps the session `id` in the browser, or (`None`) clears it.
fn session_cookie(secure: bool, id: Option<&str>) -> String {
    let (value, age) = match id {
        Some(id) => (id, session::LIFETIME.as_secs()),
        None => ("", 0),
    };
    let (path, secure_attribute) = if secure { ("/", "; Secure") } else { ("/console", "") };
    format!("{}={value}; Path={path}; Max-Age={age}; HttpOnly; SameSite=Strict{secure_attribute}", cookie_name(secure))
}

/// The largest form the console accepts.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Time allowed to send a form.
const FORM_TIMEOUT: Duration = Duration::from_secs(10);

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// Changes whenever the assets do, so browsers may keep them as long as they like.
static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| sha256_hex(&format!("{CSS}{JS}"))[..12].to_owned());

/// The console's routes, under `/console`.
pub fn router(api: Arc<ApiState>) -> Router {
    let secure = api.public_url.starts_with("https://");
    let state = Arc::new(ConsoleState { api, sessions: Sessions::default(), secure });
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/directory", get(directory::page))
        .route("/console/events", get(events::live))
        .route("/console/events/stream", get(events::stream))
        .route("/console/events/{id}", get(events::detail))
        .route("/console/events/{id}/raw", get(events::raw))
        .route("/console/events/{id}/replay", post(events::replay))
        .route("/console/rejections", get(rejections::page))
        .route("/console/subscriptions", get(subscriptions::list).post(subscriptions::create))
        .route("/console/subscriptions/{id}", get(subscriptions::detail).post(subscriptions::edit))
        .route("/console/subscriptions/{id}/pause", post(subscriptions::pause))
        .route("/console/subscriptions/{id}/resume", post(subscriptions::resume))
        .route("/console/subscriptions/{id}/rotate-secret", post(subscriptions::rotate_secret))
        .route("/console/subscriptions/{id}/delete", post(subscriptions::delete))
        .route("/console/subscriptions/{id}/test", post(subscriptions::send_test))
        .route("/console/subscriptions/{id}/deliveries/{delivery_id}/retry", post(subscriptions::retry))
        .route("/console/health", get(health::page))
        .route("/console/assets/{file}", get(asset))
        .route("/console/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// No framing, no inline or foreign script, style or connection; nothing cached that a
/// session showed.
async fn security_headers(request: Request, next: Next) -> Response {
    let asset = request.uri().path().starts_with("/console/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !asset && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let headers =
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")];
    (headers, body).into_response()
}

/// Who is signed in, from the session cookie, with what the credential may do now.
pub struct Viewer {
    pub access: Access,
    pub session_id: String,
    pub session: Session,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.access == Access::Admin
    }
}

/// Why a request has no viewer.
pub enum NotSignedIn {
    /// No cookie, or a session that ended: sign in, then come back to `then`.
    SignIn { then: String, reason: Option<&'static str> },
    /// The store did not answer.
    Failed(ApiError),
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            NotSignedIn::SignIn { then, reason } => {
                let mut location = format!("/console/sign-in?then={}", encode(&then));
                if let Some(reason) = reason {
                    location.push_str(&format!("&reason={reason}"));
                }
                Redirect::to(&location).into_response()
            }
            NotSignedIn::Failed(error) => failure(None, error),
        }
    }
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The value of the cookie `name`, if the request has it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

impl FromRequestParts<Arc<ConsoleState>> for Viewer {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ConsoleState>) -> Result<Viewer, NotSignedIn> {
        let then = parts.uri.path_and_query().map_or("/console/", |path| path.as_str()).to_owned();
        let sign_in = |reason| NotSignedIn::SignIn { then: then.clone(), reason };
        let Some(id) = cookie(&parts.headers, state.cookie_name()) else { return Err(sign_in(None)) };
        let Some(session) = state.sessions.get(id, jiff::Timestamp::now()) else {
            return Err(sign_in(Some("expired")));
        };
        match crate::api::access_for_key_hash(&state.api, &session.key_hash, None).await {
            Ok(access) => Ok(Viewer { access, session_id: id.to_owned(), session }),
            Err(ApiError::InvalidCredentials(_) | ApiError::Forbidden(_)) => {
                state.sessions.end(id);
                Err(sign_in(Some("revoked")))
            }
            Err(error) => Err(NotSignedIn::Failed(error)),
        }
    }
}

/// A form that changes something: sent by a signed-in viewer from a console page, with the
/// session's CSRF token.
pub struct Action {
    pub viewer: Viewer,
    pub fields: Fields,
}

/// A form's fields, in order (a name may repeat).
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    fn parse(body: &[u8]) -> Fields {
        Fields(form_urlencoded::parse(body).map(|(name, value)| (name.into_owned(), value.into_owned())).collect())
    }

    /// The first value of `name`, trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.trim())
    }
}

impl FromRequest<Arc<ConsoleState>> for Action {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<ConsoleState>) -> Result<Action, Response> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await.map_err(IntoResponse::into_response)?;
        if let Err(reason) = same_site(&parts.headers, &state.api.public_url) {
            return Err(refused(&viewer, StatusCode::FORBIDDEN, reason));
        }
        let read = tokio::time::timeout(FORM_TIMEOUT, crate::ingress::body::read_to_limit(body, MAX_FORM_BYTES)).await;
        let Ok(Ok(body)) = read else {
            return Err(refused(
                &viewer,
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form was over 64 KiB or did not arrive within 10 seconds.",
            ));
        };
        let fields = Fields::parse(&body);
        if !viewer.session.csrf_matches(fields.get("csrf").unwrap_or_default()) {
            return Err(refused(
                &viewer,
                StatusCode::FORBIDDEN,
                "The form did not carry this session's CSRF token, so it may not have come from a console page. \
                 Reload the page and try again.",
            ));
        }
        Ok(Action { viewer, fields })
    }
}

/// Refuses a form the browser says came from another site (`Sec-Fetch-Site`), or from an
/// origin that is neither the public URL's nor the `Host` asked for (a proxy may rewrite the
/// one or the other): with `SameSite=Strict` such a form has no session anyway; this says why.
fn same_site(headers: &HeaderMap, public_url: &str) -> Result<(), &'static str> {
    let value = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    if value(header::HeaderName::from_static("sec-fetch-site")).is_some_and(|site| site == "cross-site") {
        return Err("The form came from another site; console actions are taken on console pages only.");
    }
    if let Some(origin) = value(header::ORIGIN).filter(|origin| *origin != "null") {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        let public = public_url.trim_end_matches('/');
        let public_origin = public.split_once("://").map_or(public, |(scheme, rest)| {
            let end = rest.find('/').map_or(public.len(), |slash| scheme.len() + 3 + slash);
            &public[..end]
        });
        if origin != public_origin && value(header::HOST) != Some(origin_host) {
            return Err("The form came from another origin; console actions are taken on console pages only.");
        }
    }
    Ok(())
}

/// A page refusing an action, with its status.
fn refused(viewer: &Viewer, status: StatusCode, message: &str) -> Response {
    (status, Html(page::problem(Some(viewer), "Refused", message).into_string())).into_response()
}

/// The page for an error the API's functions returned, with the status the API would answer.
pub fn failure(viewer: Option<&Viewer>, error: ApiError) -> Response {
    let (status, _) = error.status_and_code();
    error.log_cause();
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not within your access",
        _ if status.is_server_error() => "Something failed",
        _ => "Refused",
    };
    (status, Html(page::problem(viewer, title, &error.to_string()).into_string())).into_response()
}

/// Renders a page for `viewer`, with the notes kept for it.
pub fn render(state: &ConsoleState, viewer: &Viewer, view: View, title: &str, content: Markup) -> Response {
    let notes = state.sessions.take_notes(&viewer.session_id);
    Html(page::page(view, title, Some(viewer), &notes, content).into_string()).into_response()
}

/// After an action: a note saying what came of it, then back to `to` (303).
pub fn after(state: &ConsoleState, viewer: &Viewer, to: &str, outcome: Result<Note, ApiError>) -> Response {
    let note = match outcome {
        Ok(note) => note,
        Err(error) => {
            error.log_cause();
            let text = match &error {
                ApiError::InvalidFields(fields) => fields
                    .iter()
                    .map(|field| format!("{}: {}", field.field, field.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            Note { kind: NoteKind::Failed, text, secret: None }
        }
    };
    state.sessions.note(&viewer.session_id, note);
    Redirect::to(to).into_response()
}

/// A note saying that something was done.
pub fn done(text: impl Into<String>) -> Note {
    Note { kind: NoteKind::Done, text: text.into(), secret: None }
}

async fn home(viewer: Result<Viewer, NotSignedIn>) -> Response {
    match viewer {
        Ok(_) => Redirect::to("/console/events").into_response(),
        Err(not_signed_in) => not_signed_in.into_response(),
    }
}

async fn not_found(viewer: Result<Viewer, NotSignedIn>) -> Response {
    let viewer = viewer.ok();
    let page = page::problem(viewer.as_ref(), "Not found", "There is no console page here.");
    (StatusCode::NOT_FOUND, Html(page.into_string())).into_response()
}

#[derive(Debug, Default, Deserialize)]
struct SignInQuery {
    then: Option<String>,
    reason: Option<String>,
}

/// Where to go after signing in: a console page, never anywhere else.
fn next_page(then: Option<&str>) -> String {
    match then {
        Some(path) if path.starts_with("/console/") && !path.starts_with("/console//") && !path.contains('\\') => {
            path.to_owned()
        }
        _ => "/console/events".to_owned(),
    }
}

fn sign_in_form(then: &str, message: Option<&str>) -> Markup {
    let content = html! {
        div.sign-in {
            p { "Sign in with the admin token, or with a management key: a key's scopes limit what you see and change here, as they do in the API." }
            @if let Some(message) = message {
                p.problem role="alert" { (message) }
            }
            form method="post" action="/console/sign-in" {
                input type="hidden" name="then" value=(then);
                label for="token" { "Admin token or management key" }
                input #token name="token" type="password" required autocomplete="off" spellcheck="false"
                    autofocus aria-describedby="token-help";
                p #token-help .help { "Starts with hgat_ (admin token, printed at first start) or hgm_ (management key)." }
                button.primary type="submit" { "Sign in" }
            }
        }
    };
    page::page(View::SignIn, "Sign in", None, &[], content)
}

async fn sign_in_page(Query(query): Query<SignInQuery>) -> Response {
    let message = match query.reason.as_deref() {
        Some("expired") => Some("Your session ended; sign in again."),
        Some("revoked") => Some("The key you signed in with is no longer valid (revoked); sign in again."),
        Some("signed-out") => Some("You are signed out."),
        _ => None,
    };
    Html(sign_in_form(&next_page(query.then.as_deref()), message).into_string()).into_response()
}

/// Signs in with the admin token or a management key, resolved as the API resolves them.
async fn sign_in(
    State(state): State<Arc<ConsoleState>>,
    peer: Option<axum::Extension<crate::ingress::PeerAddr>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let read = tokio::time::timeout(FORM_TIMEOUT, crate::ingress::body::read_to_limit(body, MAX_FORM_BYTES)).await;
    let Ok(Ok(body)) = read else {
        let message = "The form was over 64 KiB or did not arrive within 10 seconds.";
        return (StatusCode::PAYLOAD_TOO_LARGE, Html(sign_in_form("/console/events", Some(message)).into_string()))
            .into_response();
    };
    let fields = Fields::parse(&body);
    let then = next_page(fields.get("then"));
    let refuse = |status: StatusCode, message: &str| {
        (status, Html(sign_in_form(&then, Some(message)).into_string())).into_response()
    };
    if let Err(reason) = same_site(&headers, &state.api.public_url) {
        return refuse(StatusCode::FORBIDDEN, reason);
    }
    let now = jiff::Timestamp::now();
    let address = peer.map(|axum::Extension(peer)| peer.0.ip());
    if address.is_some_and(|address| !state.sessions.may_try(address, now)) {
        return refuse(StatusCode::TOO_MANY_REQUESTS, "Too many failed sign-ins from your address; wait a minute.");
    }
    let token = fields.get("token").unwrap_or_default();
    if token.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "Enter the admin token or a management key.");
    }
    let hash = sha256_hex(token);
    let access = crate::api::access_for_key_hash(&state.api, &hash, None).await;
    let label = match access {
        Ok(Access::Admin) => "the admin token".to_owned(),
        Ok(Access::Key { .. }) => match state.api.store.active_api_key_by_hash(&hash).await {
            Ok(Some(key)) => format!("key {} ({}…)", key.name, key.prefix),
            Ok(None) => "a management key".to_owned(),
            Err(error) => return failure(None, error.into()),
        },
        Err(error @ (ApiError::InvalidCredentials(_) | ApiError::Forbidden(_))) => {
            if let Some(address) = address {
                state.sessions.failed(address, now);
            }
            return refuse(StatusCode::UNAUTHORIZED, &error.to_string());
        }
        Err(error) => return failure(None, error),
    };
    let id = state.sessions.start(hash, label, now);
    let mut response = Redirect::to(&then).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&state.cookie(Some(&id))) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Ends the session and clears the cookie.
async fn sign_out(State(state): State<Arc<ConsoleState>>, action: Action) -> Response {
    state.sessions.end(&action.viewer.session_id);
    let mut response = Redirect::to("/console/sign-in?reason=signed-out").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&state.cookie(None)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// A page's query string as a map, for the views that take filters.
pub type QueryMap = Query<HashMap<String, String>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_signing_in_only_console_pages_are_gone_to() {
        assert_eq!(next_page(Some("/console/subscriptions/sub_1")), "/console/subscriptions/sub_1");
        for elsewhere in [
            None,
            Some("https://evil.example/"),
            Some("//evil.example"),
            Some("/console//evil.example"),
            Some("/api/keys"),
            Some("/console/\\evil"),
        ] {
            assert_eq!(next_page(elsewhere), "/console/events", "{elsewhere:?}");
        }
    }

    #[test]
    fn a_form_from_another_site_or_origin_is_refused() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            headers
        };
        let public = "https://hooks.example/base";
        assert!(same_site(&headers(&[]), public).is_ok(), "old browsers and scripts send neither");
        let same_host = [("sec-fetch-site", "same-origin"), ("origin", "http://h:1"), ("host", "h:1")];
        assert!(same_site(&headers(&same_host), public).is_ok());
        let behind_a_proxy = [("origin", "https://hooks.example"), ("host", "10.0.0.5:8080")];
        assert!(same_site(&headers(&behind_a_proxy), public).is_ok(), "the public URL's origin");
        assert!(same_site(&headers(&[("sec-fetch-site", "cross-site")]), public).is_err());
        assert!(same_site(&headers(&[("origin", "https://evil.example"), ("host", "h:1")]), public).is_err());
        assert!(same_site(&headers(&[("origin", "https://hooks.example.evil"), ("host", "h:1")]), public).is_err());
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_behind_https() {
        assert_eq!(
            session_cookie(true, Some("abc")),
            "__Host-hookgate_console=abc; Path=/; Max-Age=43200; HttpOnly; SameSite=Strict; Secure"
        );
        assert_eq!(
            session_cookie(false, Some("abc")),
            "hookgate_console=abc; Path=/console; Max-Age=43200; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            session_cookie(false, None),
            "hookgate_console=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict"
        );
    }
}
