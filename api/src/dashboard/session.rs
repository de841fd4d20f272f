//! Signing in to the dashboard: an API token is exchanged for a session cookie.
//!
//! - `GET /login` shows the form; `POST /login` checks the token through the API's own bearer
//!   authentication ([`Caller`]), stores a session row in Postgres
//!   (`store::dashboard::create_session`) and sets the cookie; `POST /logout` deletes the row.
//! - The cookie carries a random 256-bit value; the row is keyed by its SHA-256, so neither a
//!   log line nor a copy of the table can sign anyone in. Rows in Postgres (not process memory)
//!   let any API replica serve any session.
//! - Every form carries a synchronizer token: the session's `csrf_token` once signed in; before
//!   that, the login form's token is matched against a short-lived cookie of its own (there is
//!   no session yet to tie it to). Cookies are `HttpOnly`, `SameSite=Strict`, expire after
//!   [`SESSION_LIFETIME`], and are `Secure` when the request came over TLS
//!   (`X-Forwarded-Proto: https`) or `[api] secure_cookies` says so.
//! - Sign-ins (accepted and refused) and sign-outs go to `audit_log`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use upkeep_shared::store::dashboard::{self as dash_store, Session};
use upkeep_shared::store::tasks::AuditEntry;

use super::pages::{PageError, login_page};
use crate::AppState;
use crate::auth::{Caller, Role, constant_time_eq};

/// How long a session lasts after sign-in; there is no sliding renewal, so a stolen cookie
/// is worth half a day at most.
pub(crate) const SESSION_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(12);

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "upkeep_session";

/// The cookie holding the login form's CSRF token until the form is posted.
const LOGIN_CSRF_COOKIE: &str = "upkeep_login_csrf";

/// A signed-in browser, extracted from the session cookie. A request without a valid one is
/// redirected to `/login`.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    /// The token name the session was opened with (the audit trail's actor).
    pub(crate) actor: String,
    /// Whether the token had the operate role.
    pub(crate) can_operate: bool,
    /// The session's synchronizer token.
    pub(crate) csrf_token: String,
    id_hash: [u8; 32],
}

impl SignedIn {
    /// Checks a posted form's CSRF token against the session's.
    ///
    /// # Errors
    /// A 403 page when it is missing or different.
    pub(crate) fn check_csrf(&self, presented: Option<&str>) -> Result<(), PageError> {
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), self.csrf_token.as_bytes()) => Ok(()),
            _ => Err(PageError::Forbidden(
                "this form's security token is missing or stale; reload the page and try again"
                    .to_owned(),
            )),
        }
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(value) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(redirect("/login"));
        };
        let id_hash = hash(value);
        match dash_store::session(&state.db, &id_hash, Utc::now()).await {
            Ok(Some(session)) => Ok(Self {
                actor: session.actor,
                can_operate: session.can_operate,
                csrf_token: session.csrf_token,
                id_hash,
            }),
            Ok(None) => Err(redirect("/login")),
            Err(error) => Err(PageError::from(error).into_response()),
        }
    }
}

/// `GET /login`: the form, with a fresh CSRF token in a hidden field and in a cookie.
pub(crate) async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    login_response(&state, &headers, StatusCode::OK, None)
}

/// The body of `POST /login`.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: Option<String>,
    csrf: Option<String>,
}

/// `POST /login`: exchanges a valid API token for a session.
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    let presented = form.csrf.as_deref().unwrap_or("");
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
        return Err(PageError::Forbidden(
            "the sign-in form's security token is missing or stale; reload the page and try again"
                .to_owned(),
        ));
    }
    let token = form.token.as_deref().unwrap_or("").trim();
    let now = Utc::now();
    let Some(caller) = authenticate(&state, token).await else {
        audit(
            &state,
            crate::audit::ANONYMOUS,
            "dashboard.login",
            client,
            "refused: invalid token",
        )
        .await?;
        return Ok(login_response(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("That token was not accepted. Check it and try again."),
        ));
    };
    let value = random_token();
    let session = Session {
        actor: caller.name.clone(),
        can_operate: caller.require(Role::Operate).is_ok(),
        csrf_token: random_token(),
        expires_at: now + SESSION_LIFETIME,
    };
    dash_store::create_session(&state.db, &hash(&value), &session, now).await?;
    audit(&state, &caller.name, "dashboard.login", client, "ok").await?;
    let secure = is_tls(&state, &headers);
    let mut response = redirect("/");
    append_cookie(
        &mut response,
        &session_cookie(SESSION_COOKIE, &value, "/", SESSION_LIFETIME, secure),
    );
    append_cookie(
        &mut response,
        &clear_cookie(LOGIN_CSRF_COOKIE, "/login", secure),
    );
    Ok(response)
}

