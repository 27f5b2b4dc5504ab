//! Storage: one [`Store`] interface, SQLite (embedded default) and Postgres behind it.
//!
//! Handlers, the event router, the scheduler and (later) the assistant's tools talk to the
//! store through methods named for what they need; none of them sees SQL. Every row about a
//! person is scoped by their [`UserId`]: methods that touch tasks, reminders, notes, messages
//! or calls take the user and filter by it, so no caller can reach another user's rows by id.
//!
//! - [`sql`]: the implementation, written once for both backends (see its docs for how).
//! - `migrations/sqlite`, `migrations/postgres`: each backend's schema, run at start.
//!
//! Times are UTC and come from the caller's [`crate::clock::Clock`], never from the database's
//! `now()`, so tests can drive them and both backends agree.

mod models;
pub mod sql;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::DatabaseBackend;
use crate::domain::{
    Contact, InboundMessage, MessageStatusUpdate, PermissionResponse, PhoneNumberId, UserId,
    WaCallId, WaId,
};

pub use models::*;
pub use sql::SqlStore;

/// Errors callers can act on; anything else is [`StoreError::Database`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist (or belongs to another user).
    #[error("not found")]
    NotFound,
    /// The write conflicts with existing data.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row holds a value the code does not understand (a newer schema, a manual edit).
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The application's storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- operations -------------------------------------------------------------------------

    /// Which backend this is.
    fn backend(&self) -> DatabaseBackend;

    /// A cheap round trip, for health checks.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Applied vs embedded migrations, for readiness.
    async fn migration_status(&self) -> Result<MigrationStatus, StoreError>;

    /// Closes the pool, waiting for connections in use.
    async fn close(&self);

    // --- webhook inbox ----------------------------------------------------------------------

    /// Stores deliveries and their events in one transaction. An event whose idempotency key
    /// is already stored is a duplicate and changes nothing; a delivery with no new events
    /// leaves no trace. New events are stored claimed by `claim` (their receiver processes
    /// them).
    async fn record_deliveries(
        &self,
        deliveries: &[NewDelivery],
        claim: &Claim,
    ) -> Result<Vec<DeliveryReceipt>, StoreError>;

    /// Claims up to `limit` pending events nobody holds (unclaimed, or claim expired), oldest
    /// first.
    async fn claim_pending_events(
        &self,
        claim: &Claim,
        limit: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError>;

    /// Records how processing went for each event.
    async fn complete_events(
        &self,
        completions: &[EventCompletion],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Releases `owner`'s claims on pending events (all of them, or `ids`), so any instance
    /// may take them at once.
    async fn release_events(&self, owner: &str, ids: Option<&[i64]>) -> Result<u64, StoreError>;

    /// The stored event with this idempotency key, for tests and operators.
    async fn webhook_event(&self, key: &str) -> Result<Option<StoredEvent>, StoreError>;

    /// Counts of stored events by state.
    async fn webhook_event_counts(&self) -> Result<EventCounts, StoreError>;

    /// Deletes deliveries received before `before`, and events received before it that are no
    /// longer pending.
    async fn purge_webhook_history(&self, before: DateTime<Utc>)
        -> Result<PurgeCounts, StoreError>;

    // --- users ------------------------------------------------------------------------------

    /// Creates or updates the user a webhook describes, matched by WhatsApp id, then BSUID.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the contact names no id at all.
    async fn upsert_contact(
        &self,
        contact: &Contact,
        now: DateTime<Utc>,
    ) -> Result<User, StoreError>;

    /// The user with this WhatsApp id.
    async fn user_by_wa_id(&self, wa_id: &WaId) -> Result<Option<User>, StoreError>;

    /// The user with this id.
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// Sets a user's time zone and/or language.
    async fn update_user_settings(
        &self,
        user: UserId,
        changes: &UserSettings,
        now: DateTime<Utc>,
    ) -> Result<User, StoreError>;

    /// Everything stored about a user.
    async fn export_user(&self, user: UserId) -> Result<UserExport, StoreError>;

    /// Deletes a user and every row about them. Returns whether they existed.
    async fn delete_user(&self, user: UserId) -> Result<bool, StoreError>;

    // --- messages ---------------------------------------------------------------------------

    /// Stores a message from a user once (by wamid).
    async fn record_inbound_message(
        &self,
        user: UserId,
        business: Option<&PhoneNumberId>,
        message: &InboundMessage,
        now: DateTime<Utc>,
    ) -> Result<Recorded, StoreError>;

    /// Stores a message we sent.
    async fn record_outbound_message(
        &self,
        user: UserId,
        message: &NewOutboundMessage,
        now: DateTime<Utc>,
    ) -> Result<StoredMessage, StoreError>;

    /// Applies delivery statuses (in order) to the messages they are about, each only if it
    /// moves its message's status forward. Statuses come in floods (a broadcast's), so this
    /// takes many at once: one read for all of them.
    async fn apply_message_statuses(
        &self,
        updates: &[&MessageStatusUpdate],
        now: DateTime<Utc>,
    ) -> Result<Vec<StatusApplied>, StoreError>;

    /// A user's messages, oldest first, the last `limit` of them.
    async fn recent_messages(
        &self,
        user: UserId,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    // --- calls ------------------------------------------------------------------------------

    /// Applies a signalling event to the call it is about, creating the call row if this is
    /// the first we hear of it. The transition is decided by [`call_core::CallState::apply`]
    /// and written only if the row still holds the state it was decided from.
    async fn record_call_signal(
        &self,
        signal: &CallSignalRecord,
    ) -> Result<CallSignalOutcome, StoreError>;

    /// Creates a call we start (outbound, test phone) before WhatsApp has an id for it.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id exists.
    async fn create_call(&self, call: &NewCall) -> Result<CallRecord, StoreError>;

    /// Records WhatsApp's id for a call we started.
    async fn attach_wa_call_id(&self, id: &str, wa_call_id: &WaCallId) -> Result<(), StoreError>;

    /// Records what the call cost the AI provider (its token usage, summed), replacing any
    /// earlier figure.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown call.
    async fn set_call_usage(&self, id: &str, usage: &serde_json::Value) -> Result<(), StoreError>;

    /// Applies a signal to a call by our id (see [`Store::record_call_signal`]).
    async fn apply_call_signal(
        &self,
        id: &str,
        update: &CallUpdate,
    ) -> Result<CallSignalOutcome, StoreError>;

    /// Calls, newest first.
    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<CallRecord>, StoreError>;

    /// A call by our id.
    async fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreError>;

    /// A call by WhatsApp's id.
    async fn call_by_wa_id(&self, wa_call_id: &WaCallId) -> Result<Option<CallRecord>, StoreError>;

    /// Appends to a call's event log (state changes, transcript lines, tool calls).
    async fn append_call_event(
        &self,
        call_id: &str,
        event: &NewCallEvent,
    ) -> Result<i64, StoreError>;

    /// A call's event log in order.
    async fn call_events(&self, call_id: &str) -> Result<Vec<CallEventRecord>, StoreError>;

    // --- call permissions -------------------------------------------------------------------

    /// Records a user's answer to a call permission request.
    async fn record_permission_reply(
        &self,
        user: UserId,
        response: &PermissionResponse,
        expires_at: Option<DateTime<Utc>>,
        is_permanent: bool,
        now: DateTime<Utc>,
    ) -> Result<CallPermission, StoreError>;

    /// What we know of our permission to call a user.
    async fn call_permission(&self, user: UserId) -> Result<Option<CallPermission>, StoreError>;

    // --- tasks ------------------------------------------------------------------------------

    /// Adds a task.
    async fn add_task(
        &self,
        user: UserId,
        task: &NewTask,
        now: DateTime<Utc>,
    ) -> Result<Task, StoreError>;

    /// A user's tasks, optionally of one status, newest first.
    async fn list_tasks(&self, user: UserId, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;

    /// Changes a user's task.
    async fn update_task(
        &self,
        user: UserId,
        id: i64,
        changes: &TaskChanges,
        now: DateTime<Utc>,
    ) -> Result<Task, StoreError>;

    /// Deletes a user's task. Returns whether it existed.
    async fn delete_task(&self, user: UserId, id: i64) -> Result<bool, StoreError>;

    // --- reminders --------------------------------------------------------------------------

    /// Adds a reminder.
    async fn add_reminder(
        &self,
        user: UserId,
        reminder: &NewReminder,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError>;

    /// A user's reminders, optionally of one status, soonest first.
    async fn list_reminders(
        &self,
        user: UserId,
        filter: &ReminderFilter,
    ) -> Result<Vec<Reminder>, StoreError>;

    /// Cancels a user's reminder.
    async fn cancel_reminder(
        &self,
        user: UserId,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError>;

    /// A user's reminder.
    async fn reminder(&self, user: UserId, id: i64) -> Result<Option<Reminder>, StoreError>;

    /// Moves a user's reminder to a new time and rule. Whatever its status, it is scheduled
    /// again (a finished or cancelled reminder comes back); attempts and any delivery lease are
    /// cleared.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the user has no such reminder.
    async fn reschedule_reminder(
        &self,
        user: UserId,
        id: i64,
        schedule: &ReminderSchedule,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError>;

    /// Puts off a user's scheduled (or delivering) reminder until `until`, keeping its local
    /// time and rule. A delivery in progress loses its lease: the user's word wins.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the user has no such reminder; [`StoreError::Conflict`]
    /// when it is completed, cancelled or failed.
    async fn snooze_reminder(
        &self,
        user: UserId,
        id: i64,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError>;

    /// Marks the current occurrence of a user's scheduled (or delivering) reminder done: it
    /// moves to `next_due_at` (a recurring reminder's next occurrence), or is completed when
    /// that is `None`. A delivery in progress loses its lease.
    ///
    /// # Errors
    /// As [`Store::snooze_reminder`].
    async fn complete_reminder(
        &self,
        user: UserId,
        id: i64,
        next_due_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError>;

    /// Claims up to `limit` scheduled reminders due at `claim.now`, and delivering ones whose
    /// lease expired (their instance died), leasing them to `claim.owner` until
    /// `claim.until`.
    async fn claim_due_reminders(
        &self,
        claim: &Claim,
        limit: i64,
    ) -> Result<Vec<Reminder>, StoreError>;

    /// Ends `owner`'s lease on a reminder with the occurrence's outcome. Fails with
    /// [`StoreError::Conflict`] if the lease is no longer held (another instance retook it).
    async fn finish_reminder_delivery(
        &self,
        id: i64,
        owner: &str,
        outcome: &ReminderOutcome,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError>;

    // --- notes ------------------------------------------------------------------------------

    /// Adds a note.
    async fn add_note(
        &self,
        user: UserId,
        note: &NewNote,
        now: DateTime<Utc>,
    ) -> Result<Note, StoreError>;

    /// A user's notes, newest first.
    async fn list_notes(&self, user: UserId, limit: i64) -> Result<Vec<Note>, StoreError>;

    /// Full-text search over a user's notes, best match first. The query is what a person
    /// says ("dentist appointment"), not a query language.
    async fn search_notes(
        &self,
        user: UserId,
        query: &str,
        limit: i64,
    ) -> Result<Vec<Note>, StoreError>;

    /// Deletes a user's note. Returns whether it existed.
    async fn delete_note(&self, user: UserId, id: i64) -> Result<bool, StoreError>;
}
