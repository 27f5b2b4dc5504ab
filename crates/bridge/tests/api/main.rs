//! The integration tests: one binary, each module a part of the service seen from outside.
//! Every test starts the real app on port 0 with its own database and talks HTTP to it.

mod browser;
mod calls;
mod graph_client;
mod helpers;
mod operations;
mod phone;
mod postgres;
mod rate_limit;
mod realtime_client;
mod shutdown;
mod store_story;
mod voice;
mod webhook_ingest;
mod webhook_rejects;
