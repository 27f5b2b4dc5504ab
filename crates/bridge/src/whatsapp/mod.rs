//! WhatsApp Cloud API: what Meta sends us (signed webhooks) and, with later work, the Graph
//! API client for what we send Meta.
//!
//! - [`signature`]: the `X-Hub-Signature-256` check, pure.
//! - [`webhook`]: wire structs and their conversion into [`crate::domain::InboundEvent`]s.

pub mod signature;
pub mod webhook;
