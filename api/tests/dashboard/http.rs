//! The dashboard over plain HTTP: redirects, cookies, CSRF refusals, security headers and
//! keyset pages.

use chrono::{TimeDelta, Utc};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, LOCATION};
use sqlx::PgPool;

use crate::{Server, TOKEN, audit_entries, hidden_csrf, seed_run, set_cookie};

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_visit_without_a_session_is_sent_to_the_login_page(pool: PgPool) {
    let server = Server::start(pool).await;
    for path in ["/", "/failures", "/audit"] {
        let response = server.get(path, None).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[LOCATION], "/login", "{path}");
    }
    let forged = server
        .get("/", Some("upkeep_session=00112233445566778899aabbccddeeff"))
        .await;
    assert_eq!(forged.status(), StatusCode::SEE_OTHER);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_wrong_token_is_refused_and_audited_and_the_right_one_signs_in(pool: PgPool) {
    let server = Server::start(pool).await;
    let (login_cookie, csrf) = server.login_form().await;
    let refused = server
        .post_form(
            "/login",
            Some(&login_cookie),
            &[("token", "not-the-token"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&refused, "upkeep_session").is_none());
    let page = refused.text().await.expect("body");
    assert!(page.contains("That token was not accepted"), "{page}");

    let (cookie, _) = server.sign_in(TOKEN).await;
    assert!(cookie.starts_with("upkeep_session="));
    assert_eq!(
        audit_entries(&server.pool, "dashboard.login").await,
        vec![
            ("anonymous".to_owned(), "refused: invalid token".to_owned()),
            ("env".to_owned(), "ok".to_owned()),
        ]
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn the_session_cookie_is_http_only_strict_expiring_and_secure_over_tls(pool: PgPool) {
    let server = Server::start(pool).await;
    let (login_cookie, csrf) = server.login_form().await;
    let plain = server
        .post_form(
            "/login",
            Some(&login_cookie),
            &[("token", TOKEN), ("csrf", &csrf)],
        )
        .await;
    let line = set_cookie(&plain, "upkeep_session").expect("session cookie");
    assert!(line.contains("; HttpOnly"), "{line}");
    assert!(line.contains("; SameSite=Strict"), "{line}");
    assert!(line.contains("; Max-Age=43200"), "{line}");
    assert!(
        !line.contains("Secure"),
        "plain HTTP without a proxy header: {line}"
    );

    let (login_cookie, csrf) = server.login_form().await;
    let behind_tls = server
        .client
        .post(server.url("/login"))
        .header("x-forwarded-proto", "https")
        .header(reqwest::header::COOKIE, &login_cookie)
        .form(&[("token", TOKEN), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("sent");
    let line = set_cookie(&behind_tls, "upkeep_session").expect("session cookie");
    assert!(line.ends_with("; Secure"), "{line}");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn forms_posted_without_their_csrf_token_are_refused(pool: PgPool) {
    let server = Server::start(pool).await;

    // The login form: no token, and a token that is not the cookie's.
    let (login_cookie, csrf) = server.login_form().await;
    let missing = server
        .post_form("/login", Some(&login_cookie), &[("token", TOKEN)])
        .await;
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&missing, "upkeep_session").is_none());
    let no_cookie = server
        .post_form("/login", None, &[("token", TOKEN), ("csrf", &csrf)])
        .await;
    assert_eq!(no_cookie.status(), StatusCode::FORBIDDEN);

    // Signed in: retry and logout without the session's token change nothing.
    let (cookie, session_csrf) = server.sign_in(TOKEN).await;
    let id = server.dead_letter().await;
    let retry = format!("/dead/reports/{id}/retry");
    for form in [
        vec![],
        vec![("csrf", "0000")],
        vec![("csrf", csrf.as_str())],
    ] {
        let response = server.post_form(&retry, Some(&cookie), &form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{form:?}");
    }
    let dead = server.reports_queue().dead_letters(10).await.expect("dead");
    assert!(dead.iter().any(|record| record.id == id), "still dead");
    let logout = server.post_form("/logout", Some(&cookie), &[]).await;
    assert_eq!(logout.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        server.get("/", Some(&cookie)).await.status(),
        StatusCode::OK
    );

    // With the token both work, and the retry is audited.
    let response = server
        .post_form(&retry, Some(&cookie), &[("csrf", &session_csrf)])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        audit_entries(&server.pool, "dead.retry").await,
        vec![("env".to_owned(), "ok".to_owned())]
    );
    let response = server
        .post_form("/logout", Some(&cookie), &[("csrf", &session_csrf)])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/login");
    assert_eq!(
        server.get("/", Some(&cookie)).await.status(),
        StatusCode::SEE_OTHER,
        "the session ended on the server, not only in the browser"
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn every_dashboard_response_carries_the_security_headers(pool: PgPool) {
    let server = Server::start(pool).await;
    let (cookie, _) = server.sign_in(TOKEN).await;
    let page = server
        .get("/", Some(&cookie))
        .await
        .text()
        .await
        .expect("body");
    let css = page
        .split("href=\"")
        .find_map(|part| part.strip_prefix("/static/dashboard.css"))
        .and_then(|rest| rest.split('"').next())
        .map(|query| format!("/static/dashboard.css{query}"))
        .expect("the page links its stylesheet");
    for (path, cookie) in [
        ("/login", None),
        ("/", Some(cookie.as_str())),
        ("/", None),
        ("/audit?before=x", Some(cookie.as_str())),
        (css.as_str(), None),
    ] {
        let response = server.get(path, cookie).await;
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    }
    let static_file = server.get(&css, None).await;
    assert_eq!(static_file.status(), StatusCode::OK);
    assert!(
        static_file.headers()[CACHE_CONTROL]
            .to_str()
            .expect("ascii")
            .contains("max-age="),
    );
    let page = server.get("/", Some(&cookie)).await;
    assert_eq!(page.headers()[CACHE_CONTROL], "no-store");
    let body = page.text().await.expect("body");
    assert!(!body.contains("<script>"), "no inline script");
    assert!(!body.contains(" style=\""), "no inline style");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn failures_and_the_audit_trail_are_paged_by_id_without_counting(pool: PgPool) {
    let server = Server::start(pool.clone()).await;
    let now = Utc::now();
    let mut ids = Vec::new();
    for n in 0..120 {
        let at = now - TimeDelta::seconds(200 - n);
        ids.push(
            seed_run(
                &pool,
                "system.ping",
                "failed",
                at,
                Some(&format!("failure number {n}")),
            )
            .await,
        );
        seed_run(&pool, "system.ping", "succeeded", at, None).await;
    }
    let (cookie, _) = server.sign_in(TOKEN).await;
    let first = server
        .get("/failures", Some(&cookie))
        .await
        .text()
        .await
        .expect("body");
    assert!(first.contains("failure number 119"));
    assert!(first.contains("failure number 70"));
    assert!(!first.contains("failure number 69"));
    let next = format!("/failures?before={}", ids[70]);
    assert!(
        first.contains(&format!("href=\"{next}\"")),
        "a link to the next page"
    );
    let third = server
        .get(&format!("/failures?before={}", ids[20]), Some(&cookie))
        .await
        .text()
        .await
        .expect("body");
    assert!(third.contains("failure number 19") && third.contains("failure number 0"));
    assert!(
        !third.contains("rel=\"next\""),
        "the last page has no next link"
    );

    let bad = server.get("/failures?before=abc", Some(&cookie)).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(
        bad.text()
            .await
            .expect("body")
            .contains("before must be a row id")
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn the_overview_shows_every_section_and_escapes_what_the_ledger_holds(pool: PgPool) {
    let server = Server::start(pool.clone()).await;
    seed_run(
        &pool,
        "system.ping",
        "failed",
        Utc::now(),
        Some("<b>boom</b>"),
    )
    .await;
    // A failed attempt settled in Redis: the chart reads the settle scripts' rollups.
    server.dead_letter().await;
    let (cookie, csrf) = server.sign_in(TOKEN).await;
    let page = server
        .get("/", Some(&cookie))
        .await
        .text()
        .await
        .expect("body");
    for id in [
        "tasks-today",
        "tasks-yesterday",
        "tasks-week",
        "tasks-month",
        "queues",
        "dead-letters",
        "failures",
        "schedules",
        "findings",
        "backups",
        "audit",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "section {id}");
    }
    assert!(
        page.contains("&lt;b&gt;boom&lt;/b&gt;"),
        "the error is escaped"
    );
    assert!(!page.contains("<b>boom</b>"));
    assert!(
        page.contains("<svg class=\"chart\""),
        "the throughput chart is inline SVG"
    );
    assert!(
        page.contains("0 succeeded, 1 failed"),
        "the chart counts the failed attempt settled this minute"
    );
    assert_eq!(hidden_csrf(&page).as_deref(), Some(csrf.as_str()));
}
