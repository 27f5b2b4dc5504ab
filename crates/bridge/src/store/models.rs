//! What the store takes and returns.

use call_core::{CallDirection, CallSignal, CallState};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{
    Bsuid, CallChannel, EventKind, MessageDirection, PermissionStatus, PhoneNumberId,
    ReminderStatus, Source, TaskPriority, TaskStatus, UserId, WaCallId, WaId, WamId,
};

/// Who holds a claim (a lease) and until when; `now` is the time the claim is taken at.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The instance taking the claim.
    pub owner: String,
    /// The time of the claim.
    pub now: DateTime<Utc>,
    /// When the claim lapses if not finished.
    pub until: DateTime<Utc>,
}

impl Claim {
    /// A claim by `owner` taken at `now` for `lease`.
    pub fn new(owner: &str, now: DateTime<Utc>, lease: std::time::Duration) -> Self {
        Self {
            owner: owner.to_owned(),
            now,
            until: now + chrono::TimeDelta::from_std(lease).unwrap_or(chrono::TimeDelta::MAX),
        }
    }
}

/// Applied and embedded migration counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MigrationStatus {
    /// Migrations embedded in this binary.
    pub known: usize,
    /// Migrations the database has applied successfully.
    pub applied: usize,
    /// The database has applied a migration this binary does not know (it is newer), or one
    /// whose checksum differs.
    pub foreign: usize,
}

impl MigrationStatus {
    /// Every embedded migration is applied and nothing unknown is.
    pub fn is_current(&self) -> bool {
        self.applied == self.known && self.foreign == 0
    }
}

// --- webhook inbox ---------------------------------------------------------------------------

/// One verified webhook POST to store.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Our id for the delivery (UUIDv7).
    pub id: String,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// The raw body, for debugging (deleted by retention).
    pub body: String,
    /// `verified` or `unsigned`.
    pub signature: &'static str,
    /// Its events.
    pub events: Vec<NewEvent>,
}

/// One event of a delivery.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The idempotency key.
    pub key: String,
    /// Its kind.
    pub kind: EventKind,
    /// The business number it was for.
    pub phone_number_id: Option<PhoneNumberId>,
    /// The user it is about (for per-user deletion).
    pub wa_id: Option<WaId>,
    /// The [`crate::domain::InboundEvent`] as JSON text (serialised once, by the receiver).
    pub payload: Box<serde_json::value::RawValue>,
}

/// What storing one delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// Per event of the delivery, in order.
    pub events: Vec<EventInsert>,
}

/// What storing one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventInsert {
    /// Stored with this id.
    New(i64),
    /// Already stored: a redelivery.
    Duplicate,
}

/// An event taken from the store for processing.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    /// Its row id.
    pub id: i64,
    /// The [`crate::domain::InboundEvent`] as JSON.
    pub payload: serde_json::Value,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// Claims so far, this one included.
    pub attempts: i64,
}

/// How processing an event went.
#[derive(Debug, Clone)]
pub struct EventCompletion {
    /// The event.
    pub id: i64,
    /// The outcome.
    pub outcome: EventOutcome,
}

/// The outcome of processing an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Done.
    Processed,
    /// Deliberately not acted on (another business number, unknown shape, stale signal).
    Ignored(String),
    /// Failed; tried again from `retry_at`, or given up on when `None`.
    Failed {
        /// What went wrong.
        error: String,
        /// When to try again.
        retry_at: Option<DateTime<Utc>>,
    },
}

/// A stored event, as operators and tests see it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Row id.
    pub id: i64,
    /// Kind.
    pub kind: String,
    /// `pending`, `processed`, `ignored` or `failed`.
    pub state: String,
    /// Claims so far.
    pub attempts: i64,
    /// The last error or the reason it was ignored.
    pub last_error: Option<String>,
    /// The event as JSON.
    pub payload: serde_json::Value,
    /// The delivery it came in.
    pub delivery_id: String,
}

