//! The person's settings (time zone, language) and the time where they are.

use chrono::Datelike;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::args::{Language, TimeZone};
use crate::assistant::registry::{Invocation, Reply, Tool, ToolEffect, ToolError};
use crate::assistant::when;
use crate::store::UserSettings;

/// Reads the person's settings: their time zone (used for every time you hear and give) and
/// their language.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GetSettings {}

impl Tool for GetSettings {
    const NAME: &'static str = "get_settings";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let user = &call.ctx.user;
        Ok(Reply::ok(json!({
            "time_zone": call.zone.name(),
            "time_zone_set_by_person": user.time_zone.is_some(),
            "language": user.language,
            "name": user.name,
        })))
    }
}

/// Changes the person's settings: their time zone (e.g. when they say where they live or that
/// they moved) and/or their language. Reminders already set keep the zone they were set in.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateSettings {
    /// The IANA time zone name, e.g. "Europe/Berlin", "America/New_York", "Asia/Kolkata".
    #[serde(default)]
    time_zone: Option<TimeZone>,
    /// The language to speak, as a two-letter ISO 639-1 code, e.g. "en", "de", "es".
    #[serde(default)]
    language: Option<Language>,
}

impl Tool for UpdateSettings {
    const NAME: &'static str = "update_settings";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        if self.time_zone.is_none() && self.language.is_none() {
            return Err(ToolError::BadArguments(
                "nothing to change; give time_zone, language or both".to_owned(),
            ));
        }
        let ctx = &call.ctx;
        let user = ctx
            .store
            .update_user_settings(
                ctx.user.id,
                &UserSettings {
                    time_zone: self.time_zone.map(|zone| zone.0.name().to_owned()),
                    language: self.language.map(Language::into_inner),
                },
                call.now,
            )
            .await?;
        Ok(Reply::ok(json!({
            "time_zone": user.time_zone,
            "language": user.language,
        }))
        .with_effect(ToolEffect::UserUpdated(Box::new(user))))
    }
}

/// Tells the current date and time where the person is. Use it before working out dates like
/// "tomorrow" or "next Friday".
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CurrentTime {}

impl Tool for CurrentTime {
    const NAME: &'static str = "current_time";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let local = when::to_local(call.zone, call.now);
        Ok(Reply::ok(json!({
            "local_time": when::format_local_time(local),
            "weekday": when::weekday_name(local.weekday()),
            "time_zone": call.zone.name(),
            "utc": call.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })))
    }
}
