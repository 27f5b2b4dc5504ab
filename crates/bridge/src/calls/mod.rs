//! Calls: WhatsApp's signalling, the Graph API and the media engine, put together.
//!
//! ```text
//! router ──CallEvents (connect / terminate / status)──▶ Calls ──spawns──▶ one task per call
//! admin API ──place_call / hang_up──────────────────────▶  │                  │ owns the call
//! media task ──MediaEvent (connected, DTMF, ended)──▶ event pump ──────────────┘
//! ```
//!
//! Every live call has one task that owns it and does its slow work (Graph requests, waiting
//! for the callee); everything else reaches the task through its channel, found in the
//! registry by WhatsApp's call id, our call id or the engine's handle. The router's lanes are
//! never held up by a call.
//!
//! **Inbound:** `connect` (offer) → over `MAX_CONCURRENT_CALLS`? `reject` → engine answers
//! (a broken offer: `reject`) → `pre_accept` → `accept` → the agent starts. Any failure
//! before media ends in `reject`, so the caller is never left ringing.
//!
//! **Outbound:** engine offer → Graph `connect` (with our call id as
//! `biz_opaque_callback_data`) → `RINGING` → `connect` webhook with the answer → media → the
//! agent starts (it never talks into a ringing phone).
//!
//! Every state change is written to the store through [`call_core::CallState`], whichever
//! side (webhook, media, API) caused it.

mod feed;
mod task;
pub mod voice;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use call_core::{AgentKind, CallDirection, CallHandle, CallSignal, EndReason};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::assistant::ToolContext;
use crate::clock::Clock;
use crate::domain::{
    CallChannel, CallConnect, CallStatusUpdate, CallTerminate, Contact, InboundEvent,
    SessionDescription, Source, UserId, WaCallId, WaId,
};
use crate::events::handlers::{CallEvents, Handled, HandlerError, RecordCalls};
use crate::media::{Media, MediaError, MediaEvent};
use crate::store::{
    CallRecord, CallSignalRecord, CallUpdate, NewOutboundMessage, Store, StoreError, User,
};
use crate::telemetry::{masked, Metrics};
use crate::whatsapp::client::{GraphClient, GraphError};

pub use feed::{Feed, FeedItem, FeedKind};
pub use task::CallMsg;
pub use voice::VoiceService;

/// What a caller reads when their call could not be taken because the assistant is
/// unavailable (no model session could be opened, or it was lost for good).
const UNAVAILABLE_TEXT: &str = "Sorry, the assistant could not take your call just now. \
    Please try again in a few minutes, or write to us here.";

/// How calls are taken and placed.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// What answers the audio.
    pub agent: AgentKind,
    /// Calls held at once; more are refused.
    pub max_concurrent_calls: usize,
    /// This instance (recorded as the owner of its calls' media).
    pub instance_id: String,
}

/// Why a call could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceCallError {
    /// `MAX_CONCURRENT_CALLS` calls are in progress.
    #[error("{0} calls are in progress, the most this service holds (MAX_CONCURRENT_CALLS)")]
    AtCapacity(usize),
    /// No Graph credentials: we cannot place calls.
    #[error("WhatsApp is not configured: set WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID")]
    NotConfigured,
    /// WhatsApp refused or failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The media engine failed or is stopping.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The reminder to call about is not this user's (or does not exist).
    #[error("no such reminder for this user")]
    NoSuchReminder,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A test-phone call that was answered.
#[derive(Debug, Clone)]
pub struct PhoneCall {
    /// Our call id (`GET /api/calls/{id}`, its events, its hang-up).
    pub call_id: String,
    /// Our SDP answer to the browser's offer.
    pub answer: String,
}

