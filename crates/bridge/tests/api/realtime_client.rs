//! The Realtime session client against a fake Realtime API, for both providers: request
//! shapes (paths, headers, GA body), answers and call ids, typed errors, the retry policy and
//! the circuit breaker.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};
use whatsapp_bridge::config::{AiProvider, Config, LoadOptions};
use whatsapp_bridge::realtime::persona::{Caller, Persona};
use whatsapp_bridge::realtime::{FunctionTool, RealtimeClient, RealtimeError, Session};
use whatsapp_bridge::telemetry::Metrics;

use fakes::realtime::{validate_ga_session, Auth, FakeRealtime, Step, API_KEY, CANNED_ANSWER};

const OFFER: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

fn config(pairs: &[(&str, &str)]) -> Config {
    let env = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    Config::load(&LoadOptions::default(), env).expect("valid config")
}

fn tools() -> Vec<FunctionTool> {
    vec![FunctionTool {
        name: "add_task".into(),
        description: "Add a task to the caller's list.".into(),
        parameters: json!({"type": "object", "properties": {"title": {"type": "string"}},
            "required": ["title"]}),
    }]
}

/// An OpenAI-shaped client against `fake`, and the session the configuration gives.
fn openai(fake: &FakeRealtime, key: &str) -> (RealtimeClient, Session, Metrics) {
    let config = config(&[
        ("OPENAI_API_KEY", key),
        ("OPENAI_BASE_URL", &fake.openai_base_url()),
    ]);
    let metrics = Metrics::new().expect("metrics");
    let client = RealtimeClient::from_config(&config.ai, metrics.clone())
        .expect("client")
        .expect("configured");
    let prompt = Persona::from_config(&config.assistant).for_call(
        Caller {
            name: Some("Ana"),
            time_zone: Some(chrono_tz::Europe::Berlin),
        },
        chrono::Utc::now(),
    );
    let session = Session::new(
        &config.ai,
        &config.realtime,
        prompt.instructions().to_owned(),
        &tools(),
    );
    (client, session, metrics)
}

fn counted(metrics: &Metrics, provider: &str, step: &str, outcome: &str) -> u64 {
    metrics
        .realtime_requests
        .with_label_values(&[provider, step, outcome])
        .get()
}

#[tokio::test]
async fn openai_sessions_are_created_with_a_ga_body_and_an_ephemeral_key() {
    let fake = FakeRealtime::start().await;
    let (client, session, metrics) = openai(&fake, API_KEY);

    let call = client.connect(&session, OFFER).await.expect("connected");

    assert_eq!(call.answer_sdp, CANNED_ANSWER);
    let call_id = call.call_id.expect("call id from Location");
    assert!(call_id.starts_with("rtc_"), "{call_id}");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);

    let secret = &requests[0];
    assert_eq!(secret.path, "/v1/realtime/client_secrets");
    assert_eq!(secret.auth, Auth::BearerApiKey);
    assert_eq!(secret.header("authorization"), Some("Bearer <redacted>"));
    assert!(secret
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json")));
    assert_eq!(
        secret.header("openai-beta"),
        None,
        "GA needs no beta header"
    );
    let body = secret.body.as_ref().expect("JSON body");
    assert_eq!(
        body["expires_after"],
        json!({"anchor": "created_at", "seconds": 600})
    );
    let sent = secret.session.as_ref().expect("session");
    assert_eq!(sent, &session.to_value());
    assert_eq!(validate_ga_session(sent), Ok(()));
    assert_eq!(sent["model"], "gpt-realtime");
    assert!(sent["instructions"]
        .as_str()
        .is_some_and(|i| i.contains("\"Ana\"") && i.contains("Europe/Berlin")));

    let sdp = &requests[1];
    assert_eq!(sdp.path, "/v1/realtime/calls");
    assert!(
        matches!(&sdp.auth, Auth::EphemeralKey { expired: false, .. }),
        "{:?}",
        sdp.auth
    );
    assert_eq!(sdp.header("content-type"), Some("application/sdp"));
    assert_eq!(sdp.offer.as_deref(), Some(OFFER));
    assert_eq!(
        fake.session_for_call(&call_id).map(|s| s["model"].clone()),
        Some(json!("gpt-realtime")),
        "the peer can look the session up by call id"
    );

    assert_eq!(counted(&metrics, "openai", "client_secret", "ok"), 1);
    assert_eq!(counted(&metrics, "openai", "sdp_exchange", "ok"), 1);
}

