//! One task per call: it owns the call from the first signal to the last record.

use std::sync::Arc;
use std::time::Instant;

use call_core::{CallDirection, CallEvent, CallHandle, CallSignal, EndReason};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::feed::FeedKind;
use super::voice::{Voice, VoiceMsg};
use super::{Ending, PhoneCallError, PlaceCallError, Shared};
use crate::domain::{CallChannel, CallStatusKind, UserId, WaCallId, WaId};
use crate::media::MediaError;
use crate::store::{CallRecord, NewCall, NewCallEvent, Reminder, User};
use crate::whatsapp::client::GraphClient;

/// What reaches a call's task.
#[derive(Debug)]
pub enum CallMsg {
    /// The media engine said something about the call.
    Media(CallEvent),
    /// WhatsApp's `terminate` webhook.
    Terminated {
        /// How WhatsApp says it ended.
        reason: EndReason,
        /// Conversation length, if answered.
        duration_secs: Option<i64>,
        /// WhatsApp's error code, if any.
        error_code: Option<i64>,
    },
    /// A business-initiated call's status webhook.
    Status(CallStatusKind),
    /// The callee's SDP answer (outbound `connect` webhook).
    Answer(String),
    /// Hang up (admin API, shutdown); replies once the call has ended.
    HangUp {
        /// Told when the call is over.
        reply: oneshot::Sender<()>,
    },
    /// The voice assistant's background work reporting back.
    Voice(VoiceMsg),
}

/// How a call's other side is signalled.
// One per live call, made once and never moved on a hot path: boxing the Graph client would
// only add an indirection.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Line {
    /// A WhatsApp call: Graph actions on WhatsApp's call id.
    WhatsApp { graph: GraphClient, wa: WaCallId },
    /// The browser test phone: the page signals over the admin API, and the media itself
    /// (DTLS close) tells the browser the call is over; there is nobody else to tell.
    TestPhone,
}

impl Line {
    fn channel(&self) -> CallChannel {
        match self {
            Line::WhatsApp { .. } => CallChannel::WhatsApp,
            Line::TestPhone => CallChannel::TestPhone,
        }
    }
}

/// A live call's facts, owned by its task.
struct Live {
    id: String,
    handle: CallHandle,
    direction: CallDirection,
    line: Line,
    /// When the connect webhook came (inbound) or we placed the call (outbound).
    started: Instant,
    answered_at: Option<Instant>,
    /// WhatsApp told us the call ended (so we do not `terminate` it again).
    ended_by_whatsapp: Option<(EndReason, Option<i64>, Option<i64>)>,
    waiting: Vec<oneshot::Sender<()>>,
    /// The voice assistant, when the model answers the call.
    voice: Option<Voice>,
}

impl Live {
    fn new(
        id: &str,
        handle: CallHandle,
        (direction, line): (CallDirection, Line),
        started: Instant,
        answered_at: Option<Instant>,
        voice: Option<Voice>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            handle,
            direction,
            line,
            started,
            answered_at,
            ended_by_whatsapp: None,
            waiting: Vec::new(),
            voice,
        }
    }

    /// Lives the call in a task of its own.
    fn spawn(self, shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<CallMsg>) {
        tokio::spawn(async move { run_live(&shared, self, &mut rx).await });
    }
}

