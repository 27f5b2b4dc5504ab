//! The model layer: what a call's voice assistant needs from a realtime speech model, in terms
//! of no provider in particular.
//!
//! ```text
//! calls::voice ──VoiceSetup, SDP offer──▶ VoiceModel::open ──HTTP──▶ provider ──SDP answer──▶
//!              ──ModelCommand──▶ encode ──▶ (event channel of the model leg) ──▶ provider
//!              ◀──ModelEvent──── decode ◀── (event channel of the model leg) ◀── provider
//! ```
//!
//! The audio never passes through here: it is Opus relayed by the engine between the call's
//! legs. A provider is an HTTP signalling step plus a JSON event dialect on the data channel;
//! [`OpenAiRealtime`] is OpenAI's and Azure OpenAI's GA Realtime API. Another (OpenAI's live
//! API, say) implements [`VoiceModel`] and nothing in the call engine or the call task changes.

use std::collections::HashSet;

use async_trait::async_trait;

use super::client::{RealtimeClient, RealtimeError};
use super::protocol::{
    ClientEvent, ContentPart, Item, ResponseParams, ResponseStatus, Role, ServerEvent,
};
use super::session::{FunctionTool, Session};
use crate::assistant::ToolDefinition;
use crate::config::{AiConfig, RealtimeConfig};

/// How a model session starts: who the assistant is and what it can do. Everything about the
/// voice, turn detection and transcription is the provider's configuration.
#[derive(Debug, Clone)]
pub struct VoiceSetup {
    /// The rendered instructions (persona, the user's name, local time and zone).
    pub instructions: String,
    /// The tools the model may call.
    pub tools: Vec<ToolDefinition>,
}

/// What the call asks of the model.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelCommand {
    /// Speak now, following `instructions` for this response only (a greeting, an apology
    /// after a reconnection), or as the conversation leads when `None`.
    Respond {
        /// This response's instructions.
        instructions: Option<String>,
    },
    /// A tool's result (the call asks for a response to speak it when the model is free).
    ToolOutput {
        /// The model's id of the call it made.
        call_id: String,
        /// What the tool returned.
        output: String,
    },
    /// Context the model should know as data, never as instructions (a reminder being
    /// delivered, the conversation before a reconnection).
    Context {
        /// The text, already delimited as data.
        text: String,
    },
}

/// What the model said or did, as the call cares about it.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// The session is configured.
    Ready,
    /// The model started a response (it is speaking or working; another response must wait).
    ResponseStarted,
    /// A transcription of the caller's speech.
    CallerSaid(String),
    /// The transcript of something the assistant said.
    AssistantSaid(String),
    /// The model calls a tool.
    ToolCall {
        /// The model's id for this call (the output must name it).
        call_id: String,
        /// The tool.
        name: String,
        /// Its arguments, as the model wrote them (JSON text, maybe invalid).
        arguments: String,
    },
    /// A response is finished.
    ResponseDone {
        /// `completed`, `cancelled` (the caller spoke over it), `failed`, ...
        status: String,
        /// What it cost.
        usage: Option<TokenUsage>,
    },
    /// The provider's rate limits now.
    RateLimits(Vec<RateLimit>),
    /// The provider reported an error (a refused event, a failed response).
    Error {
        /// Its code.
        code: Option<String>,
        /// Its message.
        message: String,
    },
    /// An event the call has no use for.
    Ignored,
    /// An event type this version does not know (log it once).
    Unknown(String),
    /// A message that is not an event (log it).
    Malformed(String),
}

/// Tokens used, summed over a call's responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TokenUsage {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input audio tokens.
    pub input_audio_tokens: u64,
    /// Input text tokens.
    pub input_text_tokens: u64,
    /// Cached input tokens.
    pub input_cached_tokens: u64,
    /// Output audio tokens.
    pub output_audio_tokens: u64,
    /// Output text tokens.
    pub output_text_tokens: u64,
    /// Responses counted.
    pub responses: u64,
}

