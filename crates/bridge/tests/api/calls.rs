//! WhatsApp calls end to end: signed webhooks in, Graph actions out (fake Graph API), and
//! real media (DTLS-SRTP over UDP on loopback) with a WhatsApp-like WebRTC peer.

use std::time::Duration;

use fakes::graph::Reply;
use fakes::whatsapp_peer::UdpPeer;
use serde_json::{json, Value};

use crate::helpers::*;

pub(crate) const TOKEN: &str = "test-admin-token";

fn calls_env(extra: &[(&'static str, &str)]) -> Options {
    let mut env = vec![
        ("ADMIN_TOKEN", TOKEN.to_owned()),
        ("VOICE_AGENT", "echo".to_owned()),
        ("ECHO_DELAY_MS", "100".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Options {
        env,
        ..Options::default()
    }
}

fn calls_value(call: Value) -> String {
    fakes::webhook::calls_envelope(PHONE_NUMBER_ID, USER_WA_ID, "Kerry Fisher", call)
}

/// WhatsApp's `connect` webhook for a user calling us.
pub(crate) fn inbound_connect(wacid: &str, offer: &str) -> String {
    calls_value(json!({
        "id": wacid, "from": USER_WA_ID, "to": "15550783881", "event": "connect",
        "timestamp": "1764182400", "direction": "USER_INITIATED",
        "session": {"sdp_type": "offer", "sdp": offer}
    }))
}

/// WhatsApp's `connect` webhook carrying the callee's answer to our call.
pub(crate) fn outbound_connect(wacid: &str, answer: &str, callback: &str) -> String {
    calls_value(json!({
        "id": wacid, "from": "15550783881", "to": USER_WA_ID, "event": "connect",
        "timestamp": "1764182460", "direction": "BUSINESS_INITIATED",
        "biz_opaque_callback_data": callback,
        "session": {"sdp_type": "answer", "sdp": answer}
    }))
}

fn terminate(wacid: &str, direction: &str, duration: u64) -> String {
    calls_value(json!({
        "id": wacid, "from": USER_WA_ID, "to": "15550783881", "event": "terminate",
        "timestamp": "1764182520", "direction": direction, "status": "COMPLETED",
        "duration": duration
    }))
}

fn call_status(wacid: &str, status: &str, callback: &str) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "calls", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "statuses": [{"id": wacid, "timestamp": "1764182450", "type": "call", "status": status,
                          "recipient_id": USER_WA_ID, "biz_opaque_callback_data": callback}]
        }}]}]
    })
    .to_string()
}

pub(crate) fn payload(i: usize) -> Vec<u8> {
    let mut p = vec![0xfc, (i % 256) as u8];
    p.extend(std::iter::repeat_n(0x42, 60));
    p
}

