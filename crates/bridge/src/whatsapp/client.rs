//! The Graph API client for calls: `POST /{version}/{phone-number-id}/calls` with the
//! actions `pre_accept`, `accept`, `reject`, `terminate` (user-initiated calls) and `connect`
//! (business-initiated calls). Shapes: `shared/reference/platform-apis.md` A1.2.
//!
//! - **Typed outcomes.** Graph errors become [`GraphError`] variants callers act on (no
//!   permission to call, daily limit, concurrency limit, ...); the rest keep code and message.
//! - **Retries only where safe.** A request that never reached Meta (connection refused) is
//!   retried for every action; one that may have reached it (timeout, 5xx, 429) only for
//!   actions that do no harm twice (`pre_accept`, `reject`, `terminate`). A `connect` that may
//!   have been received is never repeated: it could ring the user twice.
//! - **Circuit breaker.** After 5 consecutive transport failures or 5xx answers, calls fail
//!   at once ([`GraphError::CircuitOpen`]) for 10 s, growing to 60 s, instead of each waiting
//!   for a timeout while Meta is down.
//! - **Logs and metrics.** Every request is logged with its action, call id, outcome and
//!   Meta's `fbtrace_id`, never the token or the SDP; counted by action and outcome.

use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::WhatsAppConfig;
use crate::domain::{PhoneNumberId, WaCallId, WaId, WamId};
use crate::telemetry::{masked, Metrics};
use crate::upstream::{self, guarded, http_client, Breaker, UpstreamError};

/// How long one Graph request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// What went wrong with a Graph call, in the terms callers act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// 138006: the user has not granted permission to be called.
    #[error("no permission to call this user (138006): ask for call permission first")]
    NoPermission,
    /// 138012: the per-user daily limit of business-initiated calls is reached.
    #[error("daily call limit for this user reached (138012){}", .next_allowed.as_deref().map(|t| format!("; next allowed: {t}")).unwrap_or_default())]
    DailyLimit {
        /// When calling is allowed again, as Meta says it.
        next_allowed: Option<String>,
    },
    /// 138002: too many concurrent calls on the number.
    #[error("too many concurrent calls on this number (138002)")]
    ConcurrencyLimit,
    /// 138005, 130429, 80007, 4, 613: slow down.
    #[error("rate limited by Meta ({code})")]
    RateLimited {
        /// The code Meta used.
        code: i64,
    },
    /// 138000: calling is not enabled for the number.
    #[error(
        "calling is not enabled on this number (138000): enable it in the phone number's settings"
    )]
    CallingDisabled,
    /// 138001: the user cannot receive calls (device, country, settings).
    #[error("the user cannot receive calls (138001)")]
    Uncallable,
    /// 190 / HTTP 401: the access token is invalid or expired.
    #[error("the access token was refused (WHATSAPP_ACCESS_TOKEN): {message}")]
    Unauthorized {
        /// Meta's message.
        message: String,
    },
    /// Any other error Meta reported.
    #[error("Graph error {code}: {message}")]
    Api {
        /// `error.code`.
        code: i64,
        /// `error.message` (and details).
        message: String,
        /// HTTP status.
        status: u16,
    },
    /// No answer in time.
    #[error("the Graph API did not answer in time")]
    Timeout,
    /// The request could not be made or its answer not read.
    #[error("could not reach the Graph API: {0}")]
    Transport(String),
    /// Recent requests failed; not trying for a while.
    #[error("the Graph API is failing; not trying again for a few seconds")]
    CircuitOpen,
    /// Meta answered 2xx with something we cannot use.
    #[error("unexpected Graph answer: {0}")]
    Unexpected(String),
}

impl GraphError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            GraphError::NoPermission => "no_permission",
            GraphError::DailyLimit { .. } => "daily_limit",
            GraphError::ConcurrencyLimit => "concurrency_limit",
            GraphError::RateLimited { .. } => "rate_limited",
            GraphError::CallingDisabled => "calling_disabled",
            GraphError::Uncallable => "uncallable",
            GraphError::Unauthorized { .. } => "unauthorized",
            GraphError::Api { .. } => "api_error",
            GraphError::Timeout => "timeout",
            GraphError::Transport(_) => "transport",
            GraphError::CircuitOpen => "circuit_open",
            GraphError::Unexpected(_) => "unexpected",
        }
    }
}

impl UpstreamError for GraphError {
    /// Meta's side is failing (not a business answer about this call).
    fn is_outage(&self) -> bool {
        matches!(
            self,
            GraphError::Timeout | GraphError::Transport(_) | GraphError::Api { status: 500.., .. }
        )
    }

