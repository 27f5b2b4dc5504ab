//! whatsapp-bridge: an AI assistant on a WhatsApp Business number.
//!
//! # Layout
//! The modules follow the data flow:
//!
//! - [`config`]: settings from the environment, `.env`, a TOML file and `*_FILE` secrets, read
//!   once into typed values.
//! - [`http`]: the HTTP surface (webhooks, health, readiness, metrics) and its one error
//!   mapping.
//! - [`whatsapp`]: Meta's side: webhook signatures and payloads (wire structs → domain), and
//!   the Graph API client.
//! - [`media`]: the UDP socket and the task that drives the call engine (`call-core`).
//! - [`assistant`]: the tools the AI calls (tasks, reminders, notes, settings), shared by
//!   voice and chat.
//! - [`domain`]: the types everything else speaks (ids, events, statuses), parsed once at the
//!   edge.
//! - [`events`]: verified webhooks stored once, then routed by kind to their handlers.
//! - [`calls`]: WhatsApp calls: signalling, Graph API and media put together, one task per
//!   call.
//! - [`realtime`]: OpenAI / Azure OpenAI Realtime: the session object and persona, session
//!   creation over HTTP (ephemeral key, SDP exchange), and the typed events of the
//!   `oai-events` data channel.
//! - [`store`]: SQLite or Postgres behind one interface, every row scoped by user.
//! - [`scheduler`]: jobs on a clock (retention; reminders next).
//! - [`telemetry`]: logs and metrics.
//! - [`app`]: wires it together; [`app::App`] is what `main` and the tests run.
//!
//! The sans-IO call core lives in the `call-core` crate.
#![forbid(unsafe_code)]

pub mod app;
pub mod assistant;
pub mod calls;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod media;
pub mod realtime;
pub mod scheduler;
pub mod store;
pub mod telemetry;
mod upstream;
pub mod whatsapp;

pub use app::App;
