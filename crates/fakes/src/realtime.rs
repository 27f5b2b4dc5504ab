//! A fake OpenAI / Azure OpenAI Realtime REST API: a real HTTP server on 127.0.0.1, port 0,
//! serving session creation in both providers' GA URL shapes
//! (`shared/reference/platform-apis.md` A2.2, A3):
//!
//! | step | OpenAI | Azure |
//! |---|---|---|
//! | ephemeral key | `POST /v1/realtime/client_secrets`, `Authorization: Bearer <key>` | `POST /openai/v1/realtime/client_secrets`, `api-key: <key>`, no `api-version` |
//! | SDP exchange | `POST /v1/realtime/calls`, `Authorization: Bearer ek_…` | `POST /openai/v1/realtime/calls`, same |
//!
//! It checks what the real services check (credentials, content types, key expiry, and the
//! session against the GA schema with [`validate_ga_session`], refusing beta field names with
//! OpenAI's error body), records every request without its secrets, can fail the next
//! requests of a step on demand, and answers SDP offers through a pluggable answerer: a canned
//! SDP by default, or a real WebRTC peer ([`crate::realtime_peer`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// The API key the fake accepts unless told otherwise.
pub const API_KEY: &str = "sk-fake-realtime-key";

/// The answer of the default answerer: a minimal, well-formed SDP (no peer behind it).
pub const CANNED_ANSWER: &str = "v=0\r\n\
o=- 4227147428 1719357865 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 3478 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 127.0.0.1\r\n\
a=mid:0\r\n\
a=ice-ufrag:fake\r\n\
a=ice-pwd:fakefakefakefakefakefake\r\n\
a=fingerprint:sha-256 00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00\r\n\
a=setup:active\r\n\
a=sendrecv\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
m=application 3478 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 127.0.0.1\r\n\
a=mid:1\r\n\
a=sctp-port:5000\r\n";

/// A boxed `Send` future (the same type as `futures::future::BoxFuture<'static, T>`).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Answers an SDP offer: `Ok(answer)`, or `Err(reason)` (answered 400).
pub type Answerer = Arc<dyn Fn(String) -> BoxFuture<Result<String, String>> + Send + Sync>;

/// Like [`Answerer`], also given the session the ephemeral key was created with and the call
/// id the fake assigned (so a WebRTC peer can play that session).
pub type SessionAnswerer =
    Arc<dyn Fn(AnswerRequest) -> BoxFuture<Result<String, String>> + Send + Sync>;

/// What a [`SessionAnswerer`] is given.
#[derive(Debug, Clone)]
pub struct AnswerRequest {
    /// The SDP offer.
    pub offer: String,
    /// The session JSON the ephemeral key was created with (with `id` and `object` added).
    pub session: Value,
    /// The call id that goes into `Location` (`rtc_…`).
    pub call_id: String,
}

/// The two steps of session creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// `…/realtime/client_secrets`.
    ClientSecrets,
    /// `…/realtime/calls`.
    Calls,
}

/// Which provider's URL shape a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `/v1/...`.
    OpenAi,
    /// `/openai/v1/...`.
    Azure,
}

/// How a request authenticated (no secret recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    None,
    /// `Authorization: Bearer <the API key>`.
    BearerApiKey,
    /// `api-key: <the API key>`.
    ApiKeyHeader,
    /// `Authorization: Bearer <an ephemeral key the fake issued>`.
    EphemeralKey {
        /// The session that key was created for.
        session_id: String,
        /// Whether it had expired.
        expired: bool,
    },
    /// Credentials that are none of the above.
    Invalid,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Which step.
    pub step: Step,
    /// Which URL shape.
    pub shape: Shape,
    /// The path.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Every header, with `authorization` and `api-key` values replaced by `<redacted>`
    /// (the scheme kept).
    pub headers: Vec<(String, String)>,
    /// How it authenticated.
    pub auth: Auth,
    /// The JSON body (client secrets).
    pub body: Option<Value>,
    /// The session: the body's (client secrets) or the one the key was made with (calls).
    pub session: Option<Value>,
    /// The SDP offer (calls).
    pub offer: Option<String>,
    /// The status answered (0 while it is being handled, or when the client gave up first).
    pub status: u16,
}

