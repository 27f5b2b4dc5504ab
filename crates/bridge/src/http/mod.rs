//! The HTTP surface: router assembly, shared state, layers.
//!
//! Routes (all on `PORT`):
//! - `GET|POST /whatsapp-call`, alias `/webhook`: Meta's webhooks ([`webhook`]).
//! - `GET /health`, `GET /ready` ([`health`]), `GET /metrics` ([`metrics`]).
//! - `/api/...`: the admin API, bearer-token authenticated ([`admin`]).
//! - `GET /phone`: the browser test phone's page ([`phone`]), which uses the admin API.
//!
//! Layers, outside in: request id (`x-request-id`, generated when absent, echoed back), a
//! tracing span per request carrying that id, a body size limit, then on matched routes the
//! metrics counter, the request timeout (408) and the per-IP rate limit.

pub mod admin;
pub mod error;
pub mod health;
pub mod metrics;
pub mod phone;
pub mod rate_limit;
pub mod webhook;

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::clock::Clock;
use crate::events::inbox::Inbox;
use crate::store::Store;
use crate::telemetry::Metrics;
use error::ApiError;
use rate_limit::IpRateLimiter;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What webhook handlers need to know.
pub struct WebhookSettings {
    /// Meta app secret, for signatures.
    pub app_secret: Option<SecretString>,
    /// Handshake token.
    pub verify_token: Option<SecretString>,
    /// Accept unsigned POSTs when there is no app secret.
    pub allow_unsigned: bool,
    /// Largest body.
    pub max_body_bytes: usize,
}

/// Facts about the configuration that `/health` reports.
pub struct ServiceStatus {
    /// This instance's id.
    pub instance_id: String,
    /// Graph credentials are set.
    pub whatsapp_configured: bool,
    /// AI keys are set.
    pub ai_configured: bool,
    /// `verified`, `unsigned` or `not_configured`.
    pub webhook_signature: &'static str,
}

/// Everything handlers share; cloning is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
pub struct Shared {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Where verified webhooks are stored.
    pub inbox: Inbox,
    /// Metrics.
    pub metrics: Metrics,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Per-IP rate limit.
    pub limiter: Arc<IpRateLimiter>,
    /// Webhook settings.
    pub webhook: WebhookSettings,
    /// Configuration facts for `/health`.
    pub status: ServiceStatus,
    /// When the app started.
    pub started: Instant,
    /// Cancelled when shutdown begins (`/ready` turns 503).
    pub shutdown: CancellationToken,
    /// The admin API's bearer token; the admin API is off without it.
    pub admin_token: Option<SecretString>,
    /// The calls service.
    pub calls: Option<crate::calls::Calls>,
}

impl AppState {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The whole router.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let max_body = state.webhook.max_body_bytes;
    Router::new()
        .route(
            "/whatsapp-call",
            get(webhook::handshake).post(webhook::receive),
        )
        .route("/webhook", get(webhook::handshake).post(webhook::receive))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/phone", get(phone::page))
        // Route layers run after routing (they see the matched path), innermost first.
        .route_layer(from_fn_with_state(state.clone(), rate_limit::limit_by_ip))
        .route_layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .merge(
            // Authenticated by token, not rate-limited up front (failed tokens are).
            admin::router().route_layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                request_timeout,
            )),
        )
        .route_layer(from_fn_with_state(state.clone(), metrics::track))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &Request| {
                            let id = request
                                .headers()
                                .get(REQUEST_ID)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-");
                            // No path or query here: paths will carry user ids and queries
                            // carry the verify token.
                            tracing::info_span!("request", request_id = %id, method = %request.method())
                        })
                        .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                        // 5xx are logged once, by ApiError, with their cause.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}
