//! Notes: things the person wants kept, found again by full-text search.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::args::{Id, Text};
use crate::assistant::registry::{Invocation, Reply, Tool, ToolError};
use crate::store::{NewNote, Note};

/// Notes listed when the model does not say how many.
const DEFAULT_LIST_LIMIT: u8 = 10;
/// The most notes one list or search returns.
const MAX_LIST_LIMIT: u8 = 50;
/// Search results returned.
const SEARCH_LIMIT: i64 = 10;

/// Saves a note for the person: something to keep and find later (a password hint, an
/// address, an idea). Store their words as they said them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddNote {
    /// The note's text.
    text: Text<4000>,
}

impl Tool for AddNote {
    const NAME: &'static str = "add_note";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let ctx = &call.ctx;
        let note = ctx
            .store
            .add_note(
                ctx.user.id,
                &NewNote {
                    body: self.text.into_inner(),
                    source: ctx.source,
                },
                call.now,
            )
            .await?;
        Ok(Reply::ok(json!({ "note": view(call, &note) })))
    }
}

/// Lists the person's most recent notes, newest first.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListNotes {
    /// How many notes to list: 1 to 50; 10 when leaving it out.
    #[serde(default)]
    #[schemars(range(min = 1, max = 50))]
    limit: Option<u8>,
}

impl Tool for ListNotes {
    const NAME: &'static str = "list_notes";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(ToolError::BadArguments(format!(
                "limit must be 1 to {MAX_LIST_LIMIT}, not {limit}"
            )));
        }
        let ctx = &call.ctx;
        let notes = ctx.store.list_notes(ctx.user.id, i64::from(limit)).await?;
        Ok(Reply::ok(json!({
            "count": notes.len(),
            "notes": notes.iter().map(|note| view(call, note)).collect::<Vec<_>>(),
            "time_zone": call.zone.name(),
        })))
    }
}

/// Searches the person's notes for words, best match first. Use the words they would have
/// used in the note, e.g. "wifi password".
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchNotes {
    /// The words to look for, in plain language.
    query: Text<200>,
}

impl Tool for SearchNotes {
    const NAME: &'static str = "search_notes";
    const FILLER: Option<&'static str> = Some("Let me look through your notes.");

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let ctx = &call.ctx;
        let notes = ctx
            .store
            .search_notes(ctx.user.id, self.query.as_str(), SEARCH_LIMIT)
            .await?;
        Ok(Reply::ok(json!({
            "count": notes.len(),
            "notes": notes.iter().map(|note| view(call, note)).collect::<Vec<_>>(),
            "query": self.query.as_str(),
        })))
    }
}

/// Deletes one of the person's notes for good.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteNote {
    /// The note's id, from list_notes, search_notes or add_note.
    note_id: Id,
}

impl Tool for DeleteNote {
    const NAME: &'static str = "delete_note";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let ctx = &call.ctx;
        if !ctx.store.delete_note(ctx.user.id, self.note_id.0).await? {
            return Err(ToolError::NotFound(format!(
                "There is no note with id {} for this person. Call list_notes or search_notes to find the right id.",
                self.note_id.0
            )));
        }
        Ok(Reply::ok(json!({ "deleted_note_id": self.note_id.0 })))
    }
}

fn view(call: &Invocation, note: &Note) -> Value {
    json!({
        "id": note.id,
        "text": note.body,
        "saved": call.local(note.created_at),
    })
}
