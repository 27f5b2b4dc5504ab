//! The Prometheus metrics of one running app. Every name is documented in `docs/metrics.md`
//! (a test checks that list against this registry).
//!
//! Labels are bounded: routes are axum's matched path templates (never raw URIs, which carry
//! ids and tokens), event kinds and outcomes are closed sets.

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::domain::EventKind;

/// Latency buckets for HTTP requests and database statements, in seconds: fine below 10 ms
/// where the targets are (webhook p99 < 20 ms), coarse above.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Every metric the service exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    names: Vec<String>,
    /// `whatsapp_bridge_http_requests_total{route,method,status}`.
    pub http_requests: IntCounterVec,
    /// `whatsapp_bridge_http_request_duration_seconds{route,method}`.
    pub http_request_duration: HistogramVec,
    /// `whatsapp_bridge_webhook_deliveries_total{outcome}`: POSTs by what we answered.
    pub webhook_deliveries: IntCounterVec,
    /// `whatsapp_bridge_webhook_events_total{kind,outcome}`: events by stage outcome.
    pub webhook_events: IntCounterVec,
    /// `whatsapp_bridge_webhook_signature_failures_total{reason}`.
    pub signature_failures: IntCounterVec,
    /// `whatsapp_bridge_rate_limited_total{route}`.
    pub rate_limited: IntCounterVec,
    /// `whatsapp_bridge_event_queue_depth`: events waiting in memory for the router.
    pub event_queue_depth: IntGauge,
    /// `whatsapp_bridge_event_queue_capacity`.
    pub event_queue_capacity: IntGauge,
    /// `whatsapp_bridge_event_processing_delay_seconds{kind}`: stored → processed.
    pub event_processing_delay: HistogramVec,
    /// `whatsapp_bridge_db_query_duration_seconds{operation}`.
    pub db_query_duration: HistogramVec,
    /// `whatsapp_bridge_db_errors_total{operation}`.
    pub db_errors: IntCounterVec,
    /// `whatsapp_bridge_db_up`: 1 when the last health probe reached the database.
    pub db_up: IntGauge,
    /// `whatsapp_bridge_active_calls`.
    pub active_calls: IntGauge,
    /// `whatsapp_bridge_retention_deleted_total{table}`.
    pub retention_deleted: IntCounterVec,
    /// `whatsapp_bridge_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// `whatsapp_bridge_webhook_ingest_duration_seconds`: body received → stored (group commit
    /// included).
    pub webhook_ingest_duration: Histogram,
    /// `whatsapp_bridge_graph_requests_total{action,outcome}`.
    pub graph_requests: IntCounterVec,
    /// `whatsapp_bridge_graph_request_duration_seconds{action}` (retries included).
    pub graph_request_duration: HistogramVec,
    /// `whatsapp_bridge_realtime_requests_total{provider,step,outcome}`: Realtime session
    /// creation requests.
    pub realtime_requests: IntCounterVec,
    /// `whatsapp_bridge_realtime_request_duration_seconds{provider,step}` (retries included).
    pub realtime_request_duration: HistogramVec,
    /// `whatsapp_bridge_calls_total{direction,channel,outcome}`: calls that ended.
    pub calls: IntCounterVec,
    /// `whatsapp_bridge_call_duration_seconds{direction,channel}`: answered → ended.
    pub call_duration: HistogramVec,
    /// `whatsapp_bridge_call_setup_seconds{stage,channel}`: connect webhook (or the test
    /// phone's request) → `pre_accept` sent,
    /// → first caller audio.
    pub call_setup: HistogramVec,
    /// `whatsapp_bridge_media_packets_total{direction}`: audio packets in from users, out to them.
    pub media_packets: IntCounterVec,
    /// `whatsapp_bridge_media_bytes_total{direction}`: audio payload bytes.
    pub media_bytes: IntCounterVec,
    /// `whatsapp_bridge_media_packets_fast_total{direction}`: packets the engine decrypted
    /// (`RTC_FAST_RECEIVE`) or encrypted and sent (`RTC_FAST_SEND`) itself.
    pub media_packets_fast: IntCounterVec,
    /// `whatsapp_bridge_media_loop_busy_seconds`: the media thread's work per wake-up.
    pub media_loop_busy: Histogram,
    /// `whatsapp_bridge_call_packet_loss_ratio`: every 5 s per call, fraction lost.
    pub call_packet_loss: Histogram,
    /// `whatsapp_bridge_call_jitter_seconds`: every 5 s per call, interarrival jitter.
    pub call_jitter: Histogram,
    /// `whatsapp_bridge_call_dtmf_total`: key presses.
    pub call_dtmf: prometheus::IntCounter,
    /// `whatsapp_bridge_voice_sessions_total{outcome}`: model sessions that could not be had
    /// or were lost (open_failed, reopened, reopen_failed, lost_twice).
    pub voice_sessions: IntCounterVec,
    /// `whatsapp_bridge_tool_calls_total{tool,outcome}`: the assistant's tool calls.
    pub tool_calls: IntCounterVec,
    /// `whatsapp_bridge_model_tokens_total{direction}`: tokens billed by the voice model.
    pub model_tokens: IntCounterVec,
    /// `whatsapp_bridge_model_rate_limit_remaining{name}`: the provider's last rate limits.
    pub model_rate_limit_remaining: prometheus::GaugeVec,
    /// `whatsapp_bridge_model_errors_total{code}`: errors the voice model reported.
    pub model_errors: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Errors
    /// Only if two metrics share a name, which is a programming error caught by tests.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
        };
        let metrics = Self {
            http_requests: counter(
                "whatsapp_bridge_http_requests_total",
                "HTTP requests by matched route, method and status code.",
                &["route", "method", "status"],
            )?,
            http_request_duration: histogram(
                "whatsapp_bridge_http_request_duration_seconds",
                "HTTP request duration by matched route and method.",
                &["route", "method"],
            )?,
            webhook_deliveries: counter(
                "whatsapp_bridge_webhook_deliveries_total",
                "Webhook POSTs by outcome: accepted, duplicate, bad_signature, unsigned_refused, malformed_json, too_large, unavailable.",
                &["outcome"],
            )?,
            webhook_events: counter(
                "whatsapp_bridge_webhook_events_total",
                "Webhook events by kind and outcome: stored, duplicate (at ingestion); processed, ignored, failed, retried (after routing).",
                &["kind", "outcome"],
            )?,
            signature_failures: counter(
                "whatsapp_bridge_webhook_signature_failures_total",
                "Webhook POSTs refused for their X-Hub-Signature-256, by reason: missing, malformed, mismatch.",
                &["reason"],
            )?,
            rate_limited: counter(
                "whatsapp_bridge_rate_limited_total",
                "Requests answered 429 by the per-IP rate limit, by matched route.",
                &["route"],
            )?,
            event_queue_depth: IntGauge::new(
                "whatsapp_bridge_event_queue_depth",
                "Webhook events waiting in memory for the event router.",
            )?,
            event_queue_capacity: IntGauge::new(
                "whatsapp_bridge_event_queue_capacity",
                "Capacity of the in-memory event queue (EVENT_QUEUE_CAPACITY).",
            )?,
            event_processing_delay: histogram(
                "whatsapp_bridge_event_processing_delay_seconds",
                "Time from an event being stored to its processing finishing, by kind.",
                &["kind"],
            )?,
            db_query_duration: histogram(
                "whatsapp_bridge_db_query_duration_seconds",
                "Database operation duration by operation.",
                &["operation"],
            )?,
            db_errors: counter(
                "whatsapp_bridge_db_errors_total",
                "Database operations that failed, by operation.",
                &["operation"],
            )?,
            db_up: IntGauge::new(
                "whatsapp_bridge_db_up",
                "1 when the last health probe reached the database, else 0.",
            )?,
            active_calls: IntGauge::new(
                "whatsapp_bridge_active_calls",
                "Calls currently held.",
            )?,
            retention_deleted: counter(
                "whatsapp_bridge_retention_deleted_total",
                "Rows deleted by the retention job, by table.",
                &["table"],
            )?,
            build_info: IntGaugeVec::new(
                Opts::new("whatsapp_bridge_build_info", "Build information; always 1."),
                &["version"],
            )?,
            webhook_ingest_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "whatsapp_bridge_webhook_ingest_duration_seconds",
                    "Time from a verified webhook body to its events being stored.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            graph_requests: counter(
                "whatsapp_bridge_graph_requests_total",
                "Graph API call actions by action (pre_accept, accept, reject, terminate, connect) and outcome (ok, or the error: no_permission, daily_limit, timeout, circuit_open, ...).",
                &["action", "outcome"],
            )?,
            graph_request_duration: histogram(
                "whatsapp_bridge_graph_request_duration_seconds",
                "Graph API call action duration, retries included, by action.",
                &["action"],
            )?,
            realtime_requests: counter(
                "whatsapp_bridge_realtime_requests_total",
                "OpenAI/Azure Realtime session creation requests by provider (openai, azure), step (client_secret, sdp_exchange) and outcome (ok, or the error: unauthorized, rate_limited, bad_request, unavailable, circuit_open, bad_response).",
                &["provider", "step", "outcome"],
            )?,
            realtime_request_duration: histogram(
                "whatsapp_bridge_realtime_request_duration_seconds",
                "OpenAI/Azure Realtime session creation request duration, retries included, by provider and step.",
                &["provider", "step"],
            )?,
            calls: counter(
                "whatsapp_bridge_calls_total",
                "Calls that ended, by direction (inbound, outbound), channel (whatsapp) and outcome (the end reason: completed, not_answered, rejected, failed, hung_up, refused, timed_out).",
                &["direction", "channel", "outcome"],
            )?,
            call_duration: HistogramVec::new(
                HistogramOpts::new(
                    "whatsapp_bridge_call_duration_seconds",
                    "Answered call length, by direction and channel (whatsapp, test_phone).",
                )
                .buckets(vec![5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0]),
                &["direction", "channel"],
            )?,
            call_setup: histogram(
                "whatsapp_bridge_call_setup_seconds",
                "Inbound call setup, from the connect webhook (channel=whatsapp) or the test phone's request (channel=test_phone) to: pre_accept sent (stage=pre_accept), accept done (stage=accept), the caller's first audio (stage=first_media), the voice model's first audio (stage=model_audio).",
                &["stage", "channel"],
            )?,
            media_packets: counter(
                "whatsapp_bridge_media_packets_total",
                "Audio packets received from users (direction=in) and sent to them (direction=out).",
                &["direction"],
            )?,
            media_bytes: counter(
                "whatsapp_bridge_media_bytes_total",
                "Audio payload bytes received from users (direction=in) and sent to them (direction=out).",
                &["direction"],
            )?,
            call_packet_loss: Histogram::with_opts(
                HistogramOpts::new(
                    "whatsapp_bridge_call_packet_loss_ratio",
                    "Fraction of the user's audio packets lost since the last report (RFC 3550), every 5 s per call.",
                )
                .buckets(vec![0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]),
            )?,
            call_jitter: Histogram::with_opts(
                HistogramOpts::new(
                    "whatsapp_bridge_call_jitter_seconds",
                    "Interarrival jitter of the user's audio (RFC 3550), every 5 s per call.",
                )
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32]),
            )?,
            media_loop_busy: Histogram::with_opts(
                HistogramOpts::new(
                    "whatsapp_bridge_media_loop_busy_seconds",
                    "Time the media thread works per wake-up (datagrams, commands, timers) before it waits again: every packet that arrives meanwhile waits as long. A tail near 1 ms means audio is being held up.",
                )
                .buckets(vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
                ]),
            )?,
            media_packets_fast: counter(
                "whatsapp_bridge_media_packets_fast_total",
                "Packets on calls that took the fast paths: received (direction=in: audio, key presses, the voice model's audio; RTC_FAST_RECEIVE, on by default) and sent (direction=out: to users and to the voice model; RTC_FAST_SEND, on by default).",
                &["direction"],
            )?,
            call_dtmf: prometheus::IntCounter::new(
                "whatsapp_bridge_call_dtmf_total",
                "DTMF key presses received on calls.",
            )?,
            voice_sessions: counter(
                "whatsapp_bridge_voice_sessions_total",
                "Voice model sessions that could not be opened (outcome=open_failed: the call was rejected or hung up), were lost and re-established (reopened), could not be re-established (reopen_failed) or were lost a second time (lost_twice).",
                &["outcome"],
            )?,
            tool_calls: counter(
                "whatsapp_bridge_tool_calls_total",
                "The assistant's tool calls, by tool and outcome (ok, bad_arguments, unknown_tool, not_found, refused, timed_out, failed).",
                &["tool", "outcome"],
            )?,
            model_tokens: counter(
                "whatsapp_bridge_model_tokens_total",
                "Tokens the voice model billed, from each response's usage (direction=input, output).",
                &["direction"],
            )?,
            model_rate_limit_remaining: prometheus::GaugeVec::new(
                prometheus::Opts::new(
                    "whatsapp_bridge_model_rate_limit_remaining",
                    "What is left of the voice model provider's rate limits, as it last reported (name=requests, tokens).",
                ),
                &["name"],
            )?,
            model_errors: counter(
                "whatsapp_bridge_model_errors_total",
                "Errors the voice model reported on its event channel, by code.",
                &["code"],
            )?,
            registry,
            names: Vec::new(),
        };
        let mut metrics = metrics;
        metrics.register_all()?;
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Pre-create the event series so dashboards and rate() see zeros, not gaps.
        for kind in EventKind::ALL {
            for outcome in [
                "stored",
                "duplicate",
                "processed",
                "ignored",
                "failed",
                "retried",
            ] {
                metrics
                    .webhook_events
                    .with_label_values(&[kind.as_str(), outcome]);
            }
        }
        for reason in ["missing", "malformed", "mismatch"] {
            metrics.signature_failures.with_label_values(&[reason]);
        }
        for direction in ["in", "out"] {
            metrics.media_packets.with_label_values(&[direction]);
            metrics.media_packets_fast.with_label_values(&[direction]);
            metrics.media_bytes.with_label_values(&[direction]);
        }
        for direction in ["input", "output"] {
            metrics.model_tokens.with_label_values(&[direction]);
        }
        Ok(metrics)
    }

    fn register_all(&mut self) -> Result<(), prometheus::Error> {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.http_requests.clone()),
            Box::new(self.http_request_duration.clone()),
            Box::new(self.webhook_deliveries.clone()),
            Box::new(self.webhook_events.clone()),
            Box::new(self.signature_failures.clone()),
            Box::new(self.rate_limited.clone()),
            Box::new(self.event_queue_depth.clone()),
            Box::new(self.event_queue_capacity.clone()),
            Box::new(self.event_processing_delay.clone()),
            Box::new(self.db_query_duration.clone()),
            Box::new(self.db_errors.clone()),
            Box::new(self.db_up.clone()),
            Box::new(self.active_calls.clone()),
            Box::new(self.retention_deleted.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.webhook_ingest_duration.clone()),
            Box::new(self.graph_requests.clone()),
            Box::new(self.graph_request_duration.clone()),
            Box::new(self.realtime_requests.clone()),
            Box::new(self.realtime_request_duration.clone()),
            Box::new(self.calls.clone()),
            Box::new(self.call_duration.clone()),
            Box::new(self.call_setup.clone()),
            Box::new(self.media_packets.clone()),
            Box::new(self.media_bytes.clone()),
            Box::new(self.media_packets_fast.clone()),
            Box::new(self.media_loop_busy.clone()),
            Box::new(self.call_packet_loss.clone()),
            Box::new(self.call_jitter.clone()),
            Box::new(self.call_dtmf.clone()),
            Box::new(self.voice_sessions.clone()),
            Box::new(self.tool_calls.clone()),
            Box::new(self.model_tokens.clone()),
            Box::new(self.model_rate_limit_remaining.clone()),
            Box::new(self.model_errors.clone()),
            #[cfg(target_os = "linux")]
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for collector in collectors {
            self.names
                .extend(collector.desc().iter().map(|d| d.fq_name.clone()));
            self.registry.register(collector)?;
        }
        Ok(())
    }

    /// The name of every registered metric, including those with no series yet.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which we never create.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %err, "failed to encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Starts timing a database operation; call [`DbTimer::finish`] with its result.
    pub fn db_timer(&self, operation: &'static str) -> DbTimer<'_> {
        DbTimer {
            metrics: self,
            operation,
            started: Instant::now(),
        }
    }
}

/// A database operation being timed.
pub struct DbTimer<'a> {
    metrics: &'a Metrics,
    operation: &'static str,
    started: Instant,
}

impl DbTimer<'_> {
    /// Records the duration, and the failure if `result` is an error; returns `result`.
    pub fn finish<T, E>(self, result: Result<T, E>) -> Result<T, E> {
        self.metrics
            .db_query_duration
            .with_label_values(&[self.operation])
            .observe(self.started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics
                .db_errors
                .with_label_values(&[self.operation])
                .inc();
        }
        result
    }
}