impl Recorded {
    /// The (redacted) value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A failure to inject.
#[derive(Debug, Clone)]
enum Fault {
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    Delay(Duration),
}

struct Key {
    session: Value,
    session_id: String,
    expires: Instant,
}

struct Shared {
    api_key: String,
    requests: Vec<Recorded>,
    faults: HashMap<Step, VecDeque<Fault>>,
    keys: HashMap<String, Key>,
    calls: HashMap<String, Value>,
    next: u64,
    answerer: SessionAnswerer,
}

/// The fake, running.
#[derive(Clone)]
pub struct FakeRealtime {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl FakeRealtime {
    /// Starts a fake accepting [`API_KEY`] and answering offers with [`CANNED_ANSWER`].
    pub async fn start() -> Self {
        Self::start_with_key(API_KEY).await
    }

    /// Starts a fake accepting `api_key`.
    pub async fn start_with_key(api_key: &str) -> Self {
        let canned: SessionAnswerer =
            Arc::new(|_| Box::pin(async { Ok(CANNED_ANSWER.to_owned()) }));
        let shared = Arc::new(Mutex::new(Shared {
            api_key: api_key.to_owned(),
            requests: Vec::new(),
            faults: HashMap::new(),
            keys: HashMap::new(),
            calls: HashMap::new(),
            next: 0,
            answerer: canned,
        }));
        let app = Router::new()
            .route(
                "/v1/realtime/client_secrets",
                post(|s, q, h, b| client_secrets(Shape::OpenAi, s, q, h, b)),
            )
            .route(
                "/openai/v1/realtime/client_secrets",
                post(|s, q, h, b| client_secrets(Shape::Azure, s, q, h, b)),
            )
            .route(
                "/v1/realtime/calls",
                post(|s, q, h, b| calls(Shape::OpenAi, s, q, h, b)),
            )
            .route(
                "/openai/v1/realtime/calls",
                post(|s, q, h, b| calls(Shape::Azure, s, q, h, b)),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared }
    }

    /// What to set `OPENAI_BASE_URL` to.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// What to set `AZURE_OPENAI_ENDPOINT` to.
    pub fn azure_endpoint(&self) -> String {
        self.url.clone()
    }

    /// Answers offers with `answerer` from now on.
    pub fn set_answerer(&self, answerer: Answerer) {
        self.set_session_answerer(Arc::new(move |request: AnswerRequest| {
            answerer(request.offer)
        }));
    }

    /// Answers offers with `answerer` (given the session and call id) from now on.
    pub fn set_session_answerer(&self, answerer: SessionAnswerer) {
        self.lock().answerer = answerer;
    }

    /// The next `n` requests of `step` are answered `status` with an OpenAI-style error body
    /// (before any other check).
    pub fn fail_next(&self, step: Step, n: usize, status: u16) {
        self.push_faults(
            step,
            n,
            Fault::Status {
                status,
                retry_after: None,
            },
        );
    }

    /// Like [`FakeRealtime::fail_next`] with a `Retry-After: <seconds>` header.
    pub fn fail_next_with_retry_after(&self, step: Step, n: usize, status: u16, seconds: u64) {
        self.push_faults(
            step,
            n,
            Fault::Status {
                status,
                retry_after: Some(seconds),
            },
        );
    }

    /// The next `n` requests of `step` wait `pause` before being handled.
    pub fn delay_next(&self, step: Step, n: usize, pause: Duration) {
        self.push_faults(step, n, Fault::Delay(pause));
    }

    /// Makes every ephemeral key issued so far expired.
    pub fn expire_keys(&self) {
        let now = Instant::now();
        for key in self.lock().keys.values_mut() {
            key.expires = now;
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The requests of `step` so far.
    pub fn requests_of(&self, step: Step) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.step == step)
            .collect()
    }

    /// The session JSON ephemeral key `key` was created with.
    pub fn session_for_key(&self, key: &str) -> Option<Value> {
        self.lock().keys.get(key).map(|k| k.session.clone())
    }

