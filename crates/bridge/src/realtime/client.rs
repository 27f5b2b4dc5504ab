//! Creating a Realtime session over HTTP, for OpenAI and Azure OpenAI (GA v1 endpoints,
//! `shared/reference/platform-apis.md` A2.2 and A3). Two steps:
//!
//! 1. **Ephemeral key**: `POST {base}/realtime/client_secrets` with the API key and
//!    `{"expires_after": {...}, "session": <Session>}` → `{"value": "ek_…", "expires_at", ...}`.
//!    The key is bound to our session object, so the model starts with our instructions,
//!    voice and tools (no `session.update` race on the data channel, the precedent's weakness
//!    30).
//! 2. **SDP exchange**: `POST {base}/realtime/calls` with the raw SDP offer and
//!    `Authorization: Bearer ek_…` → the SDP answer, and the call id (`rtc_…`) in `Location`.
//!
//! `{base}` is `OPENAI_BASE_URL` (`https://api.openai.com/v1`) or, on Azure,
//! `{AZURE_OPENAI_ENDPOINT}/openai/v1` with an `api-key` header and no `api-version`.
//!
//! The steps are separate methods (and [`RealtimeClient::connect`] does both) because they do
//! not need each other's inputs: the key needs no offer, so the call code can mint it while
//! ICE candidates are gathered or the phone rings, and only the SDP exchange stays on the
//! critical path. They also differ in what is safe to repeat:
//!
//! - **Retries only where safe.** Step 1 creates nothing billable, so it is retried (twice,
//!   200 ms–1 s apart, or after `Retry-After` when that is short) on connection errors,
//!   timeouts, 5xx and 429. Step 2 starts a session (billed), so it is retried only when the
//!   connection was never established: nothing was sent.
//! - **Circuit breaker.** After 5 consecutive outages (transport failures, timeouts, 5xx) both
//!   steps fail at once with [`RealtimeError::CircuitOpen`] for 10 s, growing to 60 s, so
//!   calls are refused quickly instead of each waiting for timeouts.
//! - **Logs and metrics.** Each step is logged with provider, outcome and duration, never the
//!   API key, the ephemeral key or the SDP; counted by provider, step and outcome.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::protocol::SessionInfo;
use super::session::Session;
use crate::config::{AiConfig, AiProvider};
use crate::telemetry::Metrics;
use crate::upstream::{self, guarded, http_client, Breaker, UpstreamError};

/// How long one request may take. SDP answers come back in well under a second normally;
/// a caller is waiting, so we do not wait long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ephemeral key lives (the API's default; 10 s–2 h allowed). Long enough to
/// mint it while the phone rings.
const KEY_LIFETIME: Duration = Duration::from_secs(600);
/// A `Retry-After` longer than this is not waited for: the caller would hang up first.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);
/// Error messages from the API are cut to this length for logs and errors.
const MAX_MESSAGE_CHARS: usize = 500;

/// What went wrong creating a session, in the terms callers act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RealtimeError {
    /// 401/403: the API key (or the ephemeral key, expired or unknown) was refused.
    #[error("the Realtime API refused the credentials (check OPENAI_API_KEY / AZURE_OPENAI_API_KEY): {message}")]
    Unauthorized {
        /// The API's message.
        message: String,
    },
    /// 429: too many requests or tokens; try again after `retry_after` when given.
    #[error("rate limited by the Realtime API{}: {message}", .retry_after.map(|d| format!(" (retry after {} s)", d.as_secs_f32())).unwrap_or_default())]
    RateLimited {
        /// The `Retry-After` the API gave.
        retry_after: Option<Duration>,
        /// The API's message.
        message: String,
    },
    /// 429 `insufficient_quota`: the account is out of credit; retrying will not help.
    #[error("the Realtime API account is out of quota: {message}")]
    QuotaExceeded {
        /// The API's message.
        message: String,
    },
    /// Another 4xx: the API refused what we sent (our session shape, an unknown model or
    /// deployment, a broken offer). Retrying the same request will not help.
    #[error("the Realtime API refused the request (HTTP {status}): {message}")]
    BadRequest {
        /// The HTTP status.
        status: u16,
        /// The API's message, with the parameter at fault.
        message: String,
    },
    /// 5xx, a timeout, or no connection.
    #[error("the Realtime API is unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
    },
    /// Recent requests failed; not trying for a while.
    #[error("the Realtime API is failing; not trying again for a few seconds")]
    CircuitOpen,
    /// A 2xx answer we cannot use.
    #[error("unexpected Realtime API answer: {0}")]
    BadResponse(String),
}