#[tokio::test]
async fn azure_sessions_use_the_v1_paths_the_api_key_header_and_the_deployment() {
    let fake = FakeRealtime::start().await;
    let config = config(&[
        ("AZURE_OPENAI_API_KEY", API_KEY),
        ("AZURE_OPENAI_ENDPOINT", &fake.azure_endpoint()),
        ("AZURE_OPENAI_DEPLOYMENT", "my-gpt-realtime"),
        ("OPENAI_TRANSCRIBE_MODEL", "my-transcribe"),
    ]);
    let metrics = Metrics::new().expect("metrics");
    let client = RealtimeClient::from_config(&config.ai, metrics.clone())
        .expect("client")
        .expect("configured");
    let session = Session::new(&config.ai, &config.realtime, "Be brief.".into(), &tools());

    let key = client.create_session(&session).await.expect("key");
    assert!(key.session_id().is_some_and(|id| id.starts_with("sess_")));
    assert!(key.expires_at().is_some());
    let call = client.exchange_sdp(&key, OFFER).await.expect("answer");

    assert_eq!(call.answer_sdp, CANNED_ANSWER);
    assert!(call.call_id.is_some_and(|id| id.starts_with("rtc_")));
    let requests = fake.requests();
    assert_eq!(requests[0].path, "/openai/v1/realtime/client_secrets");
    assert_eq!(requests[0].query, None, "no api-version on the v1 surface");
    assert_eq!(requests[0].auth, Auth::ApiKeyHeader);
    assert_eq!(requests[0].header("authorization"), None);
    let sent = requests[0].session.as_ref().expect("session");
    assert_eq!(validate_ga_session(sent), Ok(()));
    assert_eq!(
        sent["model"], "my-gpt-realtime",
        "the model is the deployment"
    );
    assert_eq!(
        sent["audio"]["input"]["transcription"]["model"],
        "my-transcribe"
    );
    assert_eq!(requests[1].path, "/openai/v1/realtime/calls");
    assert!(matches!(requests[1].auth, Auth::EphemeralKey { .. }));
    assert_eq!(counted(&metrics, "azure", "sdp_exchange", "ok"), 1);
}

#[tokio::test]
async fn the_fake_refuses_a_beta_shaped_session_like_the_real_api() {
    let fake = FakeRealtime::start().await;
    // The Go precedent's body: flat beta names.
    let beta = json!({"session": {"type": "realtime", "model": "gpt-realtime",
        "modalities": ["audio", "text"], "voice": "shimmer",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "threshold": 0.5}}});

    let response = reqwest::Client::new()
        .post(format!(
            "{}/realtime/client_secrets",
            fake.openai_base_url()
        ))
        .bearer_auth(API_KEY)
        .json(&beta)
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "session.modalities");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("output_modalities")));
}

#[tokio::test]
async fn a_session_the_api_refuses_is_a_bad_request_and_not_retried() {
    let fake = FakeRealtime::start().await;
    let (client, mut session, metrics) = openai(&fake, API_KEY);
    session.tools = vec![whatsapp_bridge::realtime::session::Tool::Function(
        FunctionTool {
            name: "add task".into(),
            description: "spaces are not allowed in names".into(),
            parameters: json!({"type": "object"}),
        },
    )];

    let err = client.create_session(&session).await.expect_err("refused");

    let RealtimeError::BadRequest { status, message } = &err else {
        panic!("not a bad request: {err:?}");
    };
    assert_eq!(*status, 400);
    assert!(message.contains("session.tools[0].name"), "{message}");
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(
        counted(&metrics, "openai", "client_secret", "bad_request"),
        1
    );
}