/// Why a test-phone call could not be taken. Nothing is left running then.
#[derive(Debug, thiserror::Error)]
pub enum PhoneCallError {
    /// `MAX_CONCURRENT_CALLS` calls are in progress (no media was set up).
    #[error("{0} calls are in progress, the most this service holds (MAX_CONCURRENT_CALLS)")]
    AtCapacity(usize),
    /// The browser's offer is not one we can answer.
    #[error("the browser's SDP offer cannot be answered: {0}")]
    BadOffer(call_core::CallError),
    /// The voice model's session could not be opened.
    #[error("the assistant is unavailable: {0}")]
    AssistantUnavailable(String),
    /// The media engine is stopping.
    #[error(transparent)]
    Media(MediaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a call could not be hung up.
#[derive(Debug, thiserror::Error)]
pub enum HangUpError {
    /// No such call.
    #[error("no such call")]
    NotFound,
    /// The call is over already.
    #[error("the call has ended")]
    Ended,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a call task needs. Shared by all of them.
pub(crate) struct Shared {
    pub(crate) media: Media,
    pub(crate) graph: Option<GraphClient>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    pub(crate) settings: CallSettings,
    /// The voice assistant, when the model answers calls.
    pub(crate) voice: Option<Arc<VoiceService>>,
    /// What happens in live calls, for watchers.
    pub(crate) feed: Feed,
    registry: Mutex<Registry>,
}

/// Live calls. A std mutex: every use is a map lookup or insert, never held across an await.
#[derive(Default)]
struct Registry {
    by_id: HashMap<String, mpsc::UnboundedSender<CallMsg>>,
    by_wa: HashMap<WaCallId, String>,
    by_handle: HashMap<CallHandle, String>,
}

impl Shared {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The task of a call, found by any of its ids.
    fn task_for(
        &self,
        id: Option<&str>,
        wa: Option<&WaCallId>,
    ) -> Option<mpsc::UnboundedSender<CallMsg>> {
        let registry = self.registry();
        id.and_then(|id| registry.by_id.get(id))
            .or_else(|| {
                wa.and_then(|w| registry.by_wa.get(w))
                    .and_then(|id| registry.by_id.get(id))
            })
            .cloned()
    }

    /// The channel of a call's task, for work that reports back to it.
    pub(crate) fn sender(&self, id: &str) -> Option<mpsc::UnboundedSender<CallMsg>> {
        self.task_for(Some(id), None)
    }

    /// Whether the model answers calls (so a new call gets a [`voice::Voice`]).
    pub(crate) fn answers_with_model(&self) -> bool {
        self.voice.is_some() && self.settings.agent == AgentKind::Model
    }

    /// The caller's row, for a call that knows only their id; a failed read is logged and
    /// the assistant then runs without tools.
    pub(crate) async fn read_user(&self, id: &str, user: Option<UserId>) -> Option<User> {
        match self.store.user(user?).await {
            Ok(user) => user,
            Err(err) => {
                tracing::error!(call_id = id, error = %err, "could not read the caller; the assistant runs without tools");
                None
            }
        }
    }

    /// The voice assistant for a new call, when the model answers calls. Its tools act for
    /// `user` (none for a caller we cannot identify).
    pub(crate) fn voice_for(
        &self,
        id: &str,
        handle: CallHandle,
        kind: (CallDirection, CallChannel),
        started: Instant,
        user: Option<User>,
    ) -> Option<voice::Voice> {
        if !self.answers_with_model() {
            return None;
        }
        let service = self.voice.clone()?;
        let ctx = user.map(|user| {
            ToolContext::new(self.store.clone(), self.clock.clone(), user, Source::Voice)
                .with_call_id(id)
        });
        Some(voice::Voice::new(service, id, handle, kind, started, ctx))
    }

    /// Tells a caller whose call we could not take that the assistant is unavailable (a
    /// WhatsApp message, when we know who they are).
    pub(crate) async fn tell_unavailable(&self, id: &str, user: Option<&User>) {
        // The caller's row as the call read it at its start: no second read for the number.
        let (Some(graph), Some(user)) = (&self.graph, user) else {
            return;
        };
        let Some(wa_id) = user.wa_id.as_ref() else {
            return;
        };
        let text = UNAVAILABLE_TEXT;
        let wamid = match graph.send_text(wa_id, text).await {
            Ok(wamid) => wamid,
            Err(err) => {
                tracing::warn!(call_id = id, error = %err, "could not tell the caller the assistant is unavailable");
                return;
            }
        };
        let message = NewOutboundMessage {
            wamid,
            phone_number_id: None,
            kind: "text".to_owned(),
            body: Some(text.to_owned()),
            content: serde_json::json!({"type": "text", "text": {"body": text}}),
            call_id: Some(id.to_owned()),
        };
        if let Err(err) = self
            .store
            .record_outbound_message(user.id, &message, self.clock.now())
            .await
        {
            tracing::error!(call_id = id, error = %err, "could not record the message sent");
        }
    }

    pub(crate) fn attach_handle(&self, id: &str, handle: CallHandle) {
        self.registry().by_handle.insert(handle, id.to_owned());
    }

    pub(crate) fn attach_wa(&self, id: &str, wa: &WaCallId) {
        self.registry().by_wa.insert(wa.clone(), id.to_owned());
    }

    /// The call's task is done: it leaves the registry, and its watchers are told.
    pub(crate) fn forget(&self, id: &str) {
        {
            let mut registry = self.registry();
            registry.by_id.remove(id);
            registry.by_wa.retain(|_, v| v != id);
            registry.by_handle.retain(|_, v| v != id);
        }
        self.feed.publish(id, FeedKind::Closed);
    }

    /// Registers a new call's task if there is room.
    fn admit(&self, id: &str, tx: mpsc::UnboundedSender<CallMsg>) -> Result<(), usize> {
        let mut registry = self.registry();
        if registry.by_id.len() >= self.settings.max_concurrent_calls {
            return Err(registry.by_id.len());
        }
        registry.by_id.insert(id.to_owned(), tx);
        Ok(())
    }

    /// Records a signal on a call by our id; failures are logged (the call goes on).
    pub(crate) async fn record(
        &self,
        id: &str,
        signal: CallSignal,
        duration_secs: Option<i64>,
        error_code: Option<i64>,
    ) {
        let update = CallUpdate {
            signal,
            at: self.clock.now(),
            duration_secs,
            error_code,
            user: None,
        };
        match self.store.apply_call_signal(id, &update).await {
            Ok(outcome) if outcome.changed => {
                tracing::debug!(call_id = id, state = %outcome.call.state, "call state recorded");
                self.feed.publish(
                    id,
                    FeedKind::State {
                        state: outcome.call.state,
                        end_reason: outcome.call.end_reason,
                        at: update.at,
                    },
                );
            }
            Ok(_) => {}
            Err(err) => tracing::error!(call_id = id, error = %err, "could not record call state"),
        }
    }

    /// Observes how long an inbound call took from its start (the connect webhook; the test
    /// phone's request) to `stage` (`pre_accept`, `accept`, `first_media`, `model_audio`).
    pub(crate) fn observe_setup(&self, channel: CallChannel, stage: &str, since: Instant) {
        self.metrics
            .call_setup
            .with_label_values(&[stage, channel.as_str()])
            .observe(since.elapsed().as_secs_f64());
    }

    /// Records how a call ended and counts it. Counted first, so that whoever sees the call
    /// ended in the store finds it in the metrics as well.
    pub(crate) async fn record_end(&self, id: &str, ending: Ending) {
        self.count_end(
            ending.direction,
            ending.channel,
            ending.reason,
            ending.answered_at,
        );
        self.record(
            id,
            CallSignal::Ended(ending.reason),
            ending.duration_secs,
            ending.error_code,
        )
        .await;
    }

    /// Counts an ended call (one that has no record: [`Shared::record_end`] otherwise).
    pub(crate) fn count_end(
        &self,
        direction: CallDirection,
        channel: CallChannel,
        reason: EndReason,
        answered_at: Option<Instant>,
    ) {
        self.metrics
            .calls
            .with_label_values(&[direction.as_str(), channel.as_str(), reason.as_str()])
            .inc();
        if let Some(answered) = answered_at {
            self.metrics
                .call_duration
                .with_label_values(&[direction.as_str(), channel.as_str()])
                .observe(answered.elapsed().as_secs_f64());
        }
    }
}

/// How a call ended: what [`Shared::record_end`] writes and counts.
pub(crate) struct Ending {
    pub(crate) direction: CallDirection,
    pub(crate) channel: CallChannel,
    pub(crate) reason: EndReason,
    pub(crate) answered_at: Option<Instant>,
    pub(crate) duration_secs: Option<i64>,
    pub(crate) error_code: Option<i64>,
}

impl Ending {
    /// A call that ended before it was answered, with no error code from WhatsApp.
    pub(crate) fn unanswered(
        direction: CallDirection,
        channel: CallChannel,
        reason: EndReason,
    ) -> Self {
        Self {
            direction,
            channel,
            reason,
            answered_at: None,
            duration_secs: None,
            error_code: None,
        }
    }
}

/// The calls service. Cheap to clone.
#[derive(Clone)]
pub struct Calls {
    shared: Arc<Shared>,
    /// Records signals for calls this instance does not hold (another instance's, or ones
    /// that ended before we saw them).
    recorder: Arc<RecordCalls>,
}

impl Calls {
    /// The service, and the task that routes media events to calls.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        media: Media,
        events: mpsc::UnboundedReceiver<MediaEvent>,
        graph: Option<GraphClient>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        settings: CallSettings,
        voice: Option<Arc<VoiceService>>,
    ) -> (Self, JoinHandle<()>) {
        let shared = Arc::new(Shared {
            media,
            graph,
            store: store.clone(),
            clock: clock.clone(),
            metrics,
            settings,
            voice,
            feed: Feed::default(),
            registry: Mutex::new(Registry::default()),
        });
        // The pump holds the calls weakly: the media handle inside must go when the service
        // does, or the media task (and with it the pump) would never stop.
        let pump = tokio::spawn(pump_media_events(Arc::downgrade(&shared), events));
        let recorder = Arc::new(RecordCalls { store, clock });
        (Self { shared, recorder }, pump)
    }

    /// Calls this instance holds.
    pub fn active(&self) -> usize {
        self.shared.registry().by_id.len()
    }

    /// Whether this instance holds the call (its task runs here, feeding [`Calls::feed`]).
    pub fn holds(&self, id: &str) -> bool {
        self.shared.registry().by_id.contains_key(id)
    }

    /// What happens in the calls this instance holds.
    pub fn feed(&self) -> &Feed {
        &self.shared.feed
    }

    /// Places a call to `to` (business-initiated). Returns once WhatsApp accepted the request
    /// (the phone rings); the call continues in its own task.
    ///
    /// # Errors
    /// See [`PlaceCallError`]; nothing rings then, and the call row records why.
    pub async fn place_call(
        &self,
        to: &WaId,
        purpose: Option<String>,
        reminder_id: Option<i64>,
    ) -> Result<CallRecord, PlaceCallError> {
        let shared = &self.shared;
        let graph = shared.graph.clone().ok_or(PlaceCallError::NotConfigured)?;
        let now = shared.clock.now();
        let user = shared
            .store
            .upsert_contact(
                &Contact {
                    wa_id: Some(to.clone()),
                    ..Contact::default()
                },
                now,
            )
            .await?;
        // Looked up for this user only: an id names a reminder of the person called, or none.
        let reminder = match reminder_id {
            Some(reminder) => Some(
                shared
                    .store
                    .reminder(user.id, reminder)
                    .await?
                    .ok_or(PlaceCallError::NoSuchReminder)?,
            ),
            None => None,
        };
        let id = uuid::Uuid::now_v7().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        shared.admit(&id, tx).map_err(PlaceCallError::AtCapacity)?;
        let result = task::start_outbound(
            shared.clone(),
            graph,
            task::Outbound {
                id: &id,
                to,
                user: &user,
                purpose,
                reminder,
                now,
            },
            rx,
        )
        .await;
        if result.is_err() {
            shared.forget(&id);
        }
        result
    }

    /// Takes a call from the browser test phone: `offer` is the browser's SDP offer, and the
    /// call acts for the user whose WhatsApp id is `user` (created if new). Returns the call
    /// and our SDP answer (non-trickle: every candidate is in it); the call goes on in its own
    /// task, like a WhatsApp call, until the page hangs up or the media ends.
    ///
    /// # Errors
    /// See [`PhoneCallError`]; the call row (when one was made) records why.
    pub async fn take_phone_call(
        &self,
        user: &WaId,
        offer: &str,
    ) -> Result<PhoneCall, PhoneCallError> {
        let shared = &self.shared;
        let received = Instant::now();
        let id = uuid::Uuid::now_v7().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        // Before anything else: a refusal at capacity costs no row and no media.
        if let Err(active) = shared.admit(&id, tx) {
            shared.count_end(
                CallDirection::Inbound,
                CallChannel::TestPhone,
                EndReason::RefusedByUs,
                None,
            );
            return Err(PhoneCallError::AtCapacity(active));
        }
        let result = async {
            let user = shared
                .store
                .upsert_contact(
                    &Contact {
                        wa_id: Some(user.clone()),
                        ..Contact::default()
                    },
                    shared.clock.now(),
                )
                .await?;
            task::start_test_phone(
                shared.clone(),
                task::TestPhoneCall {
                    id: &id,
                    user: &user,
                    offer,
                    received,
                },
                rx,
            )
            .await
        }
        .await;
        match result {
            Ok(answer) => Ok(PhoneCall {
                call_id: id,
                answer,
            }),
            Err(err) => {
                shared.forget(&id);
                Err(err)
            }
        }
    }

    /// Hangs up a call this instance holds.
    ///
    /// # Errors
    /// [`HangUpError::NotFound`] for an unknown id, [`HangUpError::Ended`] for a call that is
    /// over.
    pub async fn hang_up(&self, id: &str) -> Result<(), HangUpError> {
        if let Some(task) = self.shared.task_for(Some(id), None) {
            let (reply, done) = oneshot::channel();
            if task.send(CallMsg::HangUp { reply }).is_ok() {
                let _ = done.await;
                return Ok(());
            }
        }
        match self.shared.store.call(id).await? {
            None => Err(HangUpError::NotFound),
            Some(call) if call.state.is_ended() => Err(HangUpError::Ended),
            // Held by another instance (or lost with a crash): end the record and tell WhatsApp.
            Some(call) => {
                if let (Some(graph), Some(wa)) = (
                    &self.shared.graph,
                    call.wa_call_id
                        .as_deref()
                        .and_then(|w| WaCallId::parse(w).ok()),
                ) {
                    let _ = graph.terminate(&wa).await;
                }
                self.shared
                    .record(id, CallSignal::Ended(EndReason::HungUp), None, None)
                    .await;
                Ok(())
            }
        }
    }

    /// Hangs up every call this instance holds (shutdown), and waits for them to finish.
    pub async fn hang_up_all(&self) {
        let ids: Vec<String> = self.shared.registry().by_id.keys().cloned().collect();
        let hangups = ids.iter().map(|id| self.hang_up(id));
        futures::future::join_all(hangups).await;
    }

    /// Hands `msg` to the live task of the call a webhook is about: by the callback data we
    /// put on the call (when it is one of our call ids), else by WhatsApp's id.
    fn send_to(&self, callback: Option<&str>, wa: &WaCallId, msg: CallMsg) -> bool {
        self.shared
            .task_for(callback.filter(|c| is_call_id(c)), Some(wa))
            .is_some_and(|task| task.send(msg).is_ok())
    }

    async fn refuse(&self, wa: &WaCallId, why: &str) {
        tracing::warn!(wa_call_id = %wa, why, "refusing an inbound call");
        if let Some(graph) = &self.shared.graph {
            if let Err(err) = graph.reject(wa).await {
                tracing::warn!(wa_call_id = %wa, error = %err, "could not reject the call");
            }
        }
    }
}

#[async_trait]
impl CallEvents for Calls {
    async fn connect(
        &self,
        event: &InboundEvent,
        connect: &CallConnect,
    ) -> Result<Handled, HandlerError> {
        let received = Instant::now();
        match (&connect.session, connect.direction) {
            // The callee answered our outbound call.
            (Some(SessionDescription::Answer(answer)), _) => {
                let sent = self.send_to(
                    connect.biz_opaque_callback_data.as_deref(),
                    &connect.call_id,
                    CallMsg::Answer(answer.0.clone()),
                );
                if sent {
                    Ok(Handled::Done)
                } else {
                    self.recorder.connect(event, connect).await
                }
            }
            (Some(SessionDescription::Offer(offer)), CallDirection::Inbound) => {
                // Record the call as offered first (redeliveries find it and stop here).
                let outcome = self
                    .shared
                    .store
                    .record_call_signal(&CallSignalRecord {
                        wa_call_id: connect.call_id.clone(),
                        direction: CallDirection::Inbound,
                        channel: CallChannel::WhatsApp,
                        user: match &event.contact {
                            Some(contact) if contact.is_identified() => Some(
                                self.shared
                                    .store
                                    .upsert_contact(contact, self.shared.clock.now())
                                    .await?
                                    .id,
                            ),
                            Some(_) | None => None,
                        },
                        phone_number_id: event.business.phone_number_id.clone(),
                        signal: CallSignal::Offer,
                        at: self.shared.clock.now(),
                        duration_secs: None,
                        error_code: None,
                    })
                    .await?;
                if !outcome.created {
                    return Ok(Handled::Ignored(format!(
                        "the call is already {}",
                        outcome.call.state
                    )));
                }
                let id = outcome.call.id.clone();
                if self.shared.graph.is_none() {
                    self.shared
                        .record(&id, CallSignal::Ended(EndReason::RefusedByUs), None, None)
                        .await;
                    return Ok(Handled::Ignored(
                        "cannot answer calls: WhatsApp credentials are not configured".to_owned(),
                    ));
                }
                let (tx, rx) = mpsc::unbounded_channel();
                if let Err(active) = self.shared.admit(&id, tx) {
                    self.refuse(
                        &connect.call_id,
                        &format!("{active} calls in progress (MAX_CONCURRENT_CALLS)"),
                    )
                    .await;
                    self.shared
                        .record_end(
                            &id,
                            Ending::unanswered(
                                CallDirection::Inbound,
                                CallChannel::WhatsApp,
                                EndReason::RefusedByUs,
                            ),
                        )
                        .await;
                    return Ok(Handled::Done);
                }
                self.shared.attach_wa(&id, &connect.call_id);
                tracing::info!(
                    call_id = %id,
                    wa_call_id = %connect.call_id,
                    from = %masked(connect.from.as_ref()),
                    "inbound call"
                );
                tokio::spawn(task::run_inbound(
                    self.shared.clone(),
                    id,
                    connect.call_id.clone(),
                    offer.0.clone(),
                    received,
                    outcome.call.user_id,
                    rx,
                ));
                Ok(Handled::Done)
            }
            (Some(SessionDescription::Offer(_)), CallDirection::Outbound) | (None, _) => {
                self.recorder.connect(event, connect).await
            }
        }
    }

    async fn terminate(
        &self,
        event: &InboundEvent,
        terminate: &CallTerminate,
    ) -> Result<Handled, HandlerError> {
        let msg = CallMsg::Terminated {
            reason: terminate.end_reason(),
            duration_secs: terminate.duration_secs,
            error_code: terminate.error_code(),
        };
        if self.send_to(
            terminate.biz_opaque_callback_data.as_deref(),
            &terminate.call_id,
            msg,
        ) {
            return Ok(Handled::Done);
        }
        self.recorder.terminate(event, terminate).await
    }

    async fn status(
        &self,
        event: &InboundEvent,
        status: &CallStatusUpdate,
    ) -> Result<Handled, HandlerError> {
        let msg = CallMsg::Status(status.status.clone());
        if self.send_to(
            status.biz_opaque_callback_data.as_deref(),
            &status.call_id,
            msg,
        ) {
            return Ok(Handled::Done);
        }
        self.recorder.status(event, status).await
    }
}

/// Whether a callback string is one of our call ids (a UUID), not something else a webhook
/// carries there.
fn is_call_id(value: &str) -> bool {
    uuid::Uuid::parse_str(value).is_ok()
}

/// Routes the media engine's events to the calls they are about.
async fn pump_media_events(
    shared: std::sync::Weak<Shared>,
    mut events: mpsc::UnboundedReceiver<MediaEvent>,
) {
    while let Some(MediaEvent { call, event }) = events.recv().await {
        let Some(shared) = shared.upgrade() else {
            break;
        };
        if matches!(event, call_core::CallEvent::Dtmf(_)) {
            shared.metrics.call_dtmf.inc();
        }
        let task = {
            let registry = shared.registry();
            registry
                .by_handle
                .get(&call)
                .and_then(|id| registry.by_id.get(id))
                .cloned()
        };
        match task {
            Some(task) => {
                let _ = task.send(CallMsg::Media(event));
            }
            None => tracing::debug!(
                call = call.0,
                ?event,
                "media event for a call no task holds"
            ),
        }
    }
}