    /// The session JSON of call `call_id` (`rtc_…`).
    pub fn session_for_call(&self, call_id: &str) -> Option<Value> {
        self.lock().calls.get(call_id).cloned()
    }

    fn push_faults(&self, step: Step, n: usize, fault: Fault) {
        self.lock()
            .faults
            .entry(step)
            .or_default()
            .extend(std::iter::repeat_n(fault, n));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("lock")
    }
}

type SharedState = State<Arc<Mutex<Shared>>>;

async fn client_secrets(
    shape: Shape,
    State(shared): SharedState,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_json: Option<Value> = serde_json::from_slice(&body).ok();
    let (fault, auth) = {
        let mut s = shared.lock().expect("lock");
        let fault = s
            .faults
            .get_mut(&Step::ClientSecrets)
            .and_then(VecDeque::pop_front);
        (fault, auth_of(&s, &headers))
    };
    let recorded = Recorded {
        step: Step::ClientSecrets,
        shape,
        path: path_of(shape, Step::ClientSecrets).to_owned(),
        query: query.clone(),
        headers: redacted(&headers),
        auth: auth.clone(),
        body: body_json.clone(),
        session: body_json.as_ref().and_then(|b| b.get("session").cloned()),
        offer: None,
        status: 0,
    };
    let index = record(&shared, recorded);
    let response = match apply_fault(fault).await {
        Some(response) => response,
        None => issue_key(shape, &shared, &auth, query.as_deref(), &headers, body_json),
    };
    answered(&shared, index, &response);
    response
}

fn issue_key(
    shape: Shape,
    shared: &Mutex<Shared>,
    auth: &Auth,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Response {
    if shape == Shape::Azure && query.is_some_and(|q| q.contains("api-version")) {
        return azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "api-version query parameter is not allowed when using /v1 path",
        );
    }
    let expected = match shape {
        Shape::OpenAi => Auth::BearerApiKey,
        Shape::Azure => Auth::ApiKeyHeader,
    };
    if *auth != expected {
        return unauthorized(shape);
    }
    if !is_content_type(headers, "application/json") {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            None,
            "Unsupported content type: expected application/json.",
        );
    }
    let Some(Value::Object(body)) = body else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            None,
            "We could not parse the JSON body of your request.",
        );
    };
    for key in body.keys() {
        if key != "session" && key != "expires_after" {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("unknown_parameter"),
                Some(key),
                &format!("Unknown parameter: '{key}'."),
            );
        }
    }
    let seconds = match body.get("expires_after") {
        None => 600,
        Some(expires) => match (
            expires.get("anchor").and_then(Value::as_str),
            expires.get("seconds").and_then(Value::as_u64),
        ) {
            (Some("created_at"), Some(seconds)) if (10..=7200).contains(&seconds) => seconds,
            _ => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("invalid_value"),
                    Some("expires_after"),
                    "expires_after must be {anchor: 'created_at', seconds: 10-7200}.",
                )
            }
        },
    };
    let Some(session) = body.get("session") else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("missing_required_parameter"),
            Some("session"),
            "Missing required parameter: 'session'.",
        );
    };
    if let Err(invalid) = validate(session) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some(invalid.code),
            Some(&invalid.param),
            &invalid.message,
        );
    }
    let mut s = shared.lock().expect("lock");
    s.next += 1;
    let n = s.next;
    let key = format!("ek_fake{n:04}{:08x}", nanos() as u32);
    let session_id = format!("sess_fake{n:04}");
    let mut effective = session.clone();
    if let Value::Object(fields) = &mut effective {
        fields.insert("id".into(), json!(session_id));
        fields.insert("object".into(), json!("realtime.session"));
    }
    let expires_at = unix_now() + seconds;
    s.keys.insert(
        key.clone(),
        Key {
            session: effective.clone(),
            session_id,
            expires: Instant::now() + Duration::from_secs(seconds),
        },
    );
    Json(json!({"value": key, "expires_at": expires_at, "session": effective})).into_response()
}