#[tokio::test]
async fn the_key_request_is_retried_after_server_errors_and_rate_limits() {
    let fake = FakeRealtime::start().await;
    let (client, session, _) = openai(&fake, API_KEY);

    fake.fail_next(Step::ClientSecrets, 2, 500);
    client.create_session(&session).await.expect("third try");
    assert_eq!(fake.requests_of(Step::ClientSecrets).len(), 3);

    fake.fail_next(Step::ClientSecrets, 1, 429);
    client.create_session(&session).await.expect("second try");
    fake.fail_next_with_retry_after(Step::ClientSecrets, 1, 429, 0);
    client.create_session(&session).await.expect("second try");
    let statuses: Vec<u16> = fake
        .requests_of(Step::ClientSecrets)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [500, 500, 200, 429, 200, 429, 200]);

    fake.fail_next(Step::ClientSecrets, 3, 503);
    let err = client.create_session(&session).await.expect_err("gave up");
    assert!(matches!(err, RealtimeError::Unavailable { .. }), "{err:?}");
    assert_eq!(fake.requests_of(Step::ClientSecrets).len(), 10, "3 tries");
}

#[tokio::test]
async fn a_rate_limit_with_a_long_retry_after_is_returned_at_once() {
    let fake = FakeRealtime::start().await;
    let (client, session, _) = openai(&fake, API_KEY);
    fake.fail_next_with_retry_after(Step::ClientSecrets, 1, 429, 30);

    let err = client.create_session(&session).await.expect_err("limited");

    assert_eq!(
        err,
        RealtimeError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            message: "Rate limit reached for requests. Please try again shortly. (code: rate_limit_exceeded)".into()
        }
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn the_sdp_exchange_is_not_repeated_once_it_may_have_arrived() {
    let fake = FakeRealtime::start().await;
    let (client, session, metrics) = openai(&fake, API_KEY);
    let key = client.create_session(&session).await.expect("key");
    fake.fail_next(Step::Calls, 1, 500);

    let err = client.exchange_sdp(&key, OFFER).await.expect_err("failed");

    assert!(matches!(err, RealtimeError::Unavailable { .. }), "{err:?}");
    assert_eq!(
        fake.requests_of(Step::Calls).len(),
        1,
        "a second offer could start a second billed session"
    );
    assert_eq!(
        counted(&metrics, "openai", "sdp_exchange", "unavailable"),
        1
    );
    // The key still works for the next try the caller decides on.
    client.exchange_sdp(&key, OFFER).await.expect("answer");
}

#[tokio::test]
async fn a_wrong_api_key_is_unauthorized_without_retries() {
    let fake = FakeRealtime::start().await;
    let (client, session, metrics) = openai(&fake, "sk-wrong");

    let err = client.create_session(&session).await.expect_err("refused");

    assert!(matches!(err, RealtimeError::Unauthorized { .. }), "{err:?}");
    assert!(!err.to_string().contains("sk-wrong"), "{err}");
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(fake.requests()[0].auth, Auth::Invalid);
    assert_eq!(
        counted(&metrics, "openai", "client_secret", "unauthorized"),
        1
    );

    // Azure's answer to a wrong key has its own body shape.
    let config = config(&[
        ("AZURE_OPENAI_API_KEY", "wrong"),
        ("AZURE_OPENAI_ENDPOINT", &fake.azure_endpoint()),
        ("AZURE_OPENAI_DEPLOYMENT", "d"),
    ]);
    let azure = RealtimeClient::from_config(&config.ai, Metrics::new().expect("metrics"))
        .expect("client")
        .expect("configured");
    let err = azure.create_session(&session).await.expect_err("refused");
    assert!(matches!(err, RealtimeError::Unauthorized { .. }), "{err:?}");
}

#[tokio::test]
async fn an_expired_ephemeral_key_is_unauthorized() {
    let fake = FakeRealtime::start().await;
    let (client, session, _) = openai(&fake, API_KEY);
    let key = client.create_session(&session).await.expect("key");
    fake.expire_keys();

    let err = client.exchange_sdp(&key, OFFER).await.expect_err("expired");

    assert!(matches!(err, RealtimeError::Unauthorized { .. }), "{err:?}");
    assert!(matches!(
        fake.requests_of(Step::Calls)[0].auth,
        Auth::EphemeralKey { expired: true, .. }
    ));
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_outages() {
    let fake = FakeRealtime::start().await;
    let (client, session, metrics) = openai(&fake, API_KEY);
    fake.fail_next(Step::ClientSecrets, 20, 503);

    let first = client.create_session(&session).await.expect_err("down");
    let second = client.create_session(&session).await.expect_err("down");
    let third = client.create_session(&session).await.expect_err("down");

    assert!(
        matches!(first, RealtimeError::Unavailable { .. }),
        "{first:?}"
    );
    // The fifth consecutive failure opens the circuit: the second call's third try is not
    // made, and the third call makes none.
    assert_eq!(second, RealtimeError::CircuitOpen);
    assert_eq!(third, RealtimeError::CircuitOpen);
    assert_eq!(fake.requests().len(), 5);
    // The SDP exchange shares the breaker.
    let err = client.connect(&session, OFFER).await.expect_err("open");
    assert_eq!(err, RealtimeError::CircuitOpen);
    assert_eq!(fake.requests().len(), 5);
    assert!(counted(&metrics, "openai", "client_secret", "circuit_open") >= 2);
}

#[tokio::test]
async fn a_slow_api_times_out_as_unavailable() {
    let fake = FakeRealtime::start().await;
    let (client, session, _) = openai(&fake, API_KEY);
    let client = client
        .with_timeout(Duration::from_millis(200))
        .expect("client");
    fake.delay_next(Step::ClientSecrets, 3, Duration::from_secs(2));

    let err = client.create_session(&session).await.expect_err("slow");

    assert_eq!(
        err,
        RealtimeError::Unavailable {
            reason: "no answer in time".into()
        }
    );
    let tries = fake.requests_of(Step::ClientSecrets);
    assert_eq!(tries.len(), 3, "the key request is retried after a timeout");
    assert!(
        tries.iter().all(|r| r.status == 0),
        "none was answered in time"
    );
}

#[tokio::test]
async fn the_answerer_is_pluggable_and_its_refusal_is_a_bad_request() {
    let fake = FakeRealtime::start().await;
    let (client, session, _) = openai(&fake, API_KEY);
    fake.set_answerer(Arc::new(|offer: String| {
        Box::pin(async move {
            if offer.contains("m=audio") {
                Ok("v=0\r\ns=from-the-peer\r\n".to_owned())
            } else {
                Err("no audio section".to_owned())
            }
        })
    }));

    let call = client.connect(&session, OFFER).await.expect("answer");
    assert_eq!(call.answer_sdp, "v=0\r\ns=from-the-peer\r\n");

    let err = client
        .connect(&session, "v=0\r\ns=-\r\n")
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, RealtimeError::BadRequest { status: 400, message } if message.contains("no audio section")),
        "{err:?}"
    );
}

#[test]
fn an_openai_provider_is_built_from_a_base_url() {
    // The shape callers construct by hand (tests, the doctor command).
    let provider = AiProvider::OpenAi {
        api_key: SecretString::from("sk".to_owned()),
        base_url: "http://127.0.0.1:9/v1".parse().expect("url"),
    };
    let client = RealtimeClient::new(&provider, Metrics::new().expect("metrics")).expect("client");
    assert_eq!(client.provider().as_str(), "openai");
}
