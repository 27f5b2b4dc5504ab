//! The Realtime GA events that travel on the `oai-events` data channel, as typed values.
//!
//! - [`ClientEvent`]: what we send (session update, responses, tool results, context, barge-in
//!   clean-up). [`ClientEvent::to_json`] gives the text to put on the channel.
//! - [`ServerEvent`]: what we act on or log. [`ServerEvent::parse`] reads one message; event
//!   types we do not model become [`ServerEvent::Unknown`] (OpenAI adds events often; a new one
//!   must never break a call), fields we do not model are ignored.
//!
//! Names follow the GA protocol (`shared/reference/platform-apis.md` A2.5–A2.6), not the beta
//! one the Go precedent spoke: `response.output_audio_transcript.*`, not
//! `response.audio_transcript.*`; `output_modalities`, not `modalities`.

use serde::{Deserialize, Serialize};

use super::session::{Modality, Session};

// --- client → server ----------------------------------------------------------------------

/// An event we send to the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum ClientEvent {
    /// `session.update`: replaces the session's configuration (the GA shape, see
    /// [`Session`]).
    #[serde(rename = "session.update")]
    SessionUpdate {
        /// The whole session object.
        session: Box<Session>,
    },
    /// `response.create`: asks the model to respond now (greeting, after a tool result).
    #[serde(rename = "response.create")]
    ResponseCreate {
        /// Overrides for this one response; `None` uses the session's settings.
        #[serde(skip_serializing_if = "Option::is_none")]
        response: Option<ResponseParams>,
    },
    /// `conversation.item.create`: adds an item (a tool result, a context message).
    #[serde(rename = "conversation.item.create")]
    ConversationItemCreate {
        /// The item.
        item: Item,
    },
    /// `response.cancel`: stops the response being generated.
    #[serde(rename = "response.cancel")]
    ResponseCancel,
    /// `output_audio_buffer.clear` (WebRTC only): drops audio the model generated but the
    /// caller has not heard yet; send it after `response.cancel` to cut playback at once.
    #[serde(rename = "output_audio_buffer.clear")]
    OutputAudioBufferClear,
    /// `input_audio_buffer.clear`: drops caller audio not yet committed.
    #[serde(rename = "input_audio_buffer.clear")]
    InputAudioBufferClear,
}

impl ClientEvent {
    /// The event as the JSON text to send.
    pub fn to_json(&self) -> String {
        match serde_json::to_string(self) {
            Ok(json) => json,
            // Every field is a string, number, bool, sequence or a `serde_json::Value`, and no
            // map has non-string keys: serialising cannot fail.
            Err(err) => unreachable!("a client event always serialises: {err}"),
        }
    }

    /// `response.create` with no overrides.
    pub fn response_create() -> Self {
        ClientEvent::ResponseCreate { response: None }
    }

    /// A tool's result for `call_id` (from [`ServerEvent::FunctionCallArgumentsDone`]); follow
    /// it with [`ClientEvent::response_create`] so the model speaks it.
    pub fn function_call_output(call_id: impl Into<String>, output: impl Into<String>) -> Self {
        ClientEvent::ConversationItemCreate {
            item: Item::FunctionCallOutput {
                call_id: call_id.into(),
                output: output.into(),
            },
        }
    }
}

/// Per-response settings of `response.create` (`response` object).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResponseParams {
    /// Instructions for this response. They **replace** the session's instructions for this
    /// one response, so callers repeat what still applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// `auto` (the default) adds the response to the conversation; `none` makes an
    /// out-of-band response (e.g. a summary) that is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationMode>,
    /// `["audio"]` or `["text"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<Modality>>,
    /// Largest response, in tokens (1–4096).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Free-form labels echoed back on `response.created` / `response.done` (up to 16 string
    /// pairs), to tell our responses apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Where a response goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationMode {
    /// Into the default conversation.
    Auto,
    /// Out of band: not added to the conversation.
    None,
}

