//! The assistant's tools: one registry that voice calls and text chat share.
//!
//! # What flows through
//! 1. The caller (the realtime session of a call, or the text chat) sends the model
//!    [`ToolRegistry::definitions`], mapped into its provider's wire shape.
//! 2. The model answers with a function call: a tool name and its arguments as JSON text.
//! 3. The caller runs [`ToolRegistry::invoke`] with a [`ToolContext`] naming the person it is
//!    talking to. The tool parses its arguments into typed values, acts on that person's rows
//!    only (the store filters every query by user), and returns a [`ToolResult`].
//! 4. The caller sends [`ToolResult::output`] back as the function call's output (always
//!    JSON the model can read and say, also for bad arguments, unknown tools, timeouts and
//!    database errors), records [`ToolResult::outcome`], and carries out any
//!    [`ToolEffect`] (hang up, refresh the user).
//!
//! Tools run on their own task with a timeout, so a slow database never stalls a call's event
//! loop for longer than the timeout; [`ToolRegistry::filler`] is a line the voice agent may say
//! meanwhile.
//!
//! # Layout
//! - `registry`: [`ToolRegistry`], the context, the results and the `Tool` trait.
//! - `schema`: JSON Schemas generated from the argument types.
//! - `tools`: the tools, one file per kind of row.
//! - [`when`]: local times, time zones, DST and recurrence rules (shared with the reminder
//!   scheduler).

mod registry;
mod schema;
mod tools;
pub mod when;

#[cfg(test)]
mod tests;

pub use registry::{
    ToolContext, ToolDefinition, ToolEffect, ToolOutcome, ToolRegistry, ToolRegistryBuilder,
    ToolResult, DEFAULT_TIMEOUT,
};