/// Waits until the fake Graph API has seen `action` for `wacid`; returns its body.
pub(crate) async fn graph_saw(app: &TestApp, action: &str, key: &str, value: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(request) = app
            .graph
            .requests()
            .into_iter()
            .find(|r| r.action == action && r.body[key] == value)
        {
            return request.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {action} with {key}={value}: {:?}",
            app.graph.actions()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

/// A user calls; the bridge answers through the Graph API; returns the peer, connected.
pub(crate) async fn answered_inbound_call(app: &TestApp, wacid: &str) -> UdpPeer {
    let peer = UdpPeer::start().await;
    let offer = peer.offer().await;
    assert_eq!(
        app.post_webhook(&inbound_connect(wacid, &offer))
            .await
            .status(),
        200
    );
    let pre_accept = graph_saw(app, "pre_accept", "call_id", wacid).await;
    let accept = graph_saw(app, "accept", "call_id", wacid).await;
    let answer = accept["session"]["sdp"].as_str().expect("answer sdp");
    assert_eq!(
        pre_accept["session"]["sdp"], accept["session"]["sdp"],
        "the same answer twice"
    );
    assert_eq!(accept["session"]["sdp_type"], "answer");
    assert!(answer.contains("a=setup:active"), "{answer}");
    assert!(
        answer.contains(&format!(
            "{} {} typ host",
            app.media_addr.ip(),
            app.media_addr.port()
        )),
        "{answer}"
    );
    peer.accept_answer(answer).await.expect("answer applies");
    peer.wait_for(Duration::from_secs(10), |o| o.connected)
        .await;
    peer
}

#[tokio::test]
async fn an_inbound_call_is_answered_and_the_caller_hears_their_own_audio() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[])).await;
    let wacid = "wacid.E2E.INBOUND";
    let peer = answered_inbound_call(&app, wacid).await;

    // The order WhatsApp needs: pre_accept, then accept, nothing else yet.
    assert_eq!(app.graph.actions(), ["pre_accept", "accept"]);
    let call = app
        .call_when(wacid, |c| c.state.as_str() == "answered")
        .await;
    assert_eq!(call.direction.as_str(), "inbound");

    peer.talk(50, payload).await;
    let heard = peer
        .wait_for(Duration::from_secs(5), |o| {
            o.received.iter().filter(|p| p.0 == 111).count() >= 50
        })
        .await;
    let echoed: Vec<Vec<u8>> = heard
        .received
        .iter()
        .filter(|p| p.0 == 111)
        .map(|p| p.2.clone())
        .collect();
    assert_eq!(
        echoed[..50],
        (0..50).map(payload).collect::<Vec<_>>()[..],
        "every packet, in order, unchanged"
    );

    peer.press('7', 16_000).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let events = app.store.call_events(&call.id).await.expect("events");
        if events
            .iter()
            .any(|e| e.kind == "dtmf" && e.data["key"] == "7")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no DTMF recorded: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !peer.observed().received.iter().any(|p| p.0 == 126),
        "key presses are not echoed as audio"
    );

    // The caller hangs up.
    assert_eq!(
        app.post_webhook(&terminate(wacid, "USER_INITIATED", 4))
            .await
            .status(),
        200
    );
    let ended = app.call_when(wacid, |c| c.state.is_ended()).await;
    assert_eq!(ended.end_reason.as_deref(), Some("completed"));
    assert_eq!(ended.duration_secs, Some(4));
    peer.wait_for(Duration::from_secs(5), |o| o.closed).await;
    assert!(
        !app.graph.actions().contains(&"terminate".to_owned()),
        "WhatsApp ended it; we do not terminate again"
    );

    let metrics = app.metrics.render();
    assert!(metrics.contains(r#"whatsapp_bridge_calls_total{channel="whatsapp",direction="inbound",outcome="completed"} 1"#), "{metrics}");
    assert!(
        metrics.contains(
            "whatsapp_bridge_call_setup_seconds_count{channel=\"whatsapp\",stage=\"pre_accept\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("whatsapp_bridge_call_setup_seconds_count{channel=\"whatsapp\",stage=\"first_media\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("whatsapp_bridge_call_dtmf_total 1"),
        "{metrics}"
    );
    // The media thread timed its wake-ups while it carried the call.
    let wake_ups = metric(&metrics, "whatsapp_bridge_media_loop_busy_seconds_count");
    assert!(
        wake_ups >= 50.0,
        "{wake_ups} wake-ups timed for a call of 50 packets each way"
    );
    assert!(
        metrics.contains("whatsapp_bridge_active_calls 0"),
        "{metrics}"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn when_whatsapp_closes_the_media_first_we_do_not_terminate_and_its_webhook_completes_the_record(
) {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[])).await;
    let wacid = "wacid.E2E.MEDIA_CLOSED_FIRST";
    let peer = answered_inbound_call(&app, wacid).await;
    app.call_when(wacid, |c| c.state.as_str() == "answered")
        .await;

    // WhatsApp's side closes DTLS before its terminate webhook has been handled.
    peer.close();
    let ended = app.call_when(wacid, |c| c.state.is_ended()).await;
    assert_eq!(ended.end_reason.as_deref(), Some("completed"));
    assert_eq!(
        app.post_webhook(&terminate(wacid, "USER_INITIATED", 9))
            .await
            .status(),
        200
    );
    let recorded = app.call_when(wacid, |c| c.duration_secs == Some(9)).await;
    assert_eq!(recorded.end_reason.as_deref(), Some("completed"));
    assert_eq!(
        app.graph.actions(),
        ["pre_accept", "accept"],
        "the call was already over at WhatsApp: no terminate from us"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_redelivered_connect_does_not_answer_the_call_twice() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[])).await;
    let peer = UdpPeer::start().await;
    let offer = peer.offer().await;
    let body = inbound_connect("wacid.E2E.TWICE", &offer);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    graph_saw(&app, "accept", "call_id", "wacid.E2E.TWICE").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.graph.actions(), ["pre_accept", "accept"]);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn at_capacity_a_new_call_is_rejected_and_the_first_keeps_its_audio() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[("MAX_CONCURRENT_CALLS", "1")])).await;
    let first = answered_inbound_call(&app, "wacid.E2E.FIRST").await;

    let second = UdpPeer::start().await;
    let offer = second.offer().await;
    assert_eq!(
        app.post_webhook(&inbound_connect("wacid.E2E.SECOND", &offer))
            .await
            .status(),
        200
    );
    graph_saw(&app, "reject", "call_id", "wacid.E2E.SECOND").await;
    let refused = app
        .call_when("wacid.E2E.SECOND", |c| c.state.is_ended())
        .await;
    assert_eq!(refused.end_reason.as_deref(), Some("refused"));
    assert!(!app
        .graph
        .requests()
        .iter()
        .any(|r| r.action == "pre_accept" && r.body["call_id"] == "wacid.E2E.SECOND"));

    first.talk(25, payload).await;
    first
        .wait_for(Duration::from_secs(5), |o| {
            o.received.iter().filter(|p| p.0 == 111).count() >= 25
        })
        .await;
    let metrics = app.metrics.render();
    assert!(metrics.contains(r#"outcome="refused"} 1"#), "{metrics}");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_call_whose_offer_is_broken_or_whose_pre_accept_fails_is_rejected() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[])).await;
    // Meta's documentation placeholder where the SDP goes.
    let body = inbound_connect("wacid.E2E.BROKEN", "<<RFC 8866 SDP>>");
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    graph_saw(&app, "reject", "call_id", "wacid.E2E.BROKEN").await;

    app.graph.script(
        "pre_accept",
        [Reply::Error {
            status: 400,
            code: 138_007,
            details: "connect timeout",
        }],
    );
    let peer = UdpPeer::start().await;
    let offer = peer.offer().await;
    assert_eq!(
        app.post_webhook(&inbound_connect("wacid.E2E.PREFAIL", &offer))
            .await
            .status(),
        200
    );
    graph_saw(&app, "reject", "call_id", "wacid.E2E.PREFAIL").await;
    let call = app
        .call_when("wacid.E2E.PREFAIL", |c| c.state.is_ended())
        .await;
    assert_eq!(call.end_reason.as_deref(), Some("refused"));
    assert!(
        !app.graph.requests().iter().any(|r| r.action == "accept"),
        "never accepted"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_outbound_call_rings_is_answered_has_audio_and_is_hung_up_from_the_api() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[])).await;
    let response = admin(
        &app,
        reqwest::Method::POST,
        "/api/calls",
        Some(json!({"to": format!("+{USER_WA_ID}"), "purpose": "reminder: water the plants"})),
    )
    .await;
    assert_eq!(response.status(), 202);
    let placed: Value = response.json().await.expect("json");
    let call_id = placed["call_id"].as_str().expect("call id").to_owned();
    assert_eq!(placed["state"], "dialing");

    let connect = graph_saw(&app, "connect", "to", USER_WA_ID).await;
    assert_eq!(connect["biz_opaque_callback_data"], call_id.as_str());
    assert_eq!(connect["session"]["sdp_type"], "offer");
    let offer = connect["session"]["sdp"].as_str().expect("offer");
    assert!(offer.contains("a=setup:actpass"), "{offer}");
    let wacid = placed["wa_call_id"]
        .as_str()
        .expect("WhatsApp call id")
        .to_owned();

    // The phone rings; nothing is sent into the ringing void.
    assert_eq!(
        app.post_webhook(&call_status(&wacid, "RINGING", &call_id))
            .await
            .status(),
        200
    );
    app.call_when(&wacid, |c| c.state.as_str() == "ringing")
        .await;

    // The callee picks up: WhatsApp sends their answer.
    let callee = UdpPeer::start().await;
    let answer = callee.answer(offer).await.expect("callee answers");
    assert_eq!(
        app.post_webhook(&outbound_connect(&wacid, &answer, &call_id))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_webhook(&call_status(&wacid, "ACCEPTED", &call_id))
            .await
            .status(),
        200
    );
    callee
        .wait_for(Duration::from_secs(10), |o| o.connected)
        .await;
    app.call_when(&wacid, |c| c.state.as_str() == "answered")
        .await;
    callee.talk(25, payload).await;
    callee
        .wait_for(Duration::from_secs(5), |o| {
            o.received.iter().filter(|p| p.0 == 111).count() >= 25
        })
        .await;

    let shown: Value = admin(
        &app,
        reqwest::Method::GET,
        &format!("/api/calls/{call_id}"),
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(shown["call"]["state"], "answered");
    assert_eq!(shown["call"]["purpose"], "reminder: water the plants");
    let listed: Value = admin(
        &app,
        reqwest::Method::GET,
        &format!("/api/calls?user={USER_WA_ID}&direction=outbound"),
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(listed["calls"][0]["id"], call_id.as_str());

    let hung_up = admin(
        &app,
        reqwest::Method::POST,
        &format!("/api/calls/{call_id}/hangup"),
        None,
    )
    .await;
    assert_eq!(hung_up.status(), 200);
    let hung_up: Value = hung_up.json().await.expect("json");
    assert_eq!(hung_up["state"], "ended");
    assert_eq!(hung_up["end_reason"], "hung_up");
    graph_saw(&app, "terminate", "call_id", &wacid).await;
    callee.wait_for(Duration::from_secs(5), |o| o.closed).await;
    let again = admin(
        &app,
        reqwest::Method::POST,
        &format!("/api/calls/{call_id}/hangup"),
        None,
    )
    .await;
    assert_eq!(again.status(), 409);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_callee_rejecting_ends_the_outbound_call() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[])).await;
    let placed: Value = admin(
        &app,
        reqwest::Method::POST,
        "/api/calls",
        Some(json!({"to": USER_WA_ID})),
    )
    .await
    .json()
    .await
    .expect("json");
    let call_id = placed["call_id"].as_str().expect("id");
    let wacid = placed["wa_call_id"].as_str().expect("wacid");
    assert_eq!(
        app.post_webhook(&call_status(wacid, "REJECTED", call_id))
            .await
            .status(),
        200
    );
    let call = app.call_when(wacid, |c| c.state.is_ended()).await;
    assert_eq!(call.end_reason.as_deref(), Some("rejected"));
    assert!(!app.graph.actions().contains(&"terminate".to_owned()));
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn whatsapps_refusals_become_clear_api_errors() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[])).await;
    app.graph.script(
        "connect",
        [
            Reply::Error {
                status: 400,
                code: 138_006,
                details: "no permission",
            },
            Reply::Error {
                status: 400,
                code: 138_012,
                details: "next allowed 2026-11-27T09:00:00Z",
            },
        ],
    );
    let place = || {
        admin(
            &app,
            reqwest::Method::POST,
            "/api/calls",
            Some(json!({"to": USER_WA_ID})),
        )
    };
    let no_permission = place().await;
    assert_eq!(no_permission.status(), 409);
    let body: Value = no_permission.json().await.expect("json");
    assert_eq!(body["error"]["code"], "no_call_permission");
    let limit = place().await;
    assert_eq!(limit.status(), 429);
    let body: Value = limit.json().await.expect("json");
    assert_eq!(body["error"]["code"], "daily_call_limit");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("2026-11-27"));

    let listed: Value = admin(&app, reqwest::Method::GET, "/api/calls", None)
        .await
        .json()
        .await
        .expect("json");
    let calls = listed["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 2);
    assert!(calls
        .iter()
        .all(|c| c["state"] == "ended" && c["end_reason"] == "failed"));
    assert!(calls.iter().any(|c| c["error_code"] == 138_006));

    for (body, code) in [
        (json!({"to": "not a number"}), "invalid_phone_number"),
        (json!({"purpose": "no recipient"}), "bad_json"),
    ] {
        let response = admin(&app, reqwest::Method::POST, "/api/calls", Some(body)).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], code);
    }
    let garbage = app
        .client
        .post(app.url("/api/calls"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("request");
    assert_eq!(garbage.status(), 400);
    assert_eq!(
        admin(
            &app,
            reqwest::Method::GET,
            "/api/calls/does-not-exist",
            None
        )
        .await
        .status(),
        404
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_is_off_without_one() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[])).await;
    let anonymous = app
        .client
        .get(app.url("/api/calls"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous
            .headers()
            .get("www-authenticate")
            .expect("challenge"),
        "Bearer"
    );
    let wrong = app
        .client
        .get(app.url("/api/calls"))
        .bearer_auth("guess")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
    app.stop().await.expect("clean stop");

    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let off = app
        .client
        .post(app.url("/api/calls"))
        .bearer_auth("anything")
        .json(&json!({"to": USER_WA_ID}))
        .send()
        .await
        .expect("request");
    assert_eq!(off.status(), 404);
    let body: Value = off.json().await.expect("json");
    assert_eq!(body["error"]["code"], "admin_api_disabled");
    assert!(app.graph.actions().is_empty(), "no call was placed");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_ends_active_calls_politely() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[])).await;
    let peer = answered_inbound_call(&app, "wacid.E2E.SHUTDOWN").await;
    let graph = app.graph.clone();
    let store = db.store().await;
    app.stop().await.expect("clean stop");
    assert!(
        graph.actions().contains(&"terminate".to_owned()),
        "WhatsApp is told: {:?}",
        graph.actions()
    );
    peer.wait_for(Duration::from_secs(5), |o| o.closed).await;
    let call = store
        .call_by_wa_id(&whatsapp_bridge::domain::WaCallId::parse("wacid.E2E.SHUTDOWN").expect("id"))
        .await
        .expect("query")
        .expect("call");
    assert_eq!(call.end_reason.as_deref(), Some("hung_up"));
}

