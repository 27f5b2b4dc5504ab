//! The event router (one consumer, one place per event kind) and the sweeper that feeds it
//! events waiting in the store.
//!
//! Events are routed in lanes: everything about one call, or from one user, or about one
//! message's delivery, goes through one lane in the order it was stored (a call's `connect`
//! before its `terminate`, a user's messages in order), while different lanes run
//! concurrently. A batch of lanes finishes before the next batch starts, so the order holds
//! across batches too. Handlers that take long (an AI reply) must hand the work to their own
//! tasks and return; the router only waits for what must happen in order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use futures::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::handlers::{CallEvents, Handled, HandlerError, MessageEvents};
use super::{QueuedEvent, EVENT_LEASE};
use crate::clock::Clock;
use crate::domain::{EventBody, InboundEvent, PhoneNumberId};
use crate::store::{Claim, EventCompletion, EventOutcome, Store};
use crate::telemetry::Metrics;

/// Events routed between two store writes at most.
const MAX_BATCH: usize = 128;

/// Lanes routed at once. Below the default pool size (10), so the inbox writer, whose
/// latency is the webhook's, still finds a free connection on Postgres.
const CONCURRENT_LANES: usize = 6;

/// Claims after which a failing event is given up on (marked `failed`, kept for inspection).
const MAX_ATTEMPTS: i64 = 5;

/// Where each kind of event goes.
pub struct Handlers {
    /// Call signalling.
    pub calls: Arc<dyn CallEvents>,
    /// Messages and their statuses.
    pub messages: Arc<dyn MessageEvents>,
}

/// The event router.
pub struct Router {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Handlers by kind.
    pub handlers: Handlers,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Metrics,
    /// The business number events must be for; `None` accepts any.
    pub phone_number_id: Option<PhoneNumberId>,
    /// Unknown shapes already logged at warn (each is logged once, then at debug). A std
    /// mutex: held to insert one string, never across an await.
    pub seen_unknown: Mutex<HashSet<String>>,
}

/// The lane an event is routed in: events with the same lane are handled in order.
fn lane(event: &InboundEvent) -> String {
    match &event.body {
        EventBody::CallConnect(c) => format!("call:{}", c.call_id),
        EventBody::CallTerminate(c) => format!("call:{}", c.call_id),
        EventBody::CallStatus(s) => format!("call:{}", s.call_id),
        EventBody::Message(m) => match (&m.from, &m.from_user_id) {
            (Some(wa_id), _) => format!("user:{wa_id}"),
            (None, Some(bsuid)) => format!("user:{bsuid}"),
            (None, None) => format!("message:{}", m.id),
        },
        EventBody::MessageStatus(s) => format!("status:{}", s.message_id),
        EventBody::Unknown(_) => "unknown".to_owned(),
    }
}

