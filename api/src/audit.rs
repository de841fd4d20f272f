//! The gate of every mutating route (and of reading a secret): authenticate, check the
//! `operate` role (`tokens` to read an access token), take one call
//! from the token's rate-limit bucket, and write the call to `audit_log` (token name, action,
//! target, client address, result) whatever its outcome, refusals included. A call that is
//! refused before it is authenticated is recorded under the actor [`ANONYMOUS`], as is a
//! refused dashboard sign-in.

use std::net::SocketAddr;

use upkeep_shared::store::tasks::{AuditEntry, audit};

use crate::auth::{Caller, Role};
use crate::{ApiError, AppState};

/// A mutating call let through the gate; [`Mutation::finish`] records how it ended.
pub(crate) struct Mutation {
    state: AppState,
    pub(crate) caller: Caller,
    action: &'static str,
    target: String,
    client: String,
}

/// The actor recorded for a call without a valid token, by the API and the dashboard alike.
pub(crate) use upkeep_shared::api_access::ANONYMOUS_ACTOR as ANONYMOUS;

impl Mutation {
    /// Lets a call to `action` on `target` through, or records and returns why not.
    ///
    /// # Errors
    /// 401, 403 or 429 (each audited), or the audit write's own failure.
    pub(crate) async fn admit(
        state: &AppState,
        caller: Result<Caller, ApiError>,
        client: SocketAddr,
        action: &'static str,
        target: impl Into<String>,
    ) -> Result<Self, ApiError> {
        Self::admit_with_role(state, caller, client, Role::Operate, action, target).await
    }

    /// As [`Mutation::admit`], for a call that needs `role` (reading a secret needs `tokens`).
    ///
    /// # Errors
    /// 401, 403 or 429 (each audited), or the audit write's own failure.
    pub(crate) async fn admit_with_role(
        state: &AppState,
        caller: Result<Caller, ApiError>,
        client: SocketAddr,
        role: Role,
        action: &'static str,
        target: impl Into<String>,
    ) -> Result<Self, ApiError> {
        let target = target.into();
        let client = client.ip().to_string();
        let (actor, refused) = match caller {
            Err(error) => (ANONYMOUS.to_owned(), error),
            Ok(caller) => match caller
                .require(role)
                .and_then(|()| state.access.admit_mutation(&caller))
            {
                Ok(()) => {
                    return Ok(Self {
                        state: state.clone(),
                        caller,
                        action,
                        target,
                        client,
                    });
                }
                Err(error) => (caller.name, error),
            },
        };
        record(
            state,
            &actor,
            action,
            &target,
            &client,
            &refused.audit_result(),
            None,
        )
        .await?;
        Err(refused)
    }

    /// Records the call's result and returns it.
    ///
    /// # Errors
    /// `result`'s error, or the audit write's failure when the action succeeded (the action
    /// stands; the failure is logged and answered 500 so the caller knows the trail is
    /// incomplete).
    pub(crate) async fn finish<T>(
        self,
        result: Result<T, ApiError>,
        detail: Option<serde_json::Value>,
    ) -> Result<T, ApiError> {
        let text = match &result {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.audit_result(),
        };
        record(
            &self.state,
            &self.caller.name,
            self.action,
            &self.target,
            &self.client,
            &text,
            detail,
        )
        .await?;
        result
    }
}

/// Appends one entry to `audit_log`.
async fn record(
    state: &AppState,
    actor: &str,
    action: &str,
    target: &str,
    client: &str,
    result: &str,
    detail: Option<serde_json::Value>,
) -> Result<(), ApiError> {
    let entry = AuditEntry {
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.chars().take(500).collect(),
        client_addr: Some(client.to_owned()),
        result: result.chars().take(1000).collect(),
        detail,
    };
    audit(&state.db, &entry).await.map_err(|error| {
        tracing::error!(%error, action, target, "cannot write the audit trail");
        ApiError::from(error)
    })
}