async fn calls(
    shape: Shape,
    State(shared): SharedState,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = String::from_utf8_lossy(&body).into_owned();
    let (fault, auth, session) = {
        let mut s = shared.lock().expect("lock");
        let fault = s.faults.get_mut(&Step::Calls).and_then(VecDeque::pop_front);
        let auth = auth_of(&s, &headers);
        let session = bearer(&headers)
            .and_then(|token| s.keys.get(token))
            .map(|key| key.session.clone());
        (fault, auth, session)
    };
    let recorded = Recorded {
        step: Step::Calls,
        shape,
        path: path_of(shape, Step::Calls).to_owned(),
        query,
        headers: redacted(&headers),
        auth: auth.clone(),
        body: None,
        session: session.clone(),
        offer: Some(offer.clone()),
        status: 0,
    };
    let index = record(&shared, recorded);
    let response = match apply_fault(fault).await {
        Some(response) => response,
        None => answer_offer(shape, &shared, &auth, session, &headers, offer).await,
    };
    answered(&shared, index, &response);
    response
}

async fn answer_offer(
    shape: Shape,
    shared: &Mutex<Shared>,
    auth: &Auth,
    session: Option<Value>,
    headers: &HeaderMap,
    offer: String,
) -> Response {
    let session = match (auth, session) {
        (Auth::EphemeralKey { expired: false, .. }, Some(session)) => session,
        (Auth::EphemeralKey { expired: true, .. }, _) => {
            return openai_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                None,
                "The ephemeral key has expired.",
            )
        }
        _ => return unauthorized(shape),
    };
    if !is_content_type(headers, "application/sdp") {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            None,
            "Unsupported content type: expected application/sdp.",
        );
    }
    if !offer.trim_start().starts_with("v=0") {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("invalid_offer"),
            None,
            "The request body is not an SDP offer.",
        );
    }
    let (answerer, call_id) = {
        let mut s = shared.lock().expect("lock");
        s.next += 1;
        let call_id = format!("rtc_fake{:04}{:08x}", s.next, nanos() as u32);
        s.calls.insert(call_id.clone(), session.clone());
        (s.answerer.clone(), call_id)
    };
    let request = AnswerRequest {
        offer,
        session,
        call_id: call_id.clone(),
    };
    match answerer(request).await {
        Ok(answer) => {
            let location = format!("{}/{call_id}", path_of(shape, Step::Calls));
            (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_owned()),
                    (header::LOCATION, location),
                ],
                answer,
            )
                .into_response()
        }
        Err(reason) => {
            shared.lock().expect("lock").calls.remove(&call_id);
            openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("invalid_offer"),
                None,
                &format!("Could not answer the offer: {reason}"),
            )
        }
    }
}

/// Records a request as it arrives (so one the client gave up on is still seen); returns its
/// index.
fn record(shared: &Mutex<Shared>, recorded: Recorded) -> usize {
    let mut s = shared.lock().expect("lock");
    s.requests.push(recorded);
    s.requests.len() - 1
}

/// Notes the status a recorded request was answered with.
fn answered(shared: &Mutex<Shared>, index: usize, response: &Response) {
    if let Some(recorded) = shared.lock().expect("lock").requests.get_mut(index) {
        recorded.status = response.status().as_u16();
    }
}

async fn apply_fault(fault: Option<Fault>) -> Option<Response> {
    match fault? {
        Fault::Delay(pause) => {
            tokio::time::sleep(pause).await;
            None
        }
        Fault::Status {
            status,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).expect("status");
            let mut response = match status {
                StatusCode::TOO_MANY_REQUESTS => openai_error(
                    status,
                    "requests",
                    Some("rate_limit_exceeded"),
                    None,
                    "Rate limit reached for requests. Please try again shortly.",
                ),
                StatusCode::UNAUTHORIZED => openai_error(
                    status,
                    "invalid_request_error",
                    Some("invalid_api_key"),
                    None,
                    "Incorrect API key provided.",
                ),
                _ if status.is_server_error() => openai_error(
                    status,
                    "server_error",
                    None,
                    None,
                    "The server had an error while processing your request. Sorry about that!",
                ),
                _ => openai_error(
                    status,
                    "invalid_request_error",
                    None,
                    None,
                    "Injected failure.",
                ),
            };
            if let Some(seconds) = retry_after {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    seconds.to_string().parse().expect("header value"),
                );
            }
            Some(response)
        }
    }
}

