//! Where each kind of event is handled: the interfaces the call engine and the assistant plug
//! into, and the built-in handlers that record what happened.
//!
//! The router calls exactly one method per event. A handler returns [`Handled`] when it is
//! done with the event (acted on or deliberately not), or a [`HandlerError`] saying whether
//! trying again later could help. Handlers must be idempotent: an event can be delivered again
//! after a crash.

use std::sync::Arc;

use async_trait::async_trait;
use call_core::CallSignal;

use crate::clock::Clock;
use crate::domain::{
    CallChannel, CallConnect, CallStatusKind, CallStatusUpdate, CallTerminate, InboundEvent,
    InboundMessage, MessageContent, MessageStatusUpdate, UserId,
};
use crate::store::{CallSignalRecord, Recorded, StatusApplied, Store, StoreError};
use crate::telemetry::masked;

/// How a handler finished with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Acted on.
    Done,
    /// Deliberately not acted on, with the reason (recorded on the event).
    Ignored(String),
}

/// Why a handler could not finish.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// What went wrong.
    pub message: String,
    /// Whether trying again later could succeed (a database outage: yes; a malformed event:
    /// no).
    pub retryable: bool,
}

impl HandlerError {
    /// An error worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// An error that will not go away.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

impl From<StoreError> for HandlerError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Database(_) | StoreError::Conflict(_) => Self::retryable(err.to_string()),
            StoreError::NotFound | StoreError::Corrupt(_) | StoreError::Migrate(_) => {
                Self::permanent(err.to_string())
            }
        }
    }
}

/// What happens on call signalling. The call engine implements this; until it exists, calls
/// are recorded by [`RecordCalls`].
#[async_trait]
pub trait CallEvents: Send + Sync + 'static {
    /// An inbound offer or an outbound call's answer.
    async fn connect(
        &self,
        event: &InboundEvent,
        connect: &CallConnect,
    ) -> Result<Handled, HandlerError>;
    /// A call ended.
    async fn terminate(
        &self,
        event: &InboundEvent,
        terminate: &CallTerminate,
    ) -> Result<Handled, HandlerError>;
    /// A business-initiated call's progress.
    async fn status(
        &self,
        event: &InboundEvent,
        status: &CallStatusUpdate,
    ) -> Result<Handled, HandlerError>;
}

/// What happens on messages and their delivery statuses. The assistant's chat implements
/// this; until it exists, messages are recorded by [`RecordMessages`].
#[async_trait]
pub trait MessageEvents: Send + Sync + 'static {
    /// A message from a user.
    async fn message(
        &self,
        event: &InboundEvent,
        message: &InboundMessage,
    ) -> Result<Handled, HandlerError>;
    /// A delivery status of a message we sent.
    async fn status(
        &self,
        event: &InboundEvent,
        status: &MessageStatusUpdate,
    ) -> Result<Handled, HandlerError>;

    /// Many delivery statuses at once, in the order received; one result each, in order. The
    /// router calls this (statuses come in floods); the default handles them one by one.
    async fn statuses(
        &self,
        statuses: &[(&InboundEvent, &MessageStatusUpdate)],
    ) -> Vec<Result<Handled, HandlerError>> {
        let mut results = Vec::with_capacity(statuses.len());
        for (event, status) in statuses {
            results.push(self.status(event, status).await);
        }
        results
    }
}

/// The user an event is about, created or updated from the webhook's contact.
async fn user_of(
    store: &dyn Store,
    clock: &dyn Clock,
    event: &InboundEvent,
) -> Result<Option<UserId>, HandlerError> {
    match &event.contact {
        Some(contact) if contact.is_identified() => {
            Ok(Some(store.upsert_contact(contact, clock.now()).await?.id))
        }
        Some(_) | None => Ok(None),
    }
}

/// Records every call signal in the `calls` table, moving each call forward through
/// [`call_core::CallState`]. It does not answer calls; the call engine does.
pub struct RecordCalls {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl RecordCalls {
    async fn apply(
        &self,
        event: &InboundEvent,
        record: CallSignalRecord,
    ) -> Result<Handled, HandlerError> {
        let outcome = self.store.record_call_signal(&record).await?;
        tracing::info!(
            call_id = %outcome.call.id,
            wa_call_id = %record.wa_call_id,
            user = %masked(event.contact.as_ref().and_then(|c| c.wa_id.as_ref())),
            direction = %record.direction,
            state = %outcome.call.state,
            "call {}",
            if outcome.changed { "updated" } else { "signal was stale" }
        );
        if outcome.changed {
            Ok(Handled::Done)
        } else {
            Ok(Handled::Ignored(format!(
                "stale call signal: the call is already {}",
                outcome.call.state
            )))
        }
    }

