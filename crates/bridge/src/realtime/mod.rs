//! OpenAI / Azure OpenAI Realtime: the model's side of a call. No audio logic here: the
//! audio itself is Opus RTP relayed by the media engine over WebRTC.
//!
//! What flows through:
//!
//! 1. [`persona`] renders the instructions for this caller (name, local time, time zone) from
//!    the built-in or the operator's persona; [`session`] wraps them, with the voice, turn
//!    detection, transcription and the tools, into the GA session object.
//! 2. [`client`] creates the session over HTTP: an ephemeral key bound to that session, then
//!    the SDP exchange (our offer → the model's answer and call id). OpenAI and Azure differ
//!    only in base URL and auth header.
//! 3. Once the WebRTC connection is up, JSON events flow on the `oai-events` data channel:
//!    [`protocol`] types them both ways. The call code sends the greeting
//!    ([`persona::CallPrompt::greeting`]) when media flows, answers every tool call with a
//!    `function_call_output`, and reads transcripts and usage from the server events.
//!
//! [`model`] is the seam the call code sees: a provider-neutral [`model::VoiceModel`]
//! (open a session for an SDP offer; encode commands; decode events), which
//! [`model::OpenAiRealtime`] implements with the pieces above. Another provider implements it
//! without touching the call engine or the call task.

pub mod client;
pub mod model;
pub mod persona;
pub mod protocol;
pub mod session;

pub use client::{EphemeralKey, Provider, RealtimeCall, RealtimeClient, RealtimeError};
pub use persona::{CallPrompt, Caller, Persona, ReminderContext};
pub use protocol::{ClientEvent, ServerEvent};
pub use session::{FunctionTool, Session};