impl Router {
    /// Routes events until the queue closes (every sender dropped) and is empty.
    pub async fn run(self, mut queue: mpsc::Receiver<QueuedEvent>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.metrics
                .event_queue_depth
                .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
            // Delivery statuses are the bulk of webhook traffic (every message sent makes
            // three); they go to their handler as one batch. Everything else goes in lanes.
            let mut statuses = Vec::new();
            let mut lanes: Vec<Vec<QueuedEvent>> = Vec::new();
            let mut lane_of: HashMap<String, usize> = HashMap::new();
            for queued in batch.drain(..) {
                if matches!(queued.event.body, EventBody::MessageStatus(_)) {
                    statuses.push(queued);
                    continue;
                }
                let index = *lane_of.entry(lane(&queued.event)).or_insert_with(|| {
                    lanes.push(Vec::new());
                    lanes.len() - 1
                });
                lanes[index].push(queued);
            }
            let in_lanes = futures::stream::iter(lanes)
                .map(|lane| self.route_lane(lane))
                .buffer_unordered(CONCURRENT_LANES)
                .flat_map(futures::stream::iter)
                .collect::<Vec<EventCompletion>>();
            let (mut completions, batched) = tokio::join!(in_lanes, self.route_statuses(&statuses));
            completions.extend(batched);
            let now = self.clock.now();
            if let Err(err) = self.store.complete_events(&completions, now).await {
                // The events stay claimed; when the lease ends they are routed again, and the
                // handlers are idempotent.
                tracing::error!(error = %err, events = completions.len(), "could not record event outcomes");
            }
        }
        tracing::debug!("event router stopped");
    }

    async fn route_lane(&self, lane: Vec<QueuedEvent>) -> Vec<EventCompletion> {
        let mut completions = Vec::with_capacity(lane.len());
        for queued in lane {
            let result = match self.precheck(&queued.event) {
                Some(handled) => Ok(handled),
                None => self.dispatch(&queued.event).await,
            };
            completions.push(self.complete(&queued, result));
        }
        completions
    }

    async fn route_statuses(&self, queued: &[QueuedEvent]) -> Vec<EventCompletion> {
        let mut results: Vec<Option<Result<Handled, HandlerError>>> = queued
            .iter()
            .map(|q| self.precheck(&q.event).map(Ok))
            .collect();
        let (indices, statuses): (Vec<usize>, Vec<_>) = queued
            .iter()
            .enumerate()
            .filter(|(i, _)| results[*i].is_none())
            .filter_map(|(i, q)| match &q.event.body {
                EventBody::MessageStatus(status) => Some((i, (&q.event, status))),
                EventBody::CallConnect(_)
                | EventBody::CallTerminate(_)
                | EventBody::CallStatus(_)
                | EventBody::Message(_)
                | EventBody::Unknown(_) => None,
            })
            .unzip();
        if !statuses.is_empty() {
            let handled = self.handlers.messages.statuses(&statuses).await;
            for (i, result) in indices.into_iter().zip(handled) {
                results[i] = Some(result);
            }
        }
        queued
            .iter()
            .zip(results)
            .map(|(q, result)| {
                let result = result.unwrap_or_else(|| {
                    Err(HandlerError::retryable(
                        "the status handler returned too few results",
                    ))
                });
                self.complete(q, result)
            })
            .collect()
    }

    /// What happens to an event before any handler sees it: unknown shapes and events for
    /// another business number are recorded and ignored here.
    fn precheck(&self, event: &InboundEvent) -> Option<Handled> {
        if let EventBody::Unknown(unknown) = &event.body {
            return Some(self.unknown(&unknown.field, &unknown.reason));
        }
        let ours = self.phone_number_id.as_ref()?;
        (event.business.phone_number_id.as_ref() != Some(ours)).then(|| {
            Handled::Ignored(format!(
                "addressed to business number {}, not {ours}",
                event
                    .business
                    .phone_number_id
                    .as_ref()
                    .map_or("(none)", PhoneNumberId::as_str)
            ))
        })
    }

    /// The one place per event kind.
    async fn dispatch(&self, event: &InboundEvent) -> Result<Handled, HandlerError> {
        match &event.body {
            EventBody::CallConnect(connect) => self.handlers.calls.connect(event, connect).await,
            EventBody::CallTerminate(terminate) => {
                self.handlers.calls.terminate(event, terminate).await
            }
            EventBody::CallStatus(status) => self.handlers.calls.status(event, status).await,
            EventBody::Message(message) => self.handlers.messages.message(event, message).await,
            EventBody::MessageStatus(status) => self.handlers.messages.status(event, status).await,
            EventBody::Unknown(unknown) => Ok(self.unknown(&unknown.field, &unknown.reason)),
        }
    }

    /// Turns a handler's result into the event's outcome (with retries for what may pass).
    fn complete(
        &self,
        queued: &QueuedEvent,
        result: Result<Handled, HandlerError>,
    ) -> EventCompletion {
        let kind = queued.event.body.kind();
        let now = self.clock.now();
        let (outcome, label) = match result {
            Ok(Handled::Done) => (EventOutcome::Processed, "processed"),
            Ok(Handled::Ignored(reason)) => (EventOutcome::Ignored(reason), "ignored"),
            Err(err) if err.retryable && queued.attempts < MAX_ATTEMPTS => {
                // 2, 4, 8, 16 s: long enough for a database failover, short enough for chat.
                let backoff = TimeDelta::seconds(1 << queued.attempts.clamp(1, 10));
                tracing::warn!(event_id = queued.id, %kind, attempt = queued.attempts, error = %err, "event failed; retrying in {}s", backoff.num_seconds());
                (
                    EventOutcome::Failed {
                        error: err.message,
                        retry_at: Some(now + backoff),
                    },
                    "retried",
                )
            }
            Err(err) => {
                tracing::error!(event_id = queued.id, %kind, attempt = queued.attempts, error = %err, "event failed; giving up");
                (
                    EventOutcome::Failed {
                        error: err.message,
                        retry_at: None,
                    },
                    "failed",
                )
            }
        };
        self.metrics
            .webhook_events
            .with_label_values(&[kind.as_str(), label])
            .inc();
        self.metrics
            .event_processing_delay
            .with_label_values(&[kind.as_str()])
            .observe(
                (now - queued.received_at)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        EventCompletion {
            id: queued.id,
            outcome,
        }
    }

    fn unknown(&self, field: &str, reason: &str) -> Handled {
        // One warning per shape: a new Meta field arriving thousands of times a day must not
        // flood the logs, but the first one must be seen.
        let shape = format!("{field}: {}", reason.chars().take(80).collect::<String>());
        let first = self
            .seen_unknown
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(shape.clone());
        if first {
            tracing::warn!(
                field,
                reason,
                "webhook content not understood; recorded and ignored (logged once per shape)"
            );
        } else {
            tracing::debug!(field, reason, "webhook content not understood");
        }
        Handled::Ignored(shape)
    }
}

