//! The [`Store`] on SQLite and Postgres, written once.
//!
//! Each method's body is type-checked twice by [`on_pool!`], once with a `SqlitePool` and once
//! with a `PgPool`, so there is one copy of every query instead of two drifting ones. That
//! works because the SQL is portable by construction:
//! - parameters are `$1, $2, …` (sqlx binds SQLite's `$NNN` by number too);
//! - `RETURNING`, `ON CONFLICT … DO NOTHING/UPDATE`, partial indexes exist on both;
//! - times are bound from the app's clock (never the database's `now()`) as `DateTime<Utc>`:
//!   `timestamptz` on Postgres, RFC 3339 UTC text on SQLite, which sorts correctly as text;
//! - JSON is bound as `Json<…>`: `jsonb` on Postgres, text on SQLite.
//!
//! Where the dialects really differ (full-text search; `FOR UPDATE SKIP LOCKED` for claims on
//! Postgres, where several instances claim at once, while SQLite has a single writer anyway) the
//! method picks the statement by backend.
//!
//! SQLite transactions that write always start with a write, so they take the write lock at
//! once instead of failing to upgrade a read lock under concurrency.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use call_core::{CallDirection, CallSignal, CallState, Transition};
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::FromRow;

use super::*;
use crate::config::{DatabaseBackend, DatabaseConfig};
use crate::domain::{
    Bsuid, CallChannel, Contact, DeliveryStatus, InboundMessage, MessageDirection,
    MessageStatusUpdate, PermissionResponse, PermissionStatus, PhoneNumberId, ReminderStatus,
    Source, TaskPriority, TaskStatus, UserId, WaCallId, WaId,
};
use crate::telemetry::Metrics;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Runs `$body` with `$pool` bound to the concrete pool of whichever backend this is: the
/// writer for `on_pool!`, a reader for `on_read_pool!` (the same pool on Postgres).
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite { write: $pool, .. } => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

macro_rules! on_read_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite { read: $pool, .. } => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

enum Pool {
    /// SQLite allows one writer at a time. Writers on several connections would wait for each
    /// other in SQLite's busy handler, which sleeps in steps of milliseconds; one writer
    /// connection queues them in the pool instead, and reads (WAL: never blocked by the writer)
    /// get their own connections.
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
    },
    Postgres(PgPool),
}

/// The SQL store.
pub struct SqlStore {
    pool: Pool,
    metrics: Option<Metrics>,
}

// Pools do not ping a connection before handing it out (sqlx's default): that is one more
// round trip per statement, and a dead connection fails the statement anyway, which callers
// already handle (webhooks answer 503, events are retried).
impl SqlStore {
    /// Connects (creating the SQLite file and its directory if needed). Does not migrate.
    ///
    /// # Errors
    /// When the database cannot be reached or the URL is unusable.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let url = config.url.expose();
        let pool = match config.url.backend() {
            DatabaseBackend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // With WAL, NORMAL loses at most the last transactions on power loss, never
                    // corrupts; FULL would fsync every webhook.
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true);
                if let Some(dir) = options.get_filename().parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                                e.kind(),
                                format!("cannot create {}: {e}", dir.display()),
                            )))
                        })?;
                    }
                }
                let read_options = options.clone().read_only(true);
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await?;
                // Opened after the writer, which created the file and switched it to WAL.
                let read = SqlitePoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .test_before_acquire(false)
                    .connect_with(read_options)
                    .await?;
                Pool::Sqlite { write, read }
            }
            DatabaseBackend::Postgres => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .test_before_acquire(false)
                    .connect(url)
                    .await?,
            ),
        };
        Ok(Self {
            pool,
            metrics: None,
        })
    }

    /// Records every operation's duration and failures in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Applies the backend's migrations that are not applied yet.
    ///
    /// # Errors
    /// When a migration fails or the database has a migration this binary does not know.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite { write, .. } => SQLITE_MIGRATIONS.run(write).await?,
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    fn migrator(&self) -> &'static Migrator {
        match self.pool {
            Pool::Sqlite { .. } => &SQLITE_MIGRATIONS,
            Pool::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Why an update of a user's open (scheduled or delivering) reminder matched no row: the
    /// reminder is finished ([`StoreError::Conflict`]) or is not this user's
    /// ([`StoreError::NotFound`]). Asked on the writer, so it sees the write it explains.
    async fn open_reminder_miss(&self, user: UserId, id: i64) -> StoreError {
        let count: Result<i64, sqlx::Error> = on_pool!(self, pool => {
            sqlx::query_scalar("select count(*) from reminders where id = $1 and user_id = $2")
                .bind(id)
                .bind(user.0)
                .fetch_one(pool)
                .await
        });
        match count {
            Ok(0) => StoreError::NotFound,
            Ok(_) => StoreError::Conflict(
                "the reminder is already completed, cancelled or failed".to_owned(),
            ),
            Err(error) => error.into(),
        }
    }

    /// Times `result` under `operation` when metrics are on.
    async fn timed<T>(
        &self,
        operation: &'static str,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match &self.metrics {
            Some(metrics) => {
                let timer = metrics.db_timer(operation);
                timer.finish(work.await)
            }
            None => work.await,
        }
    }
}

// --- column lists (one per model, so every query decodes the same row type) ------------------

const USER_COLUMNS: &str =
    "id, wa_id, bsuid, name, username, time_zone, language, opted_out_at, created_at, updated_at";
const TASK_COLUMNS: &str =
    "id, title, description, status, priority, due_at, source, created_at, updated_at, completed_at";
const REMINDER_COLUMNS: &str = "id, user_id, text, time_zone, local_time, recurrence, next_due_at, status, attempts, lease_owner, lease_until, source, created_at, updated_at";
const NOTE_COLUMNS: &str = "id, body, source, created_at, updated_at";
const MESSAGE_COLUMNS: &str =
    "id, direction, wamid, kind, body, content, status, status_at, sent_at, created_at";