/// A conversation item we create.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// A tool's result.
    FunctionCallOutput {
        /// The `call_id` of the function call it answers.
        call_id: String,
        /// The result, as text (we send JSON text).
        output: String,
    },
    /// A message in the conversation.
    Message {
        /// Who says it.
        role: Role,
        /// What it says.
        content: Vec<ContentPart>,
    },
}

/// The author of a [`Item::Message`] we create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Context from our side, weighted like instructions.
    System,
    /// As if the caller had said it.
    User,
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    InputText {
        /// The text.
        text: String,
    },
}

// --- server → client ----------------------------------------------------------------------

/// Why a server message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or no string `type` field.
    #[error("not a Realtime event: {0}")]
    NotAnEvent(serde_json::Error),
    /// A type we model, with fields that do not match.
    #[error("malformed {kind} event: {source}")]
    Malformed {
        /// The event's `type`.
        kind: String,
        /// What did not match.
        source: serde_json::Error,
    },
}

/// An event from the model.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// `session.created`: the first event of a session.
    SessionCreated {
        /// The effective session.
        session: SessionInfo,
    },
    /// `session.updated`: a `session.update` was applied.
    SessionUpdated {
        /// The effective session.
        session: SessionInfo,
    },
    /// `error`: something we sent was refused, or the server failed. The session goes on.
    Error {
        /// What went wrong.
        error: ApiError,
    },
    /// `response.created`: the model started a response.
    ResponseCreated {
        /// The response (status `in_progress`).
        response: ResponseInfo,
    },
    /// `response.done`: a response ended (completed, cancelled, failed or incomplete), with
    /// its token usage.
    ResponseDone {
        /// The response.
        response: ResponseInfo,
    },
    /// `response.function_call_arguments.done`: the model calls a tool. Answer with
    /// [`ClientEvent::function_call_output`] for `call_id`, always, even on failure: the
    /// model waits for it.
    FunctionCallArgumentsDone {
        /// The id to answer with.
        call_id: String,
        /// The tool.
        name: String,
        /// The arguments, as JSON text (not yet checked against the tool's schema).
        arguments: String,
        /// The function call item.
        item_id: Option<String>,
        /// The response it belongs to.
        response_id: Option<String>,
    },
    /// `response.output_audio_transcript.done`: what the model said in one audio part.
    OutputAudioTranscriptDone {
        /// The full transcript of the part.
        transcript: String,
        /// The assistant message item.
        item_id: Option<String>,
        /// The response it belongs to.
        response_id: Option<String>,
    },
    /// `conversation.item.input_audio_transcription.completed`: what the caller said
    /// (asynchronous and advisory: the model heard the audio, not this text).
    InputTranscriptionCompleted {
        /// The user message item.
        item_id: String,
        /// The transcript.
        transcript: String,
    },
    /// `conversation.item.input_audio_transcription.failed`.
    InputTranscriptionFailed {
        /// The user message item.
        item_id: String,
        /// Why.
        error: ApiError,
    },
    /// `input_audio_buffer.speech_started`: the caller started talking (barge-in point).
    SpeechStarted {
        /// Milliseconds into the session's input audio.
        audio_start_ms: Option<u64>,
        /// The user message item that will hold it.
        item_id: Option<String>,
    },
    /// `input_audio_buffer.speech_stopped`.
    SpeechStopped {
        /// Milliseconds into the session's input audio.
        audio_end_ms: Option<u64>,
        /// The user message item.
        item_id: Option<String>,
    },
    /// `input_audio_buffer.committed`: a user turn became a conversation item.
    InputAudioBufferCommitted {
        /// The user message item.
        item_id: Option<String>,
    },
    /// `input_audio_buffer.timeout_triggered`: `idle_timeout_ms` of silence passed; the model
    /// will prompt the caller.
    InputAudioBufferTimeoutTriggered,
    /// `output_audio_buffer.started` (WebRTC): the model's audio started playing.
    OutputAudioBufferStarted {
        /// The response playing.
        response_id: Option<String>,
    },
    /// `output_audio_buffer.stopped` (WebRTC): all of a response's audio was sent.
    OutputAudioBufferStopped {
        /// The response.
        response_id: Option<String>,
    },
    /// `output_audio_buffer.cleared` (WebRTC): unplayed audio was dropped (barge-in or
    /// `output_audio_buffer.clear`).
    OutputAudioBufferCleared {
        /// The response cut.
        response_id: Option<String>,
    },
    /// `rate_limits.updated`: what is left of the account's limits (after each response).
    RateLimitsUpdated {
        /// One entry per limit (`requests`, `tokens`).
        rate_limits: Vec<RateLimit>,
    },
    /// Any other event type: logged by type, otherwise ignored.
    Unknown {
        /// The event's `type`.
        kind: String,
    },
}