/// The body of a form that carries only its CSRF token.
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    pub(crate) csrf: Option<String>,
}

/// `POST /logout`: ends the session everywhere and clears the cookie.
pub(crate) async fn logout(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    signed_in: SignedIn,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    signed_in.check_csrf(form.csrf.as_deref())?;
    dash_store::delete_session(&state.db, &signed_in.id_hash).await?;
    audit(&state, &signed_in.actor, "dashboard.logout", client, "ok").await?;
    let mut response = redirect("/login");
    append_cookie(
        &mut response,
        &clear_cookie(SESSION_COOKIE, "/", is_tls(&state, &headers)),
    );
    Ok(response)
}

/// Records a dashboard action in `audit_log`.
pub(crate) async fn audit(
    state: &AppState,
    actor: &str,
    action: &str,
    client: SocketAddr,
    result: &str,
) -> Result<(), PageError> {
    audit_with(state, actor, action, "dashboard", client, result).await
}

/// Records a dashboard action on `target` in `audit_log`.
pub(crate) async fn audit_with(
    state: &AppState,
    actor: &str,
    action: &str,
    target: &str,
    client: SocketAddr,
    result: &str,
) -> Result<(), PageError> {
    let entry = AuditEntry {
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        client_addr: Some(client.ip().to_string()),
        result: result.to_owned(),
        detail: Some(serde_json::json!({ "via": "dashboard" })),
    };
    upkeep_shared::store::tasks::audit(&state.db, &entry).await?;
    Ok(())
}

/// The caller `token` authenticates as, through the API's own bearer check, so the dashboard
/// accepts exactly the tokens the JSON routes accept, with their roles.
async fn authenticate(state: &AppState, token: &str) -> Option<Caller> {
    if token.is_empty() {
        return None;
    }
    let request = axum::http::Request::builder()
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .ok()?;
    let (mut parts, ()) = request.into_parts();
    <Caller as FromRequestParts<AppState>>::from_request_parts(&mut parts, state)
        .await
        .ok()
}

fn login_response(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let csrf = random_token();
    let mut response = (status, login_page(&csrf, error)).into_response();
    append_cookie(
        &mut response,
        &session_cookie(
            LOGIN_CSRF_COOKIE,
            &csrf,
            "/login",
            chrono::TimeDelta::minutes(30),
            is_tls(state, headers),
        ),
    );
    response
}

/// Whether cookies must be `Secure`: the request came over TLS (through a proxy that says so)
/// or the configuration asks for it.
fn is_tls(state: &AppState, headers: &HeaderMap) -> bool {
    state.settings.api.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// A 303 to `location`: after a POST the browser GETs it.
pub(crate) fn redirect(location: &'static str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, HeaderValue::from_static(location))],
    )
        .into_response()
}

/// The value of the cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

fn session_cookie(
    name: &str,
    value: &str,
    path: &str,
    lifetime: chrono::TimeDelta,
    secure: bool,
) -> String {
    let expires: DateTime<Utc> = Utc::now() + lifetime;
    format!(
        "{name}={value}; Path={path}; Max-Age={}; Expires={}; HttpOnly; SameSite=Strict{}",
        lifetime.num_seconds(),
        expires.format("%a, %d %b %Y %H:%M:%S GMT"),
        if secure { "; Secure" } else { "" }
    )
}

fn clear_cookie(name: &str, path: &str, secure: bool) -> String {
    format!(
        "{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

fn append_cookie(response: &mut Response, cookie: &str) {
    // The cookie is built from hex tokens and fixed text only, so it is always a valid header.
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

/// 256 random bits from the thread's CSPRNG, as 64 hex digits.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn hash(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_cookie_is_found_among_several_headers_and_pairs() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; upkeep_session=abc"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "upkeep"), None);
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_expiring() {
        let text = session_cookie("s", "v", "/", SESSION_LIFETIME, false);
        assert!(
            text.starts_with("s=v; Path=/; Max-Age=43200; Expires="),
            "{text}"
        );
        assert!(text.ends_with("; HttpOnly; SameSite=Strict"), "{text}");
        let secure = session_cookie("s", "v", "/", SESSION_LIFETIME, true);
        assert!(secure.ends_with("; Secure"), "{secure}");
    }

    #[test]
    fn random_tokens_are_64_hex_digits_and_differ() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_token());
    }
}
