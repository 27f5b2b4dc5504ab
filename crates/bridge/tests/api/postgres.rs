//! The service end to end on Postgres, including what happens when the database goes away.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn webhooks_are_stored_once_and_routed_on_postgres() {
    let db = TestDb::postgres().await;
    let app = spawn_app(&db).await;
    for name in [
        "message_text",
        "call_connect_inbound",
        "call_terminate_completed",
        "multi_entry",
        "message_call_permission_reply",
    ] {
        assert_eq!(
            app.post_webhook(&fixture(name)).await.status(),
            200,
            "{name}"
        );
    }
    let again: Value = app
        .post_webhook(&fixture("message_text"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["duplicates"], 1);
    let counts = app.processed().await;
    assert_eq!(counts.processed + counts.ignored, 8, "{counts:?}");
    assert_eq!(counts.failed, 0);
    let health: Value = app.get("/health").await.json().await.expect("json");
    assert_eq!(health["checks"]["database"]["backend"], "postgres");
    assert_eq!(app.get("/ready").await.status(), 200);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn when_the_database_goes_away_webhooks_get_503_health_degrades_and_ready_fails() {
    let db = TestDb::postgres().await;
    let app = spawn_app(&db).await;
    assert_eq!(
        app.post_webhook(&fixture("message_text")).await.status(),
        200
    );
    app.processed().await;

    // Take the database away under the running app.
    let TestDb::Postgres { admin_url, name } = &db else {
        unreachable!()
    };
    {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("admin");
        sqlx::query(&format!("drop database {name} with (force)"))
            .execute(&mut admin)
            .await
            .expect("drop");
    }

    // Meta is told to retry: nothing is acknowledged that was not stored.
    let response = app
        .post_webhook(&text_message("wamid.DURING.OUTAGE", "are you there?"))
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "storage_unavailable");

    let health = app.get("/health").await;
    assert_eq!(health.status(), 200, "liveness holds");
    let health: Value = health.json().await.expect("json");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["database"]["status"], "down");
    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.expect("json");
    assert!(
        ready["problems"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("database"),
        "{ready}"
    );
    let metrics = app.metrics.render();
    assert!(metrics.contains("whatsapp_bridge_db_up 0"), "{metrics}");
    assert!(
        metrics.contains(r#"whatsapp_bridge_webhook_deliveries_total{outcome="unavailable"} 1"#),
        "{metrics}"
    );

    // Recreate it so the test database can be dropped cleanly.
    {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("admin");
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .expect("create");
    }
    app.stop().await.expect("stops even after the outage");
}