    async fn record(
        &self,
        event: &InboundEvent,
        wa_call_id: &crate::domain::WaCallId,
        direction: call_core::CallDirection,
        signal: CallSignal,
        duration_secs: Option<i64>,
        error_code: Option<i64>,
    ) -> Result<Handled, HandlerError> {
        let user = user_of(self.store.as_ref(), self.clock.as_ref(), event).await?;
        let record = CallSignalRecord {
            wa_call_id: wa_call_id.clone(),
            direction,
            channel: CallChannel::WhatsApp,
            user,
            phone_number_id: event.business.phone_number_id.clone(),
            signal,
            at: self.clock.now(),
            duration_secs,
            error_code,
        };
        self.apply(event, record).await
    }
}

#[async_trait]
impl CallEvents for RecordCalls {
    async fn connect(
        &self,
        event: &InboundEvent,
        connect: &CallConnect,
    ) -> Result<Handled, HandlerError> {
        let signal = match connect.direction {
            call_core::CallDirection::Inbound => CallSignal::Offer,
            call_core::CallDirection::Outbound => CallSignal::Answered,
        };
        self.record(
            event,
            &connect.call_id,
            connect.direction,
            signal,
            None,
            None,
        )
        .await
    }

    async fn terminate(
        &self,
        event: &InboundEvent,
        terminate: &CallTerminate,
    ) -> Result<Handled, HandlerError> {
        self.record(
            event,
            &terminate.call_id,
            terminate.direction,
            CallSignal::Ended(terminate.end_reason()),
            terminate.duration_secs,
            terminate.error_code(),
        )
        .await
    }

    async fn status(
        &self,
        event: &InboundEvent,
        status: &CallStatusUpdate,
    ) -> Result<Handled, HandlerError> {
        let signal = match &status.status {
            CallStatusKind::Ringing => CallSignal::Ringing,
            CallStatusKind::Accepted => CallSignal::Answered,
            CallStatusKind::Rejected => CallSignal::Rejected,
            CallStatusKind::Other(other) => {
                return Ok(Handled::Ignored(format!("unknown call status {other:?}")))
            }
        };
        // Call statuses only exist for business-initiated calls.
        self.record(
            event,
            &status.call_id,
            call_core::CallDirection::Outbound,
            signal,
            None,
            status.errors.iter().find_map(|e| e.code),
        )
        .await
    }
}

/// Records messages (once, by wamid), their delivery statuses (only forward), and call
/// permission replies. It does not answer; the assistant's chat does.
pub struct RecordMessages {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

#[async_trait]
impl MessageEvents for RecordMessages {
    async fn message(
        &self,
        event: &InboundEvent,
        message: &InboundMessage,
    ) -> Result<Handled, HandlerError> {
        let Some(user) = user_of(self.store.as_ref(), self.clock.as_ref(), event).await? else {
            return Ok(Handled::Ignored(
                "message without a WhatsApp id or BSUID for its sender".to_owned(),
            ));
        };
        let now = self.clock.now();
        let recorded = self
            .store
            .record_inbound_message(user, event.business.phone_number_id.as_ref(), message, now)
            .await?;
        if let MessageContent::CallPermissionReply {
            response,
            expires_at,
            is_permanent,
            ..
        } = &message.content
        {
            let permission = self
                .store
                .record_permission_reply(user, response, *expires_at, *is_permanent, now)
                .await?;
            tracing::info!(user = %masked(message.from.as_ref()), status = %permission.status, "call permission reply recorded");
        }
        tracing::info!(
            wamid = %message.id,
            user = %masked(message.from.as_ref()),
            kind = message.content.kind(),
            "message {}",
            match recorded { Recorded::New(_) => "recorded", Recorded::Duplicate => "was already recorded" }
        );
        tracing::debug!(wamid = %message.id, text = ?message.content.text(), "message text");
        Ok(Handled::Done)
    }

    async fn status(
        &self,
        event: &InboundEvent,
        status: &MessageStatusUpdate,
    ) -> Result<Handled, HandlerError> {
        self.statuses(&[(event, status)])
            .await
            .pop()
            .unwrap_or_else(|| Err(HandlerError::permanent("no result for the status")))
    }

    async fn statuses(
        &self,
        statuses: &[(&InboundEvent, &MessageStatusUpdate)],
    ) -> Vec<Result<Handled, HandlerError>> {
        let updates: Vec<&MessageStatusUpdate> = statuses.iter().map(|(_, s)| *s).collect();
        match self
            .store
            .apply_message_statuses(&updates, self.clock.now())
            .await
        {
            Ok(applied) => applied
                .into_iter()
                .zip(&updates)
                .map(|(applied, status)| {
                    Ok(match applied {
                        StatusApplied::Applied => Handled::Done,
                        StatusApplied::Stale => Handled::Ignored(format!(
                            "stale status {}: the message already has this or a later one",
                            status.status.as_wire()
                        )),
                        StatusApplied::UnknownMessage => {
                            Handled::Ignored("status for a message we did not send".to_owned())
                        }
                    })
                })
                .collect(),
            Err(err) => {
                let err = HandlerError::from(err);
                updates
                    .iter()
                    .map(|_| {
                        Err(HandlerError {
                            message: err.message.clone(),
                            retryable: err.retryable,
                        })
                    })
                    .collect()
            }
        }
    }
}
