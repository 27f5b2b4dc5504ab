//! Durable ingestion of verified webhooks, with group commit.
//!
//! HTTP handlers hand a parsed delivery to the [`Inbox`] and wait for it to be stored; one
//! writer task owns the write path. It takes every delivery waiting (up to a batch), stores
//! them in one transaction, answers each, and queues the new events for the router. Under
//! load this turns thousands of small transactions a second into a few hundred larger ones,
//! which is what lets a single SQLite file keep up; when idle a batch is one delivery and
//! adds no delay.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::{QueuedEvent, EVENT_LEASE};
use crate::clock::Clock;
use crate::domain::InboundEvent;
use crate::store::{Claim, EventInsert, NewDelivery, NewEvent, Store, StoreError};
use crate::telemetry::Metrics;

/// Deliveries stored per transaction at most.
const MAX_BATCH: usize = 256;

/// Whether the delivery's signature was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// `X-Hub-Signature-256` matched.
    Verified,
    /// Accepted unsigned (`ALLOW_UNSIGNED_WEBHOOKS=true`, no app secret).
    Unsigned,
}

/// A verified webhook, parsed, ready to store.
#[derive(Debug)]
pub struct Delivery {
    // Taken by the writer for the store call; the events stay to be queued.
    row: Option<NewDelivery>,
    events: Vec<InboundEvent>,
}

impl Delivery {
    /// Prepares a delivery: gives it an id and serialises its events (on the caller's task,
    /// so the single writer only writes).
    pub fn new(
        body: String,
        signature: Signature,
        events: Vec<InboundEvent>,
        received_at: DateTime<Utc>,
    ) -> Self {
        let new_events = events
            .iter()
            .map(|event| NewEvent {
                key: event.idempotency_key(),
                kind: event.body.kind(),
                phone_number_id: event.business.phone_number_id.clone(),
                wa_id: event.contact.as_ref().and_then(|c| c.wa_id.clone()),
                payload: serde_json::value::to_raw_value(event).unwrap_or_else(|err| {
                    // Our own types always serialise; if one ever does not, the event is still
                    // stored (and fails visibly when read back) rather than lost.
                    serde_json::value::to_raw_value(
                        &serde_json::json!({"unserialisable": err.to_string()}),
                    )
                    .unwrap_or_default()
                }),
            })
            .collect();
        Self {
            row: Some(NewDelivery {
                id: uuid::Uuid::now_v7().to_string(),
                received_at,
                body,
                signature: match signature {
                    Signature::Verified => "verified",
                    Signature::Unsigned => "unsigned",
                },
                events: new_events,
            }),
            events,
        }
    }
}

/// What storing a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Events stored for the first time.
    pub new: usize,
    /// Events already stored (a redelivery).
    pub duplicates: usize,
}

/// Why a delivery could not be stored. The webhook must not be answered 200: Meta will retry.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The database refused or could not be reached.
    #[error("could not store the webhook: {0}")]
    Store(Arc<StoreError>),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    Stopped,
}

struct Request {
    delivery: Delivery,
    reply: oneshot::Sender<Result<Receipt, InboxError>>,
}

/// The handle HTTP handlers store deliveries through.
#[derive(Clone)]
pub struct Inbox {
    requests: mpsc::Sender<Request>,
}

impl Inbox {
    /// Stores a delivery and returns once it is durable.
    ///
    /// # Errors
    /// When it could not be stored; nothing of it is kept then.
    pub async fn record(&self, delivery: Delivery) -> Result<Receipt, InboxError> {
        let (reply, receipt) = oneshot::channel();
        self.requests
            .send(Request { delivery, reply })
            .await
            .map_err(|_| InboxError::Stopped)?;
        receipt.await.map_err(|_| InboxError::Stopped)?
    }
}

/// What the writer needs.
pub struct WriterParts {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Where new events go.
    pub queue: mpsc::Sender<QueuedEvent>,
    /// Woken when events could not be queued and wait in the store.
    pub overflow: Arc<Notify>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Metrics,
    /// This instance's name on claims.
    pub owner: String,
}

/// Starts the writer. It stops when every [`Inbox`] handle is dropped and the deliveries
/// already sent are stored.
pub fn spawn_writer(parts: WriterParts) -> (Inbox, JoinHandle<()>) {
    let (requests, receiver) = mpsc::channel(MAX_BATCH * 4);
    let task = tokio::spawn(run_writer(parts, receiver));
    (Inbox { requests }, task)
}

async fn run_writer(parts: WriterParts, mut requests: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write_batch(&parts, &mut batch).await;
    }
    tracing::debug!("webhook inbox writer stopped");
}

async fn write_batch(parts: &WriterParts, batch: &mut Vec<Request>) {
    let started = std::time::Instant::now();
    let claim = Claim::new(&parts.owner, parts.clock.now(), EVENT_LEASE);
    let rows: Vec<NewDelivery> = batch
        .iter_mut()
        .filter_map(|r| r.delivery.row.take())
        .collect();

    let receipts = match parts.store.record_deliveries(&rows, &claim).await {
        Ok(receipts) => receipts,
        Err(err) => {
            tracing::error!(error = %err, deliveries = batch.len(), "could not store webhook deliveries; answering 503 so Meta retries");
            let err = Arc::new(err);
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(InboxError::Store(err.clone())));
            }
            return;
        }
    };
    let elapsed = started.elapsed().as_secs_f64();

    let mut overflow = Vec::new();
    for ((request, receipt), row) in batch.drain(..).zip(receipts).zip(&rows) {
        let mut new = 0;
        let mut duplicates = 0;
        for ((event, insert), new_event) in request
            .delivery
            .events
            .into_iter()
            .zip(receipt.events)
            .zip(&row.events)
        {
            let kind = new_event.kind.as_str();
            match insert {
                EventInsert::New(id) => {
                    new += 1;
                    parts
                        .metrics
                        .webhook_events
                        .with_label_values(&[kind, "stored"])
                        .inc();
                    let queued = QueuedEvent {
                        id,
                        received_at: row.received_at,
                        attempts: 1,
                        event,
                    };
                    if parts.queue.try_send(queued).is_err() {
                        overflow.push(id);
                    }
                }
                EventInsert::Duplicate => {
                    duplicates += 1;
                    parts
                        .metrics
                        .webhook_events
                        .with_label_values(&[kind, "duplicate"])
                        .inc();
                }
            }
        }
        parts.metrics.webhook_ingest_duration.observe(elapsed);
        let _ = request.reply.send(Ok(Receipt { new, duplicates }));
    }
    parts.metrics.event_queue_depth.set(
        i64::try_from(parts.queue.max_capacity() - parts.queue.capacity()).unwrap_or(i64::MAX),
    );

    if !overflow.is_empty() {
        // The router is behind (or gone, at shutdown). The events are safe in the store; give
        // up our claim so the sweeper (ours or another instance's) brings them back as soon as
        // there is room, instead of when the lease runs out.
        tracing::warn!(
            events = overflow.len(),
            "event queue full; events wait in the database"
        );
        if let Err(err) = parts
            .store
            .release_events(&parts.owner, Some(&overflow))
            .await
        {
            tracing::error!(error = %err, "could not release overflowing events; they run when their lease ends");
        }
        parts.overflow.notify_one();
    }
}
