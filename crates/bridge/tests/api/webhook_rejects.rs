//! What is refused, with which status, and that nothing of it is kept.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn the_subscription_handshake_echoes_the_challenge_only_for_the_right_token() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    for path in ["/whatsapp-call", "/webhook"] {
        let ok = app
            .get(&format!("{path}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"))
            .await;
        assert_eq!(ok.status(), 200, "{path}");
        assert_eq!(ok.text().await.expect("body"), "1158201444");
    }
    let wrong = app
        .get("/whatsapp-call?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1")
        .await;
    assert_eq!(wrong.status(), 403);
    let wrong_mode = app
        .get(&format!(
            "/whatsapp-call?hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"
        ))
        .await;
    assert_eq!(wrong_mode.status(), 403);
    let missing = app.get("/whatsapp-call?hub.mode=subscribe").await;
    assert_eq!(missing.status(), 400);
    let body: Value = missing.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "bad_handshake");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_handshake_is_refused_when_no_verify_token_is_configured() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(
        &db,
        Options {
            env: vec![("WHATSAPP_VERIFY_TOKEN", String::new())],
            ..Options::default()
        },
    )
    .await;
    let response = app
        .get("/whatsapp-call?hub.mode=subscribe&hub.verify_token=&hub.challenge=1")
        .await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.expect("json");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("WHATSAPP_VERIFY_TOKEN"));
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn missing_malformed_and_wrong_signatures_are_401_and_store_nothing() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let body = fixture("message_text");
    let wrong = whatsapp_bridge::whatsapp::signature::sign(b"not-the-secret", body.as_bytes());
    let cases: [(Option<&str>, &str); 4] = [
        (None, "missing"),
        (Some("sha256=xyz"), "malformed"),
        (Some("md5=0123"), "malformed"),
        (Some(wrong.as_str()), "mismatch"),
    ];
    for (header, reason) in cases {
        let response = app
            .post_webhook_with(body.clone().into_bytes(), header)
            .await;
        assert_eq!(response.status(), 401, "{reason}");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], "bad_signature");
    }
    // A body signed correctly but changed in transit (one byte) is refused too.
    let signature =
        whatsapp_bridge::whatsapp::signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
    let tampered = body.replace("dentist", "Dentist");
    assert_eq!(
        app.post_webhook_with(tampered.into_bytes(), Some(&signature))
            .await
            .status(),
        401
    );

    let counts = app.store.webhook_event_counts().await.expect("counts");
    assert_eq!(counts, Default::default(), "nothing stored");
    let metrics = app.metrics.render();
    assert!(
        metrics.contains(r#"whatsapp_bridge_webhook_signature_failures_total{reason="missing"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"whatsapp_bridge_webhook_signature_failures_total{reason="malformed"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"whatsapp_bridge_webhook_signature_failures_total{reason="mismatch"} 2"#),
        "{metrics}"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn malformed_json_is_400_and_stores_nothing() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    for body in [
        "{\"object\": \"whatsapp_business_account\", \"entry\": [",
        "",
        "not json",
        "\u{feff}{}",
    ] {
        let response = app.post_webhook(body).await;
        assert_eq!(response.status(), 400, "{body:?}");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], "malformed_json");
    }
    // Invalid UTF-8, signed.
    let bytes = vec![b'{', 0xff, 0xfe, b'}'];
    let signature = whatsapp_bridge::whatsapp::signature::sign(APP_SECRET.as_bytes(), &bytes);
    assert_eq!(
        app.post_webhook_with(bytes, Some(&signature))
            .await
            .status(),
        400
    );
    assert_eq!(
        app.store.webhook_event_counts().await.expect("counts"),
        Default::default()
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_oversized_body_is_413_and_stores_nothing() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(
        &db,
        Options {
            env: vec![("WEBHOOK_MAX_BODY_BYTES", "4096".into())],
            ..Options::default()
        },
    )
    .await;
    let big = text_message("wamid.BIG", &"x".repeat(8192));
    let response = app.post_webhook(&big).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "payload_too_large");
    // Just under the limit is fine.
    let small = text_message("wamid.SMALL", &"x".repeat(3000));
    assert_eq!(app.post_webhook(&small).await.status(), 200);
    let counts = app.processed().await;
    assert_eq!(counts.processed, 1);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn without_an_app_secret_posts_are_refused_unless_unsigned_webhooks_are_allowed() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(
        &db,
        Options {
            env: vec![("WHATSAPP_APP_SECRET", String::new())],
            ..Options::default()
        },
    )
    .await;
    let response = app
        .post_webhook_with(fixture("message_text").into_bytes(), None)
        .await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "signature_not_configured");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("WHATSAPP_APP_SECRET"));
    app.stop().await.expect("clean stop");

    let db = TestDb::sqlite();
    let app = spawn_app_with(
        &db,
        Options {
            env: vec![
                ("WHATSAPP_APP_SECRET", String::new()),
                ("ALLOW_UNSIGNED_WEBHOOKS", "true".into()),
            ],
            ..Options::default()
        },
    )
    .await;
    let response = app
        .post_webhook_with(fixture("message_text").into_bytes(), None)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.processed().await.processed, 1);
    let health: Value = app.get("/health").await.json().await.expect("json");
    assert_eq!(health["checks"]["webhook_signature"]["status"], "unsigned");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let response = app.get("/nope").await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "not_found");
    let wrong_method = app
        .client
        .put(app.url("/whatsapp-call"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong_method.status(), 405);
    app.stop().await.expect("clean stop");
}