fn auth_of(shared: &Shared, headers: &HeaderMap) -> Auth {
    let api_key_header = headers.get("api-key").and_then(|v| v.to_str().ok());
    match (bearer(headers), api_key_header) {
        (None, None) => Auth::None,
        (Some(token), None) if token == shared.api_key => Auth::BearerApiKey,
        (Some(token), None) => match shared.keys.get(token) {
            Some(key) => Auth::EphemeralKey {
                session_id: key.session_id.clone(),
                expired: Instant::now() >= key.expires,
            },
            None => Auth::Invalid,
        },
        (None, Some(key)) if key == shared.api_key => Auth::ApiKeyHeader,
        (Some(_), Some(_)) | (None, Some(_)) => Auth::Invalid,
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn redacted(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("<binary>");
            let shown = match name.as_str() {
                "authorization" => match value.split_once(' ') {
                    Some((scheme, _)) => format!("{scheme} <redacted>"),
                    None => "<redacted>".to_owned(),
                },
                "api-key" => "<redacted>".to_owned(),
                _ => value.to_owned(),
            };
            (name.as_str().to_owned(), shown)
        })
        .collect()
}

fn is_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

fn path_of(shape: Shape, step: Step) -> &'static str {
    match (shape, step) {
        (Shape::OpenAi, Step::ClientSecrets) => "/v1/realtime/client_secrets",
        (Shape::OpenAi, Step::Calls) => "/v1/realtime/calls",
        (Shape::Azure, Step::ClientSecrets) => "/openai/v1/realtime/client_secrets",
        (Shape::Azure, Step::Calls) => "/openai/v1/realtime/calls",
    }
}

fn unauthorized(shape: Shape) -> Response {
    match shape {
        Shape::OpenAi => openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        ),
        Shape::Azure => azure_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        ),
    }
}

/// OpenAI's error body.
fn openai_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": param, "code": code}})),
    )
        .into_response()
}

/// Azure's error body.
fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

// --- the GA session schema ---------------------------------------------------------------

/// Why a session was refused, as the API says it.
struct Invalid {
    code: &'static str,
    param: String,
    message: String,
}

/// Checks a session object against the GA Realtime schema, as the API does (a subset: the
/// fields the bridge sends, plus every beta name refused).
///
/// # Errors
/// The API-style message for the first problem (e.g. `Unknown parameter: 'session.voice'.`).
pub fn validate_ga_session(session: &Value) -> Result<(), String> {
    validate(session).map_err(|invalid| invalid.message)
}

/// Top-level GA fields.
const GA_FIELDS: &[&str] = &[
    "type",
    "model",
    "instructions",
    "output_modalities",
    "audio",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "prompt",
    "include",
    "tracing",
    "truncation",
    "reasoning",
    "parallel_tool_calls",
];

/// Beta names and where GA moved them.
const BETA_FIELDS: &[(&str, &str)] = &[
    ("modalities", "output_modalities"),
    ("voice", "audio.output.voice"),
    ("input_audio_format", "audio.input.format"),
    ("output_audio_format", "audio.output.format"),
    ("input_audio_transcription", "audio.input.transcription"),
    ("turn_detection", "audio.input.turn_detection"),
    ("input_audio_noise_reduction", "audio.input.noise_reduction"),
    ("temperature", "(removed in GA)"),
    ("max_response_output_tokens", "max_output_tokens"),
];

/// The built-in voices.
const VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
];

fn invalid(code: &'static str, param: &str, message: String) -> Invalid {
    Invalid {
        code,
        param: format!("session.{param}"),
        message,
    }
}

fn unknown(param: &str) -> Invalid {
    invalid(
        "unknown_parameter",
        param,
        format!("Unknown parameter: 'session.{param}'."),
    )
}

fn bad_value(param: &str, what: &str) -> Invalid {
    invalid(
        "invalid_value",
        param,
        format!("Invalid value for 'session.{param}': {what}."),
    )
}

