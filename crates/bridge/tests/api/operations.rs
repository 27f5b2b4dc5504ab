//! Health, readiness, metrics, request ids and what reaches the logs.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn health_reports_each_dependency_and_ready_checks_the_schema() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    let health: Value = response.json().await.expect("json");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["active_calls"], 0);
    assert!(health["uptime_seconds"].is_u64());
    assert_eq!(health["checks"]["database"]["status"], "up");
    assert_eq!(health["checks"]["database"]["backend"], "sqlite");
    assert_eq!(health["checks"]["event_queue"]["capacity"], 1024);
    assert_eq!(health["checks"]["whatsapp_api"]["status"], "configured");
    assert_eq!(health["checks"]["webhook_signature"]["status"], "verified");
    assert_eq!(health["checks"]["ai"]["status"], "not_configured");

    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.expect("json")["ready"], true);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let generated = app.get("/health").await;
    let id = generated
        .headers()
        .get("x-request-id")
        .expect("generated id");
    assert_eq!(id.len(), 36, "a UUID");
    let kept = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("request");
    assert_eq!(
        kept.headers().get("x-request-id").expect("id"),
        "trace-me-42"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn metrics_expose_every_documented_name_and_nothing_undocumented() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    assert_eq!(
        app.post_webhook(&fixture("message_text")).await.status(),
        200
    );
    app.processed().await;
    app.get("/health").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .expect("content type")
        .to_str()
        .expect("ascii")
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.expect("body");
    assert!(text.contains(r#"whatsapp_bridge_http_requests_total{method="POST",route="/whatsapp-call",status="200"} 1"#), "{text}");
    assert!(
        text.contains(r#"whatsapp_bridge_webhook_deliveries_total{outcome="accepted"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"whatsapp_bridge_webhook_events_total{kind="message",outcome="processed"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"whatsapp_bridge_db_query_duration_seconds_count{operation="record_deliveries"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("whatsapp_bridge_event_queue_depth 0"),
        "{text}"
    );

    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let documented = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/metrics.md"
    ))
    .expect("docs/metrics.md");
    for name in &exported {
        assert!(
            documented.contains(&format!("`{name}`")),
            "{name} is exported but not in docs/metrics.md"
        );
    }
    let registered = app.metrics.names();
    for line in documented.lines().filter(|l| l.starts_with("| `")) {
        let name = line.split('`').nth(1).expect("name");
        assert!(
            registered.iter().any(|r| r == name),
            "{name} is documented but not registered"
        );
    }
    for name in registered {
        assert!(
            documented.contains(&format!("`{name}`")),
            "{name} is registered but not in docs/metrics.md"
        );
    }
    app.stop().await.expect("clean stop");
}

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The non-negotiable: no secret, no full phone number, no message body at info level.
/// (A current-thread runtime, so the app's tasks log through this test's subscriber.)
#[tokio::test(flavor = "current_thread")]
async fn info_logs_carry_no_secret_no_phone_number_and_no_message_body() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    for name in [
        "message_text",
        "call_connect_inbound",
        "call_terminate_completed",
        "message_call_permission_reply",
        "message_location",
    ] {
        assert_eq!(app.post_webhook(&fixture(name)).await.status(), 200);
    }
    app.post_webhook_with(b"{}".to_vec(), Some("sha256=bad"))
        .await;
    app.get(&format!(
        "/whatsapp-call?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"
    ))
    .await;
    app.processed().await;
    app.stop().await.expect("clean stop");

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        logs.contains("message recorded"),
        "the flow was logged: {logs}"
    );
    assert!(
        logs.contains("***1234"),
        "phone numbers appear masked: {logs}"
    );
    for forbidden in [
        USER_WA_ID,
        "dentist",
        "Kerry Fisher",
        APP_SECRET,
        VERIFY_TOKEN,
        "Hacker Way",
        "test-access-token",
    ] {
        assert!(
            !logs.contains(forbidden),
            "{forbidden:?} reached the info logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_answered_408_and_its_retry_is_safe() {
    use sqlx::Connection;
    let db = TestDb::sqlite();
    let app = spawn_app_with(
        &db,
        Options {
            env: vec![("HTTP_REQUEST_TIMEOUT_SECS", "1".into())],
            ..Options::default()
        },
    )
    .await;
    // Another process holds SQLite's write lock: storing the webhook has to wait.
    let mut blocker = sqlx::SqliteConnection::connect(&db.url())
        .await
        .expect("connect");
    sqlx::query("begin exclusive")
        .execute(&mut blocker)
        .await
        .expect("lock");
    let body = text_message("wamid.SLOW", "hello");
    let response = app.post_webhook(&body).await;
    assert_eq!(response.status(), 408);
    sqlx::query("commit")
        .execute(&mut blocker)
        .await
        .expect("unlock");
    drop(blocker);

    // Meta retries what was not answered 2xx; the retry is accepted, and the event exists once.
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let counts = app.processed().await;
    assert_eq!(counts.processed, 1, "{counts:?}");
    app.stop().await.expect("clean stop");
}