impl RealtimeError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RealtimeError::Unauthorized { .. } => "unauthorized",
            RealtimeError::RateLimited { .. } => "rate_limited",
            RealtimeError::QuotaExceeded { .. } => "quota_exceeded",
            RealtimeError::BadRequest { .. } => "bad_request",
            RealtimeError::Unavailable { .. } => "unavailable",
            RealtimeError::CircuitOpen => "circuit_open",
            RealtimeError::BadResponse(_) => "bad_response",
        }
    }
}

impl UpstreamError for RealtimeError {
    /// The service is failing (5xx, timeouts, no connection), not answering about this request.
    fn is_outage(&self) -> bool {
        matches!(self, RealtimeError::Unavailable { .. })
    }

    fn circuit_open() -> Self {
        RealtimeError::CircuitOpen
    }

    /// A 429's `Retry-After`.
    fn retry_after(&self) -> Option<Duration> {
        if let RealtimeError::RateLimited { retry_after, .. } = self {
            *retry_after
        } else {
            None
        }
    }
}

/// Which cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI: `Authorization: Bearer <key>`.
    OpenAi,
    /// Azure OpenAI: `api-key: <key>`.
    Azure,
}

impl Provider {
    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
        }
    }
}

/// The two steps, for retries, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ClientSecret,
    SdpExchange,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::ClientSecret => "client_secret",
            Step::SdpExchange => "sdp_exchange",
        }
    }
}

/// An ephemeral key (`ek_…`) bound to one session configuration. Its value never prints.
#[derive(Clone)]
pub struct EphemeralKey {
    value: SecretString,
    expires_at: Option<DateTime<Utc>>,
    session_id: Option<String>,
}

impl fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralKey")
            .field("value", &"***")
            .field("expires_at", &self.expires_at)
            .field("session_id", &self.session_id)
            .finish()
    }
}

impl EphemeralKey {
    /// When it stops working, as the API said.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// The session id the API gave, when it did.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Whether it still works at `now`, with `margin` to spare for the request.
    pub fn is_valid_at(&self, now: DateTime<Utc>, margin: Duration) -> bool {
        let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::zero());
        self.expires_at.is_none_or(|at| now + margin < at)
    }
}

/// A Realtime call the SDP exchange started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeCall {
    /// The model side's SDP answer.
    pub answer_sdp: String,
    /// The call id (`rtc_…`) from `Location`, for the sideband connection and logs.
    pub call_id: Option<String>,
}

/// One request's failure, with whether it may have reached the API.
type Attempt = upstream::Attempt<RealtimeError>;

/// The Realtime session client. Cheap to clone.
#[derive(Clone)]
pub struct RealtimeClient {
    http: reqwest::Client,
    provider: Provider,
    api_key: SecretString,
    client_secrets_url: Url,
    calls_url: Url,
    breaker: Breaker,
    metrics: Metrics,
}

impl fmt::Debug for RealtimeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealtimeClient")
            .field("provider", &self.provider)
            .field("client_secrets_url", &self.client_secrets_url.as_str())
            .field("calls_url", &self.calls_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct ClientSecretRequest<'a> {
    expires_after: ExpiresAfter,
    session: &'a Session,
}

#[derive(Serialize)]
struct ExpiresAfter {
    anchor: &'static str,
    seconds: u64,
}

#[derive(Deserialize)]
struct ClientSecretAnswer {
    value: String,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    session: Option<SessionInfo>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

/// OpenAI's (and Azure's) error body: `{"error": {"message", "type", "code", "param"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    param: Option<String>,
}

impl RealtimeClient {
    /// The client for the configured provider, or `None` when no AI keys are configured.
    ///
    /// # Errors
    /// When the endpoint cannot carry a path or the HTTP client cannot be built.
    pub fn from_config(ai: &AiConfig, metrics: Metrics) -> anyhow::Result<Option<Self>> {
        ai.provider
            .as_ref()
            .map(|provider| Self::new(provider, metrics))
            .transpose()
    }