impl TokenUsage {
    /// Adds another response's usage.
    pub fn add(&mut self, other: &TokenUsage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.input_audio_tokens += other.input_audio_tokens;
        self.input_text_tokens += other.input_text_tokens;
        self.input_cached_tokens += other.input_cached_tokens;
        self.output_audio_tokens += other.output_audio_tokens;
        self.output_text_tokens += other.output_text_tokens;
        self.responses += other.responses;
    }
}

/// One of the provider's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// `requests` or `tokens`.
    pub name: String,
    /// The limit.
    pub limit: f64,
    /// What is left of it.
    pub remaining: f64,
}

/// Why a model session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The provider refused us (credentials, configuration, a session shape it rejects):
    /// retrying will not help; an operator must act.
    #[error("the model provider refused the session: {0}")]
    Refused(String),
    /// The provider is busy, down, unreachable, or our circuit breaker is open.
    #[error("the model provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider's answer could not be used (or the engine refused it).
    #[error("the model session could not be set up: {0}")]
    Setup(String),
}

/// A realtime speech model provider.
#[async_trait]
pub trait VoiceModel: Send + Sync + 'static {
    /// A short name for logs and metrics (`openai`, `azure`).
    fn name(&self) -> &'static str;

    /// Opens a session configured by `setup`: sends our model leg's SDP offer and returns the
    /// provider's answer.
    async fn open(&self, setup: &VoiceSetup, offer: &str) -> Result<String, ModelError>;

    /// The messages that carry out `command` on the event channel, in order.
    fn encode(&self, command: &ModelCommand) -> Vec<String>;

    /// What a message from the event channel means.
    fn decode(&self, message: &str) -> ModelEvent;
}

/// OpenAI's and Azure OpenAI's GA Realtime API over WebRTC.
pub struct OpenAiRealtime {
    client: RealtimeClient,
    ai: AiConfig,
    realtime: RealtimeConfig,
}

impl OpenAiRealtime {
    /// The provider, with the session settings every call shares.
    pub fn new(client: RealtimeClient, ai: AiConfig, realtime: RealtimeConfig) -> Self {
        Self {
            client,
            ai,
            realtime,
        }
    }

    /// The GA session object for `setup`.
    pub fn session(&self, setup: &VoiceSetup) -> Session {
        let tools: Vec<FunctionTool> = setup
            .tools
            .iter()
            .map(|tool| FunctionTool {
                name: tool.name.to_owned(),
                description: tool.description.clone(),
                parameters: tool.parameters.clone(),
            })
            .collect();
        Session::new(&self.ai, &self.realtime, setup.instructions.clone(), &tools)
    }
}