    fn circuit_open() -> Self {
        GraphError::CircuitOpen
    }
}

/// One request's failure, with whether it may have reached Meta.
type Attempt = upstream::Attempt<GraphError>;

/// A `calls` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphAction {
    /// Open media before answering (user-initiated).
    PreAccept,
    /// Answer (user-initiated).
    Accept,
    /// Decline before answering (user-initiated).
    Reject,
    /// Hang up.
    Terminate,
    /// Place a business-initiated call.
    Connect,
    /// Send a text message (`/messages`, not a call action).
    Message,
}

impl GraphAction {
    /// The action's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            GraphAction::PreAccept => "pre_accept",
            GraphAction::Accept => "accept",
            GraphAction::Reject => "reject",
            GraphAction::Terminate => "terminate",
            GraphAction::Connect => "connect",
            GraphAction::Message => "message",
        }
    }

    /// Whether doing it twice is harmless, so a request that may have arrived can be resent.
    fn repeatable(self) -> bool {
        matches!(
            self,
            GraphAction::PreAccept | GraphAction::Reject | GraphAction::Terminate
        )
    }
}

/// The Graph API client. Cheap to clone.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    calls_url: Url,
    messages_url: Url,
    token: SecretString,
    breaker: Breaker,
    metrics: Metrics,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("calls_url", &self.calls_url.as_str())
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// A client for the configured number, or `None` when no credentials are configured.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS roots missing).
    pub fn from_config(config: &WhatsAppConfig, metrics: Metrics) -> anyhow::Result<Option<Self>> {
        let Some(graph) = &config.graph else {
            return Ok(None);
        };
        Ok(Some(Self::new(
            &config.graph_url,
            &config.api_version,
            &graph.phone_number_id,
            graph.access_token.clone(),
            metrics,
        )?))
    }

    /// Gives up on a request after `timeout` instead of 10 s (tests).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn with_timeout(mut self, timeout: Duration) -> anyhow::Result<Self> {
        self.http = http_client(timeout)?;
        Ok(self)
    }

    /// A client for `phone_number_id` at `base` (e.g. `https://graph.facebook.com`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        base: &Url,
        version: &str,
        phone_number_id: &PhoneNumberId,
        token: SecretString,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let endpoint = |name: &str| -> anyhow::Result<Url> {
            let mut url = base.clone();
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("WHATSAPP_GRAPH_URL cannot be a base URL"))?
                .pop_if_empty()
                .extend([version, phone_number_id.as_str(), name]);
            Ok(url)
        };
        let calls_url = endpoint("calls")?;
        let messages_url = endpoint("messages")?;
        let http = http_client(REQUEST_TIMEOUT)?;
        let breaker = upstream::breaker();
        Ok(Self {
            http,
            calls_url,
            messages_url,
            token,
            breaker,
            metrics,
        })
    }

    /// `pre_accept` an inbound call with our SDP answer (media may start, the call is not
    /// answered yet).
    ///
    /// # Errors
    /// See [`GraphError`].
    pub async fn pre_accept(&self, call: &WaCallId, answer: &str) -> Result<(), GraphError> {
        let fields = json!({"session": {"sdp_type": "answer", "sdp": answer}});
        self.send(GraphAction::PreAccept, Some(call), None, fields)
            .await
            .map(drop)
    }

    /// `accept` an inbound call (the user hears us from now on).
    ///
    /// # Errors
    /// See [`GraphError`].
    pub async fn accept(
        &self,
        call: &WaCallId,
        answer: &str,
        callback_data: &str,
    ) -> Result<(), GraphError> {
        let fields = json!({
            "session": {"sdp_type": "answer", "sdp": answer},
            "biz_opaque_callback_data": callback_data,
        });
        self.send(GraphAction::Accept, Some(call), None, fields)
            .await
            .map(drop)
    }

    /// `reject` an inbound call that we will not take (the caller stops ringing).
    ///
    /// # Errors
    /// See [`GraphError`].
    pub async fn reject(&self, call: &WaCallId) -> Result<(), GraphError> {
        self.send(GraphAction::Reject, Some(call), None, json!({}))
            .await
            .map(drop)
    }

    /// `terminate` a call (hang up).
    ///
    /// # Errors
    /// See [`GraphError`].
    pub async fn terminate(&self, call: &WaCallId) -> Result<(), GraphError> {
        self.send(GraphAction::Terminate, Some(call), None, json!({}))
            .await
            .map(drop)
    }

    /// `connect`: call `to` with our SDP offer. `callback_data` (our call id) comes back on the
    /// call's webhooks. Returns WhatsApp's call id.
    ///
    /// # Errors
    /// See [`GraphError`]; [`GraphError::NoPermission`] and [`GraphError::DailyLimit`] are the
    /// common ones.
    pub async fn connect(
        &self,
        to: &WaId,
        offer: &str,
        callback_data: &str,
    ) -> Result<WaCallId, GraphError> {
        let fields = json!({
            "session": {"sdp_type": "offer", "sdp": offer},
            "biz_opaque_callback_data": callback_data,
        });
        let answer = self
            .send(GraphAction::Connect, None, Some(to), fields)
            .await?;
        let id = answer
            .get("calls")
            .and_then(|calls| calls.get(0))
            .and_then(|call| call.get("id"))
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::Unexpected("connect answer without calls[0].id".into()))?;
        WaCallId::parse(id).map_err(|e| GraphError::Unexpected(e.to_string()))
    }

    /// Sends a text message to `to` (outside a conversation window WhatsApp refuses it with
    /// an error; the caller decides what that means). Never retried once it may have been
    /// delivered: a person would get it twice.
    ///
    /// # Errors
    /// See [`GraphError`].
    pub async fn send_text(&self, to: &WaId, text: &str) -> Result<Option<WamId>, GraphError> {
        let fields =
            json!({"recipient_type": "individual", "type": "text", "text": {"body": text}});
        let answer = self
            .send(GraphAction::Message, None, Some(to), fields)
            .await?;
        Ok(answer["messages"][0]["id"]
            .as_str()
            .and_then(|id| WamId::parse(id).ok()))
    }

    /// Sends one action (its `action`, `call_id`/`to` and `messaging_product` added to `fields`)
    /// with the retry policy above; logs and counts it.
    async fn send(
        &self,
        action: GraphAction,
        call: Option<&WaCallId>,
        to: Option<&WaId>,
        fields: Value,
    ) -> Result<Value, GraphError> {
        // The request names its action and call (or callee) once: here, from the arguments
        // the logs and metrics use too.
        let mut body = json!({"messaging_product": "whatsapp"});
        let url = if action == GraphAction::Message {
            &self.messages_url
        } else {
            body["action"] = json!(action.as_str());
            &self.calls_url
        };
        if let Some(call) = call {
            body["call_id"] = json!(call.as_str());
        }
        if let Some(to) = to {
            body["to"] = json!(to.as_str());
        }
        if let (Value::Object(body), Value::Object(fields)) = (&mut body, fields) {
            body.extend(fields);
        }
        let started = Instant::now();
        let result = guarded(
            &self.breaker,
            || self.post_once(url, &body),
            |failure| {
                let transient = matches!(
                    failure.error,
                    GraphError::Timeout
                        | GraphError::Transport(_)
                        | GraphError::RateLimited { .. }
                        | GraphError::Api { status: 500.., .. }
                );
                transient && (!failure.maybe_delivered || action.repeatable())
            },
        )
        .await;

        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.label(),
        };
        self.metrics
            .graph_requests
            .with_label_values(&[action.as_str(), outcome])
            .inc();
        self.metrics
            .graph_request_duration
            .with_label_values(&[action.as_str()])
            .observe(started.elapsed().as_secs_f64());
        let call_id = call.map_or("-", WaCallId::as_str);
        match &result {
            Ok(_) => {
                tracing::info!(action = action.as_str(), call_id, to = %masked(to), "Graph request done")
            }
            Err(err) => {
                tracing::warn!(action = action.as_str(), call_id, to = %masked(to), outcome, error = %err, "Graph request failed")
            }
        }
        result
    }

    async fn post_once(&self, url: &Url, body: &Value) -> Result<Value, Attempt> {
        let response = self
            .http
            .post(url.clone())
            .bearer_auth(self.token.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(|err| Attempt {
                maybe_delivered: !err.is_connect(),
                error: if err.is_timeout() {
                    GraphError::Timeout
                } else {
                    GraphError::Transport(without_url(&err))
                },
            })?;
        let status = response.status();
        let text = response.text().await.map_err(|err| Attempt {
            maybe_delivered: true,
            error: if err.is_timeout() {
                GraphError::Timeout
            } else {
                GraphError::Transport(without_url(&err))
            },
        })?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|_| Attempt {
                maybe_delivered: true,
                error: GraphError::Unexpected(format!(
                    "HTTP {status} with a body that is not JSON"
                )),
            });
        }
        Err(Attempt {
            maybe_delivered: true,
            error: parse_error(status, &text),
        })
    }
}