/// The part of the session object the server echoes that we look at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SessionInfo {
    /// `sess_…`.
    #[serde(default)]
    pub id: Option<String>,
    /// The model (Azure: the deployment).
    #[serde(default)]
    pub model: Option<String>,
    /// When the session ends (Unix seconds).
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// The `error` object of an `error` event (and of a failed transcription).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// `invalid_request_error`, `server_error`, ...
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// A machine-readable code, when there is one.
    #[serde(default)]
    pub code: Option<String>,
    /// What went wrong, in words.
    #[serde(default)]
    pub message: Option<String>,
    /// The parameter at fault, e.g. `session.audio.output.voice`.
    #[serde(default)]
    pub param: Option<String>,
    /// The `event_id` of the client event that caused it, when we sent one.
    #[serde(default)]
    pub event_id: Option<String>,
}

/// A response, as `response.created` and `response.done` carry it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ResponseInfo {
    /// `resp_…`.
    #[serde(default)]
    pub id: Option<String>,
    /// How it ended (`in_progress` on `response.created`).
    #[serde(default)]
    pub status: Option<ResponseStatus>,
    /// Why it was cancelled, incomplete or failed.
    #[serde(default)]
    pub status_details: Option<StatusDetails>,
    /// Tokens used (on `response.done`).
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The `metadata` we set on `response.create`.
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A response's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    /// Still generating.
    InProgress,
    /// Finished.
    Completed,
    /// Cancelled (the caller barged in, or we sent `response.cancel`).
    Cancelled,
    /// Stopped early (token limit, content filter).
    Incomplete,
    /// Failed; see `status_details.error`.
    Failed,
    /// A status this version does not know.
    #[serde(other)]
    Other,
}

/// `status_details` of a response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StatusDetails {
    /// The status it explains.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `turn_detected`, `client_cancelled`, `max_output_tokens`, `content_filter`.
    #[serde(default)]
    pub reason: Option<String>,
    /// For failed responses.
    #[serde(default)]
    pub error: Option<ApiError>,
}

/// Token usage of one response (each response re-bills the conversation so far).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Input plus output.
    #[serde(default)]
    pub total_tokens: u64,
    /// Input tokens (instructions, conversation, audio).
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input by kind.
    #[serde(default)]
    pub input_token_details: InputTokenDetails,
    /// Output by kind.
    #[serde(default)]
    pub output_token_details: OutputTokenDetails,
}

/// Input tokens by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct InputTokenDetails {
    /// Text.
    #[serde(default)]
    pub text_tokens: u64,
    /// Audio.
    #[serde(default)]
    pub audio_tokens: u64,
    /// Served from the prompt cache (billed at the cached rate).
    #[serde(default)]
    pub cached_tokens: u64,
}

/// Output tokens by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct OutputTokenDetails {
    /// Text.
    #[serde(default)]
    pub text_tokens: u64,
    /// Audio.
    #[serde(default)]
    pub audio_tokens: u64,
}

/// One entry of `rate_limits.updated`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RateLimit {
    /// `requests` or `tokens`.
    pub name: String,
    /// The limit.
    #[serde(default)]
    pub limit: u64,
    /// What is left.
    #[serde(default)]
    pub remaining: u64,
    /// Seconds until it resets.
    #[serde(default)]
    pub reset_seconds: f64,
}

