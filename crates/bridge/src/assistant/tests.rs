//! The registry against a real SQLite store: schemas, failures the model must hear about, and
//! each tool's round trip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::registry::{Invocation, Reply, Tool, ToolError};
use super::tools::NAMES;
use super::*;
use crate::clock::ManualClock;
use crate::config::{DatabaseConfig, DatabaseUrl};
use crate::domain::{Contact, Private, ReminderStatus, Source, TaskStatus, WaId};
use crate::store::{ReminderFilter, SqlStore, Store, TaskFilter, User, UserSettings};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("valid RFC 3339")
        .with_timezone(&Utc)
}

/// Thursday 2026-11-26, 19:00 in Berlin.
const START: &str = "2026-11-26T18:00:00Z";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    registry: ToolRegistry,
    /// Lives in Berlin.
    alice: User,
    /// Has no time zone set.
    bob: User,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_registry(ToolRegistry::new()).await
    }

    async fn with_registry(registry: ToolRegistry) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/tools.db", dir.path().display());
        let config = DatabaseConfig {
            url: DatabaseUrl::parse(&url).expect("sqlite url"),
            max_connections: 2,
        };
        let store = SqlStore::connect(&config).await.expect("connect");
        store.migrate().await.expect("migrate");
        let store: Arc<dyn Store> = Arc::new(store);
        let clock = Arc::new(ManualClock::new(utc(START)));
        let contact = |wa_id: &str, name: &str| Contact {
            wa_id: Some(WaId::parse(wa_id).expect("valid")),
            name: Some(Private(name.to_owned())),
            ..Contact::default()
        };
        let alice = store
            .upsert_contact(&contact("16505551234", "Alice"), utc(START))
            .await
            .expect("alice");
        let alice = store
            .update_user_settings(
                alice.id,
                &UserSettings {
                    time_zone: Some("Europe/Berlin".into()),
                    language: Some("de".into()),
                },
                utc(START),
            )
            .await
            .expect("settings");
        let bob = store
            .upsert_contact(&contact("4915112345678", "Bob"), utc(START))
            .await
            .expect("bob");
        Self {
            _dir: dir,
            store,
            clock,
            registry,
            alice,
            bob,
        }
    }

    fn ctx(&self, user: &User) -> ToolContext {
        ToolContext::new(
            self.store.clone(),
            self.clock.clone(),
            user.clone(),
            Source::Voice,
        )
        .with_call_id("call-1")
    }

    /// Invokes a tool for `user`; returns the result and its output parsed.
    async fn call(&self, user: &User, name: &str, arguments: Value) -> (ToolResult, Value) {
        self.call_raw(user, name, &arguments.to_string()).await
    }

    async fn call_raw(&self, user: &User, name: &str, arguments: &str) -> (ToolResult, Value) {
        let result = self.registry.invoke(&self.ctx(user), name, arguments).await;
        let output: Value = serde_json::from_str(&result.output).expect("output is JSON");
        assert_eq!(
            output["ok"],
            json!(result.outcome == ToolOutcome::Ok),
            "ok matches the outcome: {output}"
        );
        if result.outcome != ToolOutcome::Ok {
            assert!(
                output["error"].as_str().is_some_and(|e| !e.is_empty()),
                "a failure says why: {output}"
            );
        }
        (result, output)
    }

    /// Calls a tool that must succeed.
    async fn ok(&self, user: &User, name: &str, arguments: Value) -> Value {
        let (result, output) = self.call(user, name, arguments).await;
        assert_eq!(result.outcome, ToolOutcome::Ok, "{name}: {output}");
        output
    }
}

fn error_of(output: &Value) -> &str {
    output["error"].as_str().unwrap_or_default()
}

// --- definitions ------------------------------------------------------------------------------

