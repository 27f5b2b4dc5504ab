//! Deletes raw webhook payloads and finished webhook events older than the retention period
//! (`WEBHOOK_RETENTION_DAYS`). They hold message bodies and phone numbers, so keeping them
//! forever is a privacy problem; keeping them a while is what makes redeliveries no-ops and
//! lets an operator debug a payload.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::store::{PurgeCounts, Store, StoreError};
use crate::telemetry::Metrics;

/// How often the job runs.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// The retention job.
pub struct Retention {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Metrics,
    /// How long to keep.
    pub keep: Duration,
}

impl Retention {
    /// Deletes what is older than the retention period now.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn try_purge(&self) -> Result<PurgeCounts, StoreError> {
        let keep = TimeDelta::from_std(self.keep).unwrap_or(TimeDelta::MAX);
        let before = self.clock.now() - keep;
        let counts = self.store.purge_webhook_history(before).await?;
        let deleted = &self.metrics.retention_deleted;
        deleted
            .with_label_values(&["webhook_deliveries"])
            .inc_by(counts.deliveries);
        deleted
            .with_label_values(&["webhook_events"])
            .inc_by(counts.events);
        if counts.deliveries + counts.events > 0 {
            tracing::info!(deliveries = counts.deliveries, events = counts.events, %before, "retention: deleted old webhook data");
        }
        Ok(counts)
    }

    /// Purges at start and every [`INTERVAL`] until cancelled.
    pub async fn run_until_stopped(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(INTERVAL);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(err) = self.try_purge().await {
                        tracing::error!(error = %err, "retention job failed; trying again in an hour");
                    }
                }
            }
        }
    }
}
