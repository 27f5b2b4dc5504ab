//! The browser test phone: its page, its signalling API, the live call feed, and real calls
//! from headless Chromium through the same engine, agents, tools and store as WhatsApp calls.

use std::time::Duration;

use fakes::realtime_peer::Script;
use reqwest::Method;
use serde_json::{json, Value};

use crate::browser::{Browser, Mic};
use crate::calls::{admin, answered_inbound_call, TOKEN};
use crate::helpers::*;
use crate::voice::{fake_model, tool_call};

/// What a service with no WhatsApp and no AI configuration looks like (a first run).
const NOTHING_CONFIGURED: [&str; 4] = [
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
];

async fn phone_app(db: &TestDb, env: &[(&'static str, &str)]) -> TestApp {
    let mut all = vec![
        ("ADMIN_TOKEN", TOKEN.to_owned()),
        ("ECHO_DELAY_MS", "100".to_owned()),
    ];
    all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    spawn_app_with(
        db,
        Options {
            env: all,
            unset: NOTHING_CONFIGURED.to_vec(),
            ..Options::default()
        },
    )
    .await
}

async fn list_calls(app: &TestApp) -> Value {
    admin(app, Method::GET, "/api/calls", None)
        .await
        .json()
        .await
        .expect("json")
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json error");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn the_page_is_served_when_there_is_a_token_and_says_how_to_turn_it_on_when_not() {
    let db = TestDb::sqlite();
    let off = spawn_app_with(
        &db,
        Options {
            unset: vec!["ADMIN_TOKEN"],
            ..Options::default()
        },
    )
    .await;
    let response = off.get("/phone").await;
    assert_eq!(response.status(), 404);
    let body = response.text().await.expect("body");
    assert!(body.contains("ADMIN_TOKEN"), "{body}");
    off.stop().await.expect("stops");

    let db = TestDb::sqlite();
    let app = phone_app(&db, &[]).await;
    let response = app.get("/phone").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(headers["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let page = response.text().await.expect("page");
    for id in [
        "call",
        "hangup",
        "token",
        "user",
        "state",
        "feed",
        "mic-level",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
    // Self-contained: nothing is loaded from elsewhere.
    assert!(!page.contains("src=\"http"), "an external resource");
    app.stop().await.expect("stops");
}

#[tokio::test]
async fn bad_phone_call_requests_get_clear_errors_and_place_nothing() {
    let db = TestDb::sqlite();
    let app = phone_app(&db, &[]).await;
    let url = app.url("/api/phone/calls");
    let offer = json!({"user": "15550001234", "sdp": "v=0\r\n"});

    let response = app
        .client
        .post(&url)
        .json(&offer)
        .send()
        .await
        .expect("post");
    assert_eq!(error_code(response).await, (401, "unauthorized".into()));
    let response = app
        .client
        .post(&url)
        .bearer_auth("not-the-token")
        .json(&offer)
        .send()
        .await
        .expect("post");
    assert_eq!(error_code(response).await, (401, "unauthorized".into()));

    let response = app
        .client
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"sdp\": ")
        .send()
        .await
        .expect("post");
    assert_eq!(error_code(response).await, (400, "bad_json".into()));

    let cases = [
        (json!({"sdp": "hello"}), "bad_sdp"),
        (
            json!({"user": "12ab", "sdp": "v=0\r\n"}),
            "invalid_phone_number",
        ),
        (json!({"user": "15550001234"}), "bad_json"),
    ];
    for (body, code) in cases {
        let response = admin(&app, Method::POST, "/api/phone/calls", Some(body.clone())).await;
        assert_eq!(error_code(response).await, (400, code.into()), "{body}");
    }
    let calls: Value = list_calls(&app).await;
    assert_eq!(calls["calls"], json!([]), "nothing was placed");

    // SDP that is not an offer we can answer: refused, and the refusal is on record.
    let broken = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n";
    let response = admin(
        &app,
        Method::POST,
        "/api/phone/calls",
        Some(json!({"sdp": broken})),
    )
    .await;
    assert_eq!(error_code(response).await, (400, "bad_sdp".into()));
    let calls: Value = list_calls(&app).await;
    let call = &calls["calls"][0];
    assert_eq!(call["channel"], "test_phone");
    assert_eq!(call["state"], "ended");
    assert_eq!(call["end_reason"], "refused");
    assert_eq!(app.metrics.active_calls.get(), 0);

    let response = admin(&app, Method::GET, "/api/calls/nope/events", None).await;
    assert_eq!(response.status(), 404);
    app.stop().await.expect("stops");
}

/// Reads Server-Sent Events from `response` until `end` (or 20 s): (event, data) pairs.
async fn read_sse(mut response: reqwest::Response) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no end event within 20 s: {events:?}"))
            .expect("stream");
        let Some(chunk) = chunk else {
            return events;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(at) = buffer.find("\n\n") {
            let block: String = buffer.drain(..at + 2).collect();
            let mut name = "message".to_owned();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            let value: Value = serde_json::from_str(&data).expect("event data is JSON");
            let end = name == "end";
            events.push((name, value));
            if end {
                return events;
            }
        }
    }
}

/// A WhatsApp call answered by the echo agent, and its live feed opened (200, not yet read).
async fn whatsapp_call_with_feed(
    db: &TestDb,
    wacid: &str,
) -> (
    TestApp,
    fakes::whatsapp_peer::UdpPeer,
    whatsapp_bridge::store::CallRecord,
    reqwest::Response,
) {
    let app = spawn_app_with(
        db,
        Options {
            env: vec![
                ("ADMIN_TOKEN", TOKEN.to_owned()),
                ("VOICE_AGENT", "echo".to_owned()),
            ],
            ..Options::default()
        },
    )
    .await;
    let peer = answered_inbound_call(&app, wacid).await;
    let call = app
        .call_when(wacid, |c| c.state.as_str() == "answered")
        .await;
    let response = admin(
        &app,
        Method::GET,
        &format!("/api/calls/{}/events", call.id),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    (app, peer, call, response)
}

#[tokio::test]
async fn the_live_feed_follows_any_call_a_whatsapp_one_too_to_its_end() {
    let db = TestDb::sqlite();
    let (app, peer, call, response) = whatsapp_call_with_feed(&db, "wacid.feed").await;
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/event-stream"));
    let reading = tokio::spawn(read_sse(response));
    peer.talk(5, crate::calls::payload).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hangup = admin(
        &app,
        Method::POST,
        &format!("/api/calls/{}/hangup", call.id),
        None,
    )
    .await;
    assert_eq!(hangup.status(), 200);
    let events = reading.await.expect("reader");
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"state"), "{events:?}");
    assert_eq!(events[0].1["state"], "answered");
    let ended_state = events
        .iter()
        .find(|(n, d)| n == "state" && d["state"] == "ended")
        .unwrap_or_else(|| panic!("no ended state: {events:?}"));
    assert_eq!(ended_state.1["end_reason"], "hung_up");
    let ended = events
        .iter()
        .find(|(n, _)| n == "ended")
        .unwrap_or_else(|| panic!("no ended entry: {events:?}"));
    assert_eq!(ended.1["reason"], "hung_up");
    assert!(ended.1["packets_in"].as_u64().unwrap_or(0) >= 5);
    assert_eq!(names.last(), Some(&"end"));

    // Afterwards the same stream replays the call's record and log, then ends at once.
    let response = admin(
        &app,
        Method::GET,
        &format!("/api/calls/{}/events", call.id),
        None,
    )
    .await;
    let replay = read_sse(response).await;
    assert_eq!(replay[0].1["state"], "ended");
    assert!(replay.iter().any(|(n, _)| n == "ended"), "{replay:?}");
    assert_eq!(replay.last().map(|(n, _)| n.as_str()), Some("end"));
    app.stop().await.expect("stops");
}

/// Opens the page with the token in its fragment and presses Call; waits until the call's
/// audio is connected. Returns the call id.
async fn call_from(browser: &Browser, app: &TestApp, token: &str) -> String {
    browser
        .open(&app.url(&format!("/phone#token={token}")))
        .await;
    browser.click("call").await;
    browser.wait_text("state", |s| s == "in call").await;
    browser
        .js("return window.phone.callId;")
        .await
        .as_str()
        .expect("call id")
        .to_owned()
}

async fn call_record(app: &TestApp, id: &str) -> Value {
    admin(app, Method::GET, &format!("/api/calls/{id}"), None)
        .await
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn a_browser_hears_itself_through_the_echo_agent_on_a_service_with_no_whatsapp_and_no_ai_keys(
) {
    let db = TestDb::sqlite();
    let app = phone_app(&db, &[]).await;
    let health: Value = app.get("/health").await.json().await.expect("health");
    assert_eq!(
        health["checks"]["whatsapp_api"]["status"], "not_configured",
        "{health}"
    );
    assert_eq!(
        health["checks"]["ai"]["status"], "not_configured",
        "{health}"
    );

    let browser = Browser::start().await;
    browser
        .open(&app.url(&format!("/phone#token={TOKEN}")))
        .await;
    // The token moved from the URL into the tab's storage.
    let location = browser.js("return location.href;").await;
    assert!(
        !location.as_str().unwrap_or_default().contains(TOKEN),
        "{location}"
    );
    assert_eq!(
        browser
            .js("return document.getElementById('token').value;")
            .await,
        json!(TOKEN)
    );
    browser.click("call").await;
    browser.wait_text("state", |s| s == "in call").await;
    let id = browser
        .js("return window.phone.callId;")
        .await
        .as_str()
        .expect("call id")
        .to_owned();
    // The tone the fake microphone plays comes back, echoed.
    browser.hears(50).await;
    // libwebrtc reads our RTCP reports (corrected for the audio the bridge's fast paths
    // carried) as the truth: what we sent, nothing lost on loopback, and a round trip.
    let reports = browser.believes_our_reports().await;
    assert_eq!(reports["lost"], 0, "{reports}");
    assert!(reports["rtt"].as_f64().unwrap_or(1.0) < 0.5, "{reports}");
    let shown = call_record(&app, &id).await;
    assert_eq!(shown["call"]["channel"], "test_phone");
    assert_eq!(shown["call"]["state"], "answered");
    assert_eq!(shown["call"]["direction"], "inbound");
    let listed: Value = admin(&app, Method::GET, "/api/calls?user=15550001234", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["calls"][0]["id"], json!(id));
    browser.wait_text("feed", |f| f.contains("answered")).await;
    if let Ok(path) = std::env::var("TEST_PHONE_SCREENSHOT") {
        browser.screenshot(std::path::Path::new(&path)).await;
    }

    browser.click("hangup").await;
    browser.wait_text("state", |s| s.starts_with("ended")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let shown = call_record(&app, &id).await;
        if shown["call"]["state"] == "ended" {
            assert_eq!(shown["call"]["end_reason"], "hung_up");
            let ended = shown["events"]
                .as_array()
                .expect("events")
                .iter()
                .find(|e| e["kind"] == "ended")
                .cloned()
                .expect("an ended entry");
            assert!(
                ended["data"]["packets_in"].as_u64().unwrap_or(0) > 50,
                "{ended}"
            );
            assert!(
                ended["data"]["packets_out"].as_u64().unwrap_or(0) > 20,
                "{ended}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not ended: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains(
            "whatsapp_bridge_calls_total{channel=\"test_phone\",direction=\"inbound\",outcome=\"hung_up\"} 1"
        ),
        "{metrics}"
    );
    browser.close().await;
    app.stop().await.expect("stops");
}

/// Opens the page with `token` and presses Call, expecting no call: returns what the page
/// says, once it is back to idle.
async fn refused_call(browser: &Browser, app: &TestApp, token: &str) -> String {
    browser
        .open(&app.url(&format!("/phone#token={token}")))
        .await;
    browser.click("call").await;
    let message = browser.wait_text("message", |m| !m.is_empty()).await;
    assert_eq!(browser.text("state").await, "idle", "{message}");
    message
}

/// The same call from Firefox (its offer: Opus 109, telephone-event 101, its own fmtp).
#[tokio::test]
async fn firefox_hears_itself_through_the_echo_agent_too() {
    let db = TestDb::sqlite();
    let app = phone_app(&db, &[]).await;
    let browser = Browser::firefox().await;
    let id = call_from(&browser, &app, TOKEN).await;
    let (packets, _) = browser.hears(50).await;
    assert!(packets >= 50);
    // Firefox's WebRTC stack reads our reports too.
    let reports = browser.believes_our_reports().await;
    assert!(reports["rtt"].as_f64().unwrap_or(1.0) < 0.5, "{reports}");
    let answer = browser
        .js("return window.phone.pc.remoteDescription.sdp;")
        .await;
    let answer = answer.as_str().expect("answer");
    assert!(answer.contains("a=rtpmap:109 opus/48000/2"), "{answer}");
    assert!(answer.contains("a=setup:passive"), "{answer}");
    browser.click("hangup").await;
    browser.wait_text("state", |s| s.starts_with("ended")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while call_record(&app, &id).await["call"]["state"] != "ended" {
        assert!(tokio::time::Instant::now() < deadline, "not ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.close().await;
    app.stop().await.expect("stops");
}

#[tokio::test]
async fn a_wrong_token_places_no_call_and_the_page_says_why() {
    let db = TestDb::sqlite();
    let app = phone_app(&db, &[]).await;
    let browser = Browser::start().await;
    let message = refused_call(&browser, &app, "wrong-token").await;
    assert!(message.contains("token is wrong"), "{message}");
    let calls: Value = list_calls(&app).await;
    assert_eq!(calls["calls"], json!([]));
    browser.close().await;
    app.stop().await.expect("stops");
}

#[tokio::test]
async fn a_refused_microphone_places_no_call_and_the_page_says_what_to_do() {
    let db = TestDb::sqlite();
    let app = phone_app(&db, &[]).await;
    let browser = Browser::start_with(Mic::Refused).await;
    let message = refused_call(&browser, &app, TOKEN).await;
    assert!(message.contains("microphone was refused"), "{message}");
    let calls: Value = list_calls(&app).await;
    assert_eq!(calls["calls"], json!([]));
    browser.close().await;
    app.stop().await.expect("stops");
}

#[tokio::test]
async fn at_capacity_a_second_page_is_refused_while_the_first_call_keeps_its_audio() {
    let db = TestDb::sqlite();
    let app = phone_app(&db, &[("MAX_CONCURRENT_CALLS", "1")]).await;
    let first = Browser::start().await;
    let second = Browser::start().await;
    let id = call_from(&first, &app, TOKEN).await;
    let (before, _) = first.hears(25).await;

    let message = refused_call(&second, &app, TOKEN).await;
    assert!(message.contains("capacity"), "{message}");

    // The first call goes on, with its audio.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after, _) = first.inbound_audio().await;
    assert!(after >= before + 25, "audio stopped: {before} then {after}");
    assert_eq!(first.text("state").await, "in call");
    let calls: Value = list_calls(&app).await;
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(1), "{calls}");
    assert_eq!(calls["calls"][0]["id"], json!(id));
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("channel=\"test_phone\",direction=\"inbound\",outcome=\"refused\"} 1"),
        "{metrics}"
    );
    first.close().await;
    second.close().await;
    app.stop().await.expect("stops");
}

#[tokio::test]
async fn a_test_phone_call_reaches_the_model_and_the_page_shows_its_transcript_and_tool_calls() {
    let db = TestDb::sqlite();
    let (realtime, peers) = fake_model(Script {
        on_caller_audio: vec![
            json!({"type": "conversation.item.input_audio_transcription.completed",
                   "item_id": "item_u1", "content_index": 0,
                   "transcript": "Add water the plants to my tasks."}),
            tool_call("call_1", "add_task", r#"{"title":"Water the plants"}"#),
        ],
        ..Script::default()
    })
    .await;
    let app = phone_app(
        &db,
        &[
            ("VOICE_AGENT", "realtime"),
            ("OPENAI_API_KEY", fakes::realtime::API_KEY),
            ("OPENAI_BASE_URL", &realtime.openai_base_url()),
            ("REALTIME_OPEN_TIMEOUT_SECS", "5"),
        ],
    )
    .await;
    let browser = Browser::start().await;
    browser
        .open(&app.url(&format!("/phone#token={TOKEN}")))
        .await;
    browser
        .js("document.getElementById('user').value = '15550009876';")
        .await;
    browser.click("call").await;
    browser.wait_text("state", |s| s == "in call").await;
    let model = peers.nth(0, Duration::from_secs(15)).await;
    // The model heard the browser's microphone, and the browser hears the model.
    model
        .wait_for(Duration::from_secs(15), |o| o.audio_in.len() > 10)
        .await;
    browser.hears(5).await;
    let feed = browser
        .wait_text("feed", |f| {
            f.contains("Add water the plants to my tasks.")
                && f.contains("Hello, this is Ziggy.")
                && f.contains("add_task")
                && f.contains("→")
        })
        .await;
    assert!(feed.contains("Water the plants"), "{feed}");
    if let Ok(path) = std::env::var("TEST_PHONE_SCREENSHOT_MODEL") {
        browser.screenshot(std::path::Path::new(&path)).await;
    }
    // The tool acted for the user the page named.
    let user = app
        .store
        .user_by_wa_id(&whatsapp_bridge::domain::WaId::parse("15550009876").expect("id"))
        .await
        .expect("query")
        .expect("the user exists");
    let tasks = app
        .store
        .list_tasks(user.id, &whatsapp_bridge::store::TaskFilter::default())
        .await
        .expect("tasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].title, "Water the plants");

    browser.click("hangup").await;
    browser.wait_text("state", |s| s.starts_with("ended")).await;
    browser.close().await;
    app.stop().await.expect("stops");
}

#[tokio::test]
async fn an_open_live_feed_does_not_hold_up_shutdown() {
    let db = TestDb::sqlite();
    let (app, _peer, call, response) = whatsapp_call_with_feed(&db, "wacid.feed.shutdown").await;
    let reading = tokio::spawn(read_sse(response));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The shutdown deadline is 10 s: a stream that held the server open would take all of it.
    let started = std::time::Instant::now();
    app.stop().await.expect("stops");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    let events = reading.await.expect("reader");
    assert_eq!(
        events.last().map(|(n, _)| n.as_str()),
        Some("end"),
        "{events:?}"
    );
    let ended = app_call_state(&db, &call.id).await;
    assert_eq!(ended, "ended");
}

/// The call's state as stored, read after the app has stopped.
async fn app_call_state(db: &TestDb, id: &str) -> String {
    let store = db.store().await;
    store
        .call(id)
        .await
        .expect("query")
        .expect("the call")
        .state
        .as_str()
        .to_owned()
}