fn object<'a>(value: &'a Value, param: &str) -> Result<&'a Map<String, Value>, Invalid> {
    value.as_object().ok_or_else(|| {
        invalid(
            "invalid_type",
            param,
            format!("Invalid type for 'session.{param}': expected an object."),
        )
    })
}

fn only_keys(map: &Map<String, Value>, parent: &str, allowed: &[&str]) -> Result<(), Invalid> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) if parent.is_empty() => Err(unknown(key)),
        Some(key) => Err(unknown(&format!("{parent}.{key}"))),
        None => Ok(()),
    }
}

fn string_field(map: &Map<String, Value>, key: &str, param: &str) -> Result<(), Invalid> {
    match map.get(key) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(invalid(
            "invalid_type",
            param,
            format!("Invalid type for 'session.{param}': expected a string."),
        )),
    }
}

fn validate(session: &Value) -> Result<(), Invalid> {
    let map = object(session, "")?;
    for (beta, ga) in BETA_FIELDS {
        if map.contains_key(*beta) {
            return Err(invalid(
                "unknown_parameter",
                beta,
                format!("Unknown parameter: 'session.{beta}'. (The GA API uses '{ga}'.)"),
            ));
        }
    }
    only_keys(map, "", GA_FIELDS)?;
    match map.get("type") {
        Some(Value::String(kind)) if kind == "realtime" => {}
        Some(_) => return Err(bad_value("type", "expected 'realtime'")),
        None => {
            return Err(invalid(
                "missing_required_parameter",
                "type",
                "Missing required parameter: 'session.type'.".into(),
            ))
        }
    }
    string_field(map, "model", "model")?;
    string_field(map, "instructions", "instructions")?;
    if let Some(modalities) = map.get("output_modalities") {
        let ok = modalities
            .as_array()
            .is_some_and(|m| m.len() == 1 && matches!(m[0].as_str(), Some("audio") | Some("text")));
        if !ok {
            return Err(bad_value(
                "output_modalities",
                "expected ['audio'] or ['text']",
            ));
        }
    }
    if let Some(audio) = map.get("audio") {
        validate_audio(object(audio, "audio")?)?;
    }
    if let Some(tools) = map.get("tools") {
        let tools = tools
            .as_array()
            .ok_or_else(|| bad_value("tools", "expected an array"))?;
        for (i, tool) in tools.iter().enumerate() {
            validate_tool(tool, &format!("tools[{i}]"))?;
        }
    }
    match map.get("tool_choice") {
        None => {}
        Some(Value::String(choice)) if ["auto", "none", "required"].contains(&choice.as_str()) => {}
        Some(Value::Object(choice))
            if choice.get("type").and_then(Value::as_str) == Some("function")
                && choice.get("name").is_some_and(Value::is_string) => {}
        Some(_) => {
            return Err(bad_value(
                "tool_choice",
                "expected 'auto', 'none', 'required' or a function",
            ))
        }
    }
    match map.get("max_output_tokens") {
        None => {}
        Some(Value::String(inf)) if inf == "inf" => {}
        Some(n) if n.as_u64().is_some_and(|n| (1..=4096).contains(&n)) => {}
        Some(_) => {
            return Err(bad_value(
                "max_output_tokens",
                "expected an integer from 1 to 4096 or 'inf'",
            ))
        }
    }
    Ok(())
}

