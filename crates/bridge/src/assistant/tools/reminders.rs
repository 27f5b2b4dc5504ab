//! Reminders: the assistant calls (or messages) the person at a local time, once or on repeat.
//!
//! A reminder keeps the zone and wall-clock time it was asked in, and its repeat rule; the
//! next occurrence in UTC comes from [`crate::assistant::when`], which the scheduler uses too.

use chrono::{NaiveDateTime, TimeDelta};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::args::{Id, LocalTime, Text};
use crate::assistant::registry::{Invocation, Reply, Tool, ToolError};
use crate::assistant::when::{
    self, next_occurrence, Recurrence, RecurrenceRule, Schedule, Tz, WhenError,
};
use crate::domain::ReminderStatus;
use crate::store::{NewReminder, Reminder, ReminderFilter, ReminderSchedule, StoreError};

/// At most this many reminders go into one list output.
const LIST_LIMIT: usize = 50;
/// Snoozing puts a reminder off by this much when the person gives no length.
const DEFAULT_SNOOZE_MINUTES: u32 = 10;
/// And by at most this much (a day); later is a reschedule.
const MAX_SNOOZE_MINUTES: u32 = 24 * 60;

/// Sets a reminder: at the given local time the assistant calls the person (or messages them)
/// about it, once or on repeat. Use it for anything the person wants to be reminded of at a
/// time.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddReminder {
    /// What to remind the person of, in a few words, e.g. "Call the dentist".
    text: Text<500>,
    /// When, in the person's local time, "YYYY-MM-DD HH:MM" (24-hour clock). Must be in the
    /// future; for a repeat, the first time.
    local_time: LocalTime,
    /// How often it repeats; none (once) when the person did not ask for a repeat.
    #[serde(default)]
    recurrence: Option<Recurrence>,
}

impl Tool for AddReminder {
    const NAME: &'static str = "add_reminder";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let local = self.local_time.0;
        let rule = self
            .recurrence
            .unwrap_or(Recurrence::None)
            .rule(local.date());
        let schedule = Schedule::plan(call.zone, local, rule, call.now).map_err(bad_time)?;
        let ctx = &call.ctx;
        let reminder = ctx
            .store
            .add_reminder(
                ctx.user.id,
                &NewReminder {
                    text: self.text.into_inner(),
                    time_zone: call.zone.name().to_owned(),
                    local_time: when::format_local_time(schedule.local_time),
                    recurrence: schedule.rule.map(|rule| rule.to_string()),
                    next_due_at: schedule.first,
                    source: ctx.source,
                },
                call.now,
            )
            .await?;
        Ok(Reply::ok(json!({
            "reminder": view(call, &reminder),
            "time_zone": call.zone.name(),
        })))
    }
}

/// Lists the person's reminders, soonest first, with times in their local time. Without a
/// status it lists the upcoming ones.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListReminders {
    /// Only reminders with this status. Leave out for upcoming reminders (scheduled or being
    /// delivered).
    #[serde(default)]
    status: Option<ReminderStatus>,
}

impl Tool for ListReminders {
    const NAME: &'static str = "list_reminders";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let ctx = &call.ctx;
        let reminders = ctx
            .store
            .list_reminders(
                ctx.user.id,
                &ReminderFilter {
                    status: self.status,
                },
            )
            .await?;
        let shown: Vec<Value> = reminders
            .iter()
            .filter(|reminder| self.status.is_some() || is_open(reminder.status))
            .map(|reminder| view(call, reminder))
            .collect();
        let total = shown.len();
        Ok(Reply::ok(json!({
            "count": total,
            "reminders": shown.into_iter().take(LIST_LIMIT).collect::<Vec<_>>(),
            "truncated": total > LIST_LIMIT,
            "time_zone": call.zone.name(),
        })))
    }
}

/// Cancels one of the person's reminders, with all its repeats.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelReminder {
    /// The reminder's id, from list_reminders or add_reminder.
    reminder_id: Id,
}

impl Tool for CancelReminder {
    const NAME: &'static str = "cancel_reminder";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let ctx = &call.ctx;
        let reminder = ctx
            .store
            .cancel_reminder(ctx.user.id, self.reminder_id.0, call.now)
            .await
            .map_err(|e| reminder_error(e, self.reminder_id, "cancelled"))?;
        Ok(Reply::ok(json!({ "reminder": view(call, &reminder) })))
    }
}