    /// A client for `provider`.
    ///
    /// # Errors
    /// When the endpoint cannot carry a path or the HTTP client cannot be built.
    pub fn new(provider: &AiProvider, metrics: Metrics) -> anyhow::Result<Self> {
        let (kind, api_key, base) = match provider {
            AiProvider::OpenAi { api_key, base_url } => {
                (Provider::OpenAi, api_key.clone(), base_url.clone())
            }
            AiProvider::Azure {
                api_key, endpoint, ..
            } => (Provider::Azure, api_key.clone(), azure_v1_base(endpoint)?),
        };
        let url = |last: &str| -> anyhow::Result<Url> {
            let mut url = base.clone();
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("{base} cannot be a base URL"))?
                .pop_if_empty()
                .extend(["realtime", last]);
            Ok(url)
        };
        let breaker = upstream::breaker();
        Ok(Self {
            http: http_client(REQUEST_TIMEOUT)?,
            provider: kind,
            api_key,
            client_secrets_url: url("client_secrets")?,
            calls_url: url("calls")?,
            breaker,
            metrics,
        })
    }

    /// Gives up on a request after `timeout` instead of 10 s (tests).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn with_timeout(mut self, timeout: Duration) -> anyhow::Result<Self> {
        self.http = http_client(timeout)?;
        Ok(self)
    }

    /// The provider.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Step 1: an ephemeral key for `session`, valid for 10 minutes.
    ///
    /// # Errors
    /// See [`RealtimeError`]; [`RealtimeError::BadRequest`] when the API refuses the session
    /// (an unknown model or deployment, a voice it does not have).
    pub async fn create_session(&self, session: &Session) -> Result<EphemeralKey, RealtimeError> {
        let body = ClientSecretRequest {
            expires_after: ExpiresAfter {
                anchor: "created_at",
                seconds: KEY_LIFETIME.as_secs(),
            },
            session,
        };
        let result = self
            .run(Step::ClientSecret, || self.client_secret_once(&body))
            .await;
        match &result {
            Ok(key) => tracing::info!(
                provider = self.provider.as_str(),
                step = Step::ClientSecret.as_str(),
                session_id = key.session_id().unwrap_or("-"),
                expires_at = ?key.expires_at(),
                "Realtime ephemeral key created"
            ),
            Err(err) => self.log_failure(Step::ClientSecret, err),
        }
        result
    }

    /// Step 2: sends our SDP `offer` with `key`; returns the answer and the call id.
    ///
    /// # Errors
    /// See [`RealtimeError`]; [`RealtimeError::Unauthorized`] when the key expired.
    pub async fn exchange_sdp(
        &self,
        key: &EphemeralKey,
        offer: &str,
    ) -> Result<RealtimeCall, RealtimeError> {
        let result = self
            .run(Step::SdpExchange, || self.sdp_once(key, offer))
            .await;
        match &result {
            Ok(call) => tracing::info!(
                provider = self.provider.as_str(),
                step = Step::SdpExchange.as_str(),
                realtime_call_id = call.call_id.as_deref().unwrap_or("-"),
                "Realtime SDP answer received"
            ),
            Err(err) => self.log_failure(Step::SdpExchange, err),
        }
        result
    }

    /// Both steps: a key for `session`, then the SDP exchange with it.
    ///
    /// # Errors
    /// The first step's error, or the second's.
    pub async fn connect(
        &self,
        session: &Session,
        offer: &str,
    ) -> Result<RealtimeCall, RealtimeError> {
        let key = self.create_session(session).await?;
        self.exchange_sdp(&key, offer).await
    }

    /// Runs `once` under the breaker with the step's retry policy; counts and times it.
    async fn run<T, F, Fut>(&self, step: Step, once: F) -> Result<T, RealtimeError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let started = Instant::now();
        let result = guarded(&self.breaker, once, |failure| may_retry(step, failure)).await;

        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.label(),
        };
        self.metrics
            .realtime_requests
            .with_label_values(&[self.provider.as_str(), step.as_str(), outcome])
            .inc();
        self.metrics
            .realtime_request_duration
            .with_label_values(&[self.provider.as_str(), step.as_str()])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn log_failure(&self, step: Step, err: &RealtimeError) {
        tracing::warn!(
            provider = self.provider.as_str(),
            step = step.as_str(),
            outcome = err.label(),
            error = %err,
            "Realtime session creation failed"
        );
    }

    async fn client_secret_once(
        &self,
        body: &ClientSecretRequest<'_>,
    ) -> Result<EphemeralKey, Attempt> {
        let request = self.http.post(self.client_secrets_url.clone()).json(body);
        let request = match self.provider {
            Provider::OpenAi => request.bearer_auth(self.api_key.expose_secret()),
            Provider::Azure => request.header("api-key", self.api_key.expose_secret()),
        };
        let (status, _, text) = self.send(Step::ClientSecret, request).await?;
        let answer: ClientSecretAnswer = serde_json::from_str(&text).map_err(|e| Attempt {
            error: RealtimeError::BadResponse(format!(
                "client secret answer (HTTP {status}) is not the expected JSON: {e}"
            )),
            maybe_delivered: true,
        })?;
        if answer.value.trim().is_empty() {
            return Err(Attempt {
                error: RealtimeError::BadResponse(
                    "client secret answer with an empty value".into(),
                ),
                maybe_delivered: true,
            });
        }
        Ok(EphemeralKey {
            value: SecretString::from(answer.value),
            expires_at: answer
                .expires_at
                .and_then(|at| DateTime::from_timestamp(at, 0)),
            session_id: answer.session.and_then(|s| s.id),
        })
    }

    async fn sdp_once(&self, key: &EphemeralKey, offer: &str) -> Result<RealtimeCall, Attempt> {
        let request = self
            .http
            .post(self.calls_url.clone())
            .bearer_auth(key.value.expose_secret())
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer.to_owned());
        let (status, headers, answer_sdp) = self.send(Step::SdpExchange, request).await?;
        if !answer_sdp.trim_start().starts_with("v=0") {
            return Err(Attempt {
                error: RealtimeError::BadResponse(format!(
                    "HTTP {status} without an SDP answer body"
                )),
                maybe_delivered: true,
            });
        }
        let call_id = headers
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .and_then(call_id_from_location);
        Ok(RealtimeCall {
            answer_sdp,
            call_id,
        })
    }

    /// Sends one request; a 2xx gives its status, headers and body, anything else an
    /// [`Attempt`] with the error it means.
    async fn send(
        &self,
        step: Step,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, String), Attempt> {
        let transport = |err: reqwest::Error, maybe_delivered: bool| Attempt {
            error: RealtimeError::Unavailable {
                reason: if err.is_timeout() {
                    "no answer in time".to_owned()
                } else {
                    without_url(&err, step)
                },
            },
            maybe_delivered,
        };
        let response = request.send().await.map_err(|err| {
            let delivered = !err.is_connect();
            transport(err, delivered)
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|err| transport(err, true))?;
        if status.is_success() {
            Ok((status, headers, text))
        } else {
            Err(Attempt {
                error: error_from(status, &headers, &text),
                maybe_delivered: true,
            })
        }
    }
}