/// Stored events by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    /// Waiting to be processed.
    pub pending: i64,
    /// Processed.
    pub processed: i64,
    /// Not acted on.
    pub ignored: i64,
    /// Given up on.
    pub failed: i64,
    /// Stored deliveries (raw bodies).
    pub deliveries: i64,
}

/// What the retention job deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Raw deliveries.
    pub deliveries: u64,
    /// Events.
    pub events: u64,
}

// --- users -----------------------------------------------------------------------------------

/// A person who talks to the assistant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    /// Our id.
    pub id: UserId,
    /// Their WhatsApp id (phone number), when known.
    pub wa_id: Option<WaId>,
    /// Their business-scoped user id, when known.
    pub bsuid: Option<Bsuid>,
    /// Their profile name.
    pub name: Option<String>,
    /// Their WhatsApp username.
    pub username: Option<String>,
    /// IANA time zone, when known.
    pub time_zone: Option<String>,
    /// Preferred language (BCP 47), when known.
    pub language: Option<String>,
    /// When they opted out of business-initiated contact.
    pub opted_out_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Changes to a user's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserSettings {
    /// IANA time zone.
    pub time_zone: Option<String>,
    /// Language.
    pub language: Option<String>,
}

/// Everything stored about a user (GDPR export).
#[derive(Debug, Clone, Serialize)]
pub struct UserExport {
    /// The user.
    pub user: User,
    /// Tasks.
    pub tasks: Vec<Task>,
    /// Reminders.
    pub reminders: Vec<Reminder>,
    /// Notes.
    pub notes: Vec<Note>,
    /// Messages, both directions.
    pub messages: Vec<StoredMessage>,
    /// Calls, each with its event log.
    pub calls: Vec<CallExport>,
    /// Call permission.
    pub call_permission: Option<CallPermission>,
}

/// A call with its event log.
#[derive(Debug, Clone, Serialize)]
pub struct CallExport {
    /// The call.
    pub call: CallRecord,
    /// Its events.
    pub events: Vec<CallEventRecord>,
}

// --- messages --------------------------------------------------------------------------------

/// Whether a write stored something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored with this id.
    New(i64),
    /// Already there.
    Duplicate,
}

/// A message we sent, to store.
#[derive(Debug, Clone)]
pub struct NewOutboundMessage {
    /// WhatsApp's id, once the Graph API returned it.
    pub wamid: Option<WamId>,
    /// The business number it went from.
    pub phone_number_id: Option<PhoneNumberId>,
    /// The message type.
    pub kind: String,
    /// What a person reads.
    pub body: Option<String>,
    /// The typed content as JSON.
    pub content: serde_json::Value,
    /// The call it belongs to, if any.
    pub call_id: Option<String>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredMessage {
    /// Row id.
    pub id: i64,
    /// Which way.
    pub direction: MessageDirection,
    /// WhatsApp's id.
    pub wamid: Option<String>,
    /// Type.
    pub kind: String,
    /// What a person reads.
    pub body: Option<String>,
    /// Typed content as JSON.
    pub content: serde_json::Value,
    /// `received` for inbound; a delivery status for outbound.
    pub status: String,
    /// When the status last changed.
    pub status_at: Option<DateTime<Utc>>,
    /// When WhatsApp says it was sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// When we stored it.
    pub created_at: DateTime<Utc>,
}

/// What applying a delivery status did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusApplied {
    /// The message moved to the status.
    Applied,
    /// The message already had this or a later status.
    Stale,
    /// We have no message with that id (sent by other software on the number).
    UnknownMessage,
}

impl StatusApplied {
    /// Whether the status changed the row.
    pub fn changed(self) -> bool {
        matches!(self, StatusApplied::Applied)
    }
}

// --- calls -----------------------------------------------------------------------------------

