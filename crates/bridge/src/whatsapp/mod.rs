//! WhatsApp Cloud API: what Meta sends us (signed webhooks) and what we send Meta (the Graph
//! API).
//!
//! - [`signature`]: the `X-Hub-Signature-256` check, pure.
//! - [`webhook`]: wire structs and their conversion into [`crate::domain::InboundEvent`]s.
//! - [`client`]: the Graph API client for call actions.

pub mod client;
pub mod signature;
pub mod webhook;
