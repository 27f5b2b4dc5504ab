//! Signed webhooks of every kind: stored once, routed, recorded.

use serde_json::Value;
use whatsapp_bridge::domain::{WaId, WamId};
use whatsapp_bridge::store::{NewOutboundMessage, StoredEvent};

use crate::helpers::*;

/// Every fixture with the event kinds it must produce, in order.
const FIXTURES: &[(&str, &[&str])] = &[
    ("call_connect_inbound", &["call_connect"]),
    ("call_connect_placeholder_sdp", &["call_connect"]),
    ("call_connect_outbound_answer", &["call_connect"]),
    ("call_terminate_completed", &["call_terminate"]),
    ("call_terminate_failed", &["call_terminate"]),
    ("call_statuses", &["call_status", "call_status"]),
    ("call_status_rejected", &["call_status"]),
    ("message_text", &["message"]),
    ("message_voice", &["message"]),
    ("message_image", &["message"]),
    ("message_video", &["message"]),
    ("message_document", &["message"]),
    ("message_sticker", &["message"]),
    ("message_location", &["message"]),
    ("message_contacts", &["message"]),
    ("message_reaction", &["message", "message"]),
    ("message_button_reply", &["message"]),
    ("message_list_reply", &["message"]),
    ("message_call_permission_reply", &["message"]),
    ("message_template_button", &["message"]),
    ("message_unsupported", &["message"]),
    (
        "message_more_types",
        &[
            "message", "message", "message", "message", "message", "message", "message",
        ],
    ),
    (
        "message_statuses",
        &[
            "message_status",
            "message_status",
            "message_status",
            "message_status",
        ],
    ),
    (
        "multi_entry",
        &["message", "message", "message_status", "call_terminate"],
    ),
    ("username_user_without_phone", &["message"]),
    ("unknown_field_account_update", &["unknown"]),
    ("other_business_number", &["message"]),
];

async fn event(app: &TestApp, key: &str) -> StoredEvent {
    app.store
        .webhook_event(key)
        .await
        .expect("query")
        .unwrap_or_else(|| panic!("no stored event {key}"))
}