const CALL_COLUMNS: &str = "id, wa_call_id, user_id, direction, channel, state, end_reason, purpose, reminder_id, offered_at, answered_at, ended_at, duration_secs, error_code, usage, created_at, updated_at";
const PERMISSION_COLUMNS: &str = "status, expires_at, source, responded_at, updated_at";

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> DatabaseBackend {
        match self.pool {
            Pool::Sqlite { .. } => DatabaseBackend::Sqlite,
            Pool::Postgres(_) => DatabaseBackend::Postgres,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", async {
            on_read_pool!(self, pool => sqlx::query("select 1").execute(pool).await.map(|_| ()))?;
            Ok(())
        })
        .await
    }

    async fn migration_status(&self) -> Result<MigrationStatus, StoreError> {
        #[derive(FromRow)]
        struct Applied {
            version: i64,
            checksum: Vec<u8>,
        }
        let applied: Vec<Applied> = self
            .timed("migration_status", async {
                Ok(on_read_pool!(self, pool => {
                    sqlx::query_as("select version, checksum from _sqlx_migrations where success")
                        .fetch_all(pool)
                        .await
                })?)
            })
            .await?;
        let known = self.migrator().iter().count();
        let matching = applied
            .iter()
            .filter(|a| {
                self.migrator()
                    .iter()
                    .any(|m| m.version == a.version && *m.checksum == *a.checksum)
            })
            .count();
        Ok(MigrationStatus {
            known,
            applied: matching,
            foreign: applied.len() - matching,
        })
    }

    async fn close(&self) {
        on_read_pool!(self, pool => pool.close().await);
        on_pool!(self, pool => pool.close().await);
    }

    // --- webhook inbox ----------------------------------------------------------------------

    async fn record_deliveries(
        &self,
        deliveries: &[NewDelivery],
        claim: &Claim,
    ) -> Result<Vec<DeliveryReceipt>, StoreError> {
        // Rows per statement: well under SQLite's 32766 and Postgres' 65535 bound parameters
        // (11 per event).
        const CHUNK: usize = 2000;
        const INSERT_EVENTS: &str = "insert into webhook_events (idempotency_key, delivery_id, kind, phone_number_id, wa_id, payload, state, attempts, claimed_by, claimed_until, received_at) ";
        const INSERT_DELIVERIES: &str =
            "insert into webhook_deliveries (id, received_at, signature, event_count, body) ";
        let events: Vec<(&NewDelivery, &NewEvent)> = deliveries
            .iter()
            .flat_map(|d| d.events.iter().map(move |e| (d, e)))
            .collect();
        // The same row builders serve both backends.
        macro_rules! event_rows {
            ($insert:expr, $events:expr) => {
                $insert.push_values($events, |mut row, (delivery, event)| {
                    row.push_bind(&event.key)
                        .push_bind(&delivery.id)
                        .push_bind(event.kind.as_str())
                        .push_bind(event.phone_number_id.as_ref().map(PhoneNumberId::as_str))
                        .push_bind(event.wa_id.as_ref().map(WaId::as_str))
                        .push_bind(Json(&*event.payload))
                        .push_bind("pending")
                        .push_bind(1_i64)
                        .push_bind(&claim.owner)
                        .push_bind(claim.until)
                        .push_bind(delivery.received_at);
                })
            };
        }
        macro_rules! delivery_rows {
            ($insert:expr, $deliveries:expr) => {
                $insert.push_values($deliveries, |mut row, delivery| {
                    row.push_bind(&delivery.id)
                        .push_bind(delivery.received_at)
                        .push_bind(delivery.signature)
                        .push_bind(i64::try_from(delivery.events.len()).unwrap_or(i64::MAX))
                        .push_bind(&delivery.body);
                })
            };
        }

        self.timed("record_deliveries", async {
            let inserted: Vec<(i64, String)> = match &self.pool {
                // Postgres: one statement, so one round trip and one commit per batch. The
                // deliveries are inserted only where an event of theirs was new.
                Pool::Postgres(pool) if events.len() <= CHUNK => {
                    let mut insert = sqlx::QueryBuilder::new("with new_events as (");
                    insert.push(INSERT_EVENTS);
                    event_rows!(insert, &events);
                    insert.push(" on conflict (idempotency_key) do nothing returning id, idempotency_key, delivery_id), \
                                 new_deliveries as (insert into webhook_deliveries (id, received_at, signature, event_count, body) \
                                 select d.id, d.received_at, d.signature, d.event_count, d.body from (");
                    delivery_rows!(insert, deliveries);
                    insert.push(") as d (id, received_at, signature, event_count, body) \
                                 where d.id in (select delivery_id from new_events)) \
                                 select id, idempotency_key from new_events");
                    insert.build_query_as().fetch_all(pool).await?
                }
                // SQLite (and very large batches): events, then the deliveries that brought
                // anything new, in one transaction.
                Pool::Sqlite { .. } | Pool::Postgres(_) => on_pool!(self, pool => {
                    let mut tx = pool.begin().await?;
                    let mut inserted = Vec::with_capacity(events.len());
                    for chunk in events.chunks(CHUNK) {
                        let mut insert = sqlx::QueryBuilder::new(INSERT_EVENTS);
                        event_rows!(insert, chunk);
                        insert.push(" on conflict (idempotency_key) do nothing returning id, idempotency_key");
                        inserted.extend(insert.build_query_as::<(i64, String)>().fetch_all(&mut *tx).await?);
                    }
                    let receipts = receipts_for(deliveries, &inserted);
                    let kept: Vec<&NewDelivery> = deliveries
                        .iter()
                        .zip(&receipts)
                        .filter(|(_, r)| r.events.iter().any(|e| matches!(e, EventInsert::New(_))))
                        .map(|(d, _)| d)
                        .collect();
                    for chunk in kept.chunks(CHUNK) {
                        let mut insert = sqlx::QueryBuilder::new(INSERT_DELIVERIES);
                        delivery_rows!(insert, chunk);
                        insert.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    inserted
                }),
            };
            Ok(receipts_for(deliveries, &inserted))
        })
        .await
    }

    async fn claim_pending_events(
        &self,
        claim: &Claim,
        limit: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        #[derive(FromRow)]
        struct Row {
            id: i64,
            payload: Json<serde_json::Value>,
            received_at: DateTime<Utc>,
            attempts: i64,
        }
        let lock = match self.backend() {
            DatabaseBackend::Postgres => "for update skip locked",
            DatabaseBackend::Sqlite => "",
        };
        let sql = format!(
            "update webhook_events set claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
             where id in (select id from webhook_events \
                 where state = 'pending' and (claimed_until is null or claimed_until <= $3) \
                 order by id limit $4 {lock}) \
             returning id, payload, received_at, attempts"
        );
        self.timed("claim_pending_events", async {
            let mut rows: Vec<Row> = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(&claim.owner)
                    .bind(claim.until)
                    .bind(claim.now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            })?;
            rows.sort_by_key(|r| r.id);
            Ok(rows
                .into_iter()
                .map(|r| ClaimedEvent {
                    id: r.id,
                    payload: r.payload.0,
                    received_at: r.received_at,
                    attempts: r.attempts,
                })
                .collect())
        })
        .await
    }

    async fn complete_events(
        &self,
        completions: &[EventCompletion],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if completions.is_empty() {
            return Ok(());
        }
        // One update per distinct outcome (usually one or two per batch), not one per event.
        let mut groups: HashMap<
            (
                &str,
                Option<DateTime<Utc>>,
                Option<DateTime<Utc>>,
                Option<&str>,
            ),
            Vec<i64>,
        > = HashMap::new();
        for completion in completions {
            let key = match &completion.outcome {
                EventOutcome::Processed => ("processed", Some(now), None, None),
                EventOutcome::Ignored(reason) => {
                    ("ignored", Some(now), None, Some(reason.as_str()))
                }
                EventOutcome::Failed {
                    error,
                    retry_at: Some(at),
                } => ("pending", None, Some(*at), Some(error.as_str())),
                EventOutcome::Failed {
                    error,
                    retry_at: None,
                } => ("failed", Some(now), None, Some(error.as_str())),
            };
            groups.entry(key).or_default().push(completion.id);
        }
        self.timed("complete_events", async {
            on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                for ((state, processed_at, retry_at, error), ids) in &groups {
                    let mut update = sqlx::QueryBuilder::new("update webhook_events set state = ");
                    update
                        .push_bind(*state)
                        .push(", processed_at = ")
                        .push_bind(*processed_at)
                        .push(", claimed_by = null, claimed_until = ")
                        .push_bind(*retry_at)
                        .push(", last_error = ")
                        .push_bind(*error)
                        .push(" where id in (");
                    let mut list = update.separated(", ");
                    for id in ids {
                        list.push_bind(*id);
                    }
                    update.push(")");
                    update.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            });
            Ok(())
        })
        .await
    }

    async fn release_events(&self, owner: &str, ids: Option<&[i64]>) -> Result<u64, StoreError> {
        if ids.is_some_and(<[i64]>::is_empty) {
            return Ok(0);
        }
        self.timed("release_events", async {
            let released = on_pool!(self, pool => {
                let mut release = sqlx::QueryBuilder::new(
                    "update webhook_events set claimed_by = null, claimed_until = null where state = 'pending' and claimed_by = ",
                );
                release.push_bind(owner);
                if let Some(ids) = ids {
                    release.push(" and id in (");
                    let mut list = release.separated(", ");
                    for id in ids {
                        list.push_bind(*id);
                    }
                    release.push(")");
                }
                release.build().execute(pool).await.map(|r| r.rows_affected())
            })?;
            Ok(released)
        })
        .await
    }

    async fn webhook_event(&self, key: &str) -> Result<Option<StoredEvent>, StoreError> {
        #[derive(FromRow)]
        struct Row {
            id: i64,
            kind: String,
            state: String,
            attempts: i64,
            last_error: Option<String>,
            payload: Json<serde_json::Value>,
            delivery_id: String,
        }
        self.timed("webhook_event", async {
            let row: Option<Row> = on_read_pool!(self, pool => {
                sqlx::query_as("select id, kind, state, attempts, last_error, payload, delivery_id from webhook_events where idempotency_key = $1")
                    .bind(key)
                    .fetch_optional(pool)
                    .await
            })?;
            Ok(row.map(|r| StoredEvent {
                id: r.id,
                kind: r.kind,
                state: r.state,
                attempts: r.attempts,
                last_error: r.last_error,
                payload: r.payload.0,
                delivery_id: r.delivery_id,
            }))
        })
        .await
    }

    async fn webhook_event_counts(&self) -> Result<EventCounts, StoreError> {
        self.timed("webhook_event_counts", async {
            let (states, deliveries): (Vec<(String, i64)>, i64) = on_read_pool!(self, pool => {
                let states = sqlx::query_as("select state, count(*) from webhook_events group by state")
                    .fetch_all(pool)
                    .await?;
                let deliveries = sqlx::query_scalar("select count(*) from webhook_deliveries")
                    .fetch_one(pool)
                    .await?;
                (states, deliveries)
            });
            let mut counts = EventCounts {
                deliveries,
                ..EventCounts::default()
            };
            for (state, n) in states {
                match state.as_str() {
                    "pending" => counts.pending = n,
                    "processed" => counts.processed = n,
                    "ignored" => counts.ignored = n,
                    "failed" => counts.failed = n,
                    other => return Err(StoreError::Corrupt(format!("webhook event state {other:?}"))),
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn purge_webhook_history(
        &self,
        before: DateTime<Utc>,
    ) -> Result<PurgeCounts, StoreError> {
        self.timed("purge_webhook_history", async {
            let counts = on_pool!(self, pool => {
                let deliveries = sqlx::query("delete from webhook_deliveries where received_at < $1")
                    .bind(before)
                    .execute(pool)
                    .await?
                    .rows_affected();
                let events = sqlx::query("delete from webhook_events where received_at < $1 and state <> 'pending'")
                    .bind(before)
                    .execute(pool)
                    .await?
                    .rows_affected();
                PurgeCounts { deliveries, events }
            });
            Ok(counts)
        })
        .await
    }

    // --- users ------------------------------------------------------------------------------

    async fn upsert_contact(
        &self,
        contact: &Contact,
        now: DateTime<Utc>,
    ) -> Result<User, StoreError> {
        if !contact.is_identified() {
            return Err(StoreError::Conflict(
                "a contact needs a WhatsApp id or a BSUID".to_owned(),
            ));
        }
        let update = |by: &str| {
            format!(
                "update users set name = coalesce($1, name), username = coalesce($2, username), \
                 parent_bsuid = coalesce($3, parent_bsuid), wa_id = coalesce(wa_id, $4), \
                 bsuid = coalesce(bsuid, $5), updated_at = $6 where {by} = $7 returning {USER_COLUMNS}"
            )
        };
        let by_wa_id = update("wa_id");
        let by_bsuid = update("bsuid");
        let insert = format!(
            "insert into users (wa_id, bsuid, parent_bsuid, username, name, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $6) on conflict do nothing returning {USER_COLUMNS}"
        );
        let name = contact.name.as_ref().map(|n| n.0.as_str());
        let wa_id = contact.wa_id.as_ref().map(WaId::as_str);
        let bsuid = contact.user_id.as_ref().map(Bsuid::as_str);
        let parent = contact.parent_user_id.as_deref();
        let username = contact.username.as_deref();

        self.timed("upsert_contact", async {
            // Update-then-insert as single statements (no read-then-write transaction): a
            // concurrent insert of the same user makes our insert return nothing, and the
            // next round's update finds the row.
            for _ in 0..3 {
                let row: Option<UserRow> = on_pool!(self, pool => {
                    let mut found = None;
                    for (sql, key) in [(&by_wa_id, wa_id), (&by_bsuid, bsuid)] {
                        let Some(key) = key else { continue };
                        found = sqlx::query_as(sql)
                            .bind(name)
                            .bind(username)
                            .bind(parent)
                            .bind(wa_id)
                            .bind(bsuid)
                            .bind(now)
                            .bind(key)
                            .fetch_optional(pool)
                            .await?;
                        if found.is_some() {
                            break;
                        }
                    }
                    if found.is_none() {
                        found = sqlx::query_as(&insert)
                            .bind(wa_id)
                            .bind(bsuid)
                            .bind(parent)
                            .bind(username)
                            .bind(name)
                            .bind(now)
                            .fetch_optional(pool)
                            .await?;
                    }
                    found
                });
                if let Some(row) = row {
                    return row.try_into();
                }
            }
            Err(StoreError::Conflict(
                "the contact's WhatsApp id and BSUID belong to two different users".to_owned(),
            ))
        })
        .await
    }

    async fn user_by_wa_id(&self, wa_id: &WaId) -> Result<Option<User>, StoreError> {
        let sql = format!("select {USER_COLUMNS} from users where wa_id = $1");
        self.timed("user_by_wa_id", async {
            let row: Option<UserRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql).bind(wa_id.as_str()).fetch_optional(pool).await
            })?;
            row.map(User::try_from).transpose()
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let sql = format!("select {USER_COLUMNS} from users where id = $1");
        self.timed("user", async {
            let row: Option<UserRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql).bind(id.0).fetch_optional(pool).await
            })?;
            row.map(User::try_from).transpose()
        })
        .await
    }

    async fn update_user_settings(
        &self,
        user: UserId,
        changes: &UserSettings,
        now: DateTime<Utc>,
    ) -> Result<User, StoreError> {
        let sql = format!(
            "update users set time_zone = coalesce($1, time_zone), language = coalesce($2, language), \
             updated_at = $3 where id = $4 returning {USER_COLUMNS}"
        );
        self.timed("update_user_settings", async {
            let row: Option<UserRow> = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(changes.time_zone.as_deref())
                    .bind(changes.language.as_deref())
                    .bind(now)
                    .bind(user.0)
                    .fetch_optional(pool)
                    .await
            })?;
            row.ok_or(StoreError::NotFound)?.try_into()
        })
        .await
    }

    async fn export_user(&self, user: UserId) -> Result<UserExport, StoreError> {
        let user_sql = format!("select {USER_COLUMNS} from users where id = $1");
        let messages_sql =
            format!("select {MESSAGE_COLUMNS} from messages where user_id = $1 order by id");
        let calls_sql =
            format!("select {CALL_COLUMNS} from calls where user_id = $1 order by created_at, id");
        let row: Option<UserRow> = self
            .timed("export_user", async {
                Ok(on_read_pool!(self, pool => {
                    sqlx::query_as(&user_sql).bind(user.0).fetch_optional(pool).await
                })?)
            })
            .await?;
        let profile = User::try_from(row.ok_or(StoreError::NotFound)?)?;
        let tasks = self.list_tasks(user, &TaskFilter::default()).await?;
        let reminders = self
            .list_reminders(user, &ReminderFilter::default())
            .await?;
        let notes = self.list_notes(user, i64::MAX).await?;
        let (messages, calls): (Vec<MessageRow>, Vec<CallRow>) = on_read_pool!(self, pool => {
            let messages = sqlx::query_as(&messages_sql).bind(user.0).fetch_all(pool).await?;
            let calls = sqlx::query_as(&calls_sql).bind(user.0).fetch_all(pool).await?;
            (messages, calls)
        });
        let mut call_exports = Vec::with_capacity(calls.len());
        for call in calls {
            let call = CallRecord::try_from(call)?;
            let events = self.call_events(&call.id).await?;
            call_exports.push(CallExport { call, events });
        }
        Ok(UserExport {
            user: profile,
            tasks,
            reminders,
            notes,
            messages: messages
                .into_iter()
                .map(StoredMessage::try_from)
                .collect::<Result<_, _>>()?,
            calls: call_exports,
            call_permission: self.call_permission(user).await?,
        })
    }

    async fn delete_user(&self, user: UserId) -> Result<bool, StoreError> {
        self.timed("delete_user", async {
            let deleted = on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                // Raw webhook payloads about the user go too; a delivery about several users
                // goes whole (it is a debugging copy, not a record).
                sqlx::query(
                    "delete from webhook_deliveries where id in (select e.delivery_id from webhook_events e \
                     join users u on u.wa_id = e.wa_id where u.id = $1)",
                )
                .bind(user.0)
                .execute(&mut *tx)
                .await?;
                sqlx::query("delete from webhook_events where wa_id in (select wa_id from users where id = $1)")
                    .bind(user.0)
                    .execute(&mut *tx)
                    .await?;
                let deleted = sqlx::query("delete from users where id = $1")
                    .bind(user.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                deleted
            });
            Ok(deleted > 0)
        })
        .await
    }

    // --- messages ---------------------------------------------------------------------------

    async fn record_inbound_message(
        &self,
        user: UserId,
        business: Option<&PhoneNumberId>,
        message: &InboundMessage,
        now: DateTime<Utc>,
    ) -> Result<Recorded, StoreError> {
        const INSERT: &str = "insert into messages (user_id, direction, wamid, phone_number_id, kind, body, content, status, status_at, context_wamid, sent_at, created_at) \
             values ($1, 'inbound', $2, $3, $4, $5, $6, 'received', $7, $8, $9, $7) on conflict (wamid) do nothing returning id";
        self.timed("record_inbound_message", async {
            let id: Option<i64> = on_pool!(self, pool => {
                sqlx::query_scalar(INSERT)
                    .bind(user.0)
                    .bind(message.id.as_str())
                    .bind(business.map(PhoneNumberId::as_str))
                    .bind(message.content.kind())
                    .bind(message.content.text())
                    .bind(Json(&message.content))
                    .bind(now)
                    .bind(message.context.as_ref().and_then(|c| c.id.as_deref()))
                    .bind(message.timestamp)
                    .fetch_optional(pool)
                    .await
            })?;
            Ok(id.map_or(Recorded::Duplicate, Recorded::New))
        })
        .await
    }

    async fn record_outbound_message(
        &self,
        user: UserId,
        message: &NewOutboundMessage,
        now: DateTime<Utc>,
    ) -> Result<StoredMessage, StoreError> {
        let sql = format!(
            "insert into messages (user_id, direction, wamid, phone_number_id, kind, body, content, status, status_at, call_id, created_at) \
             values ($1, 'outbound', $2, $3, $4, $5, $6, $7, $8, $9, $8) returning {MESSAGE_COLUMNS}"
        );
        self.timed("record_outbound_message", async {
            let row: MessageRow = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(user.0)
                    .bind(message.wamid.as_ref().map(|w| w.as_str()))
                    .bind(message.phone_number_id.as_ref().map(PhoneNumberId::as_str))
                    .bind(&message.kind)
                    .bind(message.body.as_deref())
                    .bind(Json(&message.content))
                    .bind(DeliveryStatus::Accepted.as_wire())
                    .bind(now)
                    .bind(message.call_id.as_deref())
                    .fetch_one(pool)
                    .await
            })?;
            row.try_into()
        })
        .await
    }

    async fn apply_message_statuses(
        &self,
        updates: &[&MessageStatusUpdate],
        now: DateTime<Utc>,
    ) -> Result<Vec<StatusApplied>, StoreError> {
        const APPLY: &str = "update messages set status = $1, status_at = $2, error = coalesce($3, error) where wamid = $4 and status = $5";
        let mut results = vec![StatusApplied::Stale; updates.len()];
        self.timed("apply_message_statuses", async {
            // Which updates still need deciding: all at first; after a pass, those of a message
            // another instance changed between our read and our write (compare-and-set).
            let mut pending: Vec<usize> = (0..updates.len()).collect();
            for _ in 0..3 {
                if pending.is_empty() {
                    break;
                }
                // One read for every message the batch mentions.
                let rows: Vec<(String, String, String)> = on_read_pool!(self, pool => {
                    let mut select = sqlx::QueryBuilder::new(
                        "select wamid, direction, status from messages where wamid in (",
                    );
                    let mut list = select.separated(", ");
                    for &i in &pending {
                        list.push_bind(updates[i].message_id.as_str());
                    }
                    select.push(")");
                    select.build_query_as().fetch_all(pool).await
                })?;
                let mut current: HashMap<&str, (bool, String)> = rows
                    .iter()
                    .map(|(wamid, direction, status)| {
                        (
                            wamid.as_str(),
                            (
                                direction == MessageDirection::Outbound.as_str(),
                                status.clone(),
                            ),
                        )
                    })
                    .collect();
                // Decide in order; a message's later status in the same batch competes with the
                // one decided before it. Only the winner per message is written.
                let mut writes: HashMap<&str, (String, usize)> = HashMap::new();
                for &i in &pending {
                    let update = updates[i];
                    let wamid = update.message_id.as_str();
                    results[i] = match current.get_mut(wamid) {
                        None => StatusApplied::UnknownMessage,
                        Some((false, _)) => StatusApplied::Stale,
                        Some((true, status)) => {
                            if update.status.rank() > status_rank(status)? {
                                let original = writes
                                    .get(wamid)
                                    .map_or_else(|| status.clone(), |(o, _)| o.clone());
                                writes.insert(wamid, (original, i));
                                *status = update.status.as_wire().to_owned();
                                StatusApplied::Applied
                            } else {
                                StatusApplied::Stale
                            }
                        }
                    };
                }
                let mut retry = Vec::new();
                for (wamid, (original, i)) in writes {
                    let update = updates[i];
                    let error = (!update.errors.is_empty()).then_some(Json(&update.errors));
                    let changed = on_pool!(self, pool => {
                        sqlx::query(APPLY)
                            .bind(update.status.as_wire())
                            .bind(update.timestamp.unwrap_or(now))
                            .bind(error)
                            .bind(wamid)
                            .bind(&original)
                            .execute(pool)
                            .await
                            .map(|r| r.rows_affected())
                    })?;
                    if changed == 0 {
                        retry.extend(
                            pending
                                .iter()
                                .copied()
                                .filter(|&j| updates[j].message_id.as_str() == wamid),
                        );
                    }
                }
                retry.sort_unstable();
                for &j in &retry {
                    results[j] = StatusApplied::Stale;
                }
                pending = retry;
            }
            Ok(results)
        })
        .await
    }

    async fn recent_messages(
        &self,
        user: UserId,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "select {MESSAGE_COLUMNS} from messages where user_id = $1 order by id desc limit $2"
        );
        self.timed("recent_messages", async {
            let rows: Vec<MessageRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql).bind(user.0).bind(limit).fetch_all(pool).await
            })?;
            let mut messages = rows
                .into_iter()
                .map(StoredMessage::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            messages.reverse();
            Ok(messages)
        })
        .await
    }

    // --- calls ------------------------------------------------------------------------------

    async fn record_call_signal(
        &self,
        signal: &CallSignalRecord,
    ) -> Result<CallSignalOutcome, StoreError> {
        let insert = format!(
            "insert into calls (id, wa_call_id, user_id, direction, channel, state, end_reason, phone_number_id, offered_at, answered_at, ended_at, duration_secs, error_code, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $9, $9) \
             on conflict (wa_call_id) do nothing returning {CALL_COLUMNS}"
        );
        let initial = CallState::initial(signal.direction, signal.signal);
        let (answered_at, ended_at) = state_times(initial, signal.at);
        let created: Option<CallRow> = self
            .timed("record_call_signal", async {
                Ok(on_pool!(self, pool => {
                    sqlx::query_as(&insert)
                        .bind(uuid::Uuid::now_v7().to_string())
                        .bind(signal.wa_call_id.as_str())
                        .bind(signal.user.map(|u| u.0))
                        .bind(signal.direction.as_str())
                        .bind(signal.channel.as_str())
                        .bind(initial.as_str())
                        .bind(end_reason_of(initial))
                        .bind(signal.phone_number_id.as_ref().map(PhoneNumberId::as_str))
                        .bind(signal.at)
                        .bind(answered_at)
                        .bind(ended_at)
                        .bind(signal.duration_secs)
                        .bind(signal.error_code)
                        .fetch_optional(pool)
                        .await
                })?)
            })
            .await?;
        if let Some(row) = created {
            return Ok(CallSignalOutcome {
                call: row.try_into()?,
                created: true,
                changed: true,
            });
        }
        let existing = self
            .call_by_wa_id(&signal.wa_call_id)
            .await?
            .ok_or_else(|| StoreError::Conflict("the call vanished while being updated".into()))?;
        self.apply_call_signal(
            &existing.id,
            &CallUpdate {
                signal: signal.signal,
                at: signal.at,
                duration_secs: signal.duration_secs,
                error_code: signal.error_code,
                user: signal.user,
            },
        )
        .await
    }

    async fn create_call(&self, call: &NewCall) -> Result<CallRecord, StoreError> {
        let sql = format!(
            "insert into calls (id, user_id, direction, channel, state, purpose, phone_number_id, owner_instance, offered_at, created_at, updated_at, reminder_id) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9, $10) on conflict (id) do nothing returning {CALL_COLUMNS}"
        );
        let state = match call.direction {
            CallDirection::Inbound => CallState::Offered,
            CallDirection::Outbound => CallState::Dialing,
        };
        self.timed("create_call", async {
            let row: Option<CallRow> = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(&call.id)
                    .bind(call.user.map(|u| u.0))
                    .bind(call.direction.as_str())
                    .bind(call.channel.as_str())
                    .bind(state.as_str())
                    .bind(call.purpose.as_deref())
                    .bind(call.phone_number_id.as_ref().map(PhoneNumberId::as_str))
                    .bind(call.owner_instance.as_deref())
                    .bind(call.at)
                    .bind(call.reminder_id)
                    .fetch_optional(pool)
                    .await
            })?;
            row.ok_or_else(|| StoreError::Conflict(format!("call {} exists", call.id)))?
                .try_into()
        })
        .await
    }

    async fn attach_wa_call_id(&self, id: &str, wa_call_id: &WaCallId) -> Result<(), StoreError> {
        self.timed("attach_wa_call_id", async {
            let changed = on_pool!(self, pool => {
                sqlx::query("update calls set wa_call_id = $1 where id = $2 and wa_call_id is null")
                    .bind(wa_call_id.as_str())
                    .bind(id)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })?;
            found(changed)
        })
        .await
    }

    async fn set_call_usage(&self, id: &str, usage: &serde_json::Value) -> Result<(), StoreError> {
        self.timed("set_call_usage", async {
            let changed = on_pool!(self, pool => {
                sqlx::query("update calls set usage = $1 where id = $2")
                    .bind(Json(usage))
                    .bind(id)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })?;
            found(changed)
        })
        .await
    }

    async fn apply_call_signal(
        &self,
        id: &str,
        update: &CallUpdate,
    ) -> Result<CallSignalOutcome, StoreError> {
        let apply = format!(
            "update calls set state = $1, end_reason = $2, answered_at = coalesce(answered_at, $3), \
             ended_at = coalesce(ended_at, $4), duration_secs = coalesce($5, duration_secs), \
             error_code = coalesce($6, error_code), user_id = coalesce(user_id, $7), updated_at = $8 \
             where id = $9 and state = $10 returning {CALL_COLUMNS}"
        );
        let amend = format!(
            "update calls set duration_secs = coalesce($1, duration_secs), \
             error_code = coalesce($2, error_code), updated_at = $3 \
             where id = $4 returning {CALL_COLUMNS}"
        );
        self.timed("apply_call_signal", async {
            // Move the call forward if the signal says so and nobody else moved it since we
            // read it (compare-and-set on the state).
            for _ in 0..3 {
                let current = self.call(id).await?.ok_or(StoreError::NotFound)?;
                let next = match current.state.apply(update.signal) {
                    Transition::To(next) => next,
                    Transition::Stale
                        if current.state.is_ended()
                            && matches!(update.signal, CallSignal::Ended(_))
                            && (update.duration_secs.is_some() || update.error_code.is_some()) =>
                    {
                        // The call had already ended on our side (the media closed first);
                        // WhatsApp's terminate still brings the billed duration and the error
                        // code, and those are the figures to keep.
                        let row: CallRow = on_pool!(self, pool => {
                            sqlx::query_as(&amend)
                                .bind(update.duration_secs)
                                .bind(update.error_code)
                                .bind(update.at)
                                .bind(&current.id)
                                .fetch_one(pool)
                                .await
                        })?;
                        return Ok(CallSignalOutcome {
                            call: row.try_into()?,
                            created: false,
                            changed: true,
                        });
                    }
                    Transition::Stale => {
                        return Ok(CallSignalOutcome {
                            call: current,
                            created: false,
                            changed: false,
                        })
                    }
                };
                let (answered_at, ended_at) = state_times(next, update.at);
                let updated: Option<CallRow> = on_pool!(self, pool => {
                    sqlx::query_as(&apply)
                        .bind(next.as_str())
                        .bind(end_reason_of(next))
                        .bind(answered_at)
                        .bind(ended_at)
                        .bind(update.duration_secs)
                        .bind(update.error_code)
                        .bind(update.user.map(|u| u.0))
                        .bind(update.at)
                        .bind(&current.id)
                        .bind(current.state.as_str())
                        .fetch_optional(pool)
                        .await
                })?;
                if let Some(row) = updated {
                    return Ok(CallSignalOutcome {
                        call: row.try_into()?,
                        created: false,
                        changed: true,
                    });
                }
            }
            Err(StoreError::Conflict(format!(
                "call {id} kept changing while applying {:?}",
                update.signal
            )))
        })
        .await
    }

    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<CallRecord>, StoreError> {
        let sql = format!(
            "select {CALL_COLUMNS} from calls where ($1 is null or user_id = $1) and ($2 is null or state = $2) \
             and ($3 is null or direction = $3) order by created_at desc, id desc limit $4"
        );
        self.timed("list_calls", async {
            let rows: Vec<CallRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(filter.user.map(|u| u.0))
                    .bind(filter.state.as_deref())
                    .bind(filter.direction.map(CallDirection::as_str))
                    .bind(filter.limit.unwrap_or(50).clamp(1, 1000))
                    .fetch_all(pool)
                    .await
            })?;
            rows.into_iter().map(CallRecord::try_from).collect()
        })
        .await
    }

    async fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let sql = format!("select {CALL_COLUMNS} from calls where id = $1");
        self.timed("call", async {
            let row: Option<CallRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
            })?;
            row.map(CallRecord::try_from).transpose()
        })
        .await
    }

    async fn call_by_wa_id(&self, wa_call_id: &WaCallId) -> Result<Option<CallRecord>, StoreError> {
        let sql = format!("select {CALL_COLUMNS} from calls where wa_call_id = $1");
        self.timed("call_by_wa_id", async {
            let row: Option<CallRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql).bind(wa_call_id.as_str()).fetch_optional(pool).await
            })?;
            row.map(CallRecord::try_from).transpose()
        })
        .await
    }

    async fn append_call_event(
        &self,
        call_id: &str,
        event: &NewCallEvent,
    ) -> Result<i64, StoreError> {
        const INSERT: &str =
            "insert into call_events (call_id, kind, at, data) values ($1, $2, $3, $4) returning id";
        self.timed("append_call_event", async {
            Ok(on_pool!(self, pool => {
                sqlx::query_scalar(INSERT)
                    .bind(call_id)
                    .bind(&event.kind)
                    .bind(event.at)
                    .bind(Json(&event.data))
                    .fetch_one(pool)
                    .await
            })?)
        })
        .await
    }

    async fn call_events(&self, call_id: &str) -> Result<Vec<CallEventRecord>, StoreError> {
        #[derive(FromRow)]
        struct Row {
            id: i64,
            kind: String,
            at: DateTime<Utc>,
            data: Json<serde_json::Value>,
        }
        self.timed("call_events", async {
            let rows: Vec<Row> = on_read_pool!(self, pool => {
                sqlx::query_as("select id, kind, at, data from call_events where call_id = $1 order by id")
                    .bind(call_id)
                    .fetch_all(pool)
                    .await
            })?;
            Ok(rows
                .into_iter()
                .map(|r| CallEventRecord {
                    id: r.id,
                    kind: r.kind,
                    at: r.at,
                    data: r.data.0,
                })
                .collect())
        })
        .await
    }

    // --- call permissions -------------------------------------------------------------------

    async fn record_permission_reply(
        &self,
        user: UserId,
        response: &PermissionResponse,
        expires_at: Option<DateTime<Utc>>,
        is_permanent: bool,
        now: DateTime<Utc>,
    ) -> Result<CallPermission, StoreError> {
        /// WhatsApp's temporary permissions last 7 days when the reply gives no expiry.
        const TEMPORARY: chrono::TimeDelta = chrono::TimeDelta::days(7);
        let (status, expires_at) = match response {
            PermissionResponse::Accept if is_permanent => (PermissionStatus::Permanent, None),
            PermissionResponse::Accept => (
                PermissionStatus::Temporary,
                Some(expires_at.unwrap_or(now + TEMPORARY)),
            ),
            PermissionResponse::Reject => (PermissionStatus::Rejected, None),
            PermissionResponse::Other(_) => (PermissionStatus::None, None),
        };
        let sql = format!(
            "insert into call_permissions (user_id, status, expires_at, source, responded_at, updated_at) \
             values ($1, $2, $3, 'permission_reply', $4, $4) \
             on conflict (user_id) do update set status = excluded.status, expires_at = excluded.expires_at, \
             source = excluded.source, responded_at = excluded.responded_at, updated_at = excluded.updated_at \
             returning {PERMISSION_COLUMNS}"
        );
        self.timed("record_permission_reply", async {
            let row: PermissionRow = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(user.0)
                    .bind(status.as_str())
                    .bind(expires_at)
                    .bind(now)
                    .fetch_one(pool)
                    .await
            })?;
            row.try_into()
        })
        .await
    }

    async fn call_permission(&self, user: UserId) -> Result<Option<CallPermission>, StoreError> {
        let sql = format!("select {PERMISSION_COLUMNS} from call_permissions where user_id = $1");
        self.timed("call_permission", async {
            let row: Option<PermissionRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql).bind(user.0).fetch_optional(pool).await
            })?;
            row.map(CallPermission::try_from).transpose()
        })
        .await
    }

    // --- tasks ------------------------------------------------------------------------------

    async fn add_task(
        &self,
        user: UserId,
        task: &NewTask,
        now: DateTime<Utc>,
    ) -> Result<Task, StoreError> {
        let sql = format!(
            "insert into tasks (user_id, title, description, status, priority, due_at, source, created_at, updated_at) \
             values ($1, $2, $3, 'pending', $4, $5, $6, $7, $7) returning {TASK_COLUMNS}"
        );
        self.timed("add_task", async {
            let row: TaskRow = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(user.0)
                    .bind(&task.title)
                    .bind(task.description.as_deref())
                    .bind(task.priority.as_str())
                    .bind(task.due_at)
                    .bind(task.source.as_str())
                    .bind(now)
                    .fetch_one(pool)
                    .await
            })?;
            row.try_into()
        })
        .await
    }

    async fn list_tasks(&self, user: UserId, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let sql = format!(
            "select {TASK_COLUMNS} from tasks where user_id = $1 and ($2 is null or status = $2) order by id desc"
        );
        self.timed("list_tasks", async {
            let rows: Vec<TaskRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(user.0)
                    .bind(filter.status.map(TaskStatus::as_str))
                    .fetch_all(pool)
                    .await
            })?;
            rows.into_iter().map(Task::try_from).collect()
        })
        .await
    }

    async fn update_task(
        &self,
        user: UserId,
        id: i64,
        changes: &TaskChanges,
        now: DateTime<Utc>,
    ) -> Result<Task, StoreError> {
        let sql = format!(
            "update tasks set title = coalesce($1, title), status = coalesce($2, status), \
             priority = coalesce($3, priority), \
             due_at = case when $4 then $5 else due_at end, \
             completed_at = case when $2 is null then completed_at when $2 = 'completed' then coalesce(completed_at, $6) else null end, \
             updated_at = $6 where id = $7 and user_id = $8 returning {TASK_COLUMNS}"
        );
        self.timed("update_task", async {
            let row: Option<TaskRow> = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(changes.title.as_deref())
                    .bind(changes.status.map(TaskStatus::as_str))
                    .bind(changes.priority.map(TaskPriority::as_str))
                    .bind(changes.due_at.is_some())
                    .bind(changes.due_at.flatten())
                    .bind(now)
                    .bind(id)
                    .bind(user.0)
                    .fetch_optional(pool)
                    .await
            })?;
            row.ok_or(StoreError::NotFound)?.try_into()
        })
        .await
    }

    async fn delete_task(&self, user: UserId, id: i64) -> Result<bool, StoreError> {
        self.timed("delete_task", async {
            let deleted = on_pool!(self, pool => {
                sqlx::query("delete from tasks where id = $1 and user_id = $2")
                    .bind(id)
                    .bind(user.0)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })?;
            Ok(deleted > 0)
        })
        .await
    }

    // --- reminders --------------------------------------------------------------------------

    async fn add_reminder(
        &self,
        user: UserId,
        reminder: &NewReminder,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError> {
        let sql = format!(
            "insert into reminders (user_id, text, time_zone, local_time, recurrence, next_due_at, status, source, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $8, $8) returning {REMINDER_COLUMNS}"
        );
        self.timed("add_reminder", async {
            let row: ReminderRow = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(user.0)
                    .bind(&reminder.text)
                    .bind(&reminder.time_zone)
                    .bind(&reminder.local_time)
                    .bind(reminder.recurrence.as_deref())
                    .bind(reminder.next_due_at)
                    .bind(reminder.source.as_str())
                    .bind(now)
                    .fetch_one(pool)
                    .await
            })?;
            row.try_into()
        })
        .await
    }

    async fn list_reminders(
        &self,
        user: UserId,
        filter: &ReminderFilter,
    ) -> Result<Vec<Reminder>, StoreError> {
        // `next_due_at is null` first sorts the finished ones last on both backends (they
        // disagree on where NULLs go).
        let sql = format!(
            "select {REMINDER_COLUMNS} from reminders where user_id = $1 and ($2 is null or status = $2) \
             order by next_due_at is null, next_due_at, id"
        );
        self.timed("list_reminders", async {
            let rows: Vec<ReminderRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(user.0)
                    .bind(filter.status.map(ReminderStatus::as_str))
                    .fetch_all(pool)
                    .await
            })?;
            rows.into_iter().map(Reminder::try_from).collect()
        })
        .await
    }

    async fn cancel_reminder(
        &self,
        user: UserId,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError> {
        let sql = format!(
            "update reminders set status = 'cancelled', lease_owner = null, lease_until = null, updated_at = $1 \
             where id = $2 and user_id = $3 and status in ('scheduled', 'delivering') returning {REMINDER_COLUMNS}"
        );
        self.timed("cancel_reminder", async {
            let row: Option<ReminderRow> = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(now)
                    .bind(id)
                    .bind(user.0)
                    .fetch_optional(pool)
                    .await
            })?;
            match row {
                Some(row) => row.try_into(),
                None => Err(self.open_reminder_miss(user, id).await),
            }
        })
        .await
    }

    async fn reminder(&self, user: UserId, id: i64) -> Result<Option<Reminder>, StoreError> {
        let sql =
            format!("select {REMINDER_COLUMNS} from reminders where id = $1 and user_id = $2");
        self.timed("reminder", async {
            let row: Option<ReminderRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql).bind(id).bind(user.0).fetch_optional(pool).await
            })?;
            row.map(Reminder::try_from).transpose()
        })
        .await
    }

    async fn reschedule_reminder(
        &self,
        user: UserId,
        id: i64,
        schedule: &ReminderSchedule,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError> {
        let sql = format!(
            "update reminders set time_zone = $1, local_time = $2, recurrence = $3, next_due_at = $4, \
             status = 'scheduled', attempts = 0, lease_owner = null, lease_until = null, completed_at = null, \
             updated_at = $5 where id = $6 and user_id = $7 returning {REMINDER_COLUMNS}"
        );
        self.timed("reschedule_reminder", async {
            let row: Option<ReminderRow> = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(&schedule.time_zone)
                    .bind(&schedule.local_time)
                    .bind(schedule.recurrence.as_deref())
                    .bind(schedule.next_due_at)
                    .bind(now)
                    .bind(id)
                    .bind(user.0)
                    .fetch_optional(pool)
                    .await
            })?;
            row.ok_or(StoreError::NotFound)?.try_into()
        })
        .await
    }

    async fn snooze_reminder(
        &self,
        user: UserId,
        id: i64,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError> {
        let sql = format!(
            "update reminders set status = 'scheduled', next_due_at = $1, attempts = 0, \
             lease_owner = null, lease_until = null, updated_at = $2 \
             where id = $3 and user_id = $4 and status in ('scheduled', 'delivering') returning {REMINDER_COLUMNS}"
        );
        self.timed("snooze_reminder", async {
            let row: Option<ReminderRow> = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(until)
                    .bind(now)
                    .bind(id)
                    .bind(user.0)
                    .fetch_optional(pool)
                    .await
            })?;
            match row {
                Some(row) => row.try_into(),
                None => Err(self.open_reminder_miss(user, id).await),
            }
        })
        .await
    }

    async fn complete_reminder(
        &self,
        user: UserId,
        id: i64,
        next_due_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError> {
        let sql = format!(
            "update reminders set status = case when $1 then 'completed' else 'scheduled' end, \
             next_due_at = $2, attempts = 0, lease_owner = null, lease_until = null, \
             completed_at = case when $1 then $3 else completed_at end, updated_at = $3 \
             where id = $4 and user_id = $5 and status in ('scheduled', 'delivering') returning {REMINDER_COLUMNS}"
        );
        self.timed("complete_reminder", async {
            let row: Option<ReminderRow> = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(next_due_at.is_none())
                    .bind(next_due_at)
                    .bind(now)
                    .bind(id)
                    .bind(user.0)
                    .fetch_optional(pool)
                    .await
            })?;
            match row {
                Some(row) => row.try_into(),
                None => Err(self.open_reminder_miss(user, id).await),
            }
        })
        .await
    }

    async fn claim_due_reminders(
        &self,
        claim: &Claim,
        limit: i64,
    ) -> Result<Vec<Reminder>, StoreError> {
        let lock = match self.backend() {
            DatabaseBackend::Postgres => "for update skip locked",
            DatabaseBackend::Sqlite => "",
        };
        let sql = format!(
            "update reminders set status = 'delivering', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, last_attempt_at = $3, updated_at = $3 \
             where id in (select id from reminders \
                 where (status = 'scheduled' and next_due_at <= $3) or (status = 'delivering' and lease_until <= $3) \
                 order by next_due_at, id limit $4 {lock}) \
             returning {REMINDER_COLUMNS}"
        );
        self.timed("claim_due_reminders", async {
            let rows: Vec<ReminderRow> = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(&claim.owner)
                    .bind(claim.until)
                    .bind(claim.now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            })?;
            let mut reminders = rows
                .into_iter()
                .map(Reminder::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            reminders.sort_by_key(|r| (r.next_due_at, r.id));
            Ok(reminders)
        })
        .await
    }

    async fn finish_reminder_delivery(
        &self,
        id: i64,
        owner: &str,
        outcome: &ReminderOutcome,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError> {
        let sql = format!(
            "update reminders set status = $1, next_due_at = $2, attempts = case when $3 then 0 else attempts end, \
             completed_at = $4, lease_owner = null, lease_until = null, updated_at = $5 \
             where id = $6 and lease_owner = $7 and status = 'delivering' returning {REMINDER_COLUMNS}"
        );
        let (status, next_due_at, reset_attempts, completed_at) = match outcome {
            ReminderOutcome::Delivered {
                next_due_at: Some(next),
            } => (ReminderStatus::Scheduled, Some(*next), true, None),
            ReminderOutcome::Delivered { next_due_at: None } => {
                (ReminderStatus::Completed, None, true, Some(now))
            }
            ReminderOutcome::Retry { at } => (ReminderStatus::Scheduled, Some(*at), false, None),
            ReminderOutcome::Failed => (ReminderStatus::Failed, None, false, None),
        };
        self.timed("finish_reminder_delivery", async {
            let row: Option<ReminderRow> = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(status.as_str())
                    .bind(next_due_at)
                    .bind(reset_attempts)
                    .bind(completed_at)
                    .bind(now)
                    .bind(id)
                    .bind(owner)
                    .fetch_optional(pool)
                    .await
            })?;
            row.ok_or_else(|| {
                StoreError::Conflict(format!(
                    "{owner} no longer holds the lease on reminder {id}"
                ))
            })?
            .try_into()
        })
        .await
    }

    // --- notes ------------------------------------------------------------------------------

    async fn add_note(
        &self,
        user: UserId,
        note: &NewNote,
        now: DateTime<Utc>,
    ) -> Result<Note, StoreError> {
        let sql = format!(
            "insert into notes (user_id, body, source, created_at, updated_at) values ($1, $2, $3, $4, $4) returning {NOTE_COLUMNS}"
        );
        self.timed("add_note", async {
            let row: NoteRow = on_pool!(self, pool => {
                sqlx::query_as(&sql)
                    .bind(user.0)
                    .bind(&note.body)
                    .bind(note.source.as_str())
                    .bind(now)
                    .fetch_one(pool)
                    .await
            })?;
            row.try_into()
        })
        .await
    }

    async fn list_notes(&self, user: UserId, limit: i64) -> Result<Vec<Note>, StoreError> {
        let sql = format!(
            "select {NOTE_COLUMNS} from notes where user_id = $1 order by id desc limit $2"
        );
        self.timed("list_notes", async {
            let rows: Vec<NoteRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql).bind(user.0).bind(limit).fetch_all(pool).await
            })?;
            rows.into_iter().map(Note::try_from).collect()
        })
        .await
    }

    async fn search_notes(
        &self,
        user: UserId,
        query: &str,
        limit: i64,
    ) -> Result<Vec<Note>, StoreError> {
        let words = search_words(query);
        if words.is_empty() {
            return Ok(Vec::new());
        }
        // Any word matches, best matches first: a spoken "dentist appointment friday" should
        // find the note that says "dentist on Friday".
        let (sql, text) = match self.backend() {
            DatabaseBackend::Postgres => (
                "select id, body, source, created_at, updated_at from notes \
                 where user_id = $1 and search @@ websearch_to_tsquery('english', $2) \
                 order by ts_rank(search, websearch_to_tsquery('english', $2)) desc, id desc limit $3"
                    .to_owned(),
                words.join(" or "),
            ),
            DatabaseBackend::Sqlite => (
                "select n.id, n.body, n.source, n.created_at, n.updated_at from notes_fts f \
                 join notes n on n.id = f.rowid \
                 where notes_fts match $2 and n.user_id = $1 \
                 order by bm25(notes_fts), n.id desc limit $3"
                    .to_owned(),
                words
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect::<Vec<_>>()
                    .join(" OR "),
            ),
        };
        self.timed("search_notes", async {
            let rows: Vec<NoteRow> = on_read_pool!(self, pool => {
                sqlx::query_as(&sql).bind(user.0).bind(&text).bind(limit).fetch_all(pool).await
            })?;
            rows.into_iter().map(Note::try_from).collect()
        })
        .await
    }

    async fn delete_note(&self, user: UserId, id: i64) -> Result<bool, StoreError> {
        self.timed("delete_note", async {
            let deleted = on_pool!(self, pool => {
                sqlx::query("delete from notes where id = $1 and user_id = $2")
                    .bind(id)
                    .bind(user.0)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })?;
            Ok(deleted > 0)
        })
        .await
    }
}

