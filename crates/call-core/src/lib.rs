//! Sans-IO call core for whatsapp-bridge.
//!
//! This crate holds the decisions about calls that must be the same on every instance and
//! testable without a network: no tokio, no sockets, no clock reads. Time, when it matters, is
//! an input. The service crate (`bridge`) carries out what this crate decides.
//!
//! # Layout
//! - [`lifecycle`]: the call state machine driven by signalling (WhatsApp `connect`, call
//!   `statuses`, `terminate`, our own actions). Webhooks may arrive twice or out of order; the
//!   state machine decides which signals move a call forward and which are stale.
//! - [`engine`]: every call's WebRTC leg (a str0m `Rtc` in RTP mode) on one UDP socket:
//!   answering and making offers the way WhatsApp needs them, demultiplexing, the agent that
//!   answers the audio, DTMF, and the timers that end calls. Same contract as str0m: mutate
//!   with one call, then drain `poll_output` until it returns a timeout.
//! - [`agent`]: agents that live inside the engine (echo, silence).
//! - [`sdp`]: the few text changes to SDP that str0m has no setting for.
//! - [`dtmf`]: RFC 4733 key presses.
//! - [`srtp`]: the SRTP keys str0m derives, taken through its crypto provider, and RTP
//!   protection with them: the engine's optional fast paths for audio
//!   (`EngineConfig::fast_receive`, `fast_send`), and SRTCP for the reports those paths
//!   correct (`rtcp`, private: str0m's reports made true for audio it never saw).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod agent;
pub mod crypto;
pub mod dtmf;
pub mod engine;
pub mod lifecycle;
mod quality;
mod rtcp;
pub mod sdp;
pub mod srtp;

pub use agent::AgentKind;
pub use engine::{CallError, CallEvent, CallHandle, CallStats, Engine, EngineConfig, Output};
pub use lifecycle::{CallDirection, CallSignal, CallState, EndReason, Transition};
