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
//!
//! The media engine (one str0m `Rtc` per leg, relay policy, timers) joins this crate with the
//! call-engine work; it will follow the same contract as str0m: mutate with `handle_*`, then
//! drain `poll_output` until it returns a timeout.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod lifecycle;

pub use lifecycle::{CallDirection, CallSignal, CallState, EndReason, Transition};