/// Brings events that wait in the store back to the router: at start, after the queue
/// overflowed, when retries come due, and when another instance's claims lapse. (At start the
/// app first releases its own claims from before a restart, so they are swept at once.)
pub struct Sweeper {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The router's queue.
    pub queue: mpsc::Sender<QueuedEvent>,
    /// Woken when the queue overflowed.
    pub overflow: Arc<Notify>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// This instance's name on claims.
    pub owner: String,
    /// How often to look when nothing wakes it.
    pub interval: Duration,
}

impl Sweeper {
    /// Sweeps until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                swept = self.sweep() => {
                    match swept {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(events = n, "queued events waiting in the database"),
                        Err(err) => tracing::error!(error = %err, "could not sweep pending events"),
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(self.interval) => {}
                () = self.overflow.notified() => {}
            }
        }
        tracing::debug!("event sweeper stopped");
    }

    /// Claims and queues every available event; returns how many.
    async fn sweep(&self) -> Result<usize, crate::store::StoreError> {
        let mut total = 0;
        loop {
            let now = self.clock.now();
            let claim = Claim::new(&self.owner, now, EVENT_LEASE);
            let claimed = self
                .store
                .claim_pending_events(&claim, MAX_BATCH as i64)
                .await?;
            if claimed.is_empty() {
                return Ok(total);
            }
            total += claimed.len();
            let mut unreadable = Vec::new();
            for event in claimed {
                match serde_json::from_value::<InboundEvent>(event.payload) {
                    Ok(parsed) => {
                        let queued = QueuedEvent {
                            id: event.id,
                            received_at: event.received_at,
                            attempts: event.attempts,
                            event: parsed,
                        };
                        // Waiting here is the backpressure: the router takes them in turn.
                        if self.queue.send(queued).await.is_err() {
                            return Ok(total);
                        }
                    }
                    Err(err) => unreadable.push(EventCompletion {
                        id: event.id,
                        outcome: EventOutcome::Failed {
                            error: format!("stored event does not read back: {err}"),
                            retry_at: None,
                        },
                    }),
                }
            }
            if !unreadable.is_empty() {
                tracing::error!(
                    events = unreadable.len(),
                    "stored events that do not read back were marked failed"
                );
                self.store.complete_events(&unreadable, now).await?;
            }
        }
    }
}