/// Puts a reminder off: it comes back the given number of minutes from now. Its usual time
/// and repeats stay as they are. To move it to another time of day, use reschedule_reminder.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnoozeReminder {
    /// The reminder's id, from list_reminders or add_reminder.
    reminder_id: Id,
    /// How many minutes from now it should come back: 1 to 1440; 10 when the person did not
    /// say.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1440))]
    minutes: Option<u32>,
}

impl Tool for SnoozeReminder {
    const NAME: &'static str = "snooze_reminder";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let minutes = self.minutes.unwrap_or(DEFAULT_SNOOZE_MINUTES);
        if !(1..=MAX_SNOOZE_MINUTES).contains(&minutes) {
            return Err(ToolError::BadArguments(format!(
                "minutes must be 1 to {MAX_SNOOZE_MINUTES}, not {minutes}; for a later day use reschedule_reminder"
            )));
        }
        let until = call.now + TimeDelta::minutes(i64::from(minutes));
        let ctx = &call.ctx;
        let reminder = ctx
            .store
            .snooze_reminder(ctx.user.id, self.reminder_id.0, until, call.now)
            .await
            .map_err(|e| reminder_error(e, self.reminder_id, "snoozed"))?;
        Ok(Reply::ok(json!({
            "reminder": view(call, &reminder),
            "snoozed_minutes": minutes,
        })))
    }
}

/// Moves one of the person's reminders to a new local time (for a repeating reminder, the new
/// first time; its repeats follow from it). A finished or cancelled reminder is set again.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RescheduleReminder {
    /// The reminder's id, from list_reminders or add_reminder.
    reminder_id: Id,
    /// The new time, in the person's local time, "YYYY-MM-DD HH:MM" (24-hour clock). Must be
    /// in the future.
    local_time: LocalTime,
    /// A new repeat; leave out to keep the current one.
    #[serde(default)]
    recurrence: Option<Recurrence>,
}

impl Tool for RescheduleReminder {
    const NAME: &'static str = "reschedule_reminder";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let ctx = &call.ctx;
        let current = ctx
            .store
            .reminder(ctx.user.id, self.reminder_id.0)
            .await?
            .ok_or_else(|| not_found(self.reminder_id))?;
        let local = self.local_time.0;
        let rule = match self.recurrence {
            Some(word) => word.rule(local.date()),
            None => match stored_rule(&current)? {
                None => None,
                // Our own words are rewritten for the new date ("weekly" moves to the new
                // weekday); a rule set elsewhere is kept as it is.
                Some(rule) => {
                    let (_, anchor) = stored_time(&current)?;
                    match Recurrence::of_rule(&rule, anchor.date()) {
                        Some(word) => word.rule(local.date()),
                        None => Some(rule),
                    }
                }
            },
        };
        let schedule = Schedule::plan(call.zone, local, rule, call.now).map_err(bad_time)?;
        let reminder = ctx
            .store
            .reschedule_reminder(
                ctx.user.id,
                self.reminder_id.0,
                &ReminderSchedule {
                    time_zone: call.zone.name().to_owned(),
                    local_time: when::format_local_time(schedule.local_time),
                    recurrence: schedule.rule.map(|rule| rule.to_string()),
                    next_due_at: schedule.first,
                },
                call.now,
            )
            .await
            .map_err(|e| reminder_error(e, self.reminder_id, "rescheduled"))?;
        Ok(Reply::ok(json!({
            "reminder": view(call, &reminder),
            "time_zone": call.zone.name(),
        })))
    }
}

/// Marks a reminder done. A one-time reminder is finished; a repeating one is done for this
/// time and comes back at its next occurrence.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteReminder {
    /// The reminder's id, from list_reminders or add_reminder.
    reminder_id: Id,
}

