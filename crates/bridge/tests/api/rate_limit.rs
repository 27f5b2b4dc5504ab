//! Per-IP rate limiting on public routes; Meta's signed deliveries are never throttled.

use crate::helpers::*;

fn limited(rate: &str, burst: &str) -> Options {
    Options {
        env: vec![
            ("RATE_LIMIT_PER_SECOND", rate.into()),
            ("RATE_LIMIT_BURST", burst.into()),
        ],
        ..Options::default()
    }
}

#[tokio::test]
async fn public_routes_answer_429_with_retry_after_over_the_burst() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, limited("1", "3")).await;
    for _ in 0..3 {
        assert_eq!(app.get("/health").await.status(), 200);
    }
    let refused = app.get("/whatsapp-call?hub.mode=subscribe").await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .expect("Retry-After header")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let metrics = app.metrics.render();
    assert!(
        metrics.contains(r#"whatsapp_bridge_rate_limited_total{route="/whatsapp-call"} 1"#),
        "{metrics}"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn signed_webhooks_are_not_rate_limited_but_bad_signatures_are() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, limited("1", "2")).await;
    // Far over the burst: a broadcast's statuses arrive like this.
    for i in 0..40 {
        let response = app
            .post_webhook(&status_webhook(&format!("wamid.B{i}"), "delivered"))
            .await;
        assert_eq!(response.status(), 200, "signed delivery {i}");
    }
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let response = app
                .post_webhook_with(
                    b"{}".to_vec(),
                    Some("sha256=0000000000000000000000000000000000000000000000000000000000000000"),
                )
                .await;
            statuses.push(response.status().as_u16());
        }
        statuses
    };
    assert_eq!(statuses, [401, 401, 429, 429]);
    assert_eq!(app.processed().await.ignored, 40);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_ip_header_keys_the_limit() {
    let db = TestDb::sqlite();
    let mut options = limited("1", "1");
    options
        .env
        .push(("CLIENT_IP_HEADER", "X-Forwarded-For".into()));
    let app = spawn_app_with(&db, options).await;
    let get = |ip: &'static str| {
        app.client
            .get(app.url("/health"))
            .header("x-forwarded-for", format!("{ip}, 10.0.0.1"))
            .send()
    };
    assert_eq!(get("203.0.113.7").await.expect("request").status(), 200);
    assert_eq!(get("203.0.113.7").await.expect("request").status(), 429);
    // Another client behind the same proxy has its own bucket.
    assert_eq!(get("198.51.100.4").await.expect("request").status(), 200);
    app.stop().await.expect("clean stop");
}
