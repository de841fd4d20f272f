//! `GET /api/v1/tokens` (the OAuth2 credentials' state, never a secret) and
//! `GET /api/v1/tokens/{provider}/access_token` (the current access token, `tokens` role only,
//! every call and refusal in the audit trail, answered `Cache-Control: no-store`).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;
use serde::Serialize;
use upkeep_shared::tokens::{self, admin};
use utoipa::ToSchema;

use crate::audit::Mutation;
use crate::auth::{Caller, Role};
use crate::params::{Params, PathOf};
use crate::routes::openapi::ErrorBody;
use crate::{ApiError, AppState};

/// Every configured or stored credential.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CredentialList {
    /// By provider: status, expiry, next refresh, failures; never a secret.
    #[schema(value_type = Vec<Object>)]
    credentials: Vec<admin::CredentialInfo>,
}

/// The OAuth2 credentials and their state (read role); no token or secret is included.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    responses(
        (status = 200, description = "Every credential's state", body = CredentialList),
        (status = 400, description = "A parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Json<CredentialList>, ApiError> {
    caller.require(Role::Read)?;
    params.finish(&[])?;
    let credentials = admin::list(&state.db, &state.settings.tokens)
        .await
        .map_err(token_error)?;
    Ok(Json(CredentialList { credentials }))
}

/// A provider's current access token.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AccessToken {
    /// The provider.
    provider: String,
    /// The access token, as the provider issued it.
    access_token: String,
    /// When it expires, if the provider said.
    expires_at: Option<DateTime<Utc>>,
}

/// The current access token of a provider (tokens role; audited as `tokens.read`, refusals
/// included; never cached).
#[utoipa::path(
    get,
    path = "/api/v1/tokens/{provider}/access_token",
    tag = "tokens",
    params(("provider" = String, Path, description = "The provider's name in [[tokens.providers]]")),
    responses(
        (status = 200, description = "The access token", body = AccessToken),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token's role is below tokens", body = ErrorBody),
        (status = 404, description = "No credential is stored for the provider", body = ErrorBody),
        (status = 409, description = "The credential has no usable access token (not active, never refreshed, or expired)", body = ErrorBody),
        (status = 429, description = "The token's rate-limited calls are used up", body = ErrorBody),
        (status = 503, description = "UPKEEP_SECRET_KEY is not configured", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn access_token(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    path: Result<PathOf<String>, ApiError>,
) -> Result<Response, ApiError> {
    let target = path
        .as_ref()
        .map_or_else(|_| "-".to_owned(), |PathOf(provider)| provider.clone());
    let gate =
        Mutation::admit_with_role(&state, caller, client, Role::Tokens, "tokens.read", target)
            .await?;
    let result = async {
        let PathOf(provider) = path?;
        let keyring = tokens::keyring(&state.settings).map_err(token_error)?;
        let access = admin::get(&state.db, &keyring, &provider)
            .await
            .map_err(token_error)?;
        Ok(AccessToken {
            provider,
            access_token: access.token.expose_secret().to_owned(),
            expires_at: access.expires_at,
        })
    }
    .await;
    let body = gate.finish(result, None).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// The status a token error answers with.
fn token_error(error: tokens::Error) -> ApiError {
    match error {
        tokens::Error::Store(store) => ApiError::from(store),
        tokens::Error::NotStored(_) | tokens::Error::UnknownProvider { .. } => {
            ApiError::NotFound(error.to_string())
        }
        tokens::Error::NoAccessToken { .. } => ApiError::Conflict(error.to_string()),
        tokens::Error::NoKey => ApiError::Unavailable("UPKEEP_SECRET_KEY"),
        other => ApiError::Internal(anyhow::Error::new(other)),
    }
}