/// Answers an inbound call: engine answer → `pre_accept` → `accept` → agent; then lives it.
pub(crate) async fn run_inbound(
    shared: Arc<Shared>,
    id: String,
    wa: WaCallId,
    offer: String,
    received: Instant,
    user: Option<UserId>,
    mut rx: mpsc::UnboundedReceiver<CallMsg>,
) {
    let Some(graph) = shared.graph.clone() else {
        shared.forget(&id);
        return;
    };
    let (handle, answer) = match shared
        .media
        .accept_offer(&offer, CallChannel::WhatsApp, shared.settings.agent)
        .await
    {
        Ok(answered) => answered,
        Err(err) => {
            tracing::warn!(call_id = %id, error = %err, "cannot take the call's offer; rejecting");
            refuse(&shared, &graph, &id, &wa, None).await;
            return;
        }
    };
    shared.attach_handle(&id, handle);
    // The webhook named the caller by id: their row is read only when the assistant needs it.
    let caller = if shared.answers_with_model() {
        shared.read_user(&id, user).await
    } else {
        None
    };
    let mut voice = shared.voice_for(
        &id,
        handle,
        (CallDirection::Inbound, CallChannel::WhatsApp),
        received,
        caller,
    );

    // The model's session is set up while WhatsApp takes our answer, and the call is accepted
    // only once it is: the caller then hears the greeting at once, and a session that cannot
    // be had means a rejected call, not an answered one that says nothing.
    let opening = async {
        match &mut voice {
            Some(voice) => voice.open(&shared).await,
            None => Ok(()),
        }
    };
    let (pre_accepted, opened) = tokio::join!(graph.pre_accept(&wa, &answer), opening);
    if let Err(err) = pre_accepted {
        tracing::warn!(call_id = %id, error = %err, "pre_accept failed; rejecting");
        refuse(&shared, &graph, &id, &wa, Some(handle)).await;
        return;
    }
    shared.observe_setup(CallChannel::WhatsApp, "pre_accept", received);
    if let Err(err) = opened {
        tracing::warn!(call_id = %id, error = %err, "no model session for the call; rejecting");
        refuse(&shared, &graph, &id, &wa, Some(handle)).await;
        shared
            .tell_unavailable(&id, voice.as_ref().and_then(Voice::user))
            .await;
        return;
    }
    if let Err(err) = graph.accept(&wa, &answer, &id).await {
        tracing::warn!(call_id = %id, error = %err, "accept failed; rejecting");
        refuse(&shared, &graph, &id, &wa, Some(handle)).await;
        return;
    }
    shared.observe_setup(CallChannel::WhatsApp, "accept", received);
    shared.record(&id, CallSignal::Answered, None, None).await;
    shared.media.start_media(handle).await;
    if let Some(voice) = &mut voice {
        voice.answered(&shared).await;
    }
    tracing::info!(call_id = %id, "inbound call answered");

    let live = Live::new(
        &id,
        handle,
        (CallDirection::Inbound, Line::WhatsApp { graph, wa }),
        received,
        Some(Instant::now()),
        voice,
    );
    run_live(&shared, live, &mut rx).await;
}

/// A call to place.
pub(crate) struct Outbound<'a> {
    pub(crate) id: &'a str,
    pub(crate) to: &'a WaId,
    pub(crate) user: &'a User,
    pub(crate) purpose: Option<String>,
    /// The reminder the call delivers (the callee's own).
    pub(crate) reminder: Option<Reminder>,
    pub(crate) now: chrono::DateTime<chrono::Utc>,
}

/// Places an outbound call; returns once WhatsApp accepted the request and leaves the rest
/// to the call's task.
pub(crate) async fn start_outbound(
    shared: Arc<Shared>,
    graph: GraphClient,
    call: Outbound<'_>,
    rx: mpsc::UnboundedReceiver<CallMsg>,
) -> Result<CallRecord, PlaceCallError> {
    let Outbound {
        id,
        to,
        user,
        purpose,
        reminder,
        now,
    } = call;
    let started = Instant::now();
    let record = shared
        .store
        .create_call(&NewCall {
            id: id.to_owned(),
            direction: CallDirection::Outbound,
            channel: CallChannel::WhatsApp,
            user: Some(user.id),
            phone_number_id: None,
            purpose: purpose.clone(),
            reminder_id: reminder.as_ref().map(|r| r.id),
            owner_instance: Some(shared.settings.instance_id.clone()),
            at: now,
        })
        .await?;
    let (handle, offer) = match shared.media.create_offer(shared.settings.agent).await {
        Ok(offered) => offered,
        Err(err) => {
            shared
                .record(id, CallSignal::Ended(EndReason::Failed), None, None)
                .await;
            return Err(err.into());
        }
    };
    shared.attach_handle(id, handle);
    let mut voice = shared.voice_for(
        id,
        handle,
        (CallDirection::Outbound, CallChannel::WhatsApp),
        started,
        Some(user.clone()),
    );
    if let Some(voice) = &mut voice {
        if let Some(reminder) = &reminder {
            voice.deliver(reminder);
        }
        if let Some(purpose) = &purpose {
            voice.call_about(purpose);
        }
    }
    // The model's session is set up while the phone starts ringing.
    let opening = async {
        match &mut voice {
            Some(voice) => voice.open(&shared).await,
            None => Ok(()),
        }
    };
    let (connected, opened) = tokio::join!(graph.connect(to, &offer, id), opening);
    let wa = match connected {
        Ok(wa) => wa,
        Err(err) => {
            tracing::warn!(call_id = id, error = %err, "WhatsApp refused the call");
            shared.media.hang_up(handle, EndReason::RefusedByUs).await;
            let ending = Ending::unanswered(
                CallDirection::Outbound,
                CallChannel::WhatsApp,
                EndReason::Failed,
            );
            shared
                .record_end(
                    id,
                    Ending {
                        error_code: graph_code(&err),
                        ..ending
                    },
                )
                .await;
            return Err(err.into());
        }
    };
    if let Err(err) = shared.store.attach_wa_call_id(id, &wa).await {
        tracing::error!(call_id = id, error = %err, "could not record WhatsApp's call id");
    }
    shared.attach_wa(id, &wa);
    tracing::info!(call_id = id, wa_call_id = %wa, "outbound call ringing");
    if let Err(err) = opened {
        // The phone rings already: hang up (the call's task tells WhatsApp).
        tracing::warn!(call_id = id, error = %err, "no model session for the call; hanging up");
        shared.media.hang_up(handle, EndReason::Failed).await;
    }
    Live::new(
        id,
        handle,
        (CallDirection::Outbound, Line::WhatsApp { graph, wa }),
        started,
        None,
        voice,
    )
    .spawn(shared.clone(), rx);
    Ok(shared.store.call(id).await?.unwrap_or(record))
}