/// A signalling event to apply to a call.
#[derive(Debug, Clone)]
pub struct CallSignalRecord {
    /// WhatsApp's call id.
    pub wa_call_id: WaCallId,
    /// Who started the call.
    pub direction: CallDirection,
    /// Which channel.
    pub channel: CallChannel,
    /// The user, when known.
    pub user: Option<UserId>,
    /// The business number.
    pub phone_number_id: Option<PhoneNumberId>,
    /// What happened.
    pub signal: CallSignal,
    /// When.
    pub at: DateTime<Utc>,
    /// Conversation length reported by `terminate`.
    pub duration_secs: Option<i64>,
    /// The first error code reported.
    pub error_code: Option<i64>,
}

/// A call we start, to store before WhatsApp knows it.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Our id (UUIDv7).
    pub id: String,
    /// Who started it.
    pub direction: CallDirection,
    /// Which channel.
    pub channel: CallChannel,
    /// The user.
    pub user: Option<UserId>,
    /// The business number.
    pub phone_number_id: Option<PhoneNumberId>,
    /// Why we call.
    pub purpose: Option<String>,
    /// The reminder the call delivers.
    pub reminder_id: Option<i64>,
    /// The instance holding its media.
    pub owner_instance: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A signal to apply to a known call.
#[derive(Debug, Clone)]
pub struct CallUpdate {
    /// What happened.
    pub signal: CallSignal,
    /// When.
    pub at: DateTime<Utc>,
    /// Conversation length, when known.
    pub duration_secs: Option<i64>,
    /// An error code, when one was reported.
    pub error_code: Option<i64>,
    /// The user, if the row does not have one yet.
    pub user: Option<UserId>,
}

/// Which calls to list.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Only this user's.
    pub user: Option<UserId>,
    /// Only in this state (`offered`, ..., `ended`).
    pub state: Option<String>,
    /// Only this direction.
    pub direction: Option<CallDirection>,
    /// At most this many (default 50).
    pub limit: Option<i64>,
}

/// What applying a signal did.
#[derive(Debug, Clone)]
pub struct CallSignalOutcome {
    /// The call after the signal.
    pub call: CallRecord,
    /// Whether the call row was created by this signal.
    pub created: bool,
    /// Whether the signal changed the call's state (false: stale or redundant).
    pub changed: bool,
}

/// A call row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// Our id (UUIDv7).
    pub id: String,
    /// WhatsApp's id.
    pub wa_call_id: Option<String>,
    /// The user.
    pub user_id: Option<UserId>,
    /// `inbound` or `outbound`.
    #[serde(serialize_with = "serialize_direction")]
    pub direction: CallDirection,
    /// Where the user's leg comes from.
    pub channel: CallChannel,
    /// Where the call is.
    #[serde(serialize_with = "serialize_state")]
    pub state: CallState,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Why we called (outbound).
    pub purpose: Option<String>,
    /// The reminder the call delivers (outbound reminder calls).
    pub reminder_id: Option<i64>,
    /// First seen.
    pub offered_at: Option<DateTime<Utc>>,
    /// Answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Conversation length.
    pub duration_secs: Option<i64>,
    /// Error code WhatsApp reported.
    pub error_code: Option<i64>,
    /// The AI provider's token usage over the call (summed), once it has ended.
    pub usage: Option<serde_json::Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

fn serialize_direction<S: serde::Serializer>(d: &CallDirection, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}

fn serialize_state<S: serde::Serializer>(state: &CallState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

/// An entry to append to a call's log.
#[derive(Debug, Clone)]
pub struct NewCallEvent {
    /// `state`, `transcript`, `tool_call`, `tool_result`, `dtmf`, `error`, `usage`, ...
    pub kind: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Details.
    pub data: serde_json::Value,
}

/// An entry of a call's log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEventRecord {
    /// Row id; orders the log.
    pub id: i64,
    /// Kind.
    pub kind: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Details.
    pub data: serde_json::Value,
}

/// Our permission to call a user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallPermission {
    /// Status.
    pub status: PermissionStatus,
    /// When a temporary permission ends.
    pub expires_at: Option<DateTime<Utc>>,
    /// Where it came from (`permission_reply`, `inbound_call`, ...).
    pub source: Option<String>,
    /// When the user last answered a request.
    pub responded_at: Option<DateTime<Utc>>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

