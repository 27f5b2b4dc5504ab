//! Tasks: a to-do list with status, priority and an optional due time.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::args::{Id, LocalTime, Text};
use crate::assistant::registry::{Invocation, Reply, Tool, ToolError};
use crate::assistant::when;
use crate::domain::{TaskPriority, TaskStatus};
use crate::store::{NewTask, StoreError, Task, TaskChanges, TaskFilter};

/// At most this many tasks go into one list output (a voice answer cannot read more).
const LIST_LIMIT: usize = 50;

/// Adds a task to the person's to-do list. Use it when they ask to remember something to do;
/// for a call or message at a set time, use add_reminder instead.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddTask {
    /// What to do, in a few words, e.g. "Buy milk".
    title: Text<200>,
    /// More detail, only if the person gave some.
    #[serde(default)]
    description: Option<Text<2000>>,
    /// How urgent it is; medium when the person did not say.
    #[serde(default)]
    priority: Option<TaskPriority>,
    /// When it is due, in the person's local time, "YYYY-MM-DD HH:MM" (24-hour clock). Leave
    /// out when there is no due time.
    #[serde(default)]
    due: Option<LocalTime>,
}

impl Tool for AddTask {
    const NAME: &'static str = "add_task";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let ctx = &call.ctx;
        let task = ctx
            .store
            .add_task(
                ctx.user.id,
                &NewTask {
                    title: self.title.into_inner(),
                    description: self.description.map(Text::into_inner),
                    priority: self.priority.unwrap_or(TaskPriority::Medium),
                    due_at: self.due.map(|due| when::to_utc(call.zone, due.0)),
                    source: ctx.source,
                },
                call.now,
            )
            .await?;
        Ok(Reply::ok(
            json!({ "task": view(call, &task), "time_zone": call.zone.name() }),
        ))
    }
}

/// Lists the person's tasks, newest first. Without a status it lists the open ones (pending
/// and in progress).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListTasks {
    /// Only tasks with this status. Leave out for the open tasks.
    #[serde(default)]
    status: Option<TaskStatus>,
}

impl Tool for ListTasks {
    const NAME: &'static str = "list_tasks";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let ctx = &call.ctx;
        let tasks = ctx
            .store
            .list_tasks(
                ctx.user.id,
                &TaskFilter {
                    status: self.status,
                },
            )
            .await?;
        let shown: Vec<Value> = tasks
            .iter()
            .filter(|task| {
                self.status.is_some()
                    || matches!(task.status, TaskStatus::Pending | TaskStatus::InProgress)
            })
            .map(|task| view(call, task))
            .collect();
        let total = shown.len();
        Ok(Reply::ok(json!({
            "count": total,
            "tasks": shown.into_iter().take(LIST_LIMIT).collect::<Vec<_>>(),
            "truncated": total > LIST_LIMIT,
            "time_zone": call.zone.name(),
        })))
    }
}

/// Changes one of the person's tasks: its status (e.g. completed), priority, title or due
/// time. Give only what changes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateTask {
    /// The task's id, from list_tasks or add_task.
    task_id: Id,
    /// The new title.
    #[serde(default)]
    title: Option<Text<200>>,
    /// The new status.
    #[serde(default)]
    status: Option<TaskStatus>,
    /// The new priority.
    #[serde(default)]
    priority: Option<TaskPriority>,
    /// The new due time, in the person's local time, "YYYY-MM-DD HH:MM" (24-hour clock).
    #[serde(default)]
    due: Option<LocalTime>,
    /// True to remove the due time.
    #[serde(default)]
    clear_due: bool,
}

impl Tool for UpdateTask {
    const NAME: &'static str = "update_task";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        if self.due.is_some() && self.clear_due {
            return Err(ToolError::BadArguments(
                "give either due or clear_due, not both".to_owned(),
            ));
        }
        let due_at = match (self.due, self.clear_due) {
            (Some(due), _) => Some(Some(when::to_utc(call.zone, due.0))),
            (None, true) => Some(None),
            (None, false) => None,
        };
        let changes = TaskChanges {
            title: self.title.map(Text::into_inner),
            status: self.status,
            priority: self.priority,
            due_at,
        };
        if changes.title.is_none()
            && changes.status.is_none()
            && changes.priority.is_none()
            && changes.due_at.is_none()
        {
            return Err(ToolError::BadArguments(
                "nothing to change; give at least one of title, status, priority, due, clear_due"
                    .to_owned(),
            ));
        }
        let ctx = &call.ctx;
        let task = ctx
            .store
            .update_task(ctx.user.id, self.task_id.0, &changes, call.now)
            .await
            .map_err(|e| not_found(e, self.task_id))?;
        Ok(Reply::ok(
            json!({ "task": view(call, &task), "time_zone": call.zone.name() }),
        ))
    }
}

/// Deletes one of the person's tasks for good. To mark a task done, use update_task with
/// status completed instead.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteTask {
    /// The task's id, from list_tasks or add_task.
    task_id: Id,
}

impl Tool for DeleteTask {
    const NAME: &'static str = "delete_task";

    async fn run(self, call: &Invocation) -> Result<Reply, ToolError> {
        let ctx = &call.ctx;
        if !ctx.store.delete_task(ctx.user.id, self.task_id.0).await? {
            return Err(not_found(StoreError::NotFound, self.task_id));
        }
        Ok(Reply::ok(json!({ "deleted_task_id": self.task_id.0 })))
    }
}

fn not_found(error: StoreError, id: Id) -> ToolError {
    match error {
        StoreError::NotFound => ToolError::NotFound(format!(
            "There is no task with id {} on this person's list. Call list_tasks to find the right id.",
            id.0
        )),
        other @ (StoreError::Conflict(_)
        | StoreError::Corrupt(_)
        | StoreError::Database(_)
        | StoreError::Migrate(_)) => other.into(),
    }
}

fn view(call: &Invocation, task: &Task) -> Value {
    let mut view = json!({
        "id": task.id,
        "title": task.title,
        "status": task.status.as_str(),
        "priority": task.priority.as_str(),
    });
    if let Some(description) = &task.description {
        view["description"] = json!(description);
    }
    if let Some(due) = task.due_at {
        view["due"] = json!(call.local(due));
    }
    view
}
