//! One storage story, told to SQLite and to Postgres: every table, every rule about scoping,
//! leases and ordering, must behave the same on both.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use whatsapp_bridge::domain::{
    Bsuid, CallChannel, Contact, DeliveryStatus, EventKind, MessageContent, MessageStatusUpdate,
    PermissionResponse, Private, ReminderStatus, Source, TaskPriority, TaskStatus, WaCallId, WaId,
    WamId,
};
use whatsapp_bridge::store::*;

use crate::helpers::TestDb;

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_180_000, 0).expect("valid") + TimeDelta::minutes(minutes)
}

fn contact(wa_id: &str, name: &str) -> Contact {
    Contact {
        wa_id: Some(WaId::parse(wa_id).expect("valid")),
        name: Some(Private(name.to_owned())),
        ..Contact::default()
    }
}

fn claim(owner: &str, now: DateTime<Utc>) -> Claim {
    Claim {
        owner: owner.to_owned(),
        now,
        until: now + TimeDelta::minutes(5),
    }
}

async fn story(store: Arc<dyn Store>) {
    // --- schema ----------------------------------------------------------------------------
    let status = store.migration_status().await.expect("status");
    assert!(status.is_current(), "{status:?}");
    store.ping().await.expect("ping");

    // --- users: by phone, then BSUID; username-only users exist too -------------------------
    let alice = store
        .upsert_contact(&contact("16505551234", "Alice"), at(0))
        .await
        .expect("alice");
    let again = store
        .upsert_contact(
            &Contact {
                user_id: Some(Bsuid::parse("US.111").expect("valid")),
                ..contact("16505551234", "Alice B.")
            },
            at(1),
        )
        .await
        .expect("alice again");
    assert_eq!(again.id, alice.id, "same phone, same user");
    assert_eq!(again.name.as_deref(), Some("Alice B."));
    assert_eq!(again.bsuid.as_ref().map(Bsuid::as_str), Some("US.111"));
    assert_eq!(again.created_at, at(0), "times read back exactly");
    let by_bsuid = store
        .upsert_contact(
            &Contact {
                user_id: Some(Bsuid::parse("US.111").expect("valid")),
                ..Contact::default()
            },
            at(2),
        )
        .await
        .expect("by bsuid");
    assert_eq!(by_bsuid.id, alice.id, "found by BSUID alone");
    let bob = store
        .upsert_contact(&contact("4915112345678", "Bob"), at(2))
        .await
        .expect("bob");
    let ana = store
        .upsert_contact(
            &Contact {
                user_id: Some(Bsuid::parse("US.222").expect("valid")),
                username: Some("ana.b".into()),
                ..Contact::default()
            },
            at(2),
        )
        .await
        .expect("username-only user");
    assert!(ana.wa_id.is_none());
    assert!(
        store
            .upsert_contact(&Contact::default(), at(2))
            .await
            .is_err(),
        "a user needs an id"
    );
    let settings = store
        .update_user_settings(
            alice.id,
            &UserSettings {
                time_zone: Some("Europe/Berlin".into()),
                language: None,
            },
            at(3),
        )
        .await
        .expect("settings");
    assert_eq!(settings.time_zone.as_deref(), Some("Europe/Berlin"));

    // --- tasks: scoped by user --------------------------------------------------------------
    let milk = store
        .add_task(
            alice.id,
            &NewTask {
                title: "Buy milk".into(),
                description: None,
                priority: TaskPriority::High,
                due_at: Some(at(60)),
                source: Source::Voice,
            },
            at(4),
        )
        .await
        .expect("task");
    let taxes = store
        .add_task(
            alice.id,
            &NewTask {
                title: "File taxes".into(),
                description: Some("before April".into()),
                priority: TaskPriority::Medium,
                due_at: None,
                source: Source::Chat,
            },
            at(5),
        )
        .await
        .expect("task");
    let done = TaskChanges {
        status: Some(TaskStatus::Completed),
        ..TaskChanges::default()
    };
    assert!(
        matches!(
            store.update_task(bob.id, milk.id, &done, at(6)).await,
            Err(StoreError::NotFound)
        ),
        "another user's task id changes nothing"
    );
    assert!(
        !store.delete_task(bob.id, milk.id).await.expect("delete"),
        "nor deletes it"
    );
    let completed = store
        .update_task(alice.id, milk.id, &done, at(6))
        .await
        .expect("complete");
    assert_eq!(completed.status, TaskStatus::Completed);
    assert_eq!(completed.completed_at, Some(at(6)));
    assert_eq!(completed.due_at, Some(at(60)), "untouched fields stay");
    let cleared = store
        .update_task(
            alice.id,
            milk.id,
            &TaskChanges {
                due_at: Some(None),
                status: Some(TaskStatus::Pending),
                ..TaskChanges::default()
            },
            at(7),
        )
        .await
        .expect("reopen");
    assert_eq!(cleared.due_at, None);
    assert_eq!(cleared.completed_at, None, "reopened");
    let pending = store
        .list_tasks(
            alice.id,
            &TaskFilter {
                status: Some(TaskStatus::Pending),
            },
        )
        .await
        .expect("list");
    assert_eq!(
        pending.iter().map(|t| t.id).collect::<Vec<_>>(),
        [taxes.id, milk.id],
        "newest first"
    );
    assert!(store
        .list_tasks(bob.id, &TaskFilter::default())
        .await
        .expect("list")
        .is_empty());

    // --- reminders: leases make a crashed instance's claim retakable, and only once ----------
    let dentist = store
        .add_reminder(
            alice.id,
            &NewReminder {
                text: "Call the dentist".into(),
                time_zone: "Europe/Berlin".into(),
                local_time: "2026-11-26 19:00".into(),
                recurrence: None,
                next_due_at: at(10),
                source: Source::Voice,
            },
            at(8),
        )
        .await
        .expect("reminder");
    let weekly = store
        .add_reminder(
            alice.id,
            &NewReminder {
                text: "Water the plants".into(),
                time_zone: "Europe/Berlin".into(),
                local_time: "2026-11-27 08:00".into(),
                recurrence: Some("FREQ=WEEKLY;BYDAY=FR".into()),
                next_due_at: at(100),
                source: Source::Chat,
            },
            at(8),
        )
        .await
        .expect("reminder");
    assert!(
        store
            .claim_due_reminders(&claim("a", at(9)), 10)
            .await
            .expect("claim")
            .is_empty(),
        "not due yet"
    );
    let claimed = store
        .claim_due_reminders(&claim("a", at(10)), 10)
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|r| r.id).collect::<Vec<_>>(),
        [dentist.id]
    );
    assert_eq!(claimed[0].status, ReminderStatus::Delivering);
    assert_eq!(claimed[0].attempts, 1);
    assert!(
        store
            .claim_due_reminders(&claim("b", at(11)), 10)
            .await
            .expect("claim")
            .is_empty(),
        "held by a"
    );
    // a dies; after its lease, b retakes the occurrence.
    let retaken = store
        .claim_due_reminders(&claim("b", at(16)), 10)
        .await
        .expect("claim");
    assert_eq!(
        retaken.iter().map(|r| r.id).collect::<Vec<_>>(),
        [dentist.id]
    );
    assert_eq!(retaken[0].attempts, 2);
    let late = store
        .finish_reminder_delivery(
            dentist.id,
            "a",
            &ReminderOutcome::Delivered { next_due_at: None },
            at(17),
        )
        .await;
    assert!(
        matches!(late, Err(StoreError::Conflict(_))),
        "a lost its lease: {late:?}"
    );
    let finished = store
        .finish_reminder_delivery(
            dentist.id,
            "b",
            &ReminderOutcome::Delivered { next_due_at: None },
            at(17),
        )
        .await
        .expect("b delivers");
    assert_eq!(finished.status, ReminderStatus::Completed);
    assert_eq!(finished.next_due_at, None);
    assert!(
        store
            .finish_reminder_delivery(
                dentist.id,
                "b",
                &ReminderOutcome::Delivered { next_due_at: None },
                at(18)
            )
            .await
            .is_err(),
        "an occurrence is delivered once"
    );
    // A recurring reminder goes back to scheduled with its next occurrence.
    let claimed = store
        .claim_due_reminders(&claim("a", at(100)), 10)
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|r| r.id).collect::<Vec<_>>(),
        [weekly.id]
    );
    let next = store
        .finish_reminder_delivery(
            weekly.id,
            "a",
            &ReminderOutcome::Delivered {
                next_due_at: Some(at(100 + 7 * 24 * 60)),
            },
            at(101),
        )
        .await
        .expect("delivered");
    assert_eq!(next.status, ReminderStatus::Scheduled);
    assert_eq!(next.attempts, 0);
    assert!(matches!(
        store.cancel_reminder(bob.id, weekly.id, at(102)).await,
        Err(StoreError::NotFound)
    ));
    let cancelled = store
        .cancel_reminder(alice.id, weekly.id, at(102))
        .await
        .expect("cancel");
    assert_eq!(cancelled.status, ReminderStatus::Cancelled);
    assert!(matches!(
        store.cancel_reminder(alice.id, weekly.id, at(103)).await,
        Err(StoreError::Conflict(_))
    ));
    let listed = store
        .list_reminders(alice.id, &ReminderFilter::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);

    // --- reminders the user moves: snooze, reschedule, complete; only their own -------------
    let stretch = store
        .add_reminder(
            alice.id,
            &NewReminder {
                text: "Stretch".into(),
                time_zone: "Europe/Berlin".into(),
                local_time: "2026-11-26 20:00".into(),
                recurrence: Some("FREQ=DAILY".into()),
                next_due_at: at(110),
                source: Source::Voice,
            },
            at(104),
        )
        .await
        .expect("reminder");
    assert!(
        store
            .reminder(bob.id, stretch.id)
            .await
            .expect("read")
            .is_none(),
        "Bob cannot read Alice's reminder"
    );
    assert_eq!(
        store
            .reminder(alice.id, stretch.id)
            .await
            .expect("read")
            .map(|r| r.text),
        Some("Stretch".to_owned())
    );
    let moved = ReminderSchedule {
        time_zone: "America/New_York".into(),
        local_time: "2026-11-27 07:00".into(),
        recurrence: Some("FREQ=WEEKLY;BYDAY=FR".into()),
        next_due_at: at(200),
    };
    for attempt in [
        store
            .snooze_reminder(bob.id, stretch.id, at(120), at(105))
            .await,
        store
            .reschedule_reminder(bob.id, stretch.id, &moved, at(105))
            .await,
        store
            .complete_reminder(bob.id, stretch.id, None, at(105))
            .await,
        store.cancel_reminder(bob.id, stretch.id, at(105)).await,
    ] {
        assert!(
            matches!(attempt, Err(StoreError::NotFound)),
            "Bob cannot touch Alice's reminder: {attempt:?}"
        );
    }
    let untouched = store
        .reminder(alice.id, stretch.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        (
            untouched.next_due_at,
            untouched.status,
            untouched.updated_at
        ),
        (Some(at(110)), ReminderStatus::Scheduled, at(104))
    );
    // Snoozing while it is being delivered: the user's word wins over the lease.
    let claimed = store
        .claim_due_reminders(&claim("a", at(110)), 10)
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|r| r.id).collect::<Vec<_>>(),
        [stretch.id]
    );
    let snoozed = store
        .snooze_reminder(alice.id, stretch.id, at(120), at(111))
        .await
        .expect("snooze");
    assert_eq!(snoozed.status, ReminderStatus::Scheduled);
    assert_eq!(snoozed.next_due_at, Some(at(120)));
    assert_eq!(
        snoozed.local_time, "2026-11-26 20:00",
        "snoozing keeps the time asked for"
    );
    assert_eq!((snoozed.lease_owner, snoozed.attempts), (None, 0));
    assert!(
        matches!(
            store
                .finish_reminder_delivery(
                    stretch.id,
                    "a",
                    &ReminderOutcome::Delivered { next_due_at: None },
                    at(112)
                )
                .await,
            Err(StoreError::Conflict(_))
        ),
        "the interrupted delivery cannot finish it"
    );
    let rescheduled = store
        .reschedule_reminder(alice.id, stretch.id, &moved, at(113))
        .await
        .expect("reschedule");
    assert_eq!(rescheduled.local_time, "2026-11-27 07:00");
    assert_eq!(rescheduled.time_zone, "America/New_York");
    assert_eq!(
        rescheduled.recurrence.as_deref(),
        Some("FREQ=WEEKLY;BYDAY=FR")
    );
    assert_eq!(rescheduled.next_due_at, Some(at(200)));
    // Completing a repeating reminder's occurrence moves it on; without a next, it is done.
    let next = store
        .complete_reminder(alice.id, stretch.id, Some(at(300)), at(114))
        .await
        .expect("complete occurrence");
    assert_eq!(
        (next.status, next.next_due_at),
        (ReminderStatus::Scheduled, Some(at(300)))
    );
    let done = store
        .complete_reminder(alice.id, stretch.id, None, at(115))
        .await
        .expect("complete");
    assert_eq!(
        (done.status, done.next_due_at),
        (ReminderStatus::Completed, None)
    );
    for attempt in [
        store
            .complete_reminder(alice.id, stretch.id, None, at(116))
            .await,
        store
            .snooze_reminder(alice.id, stretch.id, at(130), at(116))
            .await,
    ] {
        assert!(
            matches!(attempt, Err(StoreError::Conflict(_))),
            "a finished reminder is not snoozed or completed again: {attempt:?}"
        );
    }
    // Rescheduling brings a finished reminder back.
    let revived = store
        .reschedule_reminder(alice.id, stretch.id, &moved, at(117))
        .await
        .expect("reschedule a finished reminder");
    assert_eq!(revived.status, ReminderStatus::Scheduled);
    assert!(matches!(
        store
            .reschedule_reminder(alice.id, 999_999, &moved, at(117))
            .await,
        Err(StoreError::NotFound)
    ));

    // --- notes: full-text search, scoped ------------------------------------------------------
    for body in [
        "Dentist appointment on Friday at 9",
        "The wifi password is on the fridge",
        "Meeting notes: budget for 2027",
    ] {
        store
            .add_note(
                alice.id,
                &NewNote {
                    body: body.into(),
                    source: Source::Voice,
                },
                at(20),
            )
            .await
            .expect("note");
    }
    store
        .add_note(
            bob.id,
            &NewNote {
                body: "Bob's dentist is Dr. Who".into(),
                source: Source::Chat,
            },
            at(20),
        )
        .await
        .expect("note");
    let found = store
        .search_notes(alice.id, "dentist appointments", 10)
        .await
        .expect("search");
    assert_eq!(found.len(), 1, "stemmed, any word: {found:?}");
    assert!(found[0].body.starts_with("Dentist appointment"));
    let found = store
        .search_notes(alice.id, "where's the WiFi password?", 10)
        .await
        .expect("search");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(store
        .search_notes(alice.id, "\" OR 1=1 --", 10)
        .await
        .expect("no syntax errors")
        .is_empty());
    assert!(store
        .search_notes(alice.id, "   ", 10)
        .await
        .expect("empty query")
        .is_empty());
    let bobs = store
        .search_notes(bob.id, "dentist", 10)
        .await
        .expect("search");
    assert_eq!(bobs.len(), 1, "Bob sees only Bob's note");
    let notes = store.list_notes(alice.id, 10).await.expect("list");
    assert_eq!(notes.len(), 3);
    assert!(!store
        .delete_note(bob.id, notes[0].id)
        .await
        .expect("delete"));
    assert!(store
        .delete_note(alice.id, notes[0].id)
        .await
        .expect("delete"));
    assert!(
        store
            .search_notes(alice.id, "budget", 10)
            .await
            .expect("search")
            .is_empty(),
        "a deleted note leaves the index"
    );

    // --- messages: once by wamid; statuses only forward ---------------------------------------
    let inbound = whatsapp_bridge::domain::InboundMessage {
        id: WamId::parse("wamid.IN1").expect("id"),
        from: alice.wa_id.clone(),
        from_user_id: None,
        timestamp: Some(at(30)),
        context: None,
        content: MessageContent::Text {
            body: Private("Hi Ziggy ✨".into()),
        },
    };
    assert!(matches!(
        store
            .record_inbound_message(alice.id, None, &inbound, at(30))
            .await
            .expect("record"),
        Recorded::New(_)
    ));
    assert_eq!(
        store
            .record_inbound_message(alice.id, None, &inbound, at(31))
            .await
            .expect("record"),
        Recorded::Duplicate
    );
    store
        .record_outbound_message(
            alice.id,
            &NewOutboundMessage {
                wamid: Some(WamId::parse("wamid.OUT1").expect("id")),
                phone_number_id: None,
                kind: "text".into(),
                body: Some("Hello!".into()),
                content: serde_json::json!({"type": "text", "body": "Hello!"}),
                call_id: None,
            },
            at(32),
        )
        .await
        .expect("outbound");
    let status = |s: DeliveryStatus| MessageStatusUpdate {
        message_id: WamId::parse("wamid.OUT1").expect("id"),
        status: s,
        recipient: alice.wa_id.clone(),
        recipient_user_id: None,
        timestamp: Some(at(33)),
        errors: vec![],
        billing: None,
        biz_opaque_callback_data: None,
    };
    let apply = |updates: Vec<MessageStatusUpdate>, now| {
        let store = store.clone();
        async move {
            let refs: Vec<&MessageStatusUpdate> = updates.iter().collect();
            store
                .apply_message_statuses(&refs, now)
                .await
                .expect("apply")
        }
    };
    assert_eq!(
        apply(vec![status(DeliveryStatus::Delivered)], at(33)).await,
        [StatusApplied::Applied]
    );
    assert_eq!(
        apply(vec![status(DeliveryStatus::Sent)], at(34)).await,
        [StatusApplied::Stale]
    );
    let mut unknown = status(DeliveryStatus::Read);
    unknown.message_id = WamId::parse("wamid.NOPE").expect("id");
    // A batch: an unknown message's status, then two of the same message out of order.
    assert_eq!(
        apply(
            vec![
                unknown,
                status(DeliveryStatus::Read),
                status(DeliveryStatus::Delivered)
            ],
            at(35)
        )
        .await,
        [
            StatusApplied::UnknownMessage,
            StatusApplied::Applied,
            StatusApplied::Stale
        ]
    );
    let messages = store.recent_messages(alice.id, 10).await.expect("messages");
    assert_eq!(
        messages
            .iter()
            .map(|m| m.status.as_str())
            .collect::<Vec<_>>(),
        ["received", "read"]
    );
    assert_eq!(messages[0].body.as_deref(), Some("Hi Ziggy ✨"));

    // --- calls: created by the first signal, only forward -------------------------------------
    let signal = |s: call_core::CallSignal, minute: i64| CallSignalRecord {
        wa_call_id: WaCallId::parse("wacid.STORY").expect("id"),
        direction: call_core::CallDirection::Inbound,
        channel: CallChannel::WhatsApp,
        user: Some(alice.id),
        phone_number_id: None,
        signal: s,
        at: at(minute),
        duration_secs: None,
        error_code: None,
    };
    let offered = store
        .record_call_signal(&signal(call_core::CallSignal::Offer, 40))
        .await
        .expect("offer");
    assert!(offered.created);
    assert_eq!(offered.call.state, call_core::CallState::Offered);
    let answered = store
        .record_call_signal(&signal(call_core::CallSignal::Answered, 41))
        .await
        .expect("answer");
    assert!(answered.changed);
    assert_eq!(answered.call.answered_at, Some(at(41)));
    let mut end = signal(
        call_core::CallSignal::Ended(call_core::EndReason::Completed),
        45,
    );
    end.duration_secs = Some(240);
    let ended = store.record_call_signal(&end).await.expect("end");
    assert_eq!(
        ended.call.state,
        call_core::CallState::Ended(call_core::EndReason::Completed)
    );
    assert_eq!(ended.call.duration_secs, Some(240));
    let stale = store
        .record_call_signal(&signal(call_core::CallSignal::Ringing, 46))
        .await
        .expect("stale");
    assert!(!stale.changed);
    assert_eq!(stale.call.state, ended.call.state);
    // A second end (WhatsApp's terminate after our side already ended it) keeps the state and
    // reason, and brings WhatsApp's duration and error code.
    let mut late_end = signal(
        call_core::CallSignal::Ended(call_core::EndReason::Failed),
        46,
    );
    late_end.duration_secs = Some(242);
    late_end.error_code = Some(138_021);
    let amended = store.record_call_signal(&late_end).await.expect("late end");
    assert!(amended.changed);
    assert_eq!(amended.call.state, ended.call.state);
    assert_eq!(amended.call.duration_secs, Some(242));
    assert_eq!(amended.call.error_code, Some(138_021));
    assert_eq!(amended.call.ended_at, ended.call.ended_at);
    let call_id = ended.call.id.clone();
    for (kind, data) in [
        ("state", serde_json::json!({"state": "answered"})),
        (
            "transcript",
            serde_json::json!({"role": "caller", "text": "hello"}),
        ),
    ] {
        store
            .append_call_event(
                &call_id,
                &NewCallEvent {
                    kind: kind.into(),
                    at: at(42),
                    data,
                },
            )
            .await
            .expect("event");
    }
    let events = store.call_events(&call_id).await.expect("events");
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["state", "transcript"]
    );
    let usage = serde_json::json!({"responses": 3, "input_tokens": 1200, "output_tokens": 340});
    store.set_call_usage(&call_id, &usage).await.expect("usage");
    let stored = store.call(&call_id).await.expect("call").expect("exists");
    assert_eq!(stored.id, call_id);
    assert_eq!(stored.usage, Some(usage));
    assert!(matches!(
        store
            .set_call_usage("no-such-call", &serde_json::json!({}))
            .await,
        Err(StoreError::NotFound)
    ));

    // --- call permission ----------------------------------------------------------------------
    let permission = store
        .record_permission_reply(alice.id, &PermissionResponse::Accept, None, false, at(50))
        .await
        .expect("permission");
    assert_eq!(permission.status.as_str(), "temporary");
    assert_eq!(permission.expires_at, Some(at(50) + TimeDelta::days(7)));
    let permanent = store
        .record_permission_reply(alice.id, &PermissionResponse::Accept, None, true, at(51))
        .await
        .expect("permission");
    assert_eq!(permanent.status.as_str(), "permanent");
    assert_eq!(permanent.expires_at, None);

    // --- webhook inbox: dedup, claims, completion, retention ----------------------------------
    let new_event = |key: &str, wa_id: Option<&str>| NewEvent {
        key: key.into(),
        kind: EventKind::Message,
        phone_number_id: None,
        wa_id: wa_id.map(|w| WaId::parse(w).expect("valid")),
        payload: serde_json::value::to_raw_value(&serde_json::json!({"key": key})).expect("json"),
    };
    let delivery = |id: &str, keys: &[&str], minute: i64| NewDelivery {
        id: id.into(),
        received_at: at(minute),
        body: format!("{{\"delivery\":\"{id}\"}}"),
        signature: "verified",
        events: keys
            .iter()
            .map(|k| new_event(k, Some("16505551234")))
            .collect(),
    };
    let receipts = store
        .record_deliveries(
            &[
                delivery("d1", &["k1", "k2", "k1"], 60),
                delivery("d2", &["k2"], 60),
            ],
            &claim("a", at(60)),
        )
        .await
        .expect("deliveries");
    assert!(matches!(
        receipts[0].events[..],
        [
            EventInsert::New(_),
            EventInsert::New(_),
            EventInsert::Duplicate
        ]
    ));
    assert_eq!(receipts[1].events, [EventInsert::Duplicate]);
    let counts = store.webhook_event_counts().await.expect("counts");
    assert_eq!(
        (counts.pending, counts.deliveries),
        (2, 1),
        "d2 had nothing new and left no trace"
    );
    assert!(
        store
            .claim_pending_events(&claim("b", at(61)), 10)
            .await
            .expect("claim")
            .is_empty(),
        "claimed by a"
    );
    assert_eq!(store.release_events("a", None).await.expect("release"), 2);
    let claimed = store
        .claim_pending_events(&claim("b", at(62)), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    assert!(claimed[0].id < claimed[1].id, "oldest first");
    assert_eq!(claimed[0].payload, serde_json::json!({"key": "k1"}));
    assert_eq!(claimed[0].attempts, 2);
    store
        .complete_events(
            &[
                EventCompletion {
                    id: claimed[0].id,
                    outcome: EventOutcome::Processed,
                },
                EventCompletion {
                    id: claimed[1].id,
                    outcome: EventOutcome::Failed {
                        error: "db down".into(),
                        retry_at: Some(at(70)),
                    },
                },
            ],
            at(63),
        )
        .await
        .expect("complete");
    assert!(
        store
            .claim_pending_events(&claim("b", at(64)), 10)
            .await
            .expect("claim")
            .is_empty(),
        "retry not due"
    );
    let retry = store
        .claim_pending_events(&claim("b", at(70)), 10)
        .await
        .expect("claim");
    assert_eq!(retry.len(), 1);
    store
        .complete_events(
            &[EventCompletion {
                id: retry[0].id,
                outcome: EventOutcome::Ignored("stale".into()),
            }],
            at(71),
        )
        .await
        .expect("complete");
    let k2 = store
        .webhook_event("k2")
        .await
        .expect("query")
        .expect("stored");
    assert_eq!(
        (k2.state.as_str(), k2.last_error.as_deref()),
        ("ignored", Some("stale"))
    );
    let counts = store.webhook_event_counts().await.expect("counts");
    assert_eq!(
        (counts.processed, counts.ignored, counts.pending),
        (1, 1, 0)
    );
    // Retention: nothing is younger than the cut-off... then everything finished is older.
    assert_eq!(
        store.purge_webhook_history(at(0)).await.expect("purge"),
        PurgeCounts::default()
    );
    store
        .record_deliveries(&[delivery("d3", &["k3"], 65)], &claim("a", at(65)))
        .await
        .expect("pending one");
    let purged = store.purge_webhook_history(at(1000)).await.expect("purge");
    assert_eq!(
        purged,
        PurgeCounts {
            deliveries: 2,
            events: 2
        },
        "pending events are kept"
    );

    // --- export and deletion ------------------------------------------------------------------
    let export = store.export_user(alice.id).await.expect("export");
    assert_eq!(export.user.id, alice.id);
    assert_eq!(export.tasks.len(), 2);
    assert_eq!(export.reminders.len(), 3);
    assert_eq!(export.notes.len(), 2);
    assert_eq!(export.messages.len(), 2);
    assert_eq!(export.calls.len(), 1);
    assert_eq!(export.calls[0].events.len(), 2);
    assert!(export.call_permission.is_some());
    let json = serde_json::to_string(&export).expect("export serialises");
    assert!(json.contains("Hi Ziggy"));

    assert!(store.delete_user(alice.id).await.expect("delete"));
    assert!(!store.delete_user(alice.id).await.expect("delete again"));
    assert!(matches!(
        store.export_user(alice.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(store
        .list_tasks(alice.id, &TaskFilter::default())
        .await
        .expect("list")
        .is_empty());
    assert!(store
        .search_notes(alice.id, "wifi", 10)
        .await
        .expect("search")
        .is_empty());
    assert!(
        store.call(&call_id).await.expect("query").is_none(),
        "calls go with the user"
    );
    assert!(
        store.webhook_event("k3").await.expect("query").is_none(),
        "webhook copies about the user go too"
    );
    assert_eq!(
        store
            .webhook_event_counts()
            .await
            .expect("counts")
            .deliveries,
        0
    );
    // Bob is untouched.
    assert_eq!(
        store
            .search_notes(bob.id, "dentist", 10)
            .await
            .expect("search")
            .len(),
        1
    );
    let carol = store
        .user_by_wa_id(&WaId::parse("4915112345678").expect("valid"))
        .await
        .expect("query")
        .expect("exists");
    assert_eq!(
        store.user(carol.id).await.expect("query"),
        Some(carol.clone()),
        "a user reads the same by id"
    );
}

#[tokio::test]
async fn the_storage_story_on_sqlite() {
    let db = TestDb::sqlite();
    story(db.store().await).await;
}

#[tokio::test]
async fn the_storage_story_on_postgres() {
    let db = TestDb::postgres().await;
    story(db.store().await).await;
}
