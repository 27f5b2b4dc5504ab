//! Ending the call.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::args::Text;
use crate::assistant::registry::{Invocation, Reply, Tool, ToolEffect, ToolError};
use crate::domain::Source;

/// Ends the phone call. Use it when the person says goodbye or asks to hang up, after your
/// goodbye.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndCall {
    /// Why the call ends, in a few words, e.g. "the person said goodbye".
    #[serde(default)]
    reason: Option<Text<200>>,
}

impl Tool for EndCall {
    const NAME: &'static str = "end_call";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        if call.ctx.call_id.is_none() && call.ctx.source != Source::Voice {
            return Err(ToolError::Refused(
                "This is a chat, not a call: there is no call to end.".to_owned(),
            ));
        }
        Ok(
            Reply::ok(json!({ "call_ending": true })).with_effect(ToolEffect::EndCall {
                reason: self.reason.map(Text::into_inner),
            }),
        )
    }
}