/// The answered/ended times a call gets on entering `state` at `at`.
fn state_times(
    state: CallState,
    at: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    (
        matches!(state, CallState::Answered).then_some(at),
        state.is_ended().then_some(at),
    )
}

/// The stored end reason of a state, if it is `ended`.
fn end_reason_of(state: CallState) -> Option<&'static str> {
    match state {
        CallState::Ended(reason) => Some(reason.as_str()),
        CallState::Offered | CallState::Dialing | CallState::Ringing | CallState::Answered => None,
    }
}

/// A stored message status's place in the forward-only order.
fn status_rank(status: &str) -> Result<u8, StoreError> {
    match status {
        "accepted" => Ok(DeliveryStatus::Accepted.rank()),
        other => DeliveryStatus::from_wire(other)
            .map(DeliveryStatus::rank)
            .ok_or_else(|| StoreError::Corrupt(format!("message status {other:?}"))),
    }
}

/// Which events of each delivery were inserted (by key, as returned by the insert). The first
/// occurrence of a key is the new one; a repeat, even inside the same batch, is a duplicate.
fn receipts_for(deliveries: &[NewDelivery], inserted: &[(i64, String)]) -> Vec<DeliveryReceipt> {
    let mut ids: HashMap<&str, i64> = inserted
        .iter()
        .map(|(id, key)| (key.as_str(), *id))
        .collect();
    deliveries
        .iter()
        .map(|delivery| DeliveryReceipt {
            events: delivery
                .events
                .iter()
                .map(|e| {
                    ids.remove(e.key.as_str())
                        .map_or(EventInsert::Duplicate, EventInsert::New)
                })
                .collect(),
        })
        .collect()
}