/// Just the type, read first to pick the payload.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

// Payload wire structs: one per modelled event, then turned into the variant.

#[derive(Deserialize)]
struct SessionPayload {
    session: SessionInfo,
}

#[derive(Deserialize)]
struct ErrorPayload {
    error: ApiError,
}

#[derive(Deserialize)]
struct ResponsePayload {
    response: ResponseInfo,
}

#[derive(Deserialize)]
struct FunctionCallPayload {
    call_id: String,
    name: String,
    arguments: String,
    #[serde(default)]
    item_id: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
}

#[derive(Deserialize)]
struct TranscriptPayload {
    transcript: String,
    #[serde(default)]
    item_id: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
}

#[derive(Deserialize)]
struct InputTranscriptPayload {
    item_id: String,
    transcript: String,
}

#[derive(Deserialize)]
struct InputTranscriptFailedPayload {
    item_id: String,
    #[serde(default)]
    error: ApiError,
}

#[derive(Deserialize)]
struct SpeechPayload {
    #[serde(default)]
    audio_start_ms: Option<u64>,
    #[serde(default)]
    audio_end_ms: Option<u64>,
    #[serde(default)]
    item_id: Option<String>,
}

#[derive(Deserialize)]
struct OutputBufferPayload {
    #[serde(default)]
    response_id: Option<String>,
}

#[derive(Deserialize)]
struct RateLimitsPayload {
    rate_limits: Vec<RateLimit>,
}

/// Reads the payload of a `kind` event out of `text`.
fn payload<'de, T: Deserialize<'de>>(text: &'de str, kind: &str) -> Result<T, ParseError> {
    serde_json::from_str(text).map_err(|source| ParseError::Malformed {
        kind: kind.to_owned(),
        source,
    })
}

impl ServerEvent {
    /// Reads one data-channel message.
    ///
    /// # Errors
    /// [`ParseError::NotAnEvent`] when the text is not JSON or has no string `type`;
    /// [`ParseError::Malformed`] when a modelled event lacks a field it needs. Unknown types
    /// are not errors.
    pub fn parse(text: &str) -> Result<ServerEvent, ParseError> {
        let envelope: Envelope<'_> = serde_json::from_str(text).map_err(ParseError::NotAnEvent)?;
        let kind = envelope.kind.as_ref();
        let event = match kind {
            "session.created" => ServerEvent::SessionCreated {
                session: payload::<SessionPayload>(text, kind)?.session,
            },
            "session.updated" => ServerEvent::SessionUpdated {
                session: payload::<SessionPayload>(text, kind)?.session,
            },
            "error" => ServerEvent::Error {
                error: payload::<ErrorPayload>(text, kind)?.error,
            },
            "response.created" => ServerEvent::ResponseCreated {
                response: payload::<ResponsePayload>(text, kind)?.response,
            },
            "response.done" => ServerEvent::ResponseDone {
                response: payload::<ResponsePayload>(text, kind)?.response,
            },
            "response.function_call_arguments.done" => {
                let p = payload::<FunctionCallPayload>(text, kind)?;
                ServerEvent::FunctionCallArgumentsDone {
                    call_id: p.call_id,
                    name: p.name,
                    arguments: p.arguments,
                    item_id: p.item_id,
                    response_id: p.response_id,
                }
            }
            "response.output_audio_transcript.done" => {
                let p = payload::<TranscriptPayload>(text, kind)?;
                ServerEvent::OutputAudioTranscriptDone {
                    transcript: p.transcript,
                    item_id: p.item_id,
                    response_id: p.response_id,
                }
            }
            "conversation.item.input_audio_transcription.completed" => {
                let p = payload::<InputTranscriptPayload>(text, kind)?;
                ServerEvent::InputTranscriptionCompleted {
                    item_id: p.item_id,
                    transcript: p.transcript,
                }
            }
            "conversation.item.input_audio_transcription.failed" => {
                let p = payload::<InputTranscriptFailedPayload>(text, kind)?;
                ServerEvent::InputTranscriptionFailed {
                    item_id: p.item_id,
                    error: p.error,
                }
            }
            "input_audio_buffer.speech_started" => {
                let p = payload::<SpeechPayload>(text, kind)?;
                ServerEvent::SpeechStarted {
                    audio_start_ms: p.audio_start_ms,
                    item_id: p.item_id,
                }
            }
            "input_audio_buffer.speech_stopped" => {
                let p = payload::<SpeechPayload>(text, kind)?;
                ServerEvent::SpeechStopped {
                    audio_end_ms: p.audio_end_ms,
                    item_id: p.item_id,
                }
            }
            "input_audio_buffer.committed" => ServerEvent::InputAudioBufferCommitted {
                item_id: payload::<SpeechPayload>(text, kind)?.item_id,
            },
            "input_audio_buffer.timeout_triggered" => ServerEvent::InputAudioBufferTimeoutTriggered,
            "output_audio_buffer.started" => ServerEvent::OutputAudioBufferStarted {
                response_id: payload::<OutputBufferPayload>(text, kind)?.response_id,
            },
            "output_audio_buffer.stopped" => ServerEvent::OutputAudioBufferStopped {
                response_id: payload::<OutputBufferPayload>(text, kind)?.response_id,
            },
            "output_audio_buffer.cleared" => ServerEvent::OutputAudioBufferCleared {
                response_id: payload::<OutputBufferPayload>(text, kind)?.response_id,
            },
            "rate_limits.updated" => ServerEvent::RateLimitsUpdated {
                rate_limits: payload::<RateLimitsPayload>(text, kind)?.rate_limits,
            },
            other => ServerEvent::Unknown {
                kind: other.to_owned(),
            },
        };
        Ok(event)
    }

