//! The dashboard: server-rendered HTML over the same ledger and queues as the JSON API.
//!
//! - `session`: sign-in with an API token, the session cookie, CSRF tokens, sign-out.
//! - `pages`: the overview (checklist first), paginated lists, the job page, the retry form.
//! - `chart`: the last hour's throughput as inline SVG, drawn on the server.
//! - `assets`: the stylesheet and the refresh script, compiled in, served at `/static/`.
//!
//! Invariants: no page counts history (keyset pages, bounded reads in `store::dashboard`);
//! every response carries the security headers of [`security_headers`]; no inline script or
//! style (the CSP forbids both); every form carries its session's CSRF token; every action
//! and every sign-in goes to `audit_log`. Templates are maud macros, checked at compile time
//! and escaping every value.

mod assets;
mod chart;
mod pages;
mod session;

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::Response;
use axum::routing::{get, post};

use crate::AppState;

/// The Content-Security-Policy of every dashboard response: everything from upkeep itself,
/// no inline script or style, no framing, forms post only back here.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes, with the security headers on every response.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/failures", get(pages::failures))
        .route("/audit", get(pages::audit))
        .route("/jobs/{id}", get(pages::job))
        .route("/dead/{queue}/{id}/retry", post(pages::retry))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/static/{name}", get(assets::serve))
        .layer(axum::middleware::map_response(security_headers))
}

/// Adds the security headers, and `Cache-Control: no-store` to everything but static files
/// (pages hold session data and CSRF tokens).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