#[tokio::test]
async fn every_fixture_is_accepted_stored_once_and_routed() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let mut expected_events = 0;
    for (name, kinds) in FIXTURES {
        let response = app.post_webhook(&fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["received"], kinds.len(), "{name}: {body}");
        expected_events += kinds.len();
    }
    let counts = app.processed().await;
    // multi_entry repeats a status from message_statuses: it is a duplicate, stored once.
    assert_eq!(
        counts.processed + counts.ignored + counts.failed,
        i64::try_from(expected_events - 1).expect("small"),
        "{counts:?}"
    );
    assert_eq!(counts.failed, 0, "{counts:?}");

    // Each kind went to its place.
    let user = app
        .store
        .user_by_wa_id(&WaId::parse(USER_WA_ID).expect("valid"))
        .await
        .expect("query")
        .expect("the user was created from the contact");
    assert_eq!(user.name.as_deref(), Some("Kerry Fisher"));
    assert_eq!(
        user.bsuid.as_ref().map(|b| b.as_str()),
        Some("US.13491208655302741918")
    );
    let export = app.store.export_user(user.id).await.expect("export");
    let kinds: Vec<&str> = export.messages.iter().map(|m| m.kind.as_str()).collect();
    for kind in [
        "text",
        "audio",
        "image",
        "video",
        "document",
        "sticker",
        "location",
        "contacts",
        "reaction",
        "button_reply",
        "list_reply",
        "call_permission_reply",
        "button",
        "unsupported",
        "system",
        "request_welcome",
        "revoke",
        "edit",
        "order",
        "flow_reply",
        "poll_vote",
    ] {
        assert!(kinds.contains(&kind), "no {kind} message stored: {kinds:?}");
    }
    let text = export
        .messages
        .iter()
        .find(|m| m.kind == "text" && m.body.as_deref().is_some_and(|b| b.contains("dentist")))
        .expect("the text message");
    assert_eq!(
        text.body.as_deref(),
        Some("Remind me to call the dentist tomorrow at 9 🦷")
    );

    // The permission reply set a temporary permission until the reply's expiry.
    let permission = export.call_permission.expect("permission recorded");
    assert_eq!(permission.status.as_str(), "temporary");
    assert_eq!(
        permission.expires_at.map(|t| t.timestamp()),
        Some(1_764_787_200)
    );

    // Calls: the outbound one answered; the rejected and failed ones ended with their reasons
    // (recorded as they came: no call task holds them).
    let by_wa_id = |id: &str| {
        export
            .calls
            .iter()
            .find(|c| c.call.wa_call_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("call {id}"))
            .call
            .clone()
    };
    // The inbound call was answered (pre_accept, accept) and ended by the caller.
    let inbound = app
        .call_when("wacid.HBgLMTY1MDU1NTEyMzQVAgARGCAzRkM1RTQ0", |c| {
            c.state.is_ended()
        })
        .await;
    assert_eq!(inbound.end_reason.as_deref(), Some("completed"));
    assert_eq!(inbound.duration_secs, Some(118));
    assert!(inbound.answered_at.is_some());
    // The call whose offer is Meta's placeholder text was rejected, not left ringing.
    let placeholder = app
        .call_when("wacid.PLACEHOLDER", |c| c.state.is_ended())
        .await;
    assert_eq!(placeholder.end_reason.as_deref(), Some("refused"));
    let graph_actions: Vec<(String, String)> = app
        .graph
        .requests()
        .into_iter()
        .map(|r| {
            (
                r.action,
                r.body["call_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        graph_actions.contains(&("reject".to_owned(), "wacid.PLACEHOLDER".to_owned())),
        "{graph_actions:?}"
    );
    assert!(
        graph_actions.contains(&(
            "accept".to_owned(),
            "wacid.HBgLMTY1MDU1NTEyMzQVAgARGCAzRkM1RTQ0".to_owned()
        )),
        "{graph_actions:?}"
    );
    let outbound = by_wa_id("wacid.OUTBOUND1");
    assert_eq!(outbound.state.as_str(), "answered");
    assert_eq!(outbound.direction.as_str(), "outbound");
    let rejected = by_wa_id("wacid.REJECTED1");
    assert_eq!(rejected.end_reason.as_deref(), Some("rejected"));
    let failed = by_wa_id("wacid.FAILED1");
    assert_eq!(failed.end_reason.as_deref(), Some("failed"));
    assert_eq!(failed.error_code, Some(138_021));

    // A user known only by BSUID (a username, no phone number) is still a user.
    let bsuid_event = event(&app, "message:wamid.BSUID1").await;
    assert_eq!(bsuid_event.state, "processed");

    // Unknown shapes and other numbers' events are recorded and deliberately ignored.
    let other = event(&app, "message:wamid.OTHERNUMBER1").await;
    assert_eq!(other.state, "ignored");
    assert!(
        other
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("999999999999999"),
        "{:?}",
        other.last_error
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_redelivered_webhook_is_a_no_op() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let body = fixture("message_text");

    let first: Value = app.post_webhook(&body).await.json().await.expect("json");
    assert_eq!(first["new"], 1);
    app.processed().await;
    let again = app.post_webhook(&body).await;
    assert_eq!(
        again.status(),
        200,
        "a redelivery is answered 200 so Meta stops"
    );
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["new"], 0);
    assert_eq!(again["duplicates"], 1);

    let counts = app.processed().await;
    assert_eq!(counts.processed, 1);
    assert_eq!(counts.deliveries, 1, "the duplicate delivery left no trace");
    let user = app
        .store
        .user_by_wa_id(&WaId::parse(USER_WA_ID).expect("valid"))
        .await
        .expect("query")
        .expect("user");
    assert_eq!(
        app.store
            .recent_messages(user.id, 10)
            .await
            .expect("messages")
            .len(),
        1
    );
    let metrics = app.metrics.render();
    assert!(
        metrics.contains(
            r#"whatsapp_bridge_webhook_events_total{kind="message",outcome="duplicate"} 1"#
        ),
        "{metrics}"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn call_webhooks_out_of_order_never_move_a_call_backwards() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    // The terminate arrives before the connect, and an ACCEPTED after both.
    let terminate = fixture("call_terminate_completed");
    let connect = fixture("call_connect_inbound");
    assert_eq!(app.post_webhook(&terminate).await.status(), 200);
    app.processed().await;
    assert_eq!(app.post_webhook(&connect).await.status(), 200);
    assert_eq!(app.post_webhook(&terminate).await.status(), 200);
    app.processed().await;

    let call = app
        .store
        .call_by_wa_id(
            &whatsapp_bridge::domain::WaCallId::parse("wacid.HBgLMTY1MDU1NTEyMzQVAgARGCAzRkM1RTQ0")
                .expect("id"),
        )
        .await
        .expect("query")
        .expect("call row");
    assert_eq!(call.state.as_str(), "ended");
    let connect_event = event(
        &app,
        "call:wacid.HBgLMTY1MDU1NTEyMzQVAgARGCAzRkM1RTQ0:connect",
    )
    .await;
    assert_eq!(connect_event.state, "ignored");
    assert!(
        connect_event
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("already ended"),
        "{:?}",
        connect_event.last_error
    );
    assert!(
        !app.graph.actions().iter().any(|a| a == "pre_accept"),
        "a call that already ended is not answered"
    );

    // Outbound: ACCEPTED before RINGING; RINGING must not move it back.
    let statuses: Value = serde_json::from_str(&fixture("call_statuses")).expect("json");
    let mut accepted_first = statuses.clone();
    let list = accepted_first["entry"][0]["changes"][0]["value"]["statuses"]
        .as_array_mut()
        .expect("statuses");
    list.reverse();
    assert_eq!(
        app.post_webhook(&accepted_first.to_string()).await.status(),
        200
    );
    app.processed().await;
    let outbound = app
        .store
        .call_by_wa_id(&whatsapp_bridge::domain::WaCallId::parse("wacid.OUTBOUND1").expect("id"))
        .await
        .expect("query")
        .expect("call row");
    assert_eq!(outbound.state.as_str(), "answered");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn delivery_statuses_only_move_a_message_forward() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    // A message we sent (the assistant's reply), then its statuses out of order.
    let user = app
        .store
        .upsert_contact(
            &whatsapp_bridge::domain::Contact {
                wa_id: Some(WaId::parse(USER_WA_ID).expect("valid")),
                ..Default::default()
            },
            chrono::Utc::now(),
        )
        .await
        .expect("user");
    app.store
        .record_outbound_message(
            user.id,
            &NewOutboundMessage {
                wamid: Some(WamId::parse("wamid.OUT1").expect("id")),
                phone_number_id: None,
                kind: "text".into(),
                body: Some("Done!".into()),
                content: serde_json::json!({"type": "text", "body": "Done!"}),
                call_id: None,
            },
            chrono::Utc::now(),
        )
        .await
        .expect("outbound");

    for status in ["read", "delivered", "sent"] {
        assert_eq!(
            app.post_webhook(&status_webhook("wamid.OUT1", status))
                .await
                .status(),
            200
        );
    }
    app.processed().await;
    let messages = app
        .store
        .recent_messages(user.id, 5)
        .await
        .expect("messages");
    assert_eq!(messages[0].status, "read");
    assert_eq!(
        event(&app, "message_status:wamid.OUT1:read").await.state,
        "processed"
    );
    assert_eq!(
        event(&app, "message_status:wamid.OUT1:sent").await.state,
        "ignored"
    );
    // A status for a message some other software sent is recorded and ignored.
    assert_eq!(
        app.post_webhook(&status_webhook("wamid.NOT.OURS", "delivered"))
            .await
            .status(),
        200
    );
    app.processed().await;
    let unknown = event(&app, "message_status:wamid.NOT.OURS:delivered").await;
    assert_eq!(unknown.state, "ignored");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn unknown_shapes_are_recorded_answered_200_and_kept_for_debugging() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    for body in [
        r#"{"object":"page","entry":[]}"#.to_owned(),
        r#"[1,2,3]"#.to_owned(),
        fixture("unknown_field_account_update"),
        r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messages":[{"id":"wamid.X","type":"text","from":"not a phone"}]}}]}]}"#.to_owned(),
    ] {
        let response = app.post_webhook(&body).await;
        assert_eq!(response.status(), 200, "{body}");
    }
    let counts = app.processed().await;
    assert_eq!(counts.ignored, 4, "{counts:?}");
    assert_eq!(counts.deliveries, 4, "raw bodies kept for debugging");
    let metrics = app.metrics.render();
    assert!(
        metrics.contains(
            r#"whatsapp_bridge_webhook_events_total{kind="unknown",outcome="ignored"} 4"#
        ),
        "{metrics}"
    );
    app.stop().await.expect("clean stop");
}
