//! Requests to the clouds we depend on (Meta's Graph API, OpenAI and Azure OpenAI): the HTTP
//! client they share, and the one way a request to them is guarded.
//!
//! A guarded request goes through a circuit breaker (it opens after 5 consecutive outages,
//! half-opens after 10 s, backing off to 60 s) and is tried again at most twice, 200 ms to 1 s
//! apart with jitter, when the caller's policy says the failure is worth another try (a request
//! that may have reached the provider is only repeated when repeating it is harmless). A
//! provider's own `Retry-After` replaces the backoff.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use failsafe::{backoff, failure_policy, Config as BreakerConfig, StateMachine};

/// Longest wait for a connection, whatever the request's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP client for the clouds we call: `timeout` per request, a shorter connect timeout,
/// our user agent.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .user_agent(concat!("whatsapp-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A provider's circuit breaker. Cheap to clone (the state is shared).
pub(crate) type Breaker =
    StateMachine<failure_policy::ConsecutiveFailures<backoff::Exponential>, ()>;

/// A breaker that opens after 5 consecutive outages and half-opens after 10 s, then up to 60 s.
pub(crate) fn breaker() -> Breaker {
    BreakerConfig::new()
        .failure_policy(failure_policy::consecutive_failures(
            5,
            backoff::exponential(Duration::from_secs(10), Duration::from_secs(60)),
        ))
        .build()
}

/// One try's failure, with whether it may have reached the provider.
pub(crate) struct Attempt<E> {
    pub(crate) error: E,
    /// False only when the connection was never established: nothing was sent.
    pub(crate) maybe_delivered: bool,
}

/// What a guarded request's error must say about itself.
pub(crate) trait UpstreamError {
    /// The provider is failing (not an answer about this request): counts towards opening the
    /// breaker.
    fn is_outage(&self) -> bool;
    /// The error of a request the open breaker refused without sending it.
    fn circuit_open() -> Self;
    /// How long the provider asked us to wait before trying again, if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Runs `once` under `breaker`, trying again while `may_retry` allows (at most twice).
pub(crate) async fn guarded<T, E, F, Fut>(
    breaker: &Breaker,
    once: F,
    may_retry: impl Fn(&Attempt<E>) -> bool,
) -> Result<T, E>
where
    E: UpstreamError,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Attempt<E>>>,
{
    let attempt = || async {
        if !breaker.is_call_permitted() {
            return Err(Attempt {
                error: E::circuit_open(),
                maybe_delivered: false,
            });
        }
        let result = once().await;
        match &result {
            Err(attempt) if attempt.error.is_outage() => breaker.on_error(),
            Ok(_) | Err(_) => breaker.on_success(),
        }
        result
    };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(1))
                .with_max_times(2)
                .with_jitter(),
        )
        .when(|failure: &Attempt<E>| may_retry(failure))
        .adjust(
            |failure: &Attempt<E>, proposed| match (failure.error.retry_after(), proposed) {
                (Some(after), Some(_)) => Some(after),
                _ => proposed,
            },
        )
        .await
        .map_err(|failure| failure.error)
}
