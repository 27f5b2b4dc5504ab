//! The tools, one file per kind of row, and how rows are shown to the model.
//!
//! Each tool is its argument type (see [`Tool`]): the type's doc comment is the description the
//! model reads, its fields' doc comments describe the parameters. Every tool acts on
//! `call.ctx.user`'s rows only; ids the model passes go to store methods that filter by that
//! user, so a foreign id reads as "not found".

mod args;
mod call;
mod notes;
mod reminders;
mod settings;
mod tasks;

#[cfg(test)]
use super::registry::Tool;
use super::registry::ToolRegistryBuilder;

/// Adds every tool, in the order the model sees them.
pub(super) fn register_all(builder: ToolRegistryBuilder) -> ToolRegistryBuilder {
    builder
        .tool::<tasks::AddTask>()
        .tool::<tasks::ListTasks>()
        .tool::<tasks::UpdateTask>()
        .tool::<tasks::DeleteTask>()
        .tool::<reminders::AddReminder>()
        .tool::<reminders::ListReminders>()
        .tool::<reminders::CancelReminder>()
        .tool::<reminders::SnoozeReminder>()
        .tool::<reminders::RescheduleReminder>()
        .tool::<reminders::CompleteReminder>()
        .tool::<notes::AddNote>()
        .tool::<notes::ListNotes>()
        .tool::<notes::SearchNotes>()
        .tool::<notes::DeleteNote>()
        .tool::<settings::GetSettings>()
        .tool::<settings::UpdateSettings>()
        .tool::<settings::CurrentTime>()
        .tool::<call::EndCall>()
}

/// The names of every tool, for tests.
#[cfg(test)]
pub(super) const NAMES: &[&str] = &[
    tasks::AddTask::NAME,
    tasks::ListTasks::NAME,
    tasks::UpdateTask::NAME,
    tasks::DeleteTask::NAME,
    reminders::AddReminder::NAME,
    reminders::ListReminders::NAME,
    reminders::CancelReminder::NAME,
    reminders::SnoozeReminder::NAME,
    reminders::RescheduleReminder::NAME,
    reminders::CompleteReminder::NAME,
    notes::AddNote::NAME,
    notes::ListNotes::NAME,
    notes::SearchNotes::NAME,
    notes::DeleteNote::NAME,
    settings::GetSettings::NAME,
    settings::UpdateSettings::NAME,
    settings::CurrentTime::NAME,
    call::EndCall::NAME,
];
