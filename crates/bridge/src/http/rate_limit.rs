//! Per-client-IP rate limiting (governor's keyed token bucket; the seed's 10 req/s, burst 20).
//!
//! Public GET routes are limited up front. Webhook POSTs are limited only when their signature
//! fails: Meta's signed deliveries come in bursts (a broadcast's statuses) from a handful of
//! addresses, and throttling them would turn into retries and backlog, while anyone without
//! the app secret is held to the same rate as any other anonymous client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::error::ApiError;
use super::AppState;
use crate::config::RateLimit;

/// The limiter shared by every request.
pub struct IpRateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    client_ip_header: Option<HeaderName>,
}

impl IpRateLimiter {
    /// A limiter at `rate`, reading the client IP from `client_ip_header` when set.
    pub fn new(rate: RateLimit, client_ip_header: Option<HeaderName>) -> Self {
        let quota = Quota::per_second(rate.per_second).allow_burst(rate.burst);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            client_ip_header,
        }
    }

    /// Takes one request from `ip`'s bucket; `Err` says how long until the next is allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// The client's IP: the configured proxy header's (first) address when present and valid,
    /// else the TCP peer.
    pub fn client_ip(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        self.client_ip_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .and_then(|first| first.trim().parse().ok())
            .unwrap_or_else(|| peer.ip())
    }

    /// Forgets clients idle long enough to have a full bucket again (bounds memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Middleware for public routes: POSTs pass (webhooks are limited on signature failure),
/// everything else takes a token from its client IP's bucket.
pub async fn limit_by_ip(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::POST {
        return next.run(request).await;
    }
    let ip = state.limiter.client_ip(request.headers(), peer);
    match state.limiter.check(ip) {
        Ok(()) => next.run(request).await,
        Err(retry_after) => {
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str)
                .to_owned();
            state
                .metrics
                .rate_limited
                .with_label_values(&[&route])
                .inc();
            ApiError::RateLimited { retry_after }.into_response()
        }
    }
}

/// Forgets idle clients every minute until the app stops.
pub fn spawn_janitor(limiter: Arc<IpRateLimiter>, cancel: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => limiter.forget_idle(),
            }
        }
    });
}