#[tokio::test]
async fn the_cli_places_a_call_through_the_admin_api() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[])).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_whatsapp-bridge"))
        .args([
            "call",
            "--to",
            USER_WA_ID,
            "--purpose",
            "from the CLI",
            "--url",
            &app.url(""),
        ])
        .env_clear()
        .env("ADMIN_TOKEN", TOKEN)
        .env("LOG_FORMAT", "json")
        .output()
        .await
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let placed: Value = serde_json::from_str(stdout.trim()).expect("the CLI prints the API's JSON");
    assert_eq!(placed["state"], "dialing");
    graph_saw(&app, "connect", "to", USER_WA_ID).await;
    app.stop().await.expect("clean stop");
}

/// The interpreter with aiortc installed (scripts/test.sh exports it).
fn aiortc_python() -> String {
    let python = std::env::var("AIORTC_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv-peers/bin/python").to_owned()
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} does not exist: the interop test needs aiortc. Run scripts/test.sh (it installs \
         tests/peers/requirements.txt into .venv-peers), or set AIORTC_PYTHON."
    );
    python
}

/// An independent WebRTC stack (aiortc: its own ICE, DTLS, SRTP, and libopus through PyAV)
/// calls in, sends a 440 Hz tone, and must hear it back through the echo agent. The engine
/// does the SRTP of the audio itself, both ways (the fast paths, on by default): aiortc's SRTP
/// (libsrtp) is the independent check of our key taking, decryption and encryption (aiortc
/// decodes what we sent and finds its tone in it).
#[tokio::test]
async fn an_aiortc_caller_hears_its_tone_back_through_the_echo_agent() {
    let metrics = aiortc_echo_call(&[], &[]).await;
    assert_every_packet_took_the_fast_paths(&metrics);
}

