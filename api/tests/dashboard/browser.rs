//! The dashboard in a real headless Chromium, driven through WebDriver (thirtyfour) by a
//! chromedriver this test starts on a free 127.0.0.1 port. `scripts/ensure-chromium.sh`
//! installs Debian's `chromium` and `chromium-driver`; without them the test fails saying so.
//! Screenshots of every step go to `target/test-artifacts/dashboard/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use sqlx::PgPool;
use thirtyfour::prelude::*;
use tokio::process::{Child, Command};

use crate::{Server, TOKEN, audit_entries, seed_run};

/// A chromedriver process, killed when dropped.
struct Chromedriver {
    url: String,
    _child: Child,
}

impl Chromedriver {
    async fn start(artifacts: &std::path::Path) -> Self {
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("addr").port()
        };
        let log = std::fs::File::create(artifacts.join("chromedriver.log")).expect("log file");
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {binary:?} ({error}): the dashboard's browser test needs \
                     Debian's chromium and chromium-driver; run scripts/ensure-chromium.sh \
                     (scripts/test.sh does) or set CHROMEDRIVER"
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = client.get(format!("{url}/status")).send().await
                && response.status().is_success()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer on {url} within 20 s; see {}",
                artifacts.join("chromedriver.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { url, _child: child }
    }
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let dir = target.join("test-artifacts/dashboard");
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

async fn browser(chromedriver: &Chromedriver) -> WebDriver {
    let mut caps = DesiredCapabilities::chrome();
    caps.set_headless().expect("headless");
    // Root in a container has no user namespace for Chromium's sandbox.
    caps.add_arg("--no-sandbox").expect("arg");
    caps.add_arg("--disable-dev-shm-usage").expect("arg");
    caps.add_arg("--window-size=1200,1600").expect("arg");
    if let Ok(binary) = std::env::var("CHROMIUM") {
        caps.set_binary(&binary).expect("binary");
    } else if std::path::Path::new("/usr/bin/chromium").exists() {
        caps.set_binary("/usr/bin/chromium").expect("binary");
    }
    WebDriver::new(&chromedriver.url, caps)
        .await
        .expect("a Chromium session through chromedriver")
}

async fn shot(driver: &WebDriver, dir: &std::path::Path, name: &str) {
    driver
        .screenshot(&dir.join(format!("{name}.png")))
        .await
        .expect("a screenshot");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn in_chromium_an_operator_signs_in_sees_the_checklist_retries_a_dead_job_and_signs_out(
    pool: PgPool,
) {
    let artifacts = artifacts_dir();
    let server = Server::start(pool.clone()).await;
    // Arrange: today the queue snapshot succeeded; yesterday nothing ran, so yesterday's
    // items are missed; one job is a dead letter.
    seed_run(
        &pool,
        "queues.snapshot",
        "succeeded",
        Utc::now() - TimeDelta::seconds(5),
        None,
    )
    .await;
    let dead_id = server.dead_letter().await;
    let chromedriver = Chromedriver::start(&artifacts).await;
    let driver = browser(&chromedriver).await;
    let result = drive(&driver, &server, &artifacts, &dead_id).await;
    if result.is_err() {
        shot(&driver, &artifacts, "failure").await;
    }
    driver.quit().await.expect("quit");
    result.expect("the browser walk-through");

    let queue = server.reports_queue();
    assert!(queue.dead_letters(10).await.expect("dead").is_empty());
    assert_eq!(
        queue.stats().await.expect("stats").pending,
        1,
        "back in the queue"
    );
    let logins = audit_entries(&pool, "dashboard.login").await;
    assert_eq!(logins.len(), 2, "{logins:?}");
    assert_eq!(logins[0].1, "refused: invalid token");
    assert_eq!(audit_entries(&pool, "dead.retry").await[0].1, "ok");
    assert_eq!(audit_entries(&pool, "dashboard.logout").await.len(), 1);
}

async fn drive(
    driver: &WebDriver,
    server: &Server,
    artifacts: &std::path::Path,
    dead_id: &str,
) -> WebDriverResult<()> {
    // Not signed in: the dashboard sends the browser to the login page.
    driver.goto(&server.url("/")).await?;
    assert!(driver.current_url().await?.path().ends_with("/login"));
    shot(driver, artifacts, "01-login").await;

    // A wrong token is refused.
    driver
        .find(By::Id("token"))
        .await?
        .send_keys("wrong-token")
        .await?;
    driver
        .find(By::Css("form[action='/login'] button"))
        .await?
        .click()
        .await?;
    let error = driver.query(By::Id("login-error")).first().await?;
    assert!(error.text().await?.contains("not accepted"));
    shot(driver, artifacts, "02-wrong-token").await;

    // The right one signs in.
    driver.find(By::Id("token")).await?.send_keys(TOKEN).await?;
    driver
        .find(By::Css("form[action='/login'] button"))
        .await?
        .click()
        .await?;
    driver.query(By::Id("tasks-today")).first().await?;
    assert_eq!(driver.current_url().await?.path(), "/");
    let cookies = driver.get_all_cookies().await?;
    let session = cookies
        .iter()
        .find(|cookie| cookie.name == "upkeep_session")
        .expect("a session cookie");
    assert_eq!(session.http_only, Some(true));
    shot(driver, artifacts, "03-overview").await;

    // Today's list has the seeded done item; yesterday's leftovers have missed ones.
    let done = driver
        .find(By::Css("#tasks-today li.item[data-status='done']"))
        .await?;
    assert!(
        done.attr("data-item")
            .await?
            .unwrap_or_default()
            .starts_with("daily.queue_stats.")
    );
    assert!(
        done.text().await?.contains("Succeeded"),
        "with its evidence"
    );
    assert!(
        done.find(By::Css("a[href^='/jobs/']")).await.is_ok(),
        "an evidence link"
    );
    let missed = driver
        .find_all(By::Css("#tasks-yesterday li.item[data-status='missed']"))
        .await?;
    assert!(!missed.is_empty(), "yesterday's unrun items are missed");
    assert!(missed[0].text().await?.contains("missed"));

    // Retry the dead job with a click; it leaves the dead letters.
    let row = format!("#dead-table tr[data-job='{dead_id}']");
    driver.find(By::Css(&row)).await?;
    driver
        .find(By::Css(format!("{row} button[type='submit']")))
        .await?
        .click()
        .await?;
    driver.query(By::Id("no-dead")).first().await?;
    assert!(driver.find_all(By::Css(&row)).await?.is_empty());
    shot(driver, artifacts, "04-after-retry").await;

    // A phone-sized window still shows the checklist.
    driver.set_window_rect(0, 0, 390, 844).await?;
    shot(driver, artifacts, "05-phone").await;
    driver.set_window_rect(0, 0, 1200, 1600).await?;

    // Sign out: back to the login page, and the dashboard needs a new sign-in.
    driver
        .find(By::Css("form.logout button"))
        .await?
        .click()
        .await?;
    driver.query(By::Id("token")).first().await?;
    assert!(driver.current_url().await?.path().ends_with("/login"));
    driver.goto(&server.url("/")).await?;
    assert!(driver.current_url().await?.path().ends_with("/login"));
    shot(driver, artifacts, "06-signed-out").await;
    Ok(())
}
