//! Webhook events, from a verified POST to the place each kind is handled.
//!
//! ```text
//! http (verified, parsed) ──Inbox::record──▶ writer task ──one transaction per batch──▶ store
//!                                               │ new events (claimed by this instance)
//!                                               ▼
//!                    Sweeper ──────────────▶ bounded queue ──▶ Router ──▶ handlers::{calls, messages}
//!  (pending events nobody holds: overflow,                       │
//!   crashed instances, retries, restarts)                        └──▶ store: processed / ignored / failed
//! ```
//!
//! The store is the source of truth: an event is durable before the webhook is answered 200,
//! and stays `pending` until the router records its outcome. The in-memory queue only saves a
//! database round trip on the common path; when it is full, or the process stops, events wait
//! in the store and the sweeper brings them back. Delivery to handlers is therefore at least
//! once: handlers are idempotent (messages are keyed by wamid, call signals only move a call
//! forward).
//!
//! - [`inbox`]: the durable ingestion with group commit.
//! - [`router`]: one consumer that dispatches by kind, and the sweeper.
//! - [`handlers`]: the interfaces later work plugs into, and the built-in handlers that record
//!   calls, messages, statuses and permission replies.

pub mod handlers;
pub mod inbox;
pub mod router;

use chrono::{DateTime, Utc};

use crate::domain::InboundEvent;

/// How long an instance holds an event it took before another may take it.
pub const EVENT_LEASE: std::time::Duration = std::time::Duration::from_secs(300);

/// An event waiting for the router.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    /// Its row id.
    pub id: i64,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// Claims so far, this one included.
    pub attempts: i64,
    /// The event.
    pub event: InboundEvent,
}