/// The same with str0m carrying the audio (the fast paths off): the reference the fast paths
/// must look like on the wire.
#[tokio::test]
async fn with_the_fast_paths_off_an_aiortc_caller_hears_its_tone_back_through_str0m() {
    let metrics = aiortc_echo_call(
        &[("RTC_FAST_RECEIVE", "false"), ("RTC_FAST_SEND", "false")],
        &[],
    )
    .await;
    for direction in ["in", "out"] {
        let name = format!("whatsapp_bridge_media_packets_fast_total{{direction=\"{direction}\"}}");
        assert_eq!(metric(&metrics, &name), 0.0, "str0m's paths when asked");
    }
}

/// The same on the other SRTP profile DTLS can settle on: the caller agrees only to AES-128
/// in counter mode with HMAC-SHA1 (libsrtp), so the call connects on that profile or not at
/// all, and our counter-mode encryption and tags must be what libsrtp expects.
#[tokio::test]
async fn with_the_fast_paths_on_aes_cm_an_aiortc_caller_hears_its_tone_back() {
    let metrics = aiortc_echo_call(&[], &["--srtp", "aes-cm"]).await;
    assert_every_packet_took_the_fast_paths(&metrics);
}

fn assert_every_packet_took_the_fast_paths(metrics: &str) {
    for direction in ["in", "out"] {
        let all = metric(
            metrics,
            &format!("whatsapp_bridge_media_packets_total{{direction=\"{direction}\"}}"),
        );
        let fast = metric(
            metrics,
            &format!("whatsapp_bridge_media_packets_fast_total{{direction=\"{direction}\"}}"),
        );
        assert!(all >= 100.0, "{direction}: {metrics}");
        assert_eq!(fast, all, "every {direction} packet took the fast path");
    }
}

