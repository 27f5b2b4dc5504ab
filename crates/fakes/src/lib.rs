//! Test doubles for whatsapp-bridge that speak the real protocols, shared by the crates'
//! tests: the clouds we talk to cannot be reached from test machines, so their sides are
//! played by real HTTP servers and real WebRTC peers on loopback.
//!
//! - [`whatsapp_peer`]: WhatsApp's media server (ice-lite, WhatsApp's SDP shape, Opus).
//! - [`realtime_peer`]: OpenAI's realtime WebRTC endpoint (audio + the `oai-events` channel).
//! - [`graph`]: the Graph API's `calls` endpoint.
//! - [`realtime`]: OpenAI's / Azure OpenAI's Realtime REST API (ephemeral keys, SDP exchange).
//! - [`webhook`]: Meta's webhook envelope and signature.
//!
//! And [`proc`], the `/proc` reader the load generator and the benchmarks share.
// Test code: the events and variants not named are the ones a test does not look at.
#![allow(clippy::wildcard_enum_match_arm)]

pub mod graph;
pub mod proc;
pub mod realtime;
pub mod realtime_peer;
pub mod webhook;
pub mod whatsapp_peer;