/// Whether a failed `step` may be sent again.
fn may_retry(step: Step, failure: &Attempt) -> bool {
    let transient = match &failure.error {
        RealtimeError::Unavailable { .. } => true,
        RealtimeError::RateLimited { retry_after, .. } => {
            retry_after.is_none_or(|after| after <= MAX_RETRY_AFTER)
        }
        RealtimeError::Unauthorized { .. }
        | RealtimeError::QuotaExceeded { .. }
        | RealtimeError::BadRequest { .. }
        | RealtimeError::CircuitOpen
        | RealtimeError::BadResponse(_) => false,
    };
    match step {
        // Creates nothing billable: any transient failure.
        Step::ClientSecret => transient,
        // Starts a billed session: only when nothing reached the API.
        Step::SdpExchange => transient && !failure.maybe_delivered,
    }
}

/// Turns an error answer into a [`RealtimeError`].
fn error_from(status: StatusCode, headers: &HeaderMap, body: &str) -> RealtimeError {
    let parsed = serde_json::from_str::<ErrorEnvelope>(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|e| e.error.code.as_ref())
        .map(|code| match code {
            serde_json::Value::String(s) => s.clone(),
            other @ (serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::Array(_)
            | serde_json::Value::Object(_)) => other.to_string(),
        });
    let message = match parsed {
        Some(ErrorEnvelope { error }) => {
            let mut message = error.message.unwrap_or_else(|| format!("HTTP {status}"));
            if let Some(param) = error.param {
                message.push_str(&format!(" (param: {param})"));
            }
            if let Some(code) = &code {
                message.push_str(&format!(" (code: {code})"));
            }
            message
        }
        None => format!("HTTP {status} without an error body"),
    };
    let message: String = redact_keys(&message)
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RealtimeError::Unauthorized { message },
        StatusCode::TOO_MANY_REQUESTS if code.as_deref() == Some("insufficient_quota") => {
            RealtimeError::QuotaExceeded { message }
        }
        StatusCode::TOO_MANY_REQUESTS => RealtimeError::RateLimited {
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|secs| secs.is_finite() && *secs >= 0.0)
                .map(Duration::from_secs_f64),
            message,
        },
        StatusCode::REQUEST_TIMEOUT => RealtimeError::Unavailable { reason: message },
        _ if status.is_server_error() => RealtimeError::Unavailable { reason: message },
        _ => RealtimeError::BadRequest {
            status: status.as_u16(),
            message,
        },
    }
}