/// The codes callers act on, kept on the call row.
fn graph_code(err: &crate::whatsapp::client::GraphError) -> Option<i64> {
    use crate::whatsapp::client::GraphError;
    match err {
        GraphError::NoPermission => Some(138_006),
        GraphError::DailyLimit { .. } => Some(138_012),
        GraphError::ConcurrencyLimit => Some(138_002),
        GraphError::CallingDisabled => Some(138_000),
        GraphError::Uncallable => Some(138_001),
        GraphError::RateLimited { code } | GraphError::Api { code, .. } => Some(*code),
        GraphError::Unauthorized { .. }
        | GraphError::Timeout
        | GraphError::Transport(_)
        | GraphError::CircuitOpen
        | GraphError::Unexpected(_) => None,
    }
}

/// Refuses an inbound call before media: the caller stops ringing.
async fn refuse(
    shared: &Shared,
    graph: &GraphClient,
    id: &str,
    wa: &WaCallId,
    handle: Option<CallHandle>,
) {
    if let Some(handle) = handle {
        shared.media.hang_up(handle, EndReason::RefusedByUs).await;
    }
    if let Err(err) = graph.reject(wa).await {
        tracing::warn!(call_id = id, error = %err, "could not reject the call");
    }
    shared
        .record_end(
            id,
            Ending::unanswered(
                CallDirection::Inbound,
                CallChannel::WhatsApp,
                EndReason::RefusedByUs,
            ),
        )
        .await;
    shared.forget(id);
}

