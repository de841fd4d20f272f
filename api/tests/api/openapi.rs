//! The OpenAPI document against the router: every route is documented and every documented
//! operation is served.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use sqlx::PgPool;

use crate::{Api, TOKEN};

fn documented(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn every_route_of_the_router_is_in_the_document_and_vice_versa() {
    let doc =
        serde_json::to_value(<upkeep_api::ApiDoc as utoipa::OpenApi>::openapi()).expect("document");
    let routes: BTreeSet<(String, String)> = upkeep_api::route_list()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn the_served_document_lists_operations_the_server_answers(pool: PgPool) {
    let api = Api::start(pool, "").await;
    let doc = api.get_ok("/api/v1/openapi.json").await;
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (method, path) in documented(&doc) {
        // Fill path parameters with a value that exists for no resource.
        let concrete = path
            .replace("{id}", "0190b9a4-7c3e-7000-8000-000000000000")
            .replace("{name}", "no-such-schedule");
        let response = api
            .call(
                Method::from_bytes(method.as_bytes()).expect("method"),
                &concrete,
                Some(TOKEN),
                Some(serde_json::json!({})),
            )
            .await;
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        let fallback = status == StatusCode::NOT_FOUND
            && body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("no route"));
        assert!(
            !fallback && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status} {body}"
        );
        assert!(status.as_u16() < 500, "{method} {path}: {status} {body}");
    }
}