/// A metric's value in a Prometheus text page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

/// The aiortc caller's call, with `env` on the bridge and `caller_args` for the caller's
/// script: returns `/metrics` after it ended.
async fn aiortc_echo_call(env: &[(&'static str, &str)], caller_args: &[&str]) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(env)).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/peers/aiortc_caller.py"
    );
    let mut child = tokio::process::Command::new(aiortc_python())
        // Long enough for a second round of RTCP reports (str0m sends audio's every 5 s).
        .args([script, "--seconds", "6.5", "--frequency", "440"])
        .args(caller_args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the aiortc caller");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    async fn next(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the aiortc caller answers in time")
            .expect("read")
            .expect("the aiortc caller stopped early");
        serde_json::from_str::<Value>(&line).expect("a JSON line")
    }

    let offer = next(&mut lines).await["offer"]
        .as_str()
        .expect("offer")
        .to_owned();
    assert!(!offer.contains("a=ice-lite"), "aiortc is a full ICE agent");
    let wacid = "wacid.E2E.AIORTC";
    assert_eq!(
        app.post_webhook(&inbound_connect(wacid, &offer))
            .await
            .status(),
        200
    );
    let accept = graph_saw(&app, "accept", "call_id", wacid).await;
    let answer = json!({"answer": accept["session"]["sdp"]}).to_string() + "\n";
    stdin
        .write_all(answer.as_bytes())
        .await
        .expect("send the answer");
    stdin.flush().await.expect("flush");
    assert_eq!(next(&mut lines).await["connected"], true);

    let result = next(&mut lines).await["result"].clone();
    let frames = result["frames"].as_u64().expect("frames");
    let rms = result["rms"].as_f64().expect("rms");
    let frequency = result["frequency"].as_f64().expect("frequency");
    assert!(
        frames >= 100,
        "aiortc decoded {frames} frames of our audio: {result}"
    );
    assert!(rms > 1000.0, "the echo is audible: {result}");
    assert!(
        (400.0..480.0).contains(&frequency),
        "the echo is the 440 Hz tone: {result}"
    );
    // aiortc believes our reports, on every path (the fast paths correct str0m's, which never
    // saw the audio): the echo we sent, the tone we heard with nothing lost on loopback, and
    // the round trip, which aiortc works out only when our report echoes its sender report.
    let told_sent = result["remote_outbound"]["packets_sent"]
        .as_u64()
        .expect("our sender reports reached aiortc");
    assert!(
        (100..=frames + 50).contains(&told_sent),
        "we said we sent {told_sent} packets; aiortc decoded {frames}: {result}"
    );
    let heard = &result["remote_inbound"];
    assert_eq!(heard["packets_lost"], 0, "{result}");
    let rtt = heard["round_trip_time"]
        .as_f64()
        .expect("a round trip from our receiver reports");
    assert!((0.0..0.5).contains(&rtt), "loopback round trip: {result}");
    let _ = child.wait().await;

    assert_eq!(
        app.post_webhook(&terminate(wacid, "USER_INITIATED", 3))
            .await
            .status(),
        200
    );
    let ended = app.call_when(wacid, |c| c.state.is_ended()).await;
    assert_eq!(ended.end_reason.as_deref(), Some("completed"));
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    app.stop().await.expect("clean stop");
    metrics
}