/// Every `$ref`, `definitions`, `$defs` or `$schema` key anywhere in `value`.
fn forbidden_keys(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if matches!(key.as_str(), "$ref" | "definitions" | "$defs" | "$schema") {
                    found.push(format!("{path}/{key}"));
                }
                forbidden_keys(child, &format!("{path}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                forbidden_keys(child, &format!("{path}/{i}"), found);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

#[test]
fn every_tool_has_a_plain_object_schema_that_function_calling_accepts() {
    let registry = ToolRegistry::new();
    let names: Vec<&str> = registry.definitions().iter().map(|d| d.name).collect();
    assert_eq!(names, NAMES, "every tool, once, in order");
    for definition in registry.definitions() {
        let name = definition.name;
        let schema = definition.parameters.as_object().expect("an object");
        assert_eq!(schema.get("type"), Some(&json!("object")), "{name}");
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{name} has properties"));
        let required = schema
            .get("required")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{name} has required"));
        for field in required {
            let field = field.as_str().expect("names");
            assert!(
                properties.contains_key(field),
                "{name}.{field} is required but undefined"
            );
        }
        assert_eq!(
            schema.get("additionalProperties"),
            Some(&json!(false)),
            "{name} refuses unknown fields"
        );
        let mut found = Vec::new();
        forbidden_keys(&definition.parameters, name, &mut found);
        assert!(found.is_empty(), "inline, no meta-schema: {found:?}");
        assert!(
            !schema.contains_key("title") && !schema.contains_key("description"),
            "{name}: the description lives beside the schema"
        );
        assert!(
            definition.description.len() > 20,
            "{name} says what it does: {:?}",
            definition.description
        );
        for (field, property) in properties {
            assert!(
                property
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.is_empty()),
                "{name}.{field} is described for the model: {property}"
            );
            assert!(
                property.get("format").is_none(),
                "{name}.{field}: no Rust formats"
            );
            assert!(
                property.get("type").is_some_and(Value::is_string),
                "{name}.{field} has one type, not a nullable pair: {property}"
            );
        }
    }
}

#[test]
fn schemas_name_the_required_fields_and_list_enum_values() {
    let registry = ToolRegistry::new();
    let find = |name: &str| {
        registry
            .definitions()
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.parameters.clone())
            .unwrap_or_else(|| panic!("{name} is defined"))
    };
    let add_task = find("add_task");
    assert_eq!(add_task["required"], json!(["title"]));
    let priorities = add_task["properties"]["priority"]["enum"]
        .as_array()
        .expect("an enum");
    for value in ["low", "medium", "high", "urgent"] {
        assert!(priorities.contains(&json!(value)), "{value}");
    }
    let add_reminder = find("add_reminder");
    assert_eq!(add_reminder["required"], json!(["text", "local_time"]));
    let repeats = add_reminder["properties"]["recurrence"]["enum"]
        .as_array()
        .expect("an enum");
    for value in ["none", "daily", "weekdays", "weekly", "monthly", "yearly"] {
        assert!(repeats.contains(&json!(value)), "{value}");
    }
    assert_eq!(find("search_notes")["required"], json!(["query"]));
    assert_eq!(find("current_time")["properties"], json!({}));
    let wire = serde_json::to_value(&registry.definitions()[0]).expect("serialises");
    assert_eq!(wire["name"], json!("add_task"));
    assert!(wire["description"].is_string() && wire["parameters"].is_object());
}

#[test]
fn slow_tools_have_a_filler_line() {
    let registry = ToolRegistry::new();
    assert_eq!(
        registry.filler("search_notes"),
        Some("Let me look through your notes.")
    );
    assert_eq!(registry.filler("add_task"), None);
    assert_eq!(registry.filler("no_such_tool"), None);
    assert_eq!(registry.timeout(), DEFAULT_TIMEOUT);
}

// --- failures the model hears about -----------------------------------------------------------

#[tokio::test]
async fn bad_json_unknown_fields_and_wrong_types_are_bad_arguments_with_the_reason() {
    let f = Fixture::new().await;
    let (result, output) = f.call_raw(&f.alice, "add_task", "{\"title\": ").await;
    assert_eq!(result.outcome, ToolOutcome::BadArguments);
    assert!(error_of(&output).contains("add_task"), "{output}");

    let (result, output) = f
        .call(
            &f.alice,
            "add_task",
            json!({"title": "Milk", "colour": "red"}),
        )
        .await;
    assert_eq!(result.outcome, ToolOutcome::BadArguments);
    assert!(
        error_of(&output).contains("unknown field `colour`"),
        "{output}"
    );

    let (result, output) = f.call(&f.alice, "add_task", json!({"title": 42})).await;
    assert_eq!(result.outcome, ToolOutcome::BadArguments);
    assert!(error_of(&output).contains("invalid type"), "{output}");

    let (result, output) = f
        .call(
            &f.alice,
            "add_task",
            json!({"title": "Milk", "priority": "asap"}),
        )
        .await;
    assert_eq!(result.outcome, ToolOutcome::BadArguments);
    assert!(
        error_of(&output).contains("urgent"),
        "lists the values: {output}"
    );

    let (result, _) = f.call(&f.alice, "add_task", json!({})).await;
    assert_eq!(
        result.outcome,
        ToolOutcome::BadArguments,
        "title is required"
    );

    let (result, output) = f
        .call(
            &f.alice,
            "add_reminder",
            json!({"text": "x", "local_time": "tomorrow 8am"}),
        )
        .await;
    assert_eq!(result.outcome, ToolOutcome::BadArguments);
    assert!(error_of(&output).contains("YYYY-MM-DD HH:MM"), "{output}");

    assert!(
        f.store
            .list_tasks(f.alice.id, &TaskFilter::default())
            .await
            .expect("list")
            .is_empty(),
        "nothing was written"
    );
    // Models send "" for tools without parameters.
    let (result, _) = f.call_raw(&f.alice, "current_time", "").await;
    assert_eq!(result.outcome, ToolOutcome::Ok);
}

#[tokio::test]
async fn an_unknown_tool_lists_the_tools_there_are() {
    let f = Fixture::new().await;
    let (result, output) = f.call(&f.alice, "order_pizza", json!({})).await;
    assert_eq!(result.outcome, ToolOutcome::UnknownTool);
    let error = error_of(&output);
    assert!(error.contains("order_pizza"), "{error}");
    for name in NAMES {
        assert!(error.contains(name), "{name} in {error}");
    }
}

/// Never finishes; records when its task is dropped.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Stall {}

static STALL_DROPPED: AtomicBool = AtomicBool::new(false);

struct SetOnDrop(&'static AtomicBool);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Tool for Stall {
    const NAME: &'static str = "stall";

    async fn run(self, _: &Invocation) -> Result<Reply, ToolError> {
        let _guard = SetOnDrop(&STALL_DROPPED);
        std::future::pending::<()>().await;
        Ok(Reply::ok(json!({})))
    }
}

/// Panics.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Explode {}

impl Tool for Explode {
    const NAME: &'static str = "explode";

    async fn run(self, _: &Invocation) -> Result<Reply, ToolError> {
        panic!("a bug in a tool")
    }
}

#[tokio::test]
async fn a_tool_past_its_timeout_is_stopped_and_the_model_is_told() {
    let registry = ToolRegistry::builder()
        .timeout(Duration::from_millis(50))
        .tool::<Stall>()
        .build();
    let f = Fixture::with_registry(registry).await;

    let (result, output) = f.call(&f.alice, "stall", json!({})).await;
    assert_eq!(result.outcome, ToolOutcome::TimedOut);
    assert!(error_of(&output).contains("took too long"), "{output}");
    // The task is aborted, not left running.
    for _ in 0..200 {
        if STALL_DROPPED.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        STALL_DROPPED.load(Ordering::SeqCst),
        "the stalled tool was stopped"
    );
}

#[tokio::test]
async fn a_tool_that_panics_fails_with_a_sentence_the_model_can_say() {
    let f = Fixture::new().await;
    let registry = ToolRegistry::builder().tool::<Explode>().build();
    let result = registry.invoke(&f.ctx(&f.alice), "explode", "{}").await;
    assert_eq!(result.outcome, ToolOutcome::Failed);
    let output: Value = serde_json::from_str(&result.output).expect("JSON");
    assert_eq!(output["ok"], json!(false));
    assert!(error_of(&output).contains("went wrong"), "{output}");
    assert!(!error_of(&output).contains("bug"), "no internals: {output}");
}

#[tokio::test]
async fn invoke_can_run_on_a_task_of_its_own() {
    let f = Fixture::new().await;
    let registry = f.registry.clone();
    let ctx = f.ctx(&f.alice);
    let result = tokio::spawn(async move { registry.invoke(&ctx, "current_time", "{}").await })
        .await
        .expect("joined");
    assert_eq!(result.outcome, ToolOutcome::Ok);
}

#[tokio::test]
async fn another_users_ids_are_not_found_and_change_nothing() {
    let f = Fixture::new().await;
    let task = f
        .ok(&f.alice, "add_task", json!({"title": "Alice's task"}))
        .await;
    let task_id = task["task"]["id"].clone();
    let reminder = f
        .ok(
            &f.alice,
            "add_reminder",
            json!({"text": "Alice's reminder", "local_time": "2026-11-27 08:00", "recurrence": "daily"}),
        )
        .await;
    let reminder_id = reminder["reminder"]["id"].clone();
    let note = f
        .ok(&f.alice, "add_note", json!({"text": "Alice's secret"}))
        .await;
    let note_id = note["note"]["id"].clone();

    for (name, arguments) in [
        (
            "update_task",
            json!({"task_id": task_id, "status": "completed"}),
        ),
        ("delete_task", json!({"task_id": task_id})),
        ("cancel_reminder", json!({"reminder_id": reminder_id})),
        ("snooze_reminder", json!({"reminder_id": reminder_id})),
        (
            "reschedule_reminder",
            json!({"reminder_id": reminder_id, "local_time": "2026-12-01 09:00"}),
        ),
        ("complete_reminder", json!({"reminder_id": reminder_id})),
        ("delete_note", json!({"note_id": note_id})),
        ("delete_note", json!({"note_id": 999_999})),
    ] {
        let (result, output) = f.call(&f.bob, name, arguments).await;
        assert_eq!(result.outcome, ToolOutcome::NotFound, "{name}: {output}");
        assert!(error_of(&output).contains("no "), "{name}: {output}");
    }
    let listed = f
        .ok(&f.bob, "search_notes", json!({"query": "secret"}))
        .await;
    assert_eq!(listed["count"], json!(0), "Bob does not find Alice's note");

    let tasks = f
        .store
        .list_tasks(f.alice.id, &TaskFilter::default())
        .await
        .expect("list");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].status, TaskStatus::Pending);
    let reminders = f
        .store
        .list_reminders(f.alice.id, &ReminderFilter::default())
        .await
        .expect("list");
    assert_eq!(reminders.len(), 1);
    assert_eq!(reminders[0].status, ReminderStatus::Scheduled);
    assert_eq!(reminders[0].local_time, "2026-11-27 08:00");
    assert_eq!(reminders[0].next_due_at, Some(utc("2026-11-27T07:00:00Z")));
    assert_eq!(
        f.store
            .list_notes(f.alice.id, 10)
            .await
            .expect("list")
            .len(),
        1
    );
}

