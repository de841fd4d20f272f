//! `GET /api/v1/tokens` (credentials' state, read role, never a secret) and
//! `GET /api/v1/tokens/{provider}/access_token` (tokens role, audited, not cacheable).

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use secrecy::{SecretBox, SecretString};
use sqlx::PgPool;
use upkeep_shared::store::oauth_tokens::{self, Refreshed};
use upkeep_shared::tokens::{Column, Key, Keyring};

use crate::{Api, KEEPER_TOKEN, READ_TOKEN, SECRET_KEY_BYTE, TOKEN, error_body};

const PROVIDER: &str = "[[tokens.providers]]\nname = \"crm\"\n\
                        token_url = \"http://127.0.0.1:9/token\"\nclient_id = \"upkeep\"\n";

const ACCESS: &str = "crm-access-token-4f1c";

/// Stores an active credential for `crm` whose access token is [`ACCESS`], sealed under the
/// servers' `UPKEEP_SECRET_KEY`, as a refresh would.
async fn store_active_credential(pool: &PgPool) {
    let keyring = Keyring::new(
        Key::new(&SecretBox::new(Box::new([SECRET_KEY_BYTE; 32]))),
        None,
    );
    let refresh = keyring
        .seal(
            "crm",
            Column::RefreshToken,
            &SecretString::from("refresh-1"),
        )
        .expect("sealed");
    oauth_tokens::put_refresh_token(pool, "crm", &refresh.bytes, &refresh.key_id)
        .await
        .expect("stored");
    let access = keyring
        .seal("crm", Column::AccessToken, &SecretString::from(ACCESS))
        .expect("sealed");
    oauth_tokens::record_refresh(
        pool,
        "crm",
        &Refreshed {
            access_token: &access.bytes,
            refresh_token: &refresh.bytes,
            key_id: &access.key_id,
            obtained_at: Utc::now(),
            expires_at: Some(Utc::now() + Duration::hours(1)),
        },
    )
    .await
    .expect("refreshed");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn only_the_tokens_role_reads_an_access_token_and_every_read_is_audited(pool: PgPool) {
    let server = Api::start(pool.clone(), PROVIDER).await;
    let path = "/api/v1/tokens/crm/access_token";

    // Before any credential: the list says missing; the keeper gets a 404 naming the fix.
    let list = server.get_ok("/api/v1/tokens").await;
    assert_eq!(list["credentials"][0]["provider"], "crm");
    assert_eq!(list["credentials"][0]["status"], "missing");
    let missing = server.get(path, Some(KEEPER_TOKEN)).await;
    let body = error_body(missing, StatusCode::NOT_FOUND).await;
    assert!(
        body["error"].as_str().unwrap().contains("tokens add crm"),
        "{body}"
    );

    store_active_credential(&pool).await;

    // Roles below `tokens` are refused; no token at all is a 401.
    for token in [READ_TOKEN, TOKEN] {
        let refused = server.get(path, Some(token)).await;
        error_body(refused, StatusCode::FORBIDDEN).await;
    }
    error_body(server.get(path, None).await, StatusCode::UNAUTHORIZED).await;

    let response = server.get(path, Some(KEEPER_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["provider"], "crm");
    assert_eq!(body["access_token"], ACCESS);
    assert!(body["expires_at"].is_string());

    // The list shows the state, never the token.
    let list = server.get("/api/v1/tokens", Some(READ_TOKEN)).await;
    assert_eq!(list.status(), StatusCode::OK);
    let text = list.text().await.expect("body");
    assert!(text.contains("\"has_access_token\":true"), "{text}");
    assert!(!text.contains(ACCESS), "no secret in the list: {text}");

    // Every read of the secret, refused or not, is in the audit trail.
    let trail: Vec<(String, String)> = sqlx::query_as(
        "SELECT actor, result FROM audit_log WHERE action = 'tokens.read' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("audit rows");
    let actors: Vec<&str> = trail.iter().map(|(actor, _)| actor.as_str()).collect();
    assert_eq!(actors, ["keeper", "reader", "env", "anonymous", "keeper"]);
    assert!(trail[0].1.starts_with("404"), "{trail:?}");
    assert!(
        trail[1].1.starts_with("403") && trail[3].1.starts_with("401"),
        "{trail:?}"
    );
    assert_eq!(trail[4].1, "ok");
}