/// `message` with every word that looks like a key (`sk-…`, `ek_…`) replaced by `***`: a
/// 401 may quote the key it refused (OpenAI masks most of it), and these messages are logged.
fn redact_keys(message: &str) -> String {
    message
        .split(' ')
        .map(|word| {
            let bare = word.trim_start_matches(['\'', '"', '(']);
            if bare.starts_with("sk-") || bare.starts_with("ek_") {
                "***"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `https://r.openai.azure.com` → `https://r.openai.azure.com/openai/v1` (kept as is when the
/// operator already wrote the `/openai/v1` path).
fn azure_v1_base(endpoint: &Url) -> anyhow::Result<Url> {
    if !matches!(endpoint.scheme(), "http" | "https") {
        anyhow::bail!("AZURE_OPENAI_ENDPOINT must be an http(s) URL");
    }
    let mut base = endpoint.clone();
    let already = endpoint
        .path_segments()
        .map(|segments| segments.filter(|s| !s.is_empty()).collect::<Vec<_>>())
        .is_some_and(|segments| segments.ends_with(&["openai", "v1"]));
    if !already {
        base.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("AZURE_OPENAI_ENDPOINT cannot be a base URL"))?
            .pop_if_empty()
            .extend(["openai", "v1"]);
    }
    Ok(base)
}

/// The last path segment of `Location` (`/v1/realtime/calls/rtc_…`), query dropped.
fn call_id_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// A reqwest error's text with the URL replaced by the step's name (the Azure resource name
/// is not secret, but logs do not need it).
fn without_url(err: &reqwest::Error, step: Step) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), step.as_str());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn api_errors_become_outcomes_callers_act_on() {
        let body = r#"{"error": {"message": "Invalid value: 'nova'.", "type": "invalid_request_error",
            "param": "session.audio.output.voice", "code": "invalid_value"}}"#;
        assert_eq!(
            error_from(StatusCode::BAD_REQUEST, &HeaderMap::new(), body),
            RealtimeError::BadRequest {
                status: 400,
                message: "Invalid value: 'nova'. (param: session.audio.output.voice) (code: invalid_value)".into()
            }
        );
        assert!(matches!(
            error_from(StatusCode::UNAUTHORIZED, &HeaderMap::new(), "{}"),
            RealtimeError::Unauthorized { .. }
        ));
        assert_eq!(
            error_from(
                StatusCode::TOO_MANY_REQUESTS,
                &headers(&[("retry-after", "1")]),
                r#"{"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}"#
            ),
            RealtimeError::RateLimited {
                retry_after: Some(Duration::from_secs(1)),
                message: "Rate limit reached (code: rate_limit_exceeded)".into()
            }
        );
        assert!(matches!(
            error_from(
                StatusCode::TOO_MANY_REQUESTS,
                &HeaderMap::new(),
                r#"{"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}"#
            ),
            RealtimeError::QuotaExceeded { .. }
        ));
        assert!(matches!(
            error_from(StatusCode::BAD_GATEWAY, &HeaderMap::new(), "<html>"),
            RealtimeError::Unavailable { .. }
        ));
    }

    #[test]
    fn keys_quoted_in_error_messages_are_redacted() {
        let body = r#"{"error": {"message": "Incorrect API key provided: sk-proj-****abcd. You can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", "code": "invalid_api_key"}}"#;
        let err = error_from(StatusCode::UNAUTHORIZED, &HeaderMap::new(), body);
        let text = err.to_string();
        assert!(!text.contains("sk-proj"), "{text}");
        assert!(text.contains("Incorrect API key provided: ***"), "{text}");
    }

    #[test]
    fn only_the_key_step_is_retried_after_the_request_may_have_arrived() {
        let failure = |error, maybe_delivered| Attempt {
            error,
            maybe_delivered,
        };
        let unavailable = || RealtimeError::Unavailable {
            reason: "HTTP 500".into(),
        };
        assert!(may_retry(Step::ClientSecret, &failure(unavailable(), true)));
        assert!(!may_retry(Step::SdpExchange, &failure(unavailable(), true)));
        assert!(may_retry(Step::SdpExchange, &failure(unavailable(), false)));
        let limited = |secs| RealtimeError::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
            message: String::new(),
        };
        assert!(may_retry(Step::ClientSecret, &failure(limited(1), true)));
        assert!(
            !may_retry(Step::ClientSecret, &failure(limited(30), true)),
            "the caller would hang up first"
        );
        assert!(!may_retry(
            Step::ClientSecret,
            &failure(
                RealtimeError::Unauthorized {
                    message: String::new()
                },
                true
            )
        ));
        assert!(!may_retry(
            Step::SdpExchange,
            &failure(RealtimeError::CircuitOpen, false)
        ));
    }

    #[test]
    fn urls_follow_each_providers_v1_shape() {
        let metrics = Metrics::new().expect("metrics");
        let openai = RealtimeClient::new(
            &AiProvider::OpenAi {
                api_key: SecretString::from("sk".to_owned()),
                base_url: "https://api.openai.com/v1".parse().expect("url"),
            },
            metrics.clone(),
        )
        .expect("client");
        assert_eq!(
            openai.client_secrets_url.as_str(),
            "https://api.openai.com/v1/realtime/client_secrets"
        );
        assert_eq!(
            openai.calls_url.as_str(),
            "https://api.openai.com/v1/realtime/calls"
        );
        for endpoint in [
            "https://r.openai.azure.com",
            "https://r.openai.azure.com/",
            "https://r.openai.azure.com/openai/v1/",
        ] {
            let azure = RealtimeClient::new(
                &AiProvider::Azure {
                    api_key: SecretString::from("az".to_owned()),
                    endpoint: endpoint.parse().expect("url"),
                    deployment: Some("gpt-realtime".into()),
                },
                metrics.clone(),
            )
            .expect("client");
            assert_eq!(
                azure.calls_url.as_str(),
                "https://r.openai.azure.com/openai/v1/realtime/calls",
                "{endpoint}"
            );
            assert!(azure.client_secrets_url.query().is_none(), "no api-version");
        }
    }

    #[test]
    fn the_call_id_is_the_last_segment_of_location() {
        assert_eq!(
            call_id_from_location("/v1/realtime/calls/rtc_u1_9c6574da8b8a41a18da9308f4ad974ce")
                .as_deref(),
            Some("rtc_u1_9c6574da8b8a41a18da9308f4ad974ce")
        );
        assert_eq!(
            call_id_from_location("https://api.openai.com/v1/realtime/calls/rtc_1?x=y").as_deref(),
            Some("rtc_1")
        );
        assert_eq!(call_id_from_location(""), None);
    }

    #[test]
    fn an_ephemeral_key_never_prints_and_knows_its_expiry() {
        let now = Utc::now();
        let key = EphemeralKey {
            value: SecretString::from("ek_68af296e8e408191a1120ab6383263c2".to_owned()),
            expires_at: Some(now + chrono::Duration::seconds(60)),
            session_id: Some("sess_1".into()),
        };
        assert!(!format!("{key:?}").contains("ek_68af"));
        assert!(key.is_valid_at(now, Duration::from_secs(5)));
        assert!(!key.is_valid_at(now, Duration::from_secs(120)));
    }
}