// --- round trips ------------------------------------------------------------------------------

#[tokio::test]
async fn tasks_round_trip_with_due_times_in_local_time() {
    let f = Fixture::new().await;
    let added = f
        .ok(
            &f.alice,
            "add_task",
            json!({"title": " Buy milk ", "priority": "high", "due": "2026-11-27 18:30"}),
        )
        .await;
    assert_eq!(added["task"]["title"], json!("Buy milk"));
    assert_eq!(added["task"]["due"], json!("2026-11-27 18:30 (Friday)"));
    assert_eq!(added["time_zone"], json!("Europe/Berlin"));
    let id = added["task"]["id"].as_i64().expect("id");
    let stored = f
        .store
        .list_tasks(f.alice.id, &TaskFilter::default())
        .await
        .expect("list");
    assert_eq!(stored[0].due_at, Some(utc("2026-11-27T17:30:00Z")));
    assert_eq!(stored[0].source, Source::Voice);
    f.ok(&f.alice, "add_task", json!({"title": "File taxes"}))
        .await;

    let (result, _) = f
        .call(&f.alice, "update_task", json!({"task_id": id}))
        .await;
    assert_eq!(
        result.outcome,
        ToolOutcome::BadArguments,
        "nothing to change"
    );
    let updated = f
        .ok(
            &f.alice,
            "update_task",
            json!({"task_id": id.to_string(), "status": "completed", "clear_due": true, "title": null}),
        )
        .await;
    assert_eq!(updated["task"]["status"], json!("completed"));
    assert!(updated["task"].get("due").is_none(), "due cleared");

    let open = f.ok(&f.alice, "list_tasks", json!({})).await;
    assert_eq!(open["count"], json!(1), "open tasks only: {open}");
    assert_eq!(open["tasks"][0]["title"], json!("File taxes"));
    let done = f
        .ok(&f.alice, "list_tasks", json!({"status": "completed"}))
        .await;
    assert_eq!(done["tasks"][0]["id"], json!(id));

    let deleted = f.ok(&f.alice, "delete_task", json!({"task_id": id})).await;
    assert_eq!(deleted["deleted_task_id"], json!(id));
    let (again, _) = f
        .call(&f.alice, "delete_task", json!({"task_id": id}))
        .await;
    assert_eq!(again.outcome, ToolOutcome::NotFound);
}