/// A reqwest error's text without the URL (it holds the phone number id; harmless, but the
/// logs do not need it).
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), "the Graph API");
    }
    text
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
    error_data: Option<ErrorData>,
    fbtrace_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorData {
    details: Option<Value>,
}

/// Turns Meta's error answer into a [`GraphError`].
fn parse_error(status: StatusCode, body: &str) -> GraphError {
    let Ok(ErrorEnvelope { error }) = serde_json::from_str::<ErrorEnvelope>(body) else {
        return match status {
            StatusCode::UNAUTHORIZED => GraphError::Unauthorized {
                message: format!("HTTP {status}"),
            },
            StatusCode::TOO_MANY_REQUESTS => GraphError::RateLimited { code: 429 },
            _ => GraphError::Api {
                code: 0,
                message: format!("HTTP {status} without a Graph error body"),
                status: status.as_u16(),
            },
        };
    };
    let details = error.error_data.and_then(|d| d.details).map(|d| match d {
        Value::String(s) => s,
        other @ (Value::Null
        | Value::Bool(_)
        | Value::Number(_)
        | Value::Array(_)
        | Value::Object(_)) => other.to_string(),
    });
    let message = match (&error.message, &details) {
        (Some(m), Some(d)) => format!("{m} ({d})"),
        (Some(m), None) => m.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => "no message".to_owned(),
    };
    if let Some(trace) = &error.fbtrace_id {
        tracing::debug!(fbtrace_id = %trace, "Graph error trace id");
    }
    let code = error.code.unwrap_or_default();
    match code {
        138_006 => GraphError::NoPermission,
        138_012 => GraphError::DailyLimit {
            next_allowed: details,
        },
        138_002 => GraphError::ConcurrencyLimit,
        138_005 | 130_429 | 80_007 | 4 | 613 => GraphError::RateLimited { code },
        138_000 => GraphError::CallingDisabled,
        138_001 => GraphError::Uncallable,
        190 => GraphError::Unauthorized { message },
        _ if status == StatusCode::UNAUTHORIZED => GraphError::Unauthorized { message },
        _ => GraphError::Api {
            code,
            message,
            status: status.as_u16(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: i64, details: &str) -> String {
        json!({"error": {"message": "msg", "type": "OAuthException", "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details}, "fbtrace_id": "Az8or"}})
        .to_string()
    }

    #[test]
    fn meta_error_codes_become_outcomes_callers_act_on() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            parse_error(bad, &error(138_006, "no permission")),
            GraphError::NoPermission
        );
        assert_eq!(
            parse_error(
                bad,
                &error(138_012, "next call allowed at 2026-11-27T09:00:00Z")
            ),
            GraphError::DailyLimit {
                next_allowed: Some("next call allowed at 2026-11-27T09:00:00Z".into())
            }
        );
        assert_eq!(
            parse_error(bad, &error(138_002, "")),
            GraphError::ConcurrencyLimit
        );
        assert_eq!(
            parse_error(bad, &error(138_005, "")),
            GraphError::RateLimited { code: 138_005 }
        );
        assert_eq!(
            parse_error(bad, &error(138_000, "")),
            GraphError::CallingDisabled
        );
        assert_eq!(
            parse_error(StatusCode::UNAUTHORIZED, &error(190, "expired")),
            GraphError::Unauthorized {
                message: "msg (expired)".into()
            }
        );
        assert_eq!(
            parse_error(bad, &error(100, "Invalid SDP")),
            GraphError::Api {
                code: 100,
                message: "msg (Invalid SDP)".into(),
                status: 400
            }
        );
        assert_eq!(
            parse_error(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>"),
            GraphError::Api {
                code: 0,
                message: "HTTP 502 Bad Gateway without a Graph error body".into(),
                status: 502
            }
        );
    }

    #[test]
    fn only_meta_side_failures_trip_the_breaker() {
        assert!(GraphError::Timeout.is_outage());
        assert!(GraphError::Api {
            code: 1,
            message: String::new(),
            status: 503
        }
        .is_outage());
        assert!(!GraphError::NoPermission.is_outage());
        assert!(!GraphError::Api {
            code: 100,
            message: String::new(),
            status: 400
        }
        .is_outage());
    }
}
