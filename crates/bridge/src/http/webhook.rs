//! `GET` and `POST /whatsapp-call` (alias `/webhook`): Meta's subscription handshake and
//! every webhook (calls, messages, statuses).
//!
//! POST: verify → parse → store once → answer. The signature is checked on the raw bytes
//! before anything looks at them; the answer is sent once the events are durable (a few
//! milliseconds) and all further work happens on the event router.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::events::inbox::{Delivery, InboxError, Signature};
use crate::whatsapp::signature::{self, SIGNATURE_HEADER};
use crate::whatsapp::webhook;

/// The handshake's query: `hub.mode`, `hub.verify_token`, `hub.challenge`.
#[derive(Deserialize)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Answers Meta's subscription handshake with the challenge when the token matches.
pub async fn handshake(
    State(state): State<AppState>,
    Query(query): Query<Handshake>,
) -> Result<Response, ApiError> {
    let (Some(mode), Some(token), Some(challenge)) =
        (query.mode, query.verify_token, query.challenge)
    else {
        return Err(ApiError::BadRequest {
            code: "bad_handshake",
            message: "expected hub.mode, hub.verify_token and hub.challenge".to_owned(),
        });
    };
    let Some(expected) = &state.webhook.verify_token else {
        return Err(ApiError::Forbidden {
            message: "webhook verification is not configured: set WHATSAPP_VERIFY_TOKEN".to_owned(),
        });
    };
    let matches: bool = token
        .as_bytes()
        .ct_eq(expected.expose_secret().as_bytes())
        .into();
    if mode != "subscribe" || !matches {
        tracing::warn!(
            mode,
            "webhook handshake refused: wrong mode or verify token"
        );
        return Err(ApiError::Forbidden {
            message: "verify token mismatch".to_owned(),
        });
    }
    tracing::info!("webhook subscription verified");
    Ok((StatusCode::OK, challenge).into_response())
}

/// Receives a webhook.
pub async fn receive(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let deliveries = &state.metrics.webhook_deliveries;
    let body = match body {
        Ok(body) => body,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            deliveries.with_label_values(&["too_large"]).inc();
            return Err(ApiError::PayloadTooLarge {
                limit: state.webhook.max_body_bytes,
            });
        }
        Err(other) => {
            deliveries.with_label_values(&["malformed_json"]).inc();
            return Err(ApiError::BadRequest {
                code: "bad_body",
                message: other.body_text(),
            });
        }
    };

    let signature = match &state.webhook.app_secret {
        Some(secret) => {
            let header = headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
            if let Err(err) = signature::verify(secret.expose_secret().as_bytes(), header, &body) {
                state
                    .metrics
                    .signature_failures
                    .with_label_values(&[err.as_label()])
                    .inc();
                deliveries.with_label_values(&["bad_signature"]).inc();
                // Unauthenticated traffic is held to the per-IP rate.
                let ip = state.limiter.client_ip(&headers, peer);
                if let Err(retry_after) = state.limiter.check(ip) {
                    state
                        .metrics
                        .rate_limited
                        .with_label_values(&["/whatsapp-call"])
                        .inc();
                    return Err(ApiError::RateLimited { retry_after });
                }
                tracing::warn!(reason = err.as_label(), "webhook refused: bad signature");
                return Err(ApiError::Unauthorized {
                    code: "bad_signature",
                    message: err.to_string(),
                });
            }
            Signature::Verified
        }
        None if state.webhook.allow_unsigned => Signature::Unsigned,
        None => {
            deliveries.with_label_values(&["unsigned_refused"]).inc();
            return Err(ApiError::Unavailable {
                code: "signature_not_configured",
                message: "webhook signature verification is not configured: set WHATSAPP_APP_SECRET (or ALLOW_UNSIGNED_WEBHOOKS=true for local testing)".to_owned(),
                retry_after: None,
            });
        }
    };

    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|err| {
        deliveries.with_label_values(&["malformed_json"]).inc();
        ApiError::BadRequest {
            code: "malformed_json",
            message: format!("the body is not valid JSON: {err}"),
        }
    })?;
    let events = webhook::parse(&value);
    // JSON that parsed is UTF-8.
    let body = String::from_utf8_lossy(&body).into_owned();
    let delivery = Delivery::new(body, signature, events, state.clock.now());
    let receipt = state.inbox.record(delivery).await.map_err(|err| {
        deliveries.with_label_values(&["unavailable"]).inc();
        match err {
            InboxError::Store(_) => ApiError::Unavailable {
                code: "storage_unavailable",
                message: "the webhook could not be stored; retry later".to_owned(),
                retry_after: Some(std::time::Duration::from_secs(5)),
            },
            InboxError::Stopped => ApiError::Unavailable {
                code: "shutting_down",
                message: "the service is shutting down; retry later".to_owned(),
                retry_after: Some(std::time::Duration::from_secs(5)),
            },
        }
    })?;
    let outcome = if receipt.new == 0 && receipt.duplicates > 0 {
        "duplicate"
    } else {
        "accepted"
    };
    deliveries.with_label_values(&[outcome]).inc();
    tracing::debug!(
        new = receipt.new,
        duplicates = receipt.duplicates,
        "webhook stored"
    );
    Ok(Json(json!({
        "received": receipt.new + receipt.duplicates,
        "new": receipt.new,
        "duplicates": receipt.duplicates,
    }))
    .into_response())
}