impl std::fmt::Debug for OpenAiRealtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiRealtime")
            .field("provider", &self.client.provider())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl VoiceModel for OpenAiRealtime {
    fn name(&self) -> &'static str {
        self.client.provider().as_str()
    }

    async fn open(&self, setup: &VoiceSetup, offer: &str) -> Result<String, ModelError> {
        let session = self.session(setup);
        let call = self
            .client
            .connect(&session, offer)
            .await
            .map_err(|err| match err {
                RealtimeError::Unauthorized { .. }
                | RealtimeError::BadRequest { .. }
                | RealtimeError::QuotaExceeded { .. } => ModelError::Refused(err.to_string()),
                RealtimeError::BadResponse { .. } => ModelError::Setup(err.to_string()),
                RealtimeError::RateLimited { .. }
                | RealtimeError::Unavailable { .. }
                | RealtimeError::CircuitOpen => ModelError::Unavailable(err.to_string()),
            })?;
        Ok(call.answer_sdp)
    }

    fn encode(&self, command: &ModelCommand) -> Vec<String> {
        match command {
            ModelCommand::Respond { instructions } => vec![ClientEvent::ResponseCreate {
                response: instructions.as_ref().map(|instructions| ResponseParams {
                    instructions: Some(instructions.clone()),
                    ..ResponseParams::default()
                }),
            }
            .to_json()],
            ModelCommand::ToolOutput { call_id, output } => {
                vec![ClientEvent::function_call_output(call_id.clone(), output.clone()).to_json()]
            }
            // The caller's role, not the system's: context is data and gets no more authority
            // than the caller's own words.
            ModelCommand::Context { text } => vec![ClientEvent::ConversationItemCreate {
                item: Item::Message {
                    role: Role::User,
                    content: vec![ContentPart::InputText { text: text.clone() }],
                },
            }
            .to_json()],
        }
    }

    fn decode(&self, message: &str) -> ModelEvent {
        let event = match ServerEvent::parse(message) {
            Ok(event) => event,
            Err(err) => return ModelEvent::Malformed(err.to_string()),
        };
        match event {
            ServerEvent::SessionCreated { .. } | ServerEvent::SessionUpdated { .. } => {
                ModelEvent::Ready
            }
            ServerEvent::InputTranscriptionCompleted { transcript, .. } => {
                ModelEvent::CallerSaid(transcript)
            }
            ServerEvent::OutputAudioTranscriptDone { transcript, .. } => {
                ModelEvent::AssistantSaid(transcript)
            }
            ServerEvent::FunctionCallArgumentsDone {
                call_id,
                name,
                arguments,
                ..
            } => ModelEvent::ToolCall {
                call_id,
                name,
                arguments,
            },
            ServerEvent::ResponseDone { response } => ModelEvent::ResponseDone {
                status: match response.status {
                    Some(ResponseStatus::Completed) => "completed",
                    Some(ResponseStatus::Cancelled) => "cancelled",
                    Some(ResponseStatus::Incomplete) => "incomplete",
                    Some(ResponseStatus::Failed) => "failed",
                    Some(ResponseStatus::InProgress | ResponseStatus::Other) | None => "other",
                }
                .to_owned(),
                usage: response.usage.as_ref().map(|u| TokenUsage {
                    input_tokens: u.input_tokens,
                    output_tokens: u.output_tokens,
                    input_audio_tokens: u.input_token_details.audio_tokens,
                    input_text_tokens: u.input_token_details.text_tokens,
                    input_cached_tokens: u.input_token_details.cached_tokens,
                    output_audio_tokens: u.output_token_details.audio_tokens,
                    output_text_tokens: u.output_token_details.text_tokens,
                    responses: 1,
                }),
            },
            ServerEvent::RateLimitsUpdated { rate_limits } => ModelEvent::RateLimits(
                rate_limits
                    .into_iter()
                    .map(|l| RateLimit {
                        name: l.name,
                        limit: l.limit as f64,
                        remaining: l.remaining as f64,
                    })
                    .collect(),
            ),
            ServerEvent::Error { error } => ModelEvent::Error {
                code: error.code,
                message: error.message.unwrap_or_default(),
            },
            ServerEvent::Unknown { kind } => ModelEvent::Unknown(kind),
            ServerEvent::ResponseCreated { .. } => ModelEvent::ResponseStarted,
            ServerEvent::InputTranscriptionFailed { .. }
            | ServerEvent::SpeechStarted { .. }
            | ServerEvent::SpeechStopped { .. }
            | ServerEvent::InputAudioBufferCommitted { .. }
            | ServerEvent::InputAudioBufferTimeoutTriggered
            | ServerEvent::OutputAudioBufferStarted { .. }
            | ServerEvent::OutputAudioBufferStopped { .. }
            | ServerEvent::OutputAudioBufferCleared { .. } => ModelEvent::Ignored,
        }
    }
}

/// Remembers which unknown event types were logged, so each is logged once per call.
#[derive(Debug, Default)]
pub struct SeenOnce(HashSet<String>);

impl SeenOnce {
    /// Whether `kind` is new (and remembers it).
    pub fn first(&mut self, kind: &str) -> bool {
        self.0.insert(kind.to_owned())
    }
}