impl Tool for CompleteReminder {
    const NAME: &'static str = "complete_reminder";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let ctx = &call.ctx;
        let current = ctx
            .store
            .reminder(ctx.user.id, self.reminder_id.0)
            .await?
            .ok_or_else(|| not_found(self.reminder_id))?;
        if !is_open(current.status) {
            return Err(not_open(self.reminder_id, "completed"));
        }
        let next = match stored_rule(&current)? {
            None => None,
            Some(rule) => {
                let (zone, local) = stored_time(&current)?;
                // The occurrence being completed is the pending one (it may still be ahead):
                // the next is after it, and after now.
                let after = current
                    .next_due_at
                    .map_or(call.now, |due| due.max(call.now));
                next_occurrence(&rule, zone, local, after)
            }
        };
        let reminder = ctx
            .store
            .complete_reminder(ctx.user.id, self.reminder_id.0, next, call.now)
            .await
            .map_err(|e| reminder_error(e, self.reminder_id, "completed"))?;
        let done = if reminder.status == ReminderStatus::Completed {
            "finished"
        } else {
            "done for this time; it repeats"
        };
        Ok(Reply::ok(json!({
            "reminder": view(call, &reminder),
            "done": done,
        })))
    }
}

fn is_open(status: ReminderStatus) -> bool {
    match status {
        ReminderStatus::Scheduled | ReminderStatus::Delivering => true,
        ReminderStatus::Completed | ReminderStatus::Cancelled | ReminderStatus::Failed => false,
    }
}

fn bad_time(error: WhenError) -> ToolError {
    ToolError::BadArguments(error.to_string())
}

/// Says what went wrong with reminder `id`: not this user's, or not open for `action`.
fn reminder_error(error: StoreError, id: Id, action: &str) -> ToolError {
    match error {
        StoreError::NotFound => not_found(id),
        StoreError::Conflict(_) => not_open(id, action),
        other @ (StoreError::Corrupt(_) | StoreError::Database(_) | StoreError::Migrate(_)) => {
            other.into()
        }
    }
}

fn not_found(id: Id) -> ToolError {
    ToolError::NotFound(format!(
        "There is no reminder with id {} for this person. Call list_reminders to find the right id.",
        id.0
    ))
}

fn not_open(id: Id, action: &str) -> ToolError {
    ToolError::Refused(format!(
        "Reminder {} is already completed, cancelled or failed, so it cannot be {action}. \
         To set it again, use reschedule_reminder.",
        id.0
    ))
}

/// A stored reminder's repeat rule.
fn stored_rule(reminder: &Reminder) -> Result<Option<RecurrenceRule>, ToolError> {
    reminder
        .recurrence
        .as_deref()
        .map(RecurrenceRule::parse)
        .transpose()
        .map_err(|e| corrupt(reminder, e))
}

/// A stored reminder's zone and local time.
fn stored_time(reminder: &Reminder) -> Result<(Tz, NaiveDateTime), ToolError> {
    let zone = when::parse_time_zone(&reminder.time_zone).map_err(|e| corrupt(reminder, e))?;
    let local = when::parse_local_time(&reminder.local_time).map_err(|e| corrupt(reminder, e))?;
    Ok((zone, local))
}

fn corrupt(reminder: &Reminder, error: WhenError) -> ToolError {
    ToolError::Store(StoreError::Corrupt(format!(
        "reminder {}: {error}",
        reminder.id
    )))
}

fn view(call: &Invocation, reminder: &Reminder) -> Value {
    let zone = when::parse_time_zone(&reminder.time_zone).unwrap_or(call.zone);
    let anchor = when::parse_local_time(&reminder.local_time).map(|local| local.date());
    let repeats = match (reminder.recurrence.as_deref(), anchor) {
        (None, _) => "no".to_owned(),
        (Some(text), Ok(anchor)) => RecurrenceRule::parse(text)
            .ok()
            .and_then(|rule| Recurrence::of_rule(&rule, anchor))
            .map_or_else(|| text.to_owned(), |word| word.as_str().to_owned()),
        (Some(text), Err(_)) => text.to_owned(),
    };
    let mut view = json!({
        "id": reminder.id,
        "text": reminder.text,
        "status": reminder.status.as_str(),
        "repeats": repeats,
        "next": reminder.next_due_at.map(|next| when::describe(zone, next)),
    });
    if zone != call.zone {
        // Set while the person was elsewhere: its times are in that zone.
        view["time_zone"] = json!(zone.name());
    }
    view
}