// --- tasks, reminders, notes -----------------------------------------------------------------

/// A task to add.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Title.
    pub title: String,
    /// Details.
    pub description: Option<String>,
    /// Priority.
    pub priority: TaskPriority,
    /// Due time.
    pub due_at: Option<DateTime<Utc>>,
    /// Who created it.
    pub source: Source,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    /// Id (short: people say it on calls).
    pub id: i64,
    /// Title.
    pub title: String,
    /// Details.
    pub description: Option<String>,
    /// Status.
    pub status: TaskStatus,
    /// Priority.
    pub priority: TaskPriority,
    /// Due time.
    pub due_at: Option<DateTime<Utc>>,
    /// Who created it.
    pub source: Source,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was completed.
    pub completed_at: Option<DateTime<Utc>>,
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
}

/// Changes to a task; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TaskChanges {
    /// New title.
    pub title: Option<String>,
    /// New status.
    pub status: Option<TaskStatus>,
    /// New priority.
    pub priority: Option<TaskPriority>,
    /// New due time (`Some(None)` clears it).
    pub due_at: Option<Option<DateTime<Utc>>>,
}

/// A reminder to add.
#[derive(Debug, Clone)]
pub struct NewReminder {
    /// What to remind of.
    pub text: String,
    /// The IANA time zone the times are in.
    pub time_zone: String,
    /// The wall-clock time asked for, `YYYY-MM-DD HH:MM`.
    pub local_time: String,
    /// RFC 5545 recurrence rule, `None` for one-time.
    pub recurrence: Option<String>,
    /// The first occurrence, in UTC.
    pub next_due_at: DateTime<Utc>,
    /// Who created it.
    pub source: Source,
}

/// A reminder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reminder {
    /// Id.
    pub id: i64,
    /// The user.
    pub user_id: UserId,
    /// What to remind of.
    pub text: String,
    /// Time zone.
    pub time_zone: String,
    /// The wall-clock time asked for.
    pub local_time: String,
    /// Recurrence rule.
    pub recurrence: Option<String>,
    /// Next occurrence (UTC); `None` when nothing is left.
    pub next_due_at: Option<DateTime<Utc>>,
    /// Status.
    pub status: ReminderStatus,
    /// Delivery attempts for the current occurrence.
    pub attempts: i64,
    /// Holder of the delivery lease.
    pub lease_owner: Option<String>,
    /// Lease end.
    pub lease_until: Option<DateTime<Utc>>,
    /// Who created it.
    pub source: Source,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A reminder's new time, when it is moved.
#[derive(Debug, Clone)]
pub struct ReminderSchedule {
    /// The IANA time zone the times are in.
    pub time_zone: String,
    /// The wall-clock time asked for, `YYYY-MM-DD HH:MM`.
    pub local_time: String,
    /// RFC 5545 recurrence rule, `None` for one-time.
    pub recurrence: Option<String>,
    /// The next occurrence, in UTC.
    pub next_due_at: DateTime<Utc>,
}

/// Which reminders to list.
#[derive(Debug, Clone, Default)]
pub struct ReminderFilter {
    /// Only this status.
    pub status: Option<ReminderStatus>,
}

/// How delivering a reminder occurrence went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReminderOutcome {
    /// Delivered; the next occurrence, or `None` if it was the last.
    Delivered {
        /// Next occurrence.
        next_due_at: Option<DateTime<Utc>>,
    },
    /// Not delivered; try again at `at`.
    Retry {
        /// When.
        at: DateTime<Utc>,
    },
    /// Given up.
    Failed,
}

/// A note to add.
#[derive(Debug, Clone)]
pub struct NewNote {
    /// The text.
    pub body: String,
    /// Who created it.
    pub source: Source,
}

/// A note.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    /// Id.
    pub id: i64,
    /// The text.
    pub body: String,
    /// Who created it.
    pub source: Source,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}
