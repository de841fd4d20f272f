//! One refresh-token grant (RFC 6749 §6) with the `oauth2` crate over `reqwest` (rustls, no
//! redirects, connect and request timeouts).
//!
//! The HTTP status and `Retry-After` of the response are recorded beside `oauth2`'s parsing, so
//! a 503 with an HTML body is classified as transient rather than as a parse error. Errors are
//! rebuilt as [`ExchangeError`] with a fixed message: `oauth2`'s own errors can carry the
//! response body (which holds tokens on a 200 that failed to parse), so they are never
//! formatted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AsyncHttpClient, AuthType, ClientId, ClientSecret, HttpClientError, HttpRequest, HttpResponse,
    RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use super::settings::{AuthMethod, ProviderSettings};

/// The HTTP client every refresh uses (one per process; connections are pooled).
#[derive(Debug, Clone)]
pub struct TokenClient {
    http: reqwest::Client,
}

/// The HTTP status and `Retry-After` of the response, recorded by the request future.
type Seen = (u16, Option<Duration>);

/// What a token endpoint granted.
#[derive(Debug)]
pub struct Grant {
    /// The new access token.
    pub access_token: SecretString,
    /// A new refresh token when the provider rotates them; `None` keeps the old one.
    pub refresh_token: Option<SecretString>,
    /// The access token's lifetime, if the endpoint said.
    pub expires_in: Option<Duration>,
}

/// Why a refresh failed, without secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExchangeError {
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// The OAuth2 `error` code, when the body had one.
    pub code: Option<String>,
    /// The server's `Retry-After`, in seconds form.
    pub retry_after: Option<Duration>,
    /// A fixed description plus the status and code.
    pub message: String,
}

impl TokenClient {
    /// A client with redirects disabled and `timeout` for connecting and for the whole request.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // A token endpoint that redirects is misconfigured, and following it would send
            // the refresh token and client secret to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()?;
        Ok(Self { http })
    }

    /// Exchanges `refresh_token` at `provider`'s token endpoint.
    ///
    /// # Errors
    /// [`ExchangeError`] with the status and OAuth2 error code when there was a response.
    pub async fn refresh(
        &self,
        provider: &ProviderSettings,
        refresh_token: &SecretString,
    ) -> Result<Grant, ExchangeError> {
        let token_url = TokenUrl::new(provider.token_url.clone()).map_err(|_| ExchangeError {
            status: None,
            code: None,
            retry_after: None,
            message: "token_url is not a valid URL".to_owned(),
        })?;
        let client = BasicClient::new(ClientId::new(provider.client_id.clone()))
            .set_auth_type(match provider.auth_method {
                AuthMethod::ClientSecretBasic => AuthType::BasicAuth,
                AuthMethod::ClientSecretPost => AuthType::RequestBody,
            })
            .set_token_uri(token_url);
        let client = match &provider.client_secret {
            Some(secret) => {
                client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()))
            }
            None => client,
        };
        // Shared with the request future, which must be 'static to keep the job future Send.
        let seen: Arc<Mutex<Option<Seen>>> = Arc::new(Mutex::new(None));
        let recording = {
            let seen = Arc::clone(&seen);
            let http = self.http.clone();
            move |request: HttpRequest| {
                let seen = Arc::clone(&seen);
                let http = http.clone();
                async move {
                    let response: HttpResponse = http.call(request).await?;
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|text| text.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    // A poisoned lock only means another recording panicked; the value is
                    // plain data.
                    *seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((response.status().as_u16(), retry_after));
                    Ok::<_, HttpClientError<reqwest::Error>>(response)
                }
            }
        };
        let secret_refresh_token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let result = client
            .exchange_refresh_token(&secret_refresh_token)
            .add_scopes(provider.scopes.iter().cloned().map(Scope::new))
            .request_async(&recording)
            .await;
        let (status, retry_after) = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map_or((None, None), |(status, retry_after)| {
                (Some(status), retry_after)
            });
        match result {
            Ok(response) => Ok(Grant {
                access_token: SecretString::from(response.access_token().secret().clone()),
                refresh_token: response
                    .refresh_token()
                    .map(|token| SecretString::from(token.secret().clone())),
                expires_in: response.expires_in(),
            }),
            Err(error) => {
                let (code, what) = match &error {
                    RequestTokenError::ServerResponse(body) => (
                        Some(body.error().as_ref().to_owned()),
                        "the token endpoint refused the refresh",
                    ),
                    RequestTokenError::Request(HttpClientError::Reqwest(inner))
                        if inner.is_timeout() =>
                    {
                        (None, "the token request timed out")
                    }
                    RequestTokenError::Request(_) => (None, "the token request failed to connect"),
                    RequestTokenError::Parse(..) if status == Some(200) => {
                        (None, "the token endpoint's answer is not a token response")
                    }
                    RequestTokenError::Parse(..) | RequestTokenError::Other(_) => {
                        (None, "the token endpoint answered with an error")
                    }
                };
                let mut message = what.to_owned();
                if let Some(status) = status {
                    message.push_str(&format!(" (HTTP {status}"));
                    if let Some(code) = &code {
                        message.push_str(&format!(", error {code}"));
                    }
                    message.push(')');
                }
                Err(ExchangeError {
                    status,
                    code,
                    retry_after,
                    message,
                })
            }
        }
    }
}