fn validate_audio(audio: &Map<String, Value>) -> Result<(), Invalid> {
    only_keys(audio, "audio", &["input", "output"])?;
    if let Some(input) = audio.get("input") {
        let input = object(input, "audio.input")?;
        only_keys(
            input,
            "audio.input",
            &[
                "format",
                "noise_reduction",
                "transcription",
                "turn_detection",
            ],
        )?;
        if let Some(format) = input.get("format") {
            validate_format(format, "audio.input.format")?;
        }
        match input.get("noise_reduction") {
            None | Some(Value::Null) => {}
            Some(noise) => {
                let noise = object(noise, "audio.input.noise_reduction")?;
                only_keys(noise, "audio.input.noise_reduction", &["type"])?;
                if !matches!(
                    noise.get("type").and_then(Value::as_str),
                    Some("near_field") | Some("far_field")
                ) {
                    return Err(bad_value(
                        "audio.input.noise_reduction.type",
                        "expected 'near_field' or 'far_field'",
                    ));
                }
            }
        }
        match input.get("transcription") {
            None | Some(Value::Null) => {}
            Some(transcription) => {
                let t = object(transcription, "audio.input.transcription")?;
                only_keys(
                    t,
                    "audio.input.transcription",
                    &["model", "language", "prompt"],
                )?;
                if !t.get("model").is_some_and(Value::is_string) {
                    return Err(bad_value(
                        "audio.input.transcription.model",
                        "expected a model name",
                    ));
                }
                string_field(t, "language", "audio.input.transcription.language")?;
                string_field(t, "prompt", "audio.input.transcription.prompt")?;
            }
        }
        match input.get("turn_detection") {
            None | Some(Value::Null) => {}
            Some(turn) => validate_turn_detection(object(turn, "audio.input.turn_detection")?)?,
        }
    }
    if let Some(output) = audio.get("output") {
        let output = object(output, "audio.output")?;
        only_keys(output, "audio.output", &["format", "voice", "speed"])?;
        if let Some(format) = output.get("format") {
            validate_format(format, "audio.output.format")?;
        }
        match output.get("voice") {
            None => {}
            Some(Value::String(voice)) if VOICES.contains(&voice.as_str()) => {}
            Some(Value::String(voice)) => {
                return Err(bad_value(
                    "audio.output.voice",
                    &format!("'{voice}' is not one of {}", VOICES.join(", ")),
                ))
            }
            Some(_) => {
                return Err(invalid(
                    "invalid_type",
                    "audio.output.voice",
                    "Invalid type for 'session.audio.output.voice': expected a string.".into(),
                ))
            }
        }
        if let Some(speed) = output.get("speed") {
            if !speed.as_f64().is_some_and(|s| (0.25..=1.5).contains(&s)) {
                return Err(bad_value(
                    "audio.output.speed",
                    "expected a number from 0.25 to 1.5",
                ));
            }
        }
    }
    Ok(())
}

fn validate_format(format: &Value, param: &str) -> Result<(), Invalid> {
    let format = object(format, param)?;
    match format.get("type").and_then(Value::as_str) {
        Some("audio/pcm") => match format.get("rate") {
            None => Ok(()),
            Some(rate) if rate.as_u64() == Some(24_000) => Ok(()),
            Some(_) => Err(bad_value(&format!("{param}.rate"), "expected 24000")),
        },
        Some("audio/pcmu") | Some("audio/pcma") => Ok(()),
        _ => Err(bad_value(
            &format!("{param}.type"),
            "expected 'audio/pcm', 'audio/pcmu' or 'audio/pcma'",
        )),
    }
}

fn validate_turn_detection(turn: &Map<String, Value>) -> Result<(), Invalid> {
    let param = "audio.input.turn_detection";
    let flags = |key: &str| -> Result<(), Invalid> {
        match turn.get(key) {
            None | Some(Value::Bool(_)) => Ok(()),
            Some(_) => Err(bad_value(&format!("{param}.{key}"), "expected a boolean")),
        }
    };
    let whole_ms = |key: &str| -> Result<(), Invalid> {
        match turn.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(v) if v.as_u64().is_some() => Ok(()),
            Some(_) => Err(bad_value(
                &format!("{param}.{key}"),
                "expected a whole number of milliseconds",
            )),
        }
    };
    match turn.get("type").and_then(Value::as_str) {
        Some("server_vad") => {
            only_keys(
                turn,
                param,
                &[
                    "type",
                    "threshold",
                    "prefix_padding_ms",
                    "silence_duration_ms",
                    "idle_timeout_ms",
                    "create_response",
                    "interrupt_response",
                ],
            )?;
            if let Some(threshold) = turn.get("threshold") {
                if !threshold.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t)) {
                    return Err(bad_value(
                        &format!("{param}.threshold"),
                        "expected a number from 0.0 to 1.0",
                    ));
                }
            }
            whole_ms("prefix_padding_ms")?;
            whole_ms("silence_duration_ms")?;
            whole_ms("idle_timeout_ms")?;
        }
        Some("semantic_vad") => {
            only_keys(
                turn,
                param,
                &["type", "eagerness", "create_response", "interrupt_response"],
            )?;
            if let Some(eagerness) = turn.get("eagerness") {
                if !matches!(
                    eagerness.as_str(),
                    Some("low") | Some("medium") | Some("high") | Some("auto")
                ) {
                    return Err(bad_value(
                        &format!("{param}.eagerness"),
                        "expected 'low', 'medium', 'high' or 'auto'",
                    ));
                }
            }
        }
        _ => {
            return Err(bad_value(
                &format!("{param}.type"),
                "expected 'server_vad' or 'semantic_vad'",
            ))
        }
    }
    flags("create_response")?;
    flags("interrupt_response")
}