/// A call from answered (or ringing) to ended.
async fn run_live(shared: &Shared, mut live: Live, rx: &mut mpsc::UnboundedReceiver<CallMsg>) {
    loop {
        let rollover = live.voice.as_ref().and_then(Voice::rollover_at);
        let msg = tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => break,
            },
            () = sleep_until(rollover) => {
                if let Some(voice) = &mut live.voice {
                    voice.roll_over(shared).await;
                }
                continue;
            }
        };
        if let (Some(voice), CallMsg::Media(event)) = (&mut live.voice, &msg) {
            if let Some(reason) = voice.on_media(shared, event).await {
                give_up(shared, &live, reason).await;
            }
        }
        match msg {
            CallMsg::Media(CallEvent::Ended { reason, stats }) => {
                let (reason, duration, error) = match live.ended_by_whatsapp {
                    Some((reason, duration, error)) => (reason, duration, error),
                    // The other side closed the media (DTLS close): WhatsApp ended the call
                    // and its terminate webhook is on the way; a terminate from us would only
                    // race it and be refused.
                    None if reason == EndReason::Completed => {
                        let duration = live.answered_at.map(|t| t.elapsed().as_secs() as i64);
                        (reason, duration, None)
                    }
                    None => {
                        // We (or a timer) ended it: tell WhatsApp.
                        if let Line::WhatsApp { graph, wa } = &live.line {
                            if let Err(err) = graph.terminate(wa).await {
                                tracing::warn!(call_id = %live.id, error = %err, "could not terminate the call at WhatsApp");
                            }
                        }
                        let duration = live.answered_at.map(|t| t.elapsed().as_secs() as i64);
                        (reason, duration, None)
                    }
                };
                shared
                    .record_end(
                        &live.id,
                        Ending {
                            direction: live.direction,
                            channel: live.line.channel(),
                            reason,
                            answered_at: live.answered_at,
                            duration_secs: duration,
                            error_code: error,
                        },
                    )
                    .await;
                if let Some(voice) = &live.voice {
                    let usage = voice.usage();
                    if usage.responses > 0 {
                        let usage = json!(usage);
                        if let Err(err) = shared.store.set_call_usage(&live.id, &usage).await {
                            tracing::error!(call_id = %live.id, error = %err, "could not record the call's usage");
                        }
                        event(shared, &live.id, "usage", usage).await;
                    }
                }
                event(
                    shared,
                    &live.id,
                    "ended",
                    json!({
                        "reason": reason.as_str(),
                        "packets_in": stats.packets_in,
                        "packets_out": stats.packets_out,
                    }),
                )
                .await;
                tracing::info!(call_id = %live.id, %reason, packets_in = stats.packets_in, packets_out = stats.packets_out, "call ended");
                break;
            }
            CallMsg::Media(CallEvent::Connected) => {
                tracing::debug!(call_id = %live.id, "call media connected");
            }
            CallMsg::Media(CallEvent::MediaStarted) => {
                if live.direction == CallDirection::Inbound {
                    shared.observe_setup(live.line.channel(), "first_media", live.started);
                }
            }
            CallMsg::Media(CallEvent::Dtmf(key)) => {
                event(shared, &live.id, "dtmf", json!({"key": key.to_string()})).await;
            }
            CallMsg::Media(CallEvent::Quality { .. }) => {}
            // The voice assistant's (handled above).
            CallMsg::Media(
                CallEvent::ModelConnected
                | CallEvent::ModelChannelOpen
                | CallEvent::ModelMessage(_)
                | CallEvent::ModelAudioStarted
                | CallEvent::ModelEnded { .. },
            ) => {}
            CallMsg::Voice(msg) => {
                if let Some(voice) = &mut live.voice {
                    if let Some(reason) = voice.on_msg(shared, msg).await {
                        give_up(shared, &live, reason).await;
                    }
                }
            }
            CallMsg::Terminated {
                reason,
                duration_secs,
                error_code,
            } => {
                live.ended_by_whatsapp = Some((reason, duration_secs, error_code));
                shared.media.hang_up(live.handle, reason).await;
            }
            CallMsg::Status(status) => match status {
                CallStatusKind::Ringing => {
                    shared
                        .record(&live.id, CallSignal::Ringing, None, None)
                        .await
                }
                CallStatusKind::Accepted => {
                    shared
                        .record(&live.id, CallSignal::Answered, None, None)
                        .await
                }
                CallStatusKind::Rejected => {
                    live.ended_by_whatsapp = Some((EndReason::Rejected, None, None));
                    shared.media.hang_up(live.handle, EndReason::Rejected).await;
                }
                CallStatusKind::Other(other) => {
                    tracing::debug!(call_id = %live.id, status = other, "unknown call status");
                }
            },
            CallMsg::Answer(answer) => {
                if live.answered_at.is_some() {
                    continue;
                }
                match shared.media.accept_answer(live.handle, &answer).await {
                    Ok(()) => {
                        live.answered_at = Some(Instant::now());
                        shared
                            .record(&live.id, CallSignal::Answered, None, None)
                            .await;
                        // The callee picked up: only now may the agent speak.
                        shared.media.start_media(live.handle).await;
                        if let Some(voice) = &mut live.voice {
                            voice.answered(shared).await;
                        }
                        tracing::info!(call_id = %live.id, "outbound call answered");
                    }
                    Err(err) => {
                        tracing::warn!(call_id = %live.id, error = %err, "the callee's answer is unusable; hanging up");
                        shared.media.hang_up(live.handle, EndReason::Failed).await;
                    }
                }
            }
            CallMsg::HangUp { reply } => {
                live.waiting.push(reply);
                shared.media.hang_up(live.handle, EndReason::HungUp).await;
            }
        }
    }
    for waiting in live.waiting {
        let _ = waiting.send(());
    }
    shared.forget(&live.id);
}