    /// The event's `type`, for logs and metrics.
    pub fn kind(&self) -> &str {
        match self {
            ServerEvent::SessionCreated { .. } => "session.created",
            ServerEvent::SessionUpdated { .. } => "session.updated",
            ServerEvent::Error { .. } => "error",
            ServerEvent::ResponseCreated { .. } => "response.created",
            ServerEvent::ResponseDone { .. } => "response.done",
            ServerEvent::FunctionCallArgumentsDone { .. } => {
                "response.function_call_arguments.done"
            }
            ServerEvent::OutputAudioTranscriptDone { .. } => {
                "response.output_audio_transcript.done"
            }
            ServerEvent::InputTranscriptionCompleted { .. } => {
                "conversation.item.input_audio_transcription.completed"
            }
            ServerEvent::InputTranscriptionFailed { .. } => {
                "conversation.item.input_audio_transcription.failed"
            }
            ServerEvent::SpeechStarted { .. } => "input_audio_buffer.speech_started",
            ServerEvent::SpeechStopped { .. } => "input_audio_buffer.speech_stopped",
            ServerEvent::InputAudioBufferCommitted { .. } => "input_audio_buffer.committed",
            ServerEvent::InputAudioBufferTimeoutTriggered => "input_audio_buffer.timeout_triggered",
            ServerEvent::OutputAudioBufferStarted { .. } => "output_audio_buffer.started",
            ServerEvent::OutputAudioBufferStopped { .. } => "output_audio_buffer.stopped",
            ServerEvent::OutputAudioBufferCleared { .. } => "output_audio_buffer.cleared",
            ServerEvent::RateLimitsUpdated { .. } => "rate_limits.updated",
            ServerEvent::Unknown { kind } => kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn parse(value: Value) -> ServerEvent {
        ServerEvent::parse(&value.to_string()).expect("parses")
    }

    #[test]
    fn client_events_serialise_to_the_ga_wire_shape() {
        let cases = [
            (
                ClientEvent::response_create(),
                json!({"type": "response.create"}),
            ),
            (
                ClientEvent::ResponseCreate {
                    response: Some(ResponseParams {
                        instructions: Some("Greet the caller.".into()),
                        conversation: Some(ConversationMode::None),
                        output_modalities: Some(vec![Modality::Text]),
                        ..ResponseParams::default()
                    }),
                },
                json!({"type": "response.create", "response": {
                    "instructions": "Greet the caller.", "conversation": "none",
                    "output_modalities": ["text"]}}),
            ),
            (
                ClientEvent::function_call_output("call_9", r#"{"ok":true}"#),
                json!({"type": "conversation.item.create", "item": {
                    "type": "function_call_output", "call_id": "call_9", "output": "{\"ok\":true}"}}),
            ),
            (
                ClientEvent::ConversationItemCreate {
                    item: Item::Message {
                        role: Role::System,
                        content: vec![ContentPart::InputText {
                            text: "context".into(),
                        }],
                    },
                },
                json!({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "system",
                    "content": [{"type": "input_text", "text": "context"}]}}),
            ),
            (
                ClientEvent::ResponseCancel,
                json!({"type": "response.cancel"}),
            ),
            (
                ClientEvent::OutputAudioBufferClear,
                json!({"type": "output_audio_buffer.clear"}),
            ),
            (
                ClientEvent::InputAudioBufferClear,
                json!({"type": "input_audio_buffer.clear"}),
            ),
        ];
        for (event, expected) in cases {
            let sent: Value = serde_json::from_str(&event.to_json()).expect("JSON");
            assert_eq!(sent, expected);
        }
    }

    #[test]
    fn response_done_carries_status_and_token_usage() {
        let event = parse(json!({
            "type": "response.done", "event_id": "event_CCXHxcU4jV6OpYZlMPHmw",
            "response": {
                "object": "realtime.response", "id": "resp_CCXHw2cfZ6ceJ6pQXGDeU",
                "status": "completed", "status_details": null,
                "output": [{"id": "item_1", "type": "message", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_audio", "transcript": "Hi there!"}]}],
                "conversation_id": "conv_CCXHsurMKcaVxIZvaCI5m", "output_modalities": ["audio"],
                "max_output_tokens": "inf",
                "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}},
                "usage": {"total_tokens": 253, "input_tokens": 132, "output_tokens": 121,
                    "input_token_details": {"text_tokens": 119, "audio_tokens": 13, "image_tokens": 0,
                        "cached_tokens": 64, "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0}},
                    "output_token_details": {"text_tokens": 30, "audio_tokens": 91}},
                "metadata": null
            }
        }));
        let ServerEvent::ResponseDone { response } = event else {
            panic!("not response.done: {event:?}");
        };
        assert_eq!(response.id.as_deref(), Some("resp_CCXHw2cfZ6ceJ6pQXGDeU"));
        assert_eq!(response.status, Some(ResponseStatus::Completed));
        let usage = response.usage.expect("usage");
        assert_eq!(
            (usage.total_tokens, usage.input_tokens, usage.output_tokens),
            (253, 132, 121)
        );
        assert_eq!(usage.input_token_details.cached_tokens, 64);
        assert_eq!(usage.input_token_details.audio_tokens, 13);
        assert_eq!(usage.output_token_details.audio_tokens, 91);

        let cancelled = parse(
            json!({"type": "response.done", "event_id": "e", "response": {
            "id": "resp_2", "status": "cancelled",
            "status_details": {"type": "cancelled", "reason": "turn_detected"}, "usage": null}}),
        );
        let ServerEvent::ResponseDone { response } = cancelled else {
            panic!("not response.done");
        };
        assert_eq!(response.status, Some(ResponseStatus::Cancelled));
        assert_eq!(
            response.status_details.and_then(|d| d.reason).as_deref(),
            Some("turn_detected")
        );
    }

    #[test]
    fn a_tool_call_gives_its_call_id_name_and_arguments() {
        let event = parse(json!({
            "type": "response.function_call_arguments.done", "event_id": "event_abc",
            "response_id": "resp_1", "item_id": "item_2", "output_index": 0,
            "call_id": "call_M0C7nfLH6ODC6DDF", "name": "add_task",
            "arguments": "{\"title\":\"buy milk\"}"
        }));
        assert_eq!(
            event,
            ServerEvent::FunctionCallArgumentsDone {
                call_id: "call_M0C7nfLH6ODC6DDF".into(),
                name: "add_task".into(),
                arguments: "{\"title\":\"buy milk\"}".into(),
                item_id: Some("item_2".into()),
                response_id: Some("resp_1".into()),
            }
        );
    }

    #[test]
    fn transcripts_of_both_sides_are_read() {
        assert_eq!(
            parse(
                json!({"type": "response.output_audio_transcript.done", "event_id": "e",
                "response_id": "resp_1", "item_id": "item_3", "output_index": 0, "content_index": 0,
                "transcript": "Done: I added buy milk."})
            ),
            ServerEvent::OutputAudioTranscriptDone {
                transcript: "Done: I added buy milk.".into(),
                item_id: Some("item_3".into()),
                response_id: Some("resp_1".into()),
            }
        );
        assert_eq!(
            parse(
                json!({"type": "conversation.item.input_audio_transcription.completed",
                "event_id": "e", "item_id": "item_4", "content_index": 0,
                "transcript": "Add buy milk.", "usage": {"type": "duration", "seconds": 2}})
            ),
            ServerEvent::InputTranscriptionCompleted {
                item_id: "item_4".into(),
                transcript: "Add buy milk.".into(),
            }
        );
        let failed = parse(
            json!({"type": "conversation.item.input_audio_transcription.failed",
            "event_id": "e", "item_id": "item_5", "content_index": 0,
            "error": {"type": "transcription_error", "code": "audio_unintelligible",
                "message": "The audio could not be transcribed.", "param": null}}),
        );
        let ServerEvent::InputTranscriptionFailed { item_id, error } = failed else {
            panic!("not a failed transcription");
        };
        assert_eq!(item_id, "item_5");
        assert_eq!(error.code.as_deref(), Some("audio_unintelligible"));
    }

    #[test]
    fn errors_keep_type_code_message_param_and_the_event_they_answer() {
        let event = parse(json!({"type": "error", "event_id": "event_890",
            "error": {"type": "invalid_request_error", "code": "invalid_value",
                "message": "Invalid value: 'nova'. Supported values are: 'alloy', 'marin'.",
                "param": "session.audio.output.voice", "event_id": "evt_client_1"}}));
        let ServerEvent::Error { error } = event else {
            panic!("not an error");
        };
        assert_eq!(error.kind.as_deref(), Some("invalid_request_error"));
        assert_eq!(error.code.as_deref(), Some("invalid_value"));
        assert_eq!(error.param.as_deref(), Some("session.audio.output.voice"));
        assert_eq!(error.event_id.as_deref(), Some("evt_client_1"));
        assert!(error.message.unwrap_or_default().contains("nova"));
    }

    #[test]
    fn session_turn_and_buffer_events_are_read() {
        let created = parse(json!({"type": "session.created", "event_id": "e",
            "session": {"type": "realtime", "object": "realtime.session", "id": "sess_C9CiUVUzUzYIssh3ELY1d",
                "model": "gpt-realtime", "output_modalities": ["audio"], "instructions": "…",
                "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": null,
                "prompt": null, "expires_at": 1_756_324_625,
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
                    "output": {"voice": "marin", "speed": 1}}, "include": null}}));
        assert_eq!(
            created,
            ServerEvent::SessionCreated {
                session: SessionInfo {
                    id: Some("sess_C9CiUVUzUzYIssh3ELY1d".into()),
                    model: Some("gpt-realtime".into()),
                    expires_at: Some(1_756_324_625),
                }
            }
        );
        assert!(matches!(
            parse(json!({"type": "session.updated", "event_id": "e", "session": {"id": "sess_1"}})),
            ServerEvent::SessionUpdated { .. }
        ));
        assert!(matches!(
            parse(json!({"type": "response.created", "event_id": "e",
                "response": {"id": "resp_1", "status": "in_progress", "output": []}})),
            ServerEvent::ResponseCreated { response } if response.status == Some(ResponseStatus::InProgress)
        ));
        assert_eq!(
            parse(
                json!({"type": "input_audio_buffer.speech_started", "event_id": "e",
                "audio_start_ms": 1000, "item_id": "item_6"})
            ),
            ServerEvent::SpeechStarted {
                audio_start_ms: Some(1000),
                item_id: Some("item_6".into())
            }
        );
        assert_eq!(
            parse(
                json!({"type": "input_audio_buffer.speech_stopped", "event_id": "e",
                "audio_end_ms": 2000, "item_id": "item_6"})
            ),
            ServerEvent::SpeechStopped {
                audio_end_ms: Some(2000),
                item_id: Some("item_6".into())
            }
        );
        assert_eq!(
            parse(
                json!({"type": "input_audio_buffer.committed", "event_id": "e",
                "previous_item_id": null, "item_id": "item_6"})
            ),
            ServerEvent::InputAudioBufferCommitted {
                item_id: Some("item_6".into())
            }
        );
        assert_eq!(
            parse(
                json!({"type": "input_audio_buffer.timeout_triggered", "event_id": "e",
                "audio_start_ms": 13216, "audio_end_ms": 19232, "item_id": "item_7"})
            ),
            ServerEvent::InputAudioBufferTimeoutTriggered
        );
        for (kind, expected) in [
            (
                "output_audio_buffer.started",
                ServerEvent::OutputAudioBufferStarted {
                    response_id: Some("resp_1".into()),
                },
            ),
            (
                "output_audio_buffer.stopped",
                ServerEvent::OutputAudioBufferStopped {
                    response_id: Some("resp_1".into()),
                },
            ),
            (
                "output_audio_buffer.cleared",
                ServerEvent::OutputAudioBufferCleared {
                    response_id: Some("resp_1".into()),
                },
            ),
        ] {
            let event = parse(json!({"type": kind, "event_id": "e", "response_id": "resp_1"}));
            assert_eq!(event.kind(), kind);
            assert_eq!(event, expected);
        }
    }

    #[test]
    fn rate_limits_are_read() {
        let event = parse(json!({"type": "rate_limits.updated", "event_id": "e",
            "rate_limits": [
                {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
                {"name": "tokens", "limit": 50000, "remaining": 49950, "reset_seconds": 0.06}]}));
        let ServerEvent::RateLimitsUpdated { rate_limits } = event else {
            panic!("not rate limits");
        };
        assert_eq!(rate_limits.len(), 2);
        assert_eq!(rate_limits[1].name, "tokens");
        assert_eq!(rate_limits[1].remaining, 49_950);
        assert!((rate_limits[1].reset_seconds - 0.06).abs() < 1e-9);
    }

    #[test]
    fn unknown_types_are_kept_by_name_and_never_an_error() {
        for kind in [
            "response.output_audio_transcript.delta",
            "conversation.item.added",
            "response.audio.delta",
            "gpt_live.something.new",
        ] {
            let event = parse(json!({"type": kind, "event_id": "e", "delta": "…"}));
            assert_eq!(
                event,
                ServerEvent::Unknown {
                    kind: kind.to_owned()
                }
            );
            assert_eq!(event.kind(), kind);
        }
    }

    #[test]
    fn text_that_is_not_an_event_is_a_parse_error() {
        for text in ["not json", "{}", r#"{"type": 5}"#, "[1,2]", ""] {
            assert!(
                matches!(ServerEvent::parse(text), Err(ParseError::NotAnEvent(_))),
                "{text:?}"
            );
        }
        // A modelled event without a field it needs.
        let err = ServerEvent::parse(r#"{"type":"response.function_call_arguments.done"}"#)
            .expect_err("no call_id");
        assert!(
            matches!(&err, ParseError::Malformed { kind, .. } if kind == "response.function_call_arguments.done"),
            "{err}"
        );
    }
}
