//! The live feed of calls: every state change and every entry of a call's event log, as it
//! happens, for whoever watches a call (the test phone's page, an admin dashboard).
//!
//! ```text
//! call tasks ──record (state) / event (log entry) / forget (done)──▶ Feed ──broadcast──▶ watchers
//! ```
//!
//! One broadcast channel carries every call's items; a watcher keeps its call's. Log entries
//! carry their row id, so a watcher that read the log first (the history) and subscribed before
//! that skips what it has already seen, and one that fell behind (a lagged receiver) reads the
//! log again from its last id instead of losing lines. Only calls this instance holds are fed:
//! their tasks are the ones that publish.

use std::sync::Arc;

use call_core::CallState;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

/// How many items a slow watcher may fall behind before it has to re-read the log.
const CAPACITY: usize = 1024;

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// Our call id.
    pub call_id: String,
    /// What happened.
    pub kind: FeedKind,
}

/// What happened to a call.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedKind {
    /// The call moved to a new state (as recorded).
    State {
        /// The state now.
        state: CallState,
        /// Why it ended, once ended (as recorded: `hung_up`, `completed`, ...).
        end_reason: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// An entry was appended to the call's event log (transcript line, tool call, ...).
    Log {
        /// The log row's id (orders the log).
        id: i64,
        /// The entry's kind (`transcript`, `tool_call`, `tool_result`, `dtmf`, `ended`, ...).
        kind: String,
        /// When.
        at: DateTime<Utc>,
        /// Its details.
        data: serde_json::Value,
    },
    /// The call's task is done: nothing more will come for this call.
    Closed,
}

/// The feed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Feed(broadcast::Sender<Arc<FeedItem>>);

impl Default for Feed {
    fn default() -> Self {
        Self(broadcast::channel(CAPACITY).0)
    }
}

impl Feed {
    /// Publishes an item; nobody watching is fine.
    pub fn publish(&self, call_id: &str, kind: FeedKind) {
        // Most of the time nobody watches: no item is built for nobody.
        if self.0.receiver_count() == 0 {
            return;
        }
        let _ = self.0.send(Arc::new(FeedItem {
            call_id: call_id.to_owned(),
            kind,
        }));
    }

    /// Every item published from now on (of every call).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedItem>> {
        self.0.subscribe()
    }
}