#[tokio::test]
async fn reminders_round_trip_in_the_users_local_time() {
    let f = Fixture::new().await;
    let (past, output) = f
        .call(
            &f.alice,
            "add_reminder",
            json!({"text": "Too late", "local_time": "2026-11-26 18:30"}),
        )
        .await;
    assert_eq!(past.outcome, ToolOutcome::BadArguments);
    assert!(error_of(&output).contains("already passed"), "{output}");
    assert!(
        error_of(&output).contains("19:00"),
        "says the time now: {output}"
    );

    let daily = f
        .ok(
            &f.alice,
            "add_reminder",
            json!({"text": "Take vitamins", "local_time": "2026-11-27 08:00", "recurrence": "daily"}),
        )
        .await;
    assert_eq!(
        daily["reminder"]["next"],
        json!("2026-11-27 08:00 (Friday)")
    );
    assert_eq!(daily["reminder"]["repeats"], json!("daily"));
    assert_eq!(daily["time_zone"], json!("Europe/Berlin"));
    let daily_id = daily["reminder"]["id"].as_i64().expect("id");
    let once = f
        .ok(
            &f.alice,
            "add_reminder",
            json!({"text": "Call the dentist", "local_time": "2026-11-26T19:45"}),
        )
        .await;
    let once_id = once["reminder"]["id"].as_i64().expect("id");
    let row = f
        .store
        .reminder(f.alice.id, daily_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(row.time_zone, "Europe/Berlin");
    assert_eq!(row.recurrence.as_deref(), Some("FREQ=DAILY"));
    assert_eq!(row.next_due_at, Some(utc("2026-11-27T07:00:00Z")));

    let listed = f.ok(&f.alice, "list_reminders", json!({})).await;
    assert_eq!(listed["time_zone"], json!("Europe/Berlin"));
    let texts: Vec<&str> = listed["reminders"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["text"].as_str())
        .collect();
    assert_eq!(
        texts,
        ["Call the dentist", "Take vitamins"],
        "soonest first"
    );
    assert_eq!(
        listed["reminders"][0]["next"],
        json!("2026-11-26 19:45 (Thursday)")
    );

    // Snooze moves the next ring, not the time it was set for.
    let snoozed = f
        .ok(
            &f.alice,
            "snooze_reminder",
            json!({"reminder_id": daily_id}),
        )
        .await;
    assert_eq!(snoozed["snoozed_minutes"], json!(10));
    assert_eq!(
        snoozed["reminder"]["next"],
        json!("2026-11-26 19:10 (Thursday)")
    );
    let row = f
        .store
        .reminder(f.alice.id, daily_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(row.local_time, "2026-11-27 08:00");
    let (too_long, _) = f
        .call(
            &f.alice,
            "snooze_reminder",
            json!({"reminder_id": daily_id, "minutes": 5000}),
        )
        .await;
    assert_eq!(too_long.outcome, ToolOutcome::BadArguments);

    // Completing a repeating reminder moves it to its next occurrence after the pending one.
    f.clock.set(utc("2026-11-26T18:12:00Z"));
    let completed = f
        .ok(
            &f.alice,
            "complete_reminder",
            json!({"reminder_id": daily_id}),
        )
        .await;
    assert_eq!(completed["reminder"]["status"], json!("scheduled"));
    assert_eq!(
        completed["reminder"]["next"],
        json!("2026-11-27 08:00 (Friday)")
    );
    let completed = f
        .ok(
            &f.alice,
            "complete_reminder",
            json!({"reminder_id": daily_id}),
        )
        .await;
    assert_eq!(
        completed["reminder"]["next"],
        json!("2026-11-28 08:00 (Saturday)"),
        "the pending occurrence is done, so the next is the day after"
    );

    // Rescheduling a weekly reminder moves it to the new weekday.
    let weekly = f
        .ok(
            &f.alice,
            "add_reminder",
            json!({"text": "Bins out", "local_time": "2026-11-27 20:00", "recurrence": "weekly"}),
        )
        .await;
    let weekly_id = weekly["reminder"]["id"].as_i64().expect("id");
    let moved = f
        .ok(
            &f.alice,
            "reschedule_reminder",
            json!({"reminder_id": weekly_id, "local_time": "2026-12-01 07:30"}),
        )
        .await;
    assert_eq!(
        moved["reminder"]["next"],
        json!("2026-12-01 07:30 (Tuesday)")
    );
    assert_eq!(moved["reminder"]["repeats"], json!("weekly"));
    let row = f
        .store
        .reminder(f.alice.id, weekly_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(row.recurrence.as_deref(), Some("FREQ=WEEKLY;BYDAY=TU"));
    assert_eq!(row.local_time, "2026-12-01 07:30");

    // A one-time reminder completes for good; then it is closed to snoozing and cancelling.
    let done = f
        .ok(
            &f.alice,
            "complete_reminder",
            json!({"reminder_id": once_id}),
        )
        .await;
    assert_eq!(done["reminder"]["status"], json!("completed"));
    assert_eq!(done["reminder"]["next"], Value::Null);
    for name in ["complete_reminder", "snooze_reminder", "cancel_reminder"] {
        let (result, output) = f
            .call(&f.alice, name, json!({"reminder_id": once_id}))
            .await;
        assert_eq!(result.outcome, ToolOutcome::Refused, "{name}: {output}");
        assert!(
            error_of(&output).contains("reschedule_reminder"),
            "{output}"
        );
    }
    // ...but it can be set again.
    let revived = f
        .ok(
            &f.alice,
            "reschedule_reminder",
            json!({"reminder_id": once_id, "local_time": "2026-11-28 10:00"}),
        )
        .await;
    assert_eq!(revived["reminder"]["status"], json!("scheduled"));

    let cancelled = f
        .ok(
            &f.alice,
            "cancel_reminder",
            json!({"reminder_id": daily_id}),
        )
        .await;
    assert_eq!(cancelled["reminder"]["status"], json!("cancelled"));
    let upcoming = f.ok(&f.alice, "list_reminders", json!({})).await;
    assert_eq!(upcoming["count"], json!(2), "{upcoming}");
    let gone = f
        .ok(&f.alice, "list_reminders", json!({"status": "cancelled"}))
        .await;
    assert_eq!(gone["reminders"][0]["id"], json!(daily_id));
}

#[tokio::test]
async fn a_reminder_in_the_spring_gap_rings_when_the_clocks_have_jumped() {
    let f = Fixture::new().await;
    let added = f
        .ok(
            &f.alice,
            "add_reminder",
            json!({"text": "Night shift", "local_time": "2027-03-28 02:30"}),
        )
        .await;
    assert_eq!(
        added["reminder"]["next"],
        json!("2027-03-28 03:00 (Sunday)")
    );
}

#[tokio::test]
async fn users_without_a_zone_get_the_registry_default() {
    let registry = ToolRegistry::builder()
        .default_time_zone(when::Tz::America__New_York)
        .build();
    let f = Fixture::with_registry(registry).await;
    let now = f.ok(&f.bob, "current_time", json!({})).await;
    assert_eq!(now["time_zone"], json!("America/New_York"));
    assert_eq!(now["local_time"], json!("2026-11-26 13:00"));
    assert_eq!(now["weekday"], json!("Thursday"));
    let alice = f.ok(&f.alice, "current_time", json!({})).await;
    assert_eq!(alice["local_time"], json!("2026-11-26 19:00"));
    assert_eq!(alice["utc"], json!("2026-11-26T18:00:00Z"));
}

#[tokio::test]
async fn notes_round_trip_with_full_text_search() {
    let f = Fixture::new().await;
    for text in [
        "The wifi password is on the fridge",
        "Dentist appointment on Friday at 9",
    ] {
        f.ok(&f.alice, "add_note", json!({"text": text})).await;
    }
    let found = f
        .ok(
            &f.alice,
            "search_notes",
            json!({"query": "where's the WiFi password?"}),
        )
        .await;
    assert_eq!(found["count"], json!(1), "{found}");
    assert_eq!(
        found["notes"][0]["text"],
        json!("The wifi password is on the fridge")
    );
    assert_eq!(
        found["notes"][0]["saved"],
        json!("2026-11-26 19:00 (Thursday)")
    );
    let listed = f.ok(&f.alice, "list_notes", json!({"limit": 1})).await;
    assert_eq!(listed["count"], json!(1));
    let newest = listed["notes"][0]["id"].clone();
    assert_eq!(
        listed["notes"][0]["text"],
        json!("Dentist appointment on Friday at 9")
    );
    let (result, _) = f.call(&f.alice, "list_notes", json!({"limit": 0})).await;
    assert_eq!(result.outcome, ToolOutcome::BadArguments);
    f.ok(&f.alice, "delete_note", json!({"note_id": newest}))
        .await;
    let listed = f.ok(&f.alice, "list_notes", json!({})).await;
    assert_eq!(listed["count"], json!(1));
}

#[tokio::test]
async fn settings_change_the_row_and_hand_back_the_new_user() {
    let f = Fixture::new().await;
    let settings = f.ok(&f.alice, "get_settings", json!({})).await;
    assert_eq!(settings["time_zone"], json!("Europe/Berlin"));
    assert_eq!(settings["language"], json!("de"));
    assert_eq!(settings["name"], json!("Alice"));

    let (result, output) = f
        .call(
            &f.alice,
            "update_settings",
            json!({"time_zone": "Berlin Time"}),
        )
        .await;
    assert_eq!(result.outcome, ToolOutcome::BadArguments);
    assert!(error_of(&output).contains("IANA"), "{output}");
    let (result, _) = f
        .call(&f.alice, "update_settings", json!({"language": "german"}))
        .await;
    assert_eq!(result.outcome, ToolOutcome::BadArguments);
    let (result, _) = f.call(&f.alice, "update_settings", json!({})).await;
    assert_eq!(result.outcome, ToolOutcome::BadArguments);

    let (result, output) = f
        .call(
            &f.alice,
            "update_settings",
            json!({"time_zone": "america/new_york", "language": "EN"}),
        )
        .await;
    assert_eq!(result.outcome, ToolOutcome::Ok, "{output}");
    assert_eq!(output["time_zone"], json!("America/New_York"));
    let Some(ToolEffect::UserUpdated(user)) = result.effect else {
        panic!("the new user comes back: {:?}", result.effect);
    };
    assert_eq!(user.id, f.alice.id);
    assert_eq!(user.time_zone.as_deref(), Some("America/New_York"));
    assert_eq!(user.language.as_deref(), Some("en"));
    let stored = f
        .store
        .user_by_wa_id(&WaId::parse("16505551234").expect("valid"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(stored.time_zone.as_deref(), Some("America/New_York"));
    // With the new user in the context, times follow the new zone.
    let now = f.ok(&user, "current_time", json!({})).await;
    assert_eq!(now["local_time"], json!("2026-11-26 13:00"));
}

#[tokio::test]
async fn end_call_asks_the_caller_to_hang_up_and_is_refused_in_a_chat() {
    let f = Fixture::new().await;
    let (result, output) = f
        .call(&f.alice, "end_call", json!({"reason": "said goodbye"}))
        .await;
    assert_eq!(result.outcome, ToolOutcome::Ok, "{output}");
    assert_eq!(
        result.effect,
        Some(ToolEffect::EndCall {
            reason: Some("said goodbye".into())
        })
    );
    let chat = ToolContext::new(
        f.store.clone(),
        f.clock.clone(),
        f.alice.clone(),
        Source::Chat,
    );
    let result = f.registry.invoke(&chat, "end_call", "{}").await;
    assert_eq!(result.outcome, ToolOutcome::Refused);
    assert_eq!(result.effect, None);
}
