//! The dashboard's static files, compiled into the binary and served by upkeep itself at
//! `/static/{name}` (never from a CDN): one stylesheet and one small refresh script.
//!
//! URLs carry a hash of the content (`?v=`), so the files can be cached for a year and a new
//! build is still fetched at once.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

/// Every file: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("static/dashboard.css"),
    ),
    (
        "refresh.js",
        "text/javascript; charset=utf-8",
        include_str!("static/refresh.js"),
    ),
];

/// The URL of the static file `name`, with its content's version.
pub(crate) fn url(name: &str) -> String {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, _, content)) => format!("/static/{name}?v={}", version(content)),
        None => format!("/static/{name}"),
    }
}

/// `GET /static/{name}`.
pub(crate) async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some((_, content_type, content)) = FILES.iter().find(|(file, _, _)| *file == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let etag = format!("\"{}\"", version(content));
    let cached = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value == etag);
    let status = if cached {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let body = if cached { "" } else { *content };
    let mut response = (status, body).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response_headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response_headers.insert(ETAG, value);
    }
    response
}

/// The first 16 hex digits of the content's SHA-256.
fn version(content: &str) -> String {
    Sha256::digest(content.as_bytes())
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