/// Ends a call the voice assistant cannot go on with. When it failed (no model session), the
/// caller is told by message why the line went dead.
async fn give_up(shared: &Shared, live: &Live, reason: EndReason) {
    shared.media.hang_up(live.handle, reason).await;
    // The test phone's page sees the call end in its feed; a WhatsApp message would reach a
    // real number that never called.
    if reason == EndReason::Failed && matches!(live.line, Line::WhatsApp { .. }) {
        shared
            .tell_unavailable(&live.id, live.voice.as_ref().and_then(Voice::user))
            .await;
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Appends to the call's event log; a failure is logged (the call goes on).
pub(crate) async fn event(shared: &Shared, id: &str, kind: &str, data: serde_json::Value) {
    let entry = NewCallEvent {
        kind: kind.to_owned(),
        at: shared.clock.now(),
        data,
    };
    match shared.store.append_call_event(id, &entry).await {
        Ok(row) => shared.feed.publish(
            id,
            FeedKind::Log {
                id: row,
                kind: entry.kind,
                at: entry.at,
                data: entry.data,
            },
        ),
        Err(err) => tracing::error!(call_id = id, error = %err, "could not record a call event"),
    }
}

/// A call from the browser test phone to answer.
pub(crate) struct TestPhoneCall<'a> {
    pub(crate) id: &'a str,
    pub(crate) user: &'a User,
    pub(crate) offer: &'a str,
    pub(crate) received: Instant,
}

/// Answers a test-phone call: the browser's offer → the engine's answer, the model session
/// opened (when the model answers calls) before the answer goes back, so a session that cannot
/// be had is a refused call, not a silent one. The call is answered at once (the browser placed
/// it: nobody rings) and lives in its own task, exactly as a WhatsApp call does.
pub(crate) async fn start_test_phone(
    shared: Arc<Shared>,
    call: TestPhoneCall<'_>,
    rx: mpsc::UnboundedReceiver<CallMsg>,
) -> Result<String, PhoneCallError> {
    let TestPhoneCall {
        id,
        user,
        offer,
        received,
    } = call;
    shared
        .store
        .create_call(&NewCall {
            id: id.to_owned(),
            direction: CallDirection::Inbound,
            channel: CallChannel::TestPhone,
            user: Some(user.id),
            phone_number_id: None,
            purpose: None,
            reminder_id: None,
            owner_instance: Some(shared.settings.instance_id.clone()),
            at: shared.clock.now(),
        })
        .await?;
    let refused = |reason: EndReason| {
        let shared = shared.clone();
        async move {
            shared
                .record_end(
                    id,
                    Ending::unanswered(CallDirection::Inbound, CallChannel::TestPhone, reason),
                )
                .await;
        }
    };
    let (handle, answer) = match shared
        .media
        .accept_offer(offer, CallChannel::TestPhone, shared.settings.agent)
        .await
    {
        Ok(answered) => answered,
        Err(err) => {
            refused(EndReason::RefusedByUs).await;
            return Err(match err {
                MediaError::Call(err) => PhoneCallError::BadOffer(err),
                err @ MediaError::Stopped => PhoneCallError::Media(err),
            });
        }
    };
    shared.attach_handle(id, handle);
    let mut voice = shared.voice_for(
        id,
        handle,
        (CallDirection::Inbound, CallChannel::TestPhone),
        received,
        Some(user.clone()),
    );
    if let Some(voice) = &mut voice {
        if let Err(err) = voice.open(&shared).await {
            tracing::warn!(call_id = id, error = %err, "no model session for the test phone's call; refusing it");
            shared.media.hang_up(handle, EndReason::Failed).await;
            refused(EndReason::Failed).await;
            return Err(PhoneCallError::AssistantUnavailable(err.to_string()));
        }
    }
    shared.record(id, CallSignal::Answered, None, None).await;
    shared.media.start_media(handle).await;
    if let Some(voice) = &mut voice {
        voice.answered(&shared).await;
    }
    tracing::info!(call_id = id, "test phone call answered");
    Live::new(
        id,
        handle,
        (CallDirection::Inbound, Line::TestPhone),
        received,
        Some(Instant::now()),
        voice,
    )
    .spawn(shared, rx);
    Ok(answer)
}