/// The words of a search as a person said or typed it: letters and digits only (so nothing
/// reaches the full-text query syntax of either backend), at most 16, without the operators
/// both syntaxes know.
fn search_words(query: &str) -> Vec<String> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !matches!(w.as_str(), "or" | "and" | "not" | "near"))
        .take(16)
        .collect()
}

// --- rows: what the database returns, converted into models with their rules checked --------

fn parse_column<T: FromStr>(value: &str, column: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{column} {value:?}")))
}

#[derive(FromRow)]
struct UserRow {
    id: i64,
    wa_id: Option<String>,
    bsuid: Option<String>,
    name: Option<String>,
    username: Option<String>,
    time_zone: Option<String>,
    language: Option<String>,
    opted_out_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<Self, Self::Error> {
        Ok(User {
            id: UserId(r.id),
            wa_id: r
                .wa_id
                .map(|w| WaId::parse(&w).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()?,
            bsuid: r
                .bsuid
                .map(|b| Bsuid::parse(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()?,
            name: r.name,
            username: r.username,
            time_zone: r.time_zone,
            language: r.language,
            opted_out_at: r.opted_out_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
struct TaskRow {
    id: i64,
    title: String,
    description: Option<String>,
    status: String,
    priority: String,
    due_at: Option<DateTime<Utc>>,
    source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl TryFrom<TaskRow> for Task {
    type Error = StoreError;
    fn try_from(r: TaskRow) -> Result<Self, Self::Error> {
        Ok(Task {
            id: r.id,
            title: r.title,
            description: r.description,
            status: parse_column(&r.status, "tasks.status")?,
            priority: parse_column(&r.priority, "tasks.priority")?,
            due_at: r.due_at,
            source: parse_column(&r.source, "tasks.source")?,
            created_at: r.created_at,
            updated_at: r.updated_at,
            completed_at: r.completed_at,
        })
    }
}

#[derive(FromRow)]
struct ReminderRow {
    id: i64,
    user_id: i64,
    text: String,
    time_zone: String,
    local_time: String,
    recurrence: Option<String>,
    next_due_at: Option<DateTime<Utc>>,
    status: String,
    attempts: i64,
    lease_owner: Option<String>,
    lease_until: Option<DateTime<Utc>>,
    source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ReminderRow> for Reminder {
    type Error = StoreError;
    fn try_from(r: ReminderRow) -> Result<Self, Self::Error> {
        Ok(Reminder {
            id: r.id,
            user_id: UserId(r.user_id),
            text: r.text,
            time_zone: r.time_zone,
            local_time: r.local_time,
            recurrence: r.recurrence,
            next_due_at: r.next_due_at,
            status: parse_column(&r.status, "reminders.status")?,
            attempts: r.attempts,
            lease_owner: r.lease_owner,
            lease_until: r.lease_until,
            source: parse_column(&r.source, "reminders.source")?,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
struct NoteRow {
    id: i64,
    body: String,
    source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<NoteRow> for Note {
    type Error = StoreError;
    fn try_from(r: NoteRow) -> Result<Self, Self::Error> {
        Ok(Note {
            id: r.id,
            body: r.body,
            source: parse_column::<Source>(&r.source, "notes.source")?,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
struct MessageRow {
    id: i64,
    direction: String,
    wamid: Option<String>,
    kind: String,
    body: Option<String>,
    content: Json<serde_json::Value>,
    status: String,
    status_at: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl TryFrom<MessageRow> for StoredMessage {
    type Error = StoreError;
    fn try_from(r: MessageRow) -> Result<Self, Self::Error> {
        Ok(StoredMessage {
            id: r.id,
            direction: parse_column(&r.direction, "messages.direction")?,
            wamid: r.wamid,
            kind: r.kind,
            body: r.body,
            content: r.content.0,
            status: r.status,
            status_at: r.status_at,
            sent_at: r.sent_at,
            created_at: r.created_at,
        })
    }
}

#[derive(FromRow)]
struct CallRow {
    id: String,
    wa_call_id: Option<String>,
    user_id: Option<i64>,
    direction: String,
    channel: String,
    state: String,
    end_reason: Option<String>,
    purpose: Option<String>,
    reminder_id: Option<i64>,
    offered_at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    duration_secs: Option<i64>,
    error_code: Option<i64>,
    usage: Option<Json<serde_json::Value>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<CallRow> for CallRecord {
    type Error = StoreError;
    fn try_from(r: CallRow) -> Result<Self, Self::Error> {
        let state = CallState::from_parts(&r.state, r.end_reason.as_deref())
            .map_err(|e| StoreError::Corrupt(format!("calls.state: {e}")))?;
        Ok(CallRecord {
            id: r.id,
            wa_call_id: r.wa_call_id,
            user_id: r.user_id.map(UserId),
            direction: CallDirection::from_str(&r.direction)
                .map_err(|e| StoreError::Corrupt(format!("calls.direction: {e}")))?,
            channel: parse_column::<CallChannel>(&r.channel, "calls.channel")?,
            state,
            end_reason: r.end_reason,
            purpose: r.purpose,
            reminder_id: r.reminder_id,
            offered_at: r.offered_at,
            answered_at: r.answered_at,
            ended_at: r.ended_at,
            duration_secs: r.duration_secs,
            error_code: r.error_code,
            usage: r.usage.map(|u| u.0),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
struct PermissionRow {
    status: String,
    expires_at: Option<DateTime<Utc>>,
    source: Option<String>,
    responded_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<PermissionRow> for CallPermission {
    type Error = StoreError;
    fn try_from(r: PermissionRow) -> Result<Self, Self::Error> {
        Ok(CallPermission {
            status: parse_column(&r.status, "call_permissions.status")?,
            expires_at: r.expires_at,
            source: r.source,
            responded_at: r.responded_at,
            updated_at: r.updated_at,
        })
    }
}

/// An update of one row by id: `NotFound` when it matched none.
fn found(changed: u64) -> Result<(), StoreError> {
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::search_words;

    #[test]
    fn search_words_keep_only_letters_and_digits() {
        assert_eq!(
            search_words("dentist\" OR 1=1; -- appointment*"),
            ["dentist", "1", "1", "appointment"]
        );
        assert_eq!(
            search_words("Zahnarzt am Freitag"),
            ["zahnarzt", "am", "freitag"]
        );
        assert!(search_words("  ... ").is_empty());
        assert_eq!(search_words("salt or pepper"), ["salt", "pepper"]);
    }
}