/// The scheduling policy of this process's thread named `name` (stat(5) field 41: 0 normal,
/// 1 SCHED_FIFO).
fn thread_policy(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() != name {
            return None;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let (_, after_name) = stat.rsplit_once(')')?;
        // `after_name` starts at field 3.
        after_name.split_whitespace().nth(41 - 3)?.parse().ok()
    })
}

#[tokio::test]
async fn with_realtime_priority_the_media_thread_is_fifo_when_the_system_allows_it() {
    // Whether this machine grants real-time scheduling (CAP_SYS_NICE), asked the same way.
    let allowed = std::thread::spawn(|| {
        use thread_priority::*;
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Crossplatform(ThreadPriorityValue::try_from(10u8).expect("value")),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .is_ok()
    })
    .join()
    .expect("probe thread");

    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, calls_env(&[("RTC_REALTIME_PRIORITY", "true")])).await;
    let wacid = "wacid.E2E.REALTIME";
    let peer = answered_inbound_call(&app, wacid).await;
    assert_eq!(
        thread_policy("media"),
        Some(u32::from(allowed)),
        "SCHED_FIFO exactly when the system allows it (allowed: {allowed})"
    );
    // Calls work either way.
    peer.talk(10, payload).await;
    peer.wait_for(Duration::from_secs(5), |o| {
        o.received.iter().filter(|p| p.0 == 111).count() >= 10
    })
    .await;
    app.stop().await.expect("clean stop");
}