fn validate_tool(tool: &Value, param: &str) -> Result<(), Invalid> {
    let map = object(tool, param)?;
    only_keys(map, param, &["type", "name", "description", "parameters"])?;
    if map.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad_value(&format!("{param}.type"), "expected 'function'"));
    }
    let name_ok = map.get("name").and_then(Value::as_str).is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !name_ok {
        return Err(bad_value(
            &format!("{param}.name"),
            "expected a name of 1 to 64 letters, digits, _ or -",
        ));
    }
    if !map.get("description").is_some_and(Value::is_string) {
        return Err(bad_value(
            &format!("{param}.description"),
            "expected a string",
        ));
    }
    if !map.get("parameters").is_some_and(Value::is_object) {
        return Err(bad_value(
            &format!("{param}.parameters"),
            "expected a JSON Schema object",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ga_shape_passes_and_beta_names_are_refused() {
        let ga = json!({
            "type": "realtime", "model": "gpt-realtime", "instructions": "Be brief.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"noise_reduction": {"type": "near_field"},
                    "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.5,
                        "prefix_padding_ms": 300, "silence_duration_ms": 500,
                        "create_response": true, "interrupt_response": true}},
                "output": {"voice": "marin", "speed": 1.0}
            },
            "tools": [{"type": "function", "name": "add_task", "description": "Adds a task.",
                "parameters": {"type": "object", "properties": {}}}],
            "tool_choice": "auto", "max_output_tokens": "inf"
        });
        assert_eq!(validate_ga_session(&ga), Ok(()));

        let beta = json!({"type": "realtime", "modalities": ["audio", "text"], "voice": "shimmer"});
        let err = validate_ga_session(&beta).expect_err("beta");
        assert!(err.contains("session.modalities"), "{err}");

        for (patch, expected) in [
            (json!({"type": "transcription"}), "session.type"),
            (
                json!({"turn_detection": {"type": "server_vad"}}),
                "session.turn_detection",
            ),
            (
                json!({"audio": {"output": {"voice": 5}}}),
                "session.audio.output.voice",
            ),
            (
                json!({"audio": {"output": {"voice": "nova"}}}),
                "session.audio.output.voice",
            ),
            (
                json!({"audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}}),
                "session.audio.input.turn_detection.type",
            ),
            (
                json!({"audio": {"input": {"turn_detection": {"type": "semantic_vad",
                    "idle_timeout_ms": 5000}}}}),
                "session.audio.input.turn_detection.idle_timeout_ms",
            ),
            (json!({"tools": [{"name": "x"}]}), "session.tools[0].type"),
            (
                json!({"tools": [{"type": "function", "name": "x", "description": "d",
                    "parameters": "{}"}]}),
                "session.tools[0].parameters",
            ),
            (
                json!({"output_modalities": ["audio", "text"]}),
                "session.output_modalities",
            ),
        ] {
            let mut session = json!({"type": "realtime"});
            if let (Value::Object(s), Value::Object(p)) = (&mut session, patch) {
                s.extend(p);
            }
            let err = validate_ga_session(&session).expect_err("invalid");
            assert!(err.contains(expected), "{expected} not in {err}");
        }
    }
}
