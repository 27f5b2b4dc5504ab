//! Graceful shutdown and restarts: queued events are finished, or kept for the next start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use whatsapp_bridge::domain::{InboundEvent, InboundMessage, MessageStatusUpdate};
use whatsapp_bridge::events::handlers::{Handled, HandlerError, MessageEvents};

use crate::helpers::*;

/// Takes `delay` per message, counting them; `None` never finishes.
struct SlowMessages {
    delay: Option<Duration>,
    handled: Arc<AtomicUsize>,
}

#[async_trait]
impl MessageEvents for SlowMessages {
    async fn message(&self, _: &InboundEvent, _: &InboundMessage) -> Result<Handled, HandlerError> {
        match self.delay {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending::<()>().await,
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(Handled::Done)
    }

    async fn status(
        &self,
        _: &InboundEvent,
        _: &MessageStatusUpdate,
    ) -> Result<Handled, HandlerError> {
        Ok(Handled::Done)
    }
}

fn slow(delay: Option<Duration>, env: Vec<(&'static str, String)>) -> (Options, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let options = Options {
        env,
        messages: Some(Arc::new(SlowMessages {
            delay,
            handled: handled.clone(),
        })),
        ..Options::default()
    };
    (options, handled)
}

#[tokio::test]
async fn shutdown_finishes_the_events_already_queued() {
    let db = TestDb::sqlite();
    let (options, handled) = slow(Some(Duration::from_millis(30)), vec![]);
    let app = spawn_app_with(&db, options).await;
    for i in 0..20 {
        assert_eq!(
            app.post_webhook(&text_message(&format!("wamid.Q{i}"), "hello"))
                .await
                .status(),
            200
        );
    }
    // Most are still queued behind the slow handler when shutdown starts.
    assert!(handled.load(Ordering::SeqCst) < 20);
    tokio::time::timeout(Duration::from_secs(30), app.stop())
        .await
        .expect("stops")
        .expect("clean stop");

    assert_eq!(handled.load(Ordering::SeqCst), 20);
    let store = db.store().await;
    let counts = store.webhook_event_counts().await.expect("counts");
    assert_eq!(counts.processed, 20, "{counts:?}");
    assert_eq!(counts.pending, 0);
}

#[tokio::test]
async fn events_left_at_the_shutdown_deadline_run_at_the_next_start() {
    let db = TestDb::sqlite();
    let (options, handled) = slow(None, vec![("SHUTDOWN_TIMEOUT_SECS", "1".into())]);
    let app = spawn_app_with(&db, options).await;
    for i in 0..5 {
        assert_eq!(
            app.post_webhook(&text_message(&format!("wamid.L{i}"), "hello"))
                .await
                .status(),
            200
        );
    }
    tokio::time::timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("the deadline bounds shutdown even when a handler hangs")
        .expect("clean stop");
    assert_eq!(handled.load(Ordering::SeqCst), 0);

    let store = db.store().await;
    let counts = store.webhook_event_counts().await.expect("counts");
    assert_eq!(counts.pending, 5, "nothing lost: {counts:?}");
    drop(store);

    // The next start picks them up at once (their claims were released).
    let app = spawn_app(&db).await;
    let counts = app.processed().await;
    assert_eq!(counts.processed, 5, "{counts:?}");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_crashed_instances_claims_are_retaken_by_the_same_instance_on_restart() {
    let db = TestDb::sqlite();
    // Simulate a crash: events stored and claimed by this instance, never completed.
    let store = db.store().await;
    let body = text_message("wamid.CRASH1", "before the crash");
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    let events = whatsapp_bridge::whatsapp::webhook::parse(&value);
    let now = chrono::Utc::now();
    let delivery = whatsapp_bridge::store::NewDelivery {
        id: "crash-delivery".into(),
        received_at: now,
        body,
        signature: "verified",
        events: events
            .iter()
            .map(|e| whatsapp_bridge::store::NewEvent {
                key: e.idempotency_key(),
                kind: e.body.kind(),
                phone_number_id: e.business.phone_number_id.clone(),
                wa_id: None,
                payload: serde_json::value::to_raw_value(e).expect("serialise"),
            })
            .collect(),
    };
    let claim = whatsapp_bridge::store::Claim {
        owner: "test-instance".into(),
        now,
        until: now + chrono::TimeDelta::hours(1),
    };
    store
        .record_deliveries(&[delivery], &claim)
        .await
        .expect("stored");
    drop(store);

    let app = spawn_app(&db).await;
    let counts = app.processed().await;
    assert_eq!(
        counts.processed, 1,
        "retaken without waiting for the hour-long lease: {counts:?}"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_full_queue_loses_nothing_the_events_wait_in_the_database() {
    let db = TestDb::sqlite();
    let (mut options, handled) = slow(
        Some(Duration::from_millis(5)),
        vec![("EVENT_QUEUE_CAPACITY", "1".into())],
    );
    options.sweep_interval = Some(Duration::from_millis(50));
    let app = spawn_app_with(&db, options).await;
    let posts = (0..30).map(|i| {
        let app = &app;
        async move {
            app.post_webhook(&text_message(&format!("wamid.F{i}"), "burst"))
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let counts = app.processed().await;
    assert_eq!(counts.processed, 30, "{counts:?}");
    assert_eq!(handled.load(Ordering::SeqCst), 30);
    app.stop().await.expect("clean stop");
}
