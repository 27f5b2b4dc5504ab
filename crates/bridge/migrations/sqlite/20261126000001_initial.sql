-- The whole product's schema (the SQLite twin of migrations/postgres). Every row about a
-- person references users(id) and goes with it (on delete cascade; sqlx turns foreign keys on).
-- Times are RFC 3339 text in UTC written by the application's clock, so they sort as text.

create table users (
    id             integer primary key,
    wa_id          text unique,
    bsuid          text unique,
    parent_bsuid   text,
    username       text,
    name           text,
    time_zone      text,
    language       text,
    opted_out_at   text,
    created_at     text not null,
    updated_at     text not null,
    check (wa_id is not null or bsuid is not null)
);

create table tasks (
    id           integer primary key,
    user_id      integer not null references users (id) on delete cascade,
    title        text not null,
    description  text,
    status       text not null check (status in ('pending', 'in_progress', 'completed', 'cancelled')),
    priority     text not null check (priority in ('low', 'medium', 'high', 'urgent')),
    due_at       text,
    source       text not null,
    created_at   text not null,
    updated_at   text not null,
    completed_at text
);
create index tasks_user_status on tasks (user_id, status);

create table reminders (
    id              integer primary key,
    user_id         integer not null references users (id) on delete cascade,
    text            text not null,
    time_zone       text not null,
    local_time      text not null,
    recurrence      text,
    next_due_at     text,
    status          text not null check (status in ('scheduled', 'delivering', 'completed', 'cancelled', 'failed')),
    attempts        integer not null default 0,
    last_attempt_at text,
    lease_owner     text,
    lease_until     text,
    last_call_id    text,
    source          text not null,
    created_at      text not null,
    updated_at      text not null,
    completed_at    text
);
create index reminders_due on reminders (next_due_at) where status = 'scheduled';
create index reminders_leases on reminders (lease_until) where status = 'delivering';
create index reminders_user on reminders (user_id, status);

create table notes (
    id         integer primary key,
    user_id    integer not null references users (id) on delete cascade,
    body       text not null,
    source     text not null,
    created_at text not null,
    updated_at text not null
);
create index notes_user on notes (user_id, created_at);

-- Full-text index over notes.body, kept in step by triggers (external-content FTS5 table).
-- porter stemming matches Postgres' 'english' configuration closely enough.
create virtual table notes_fts using fts5 (body, content = 'notes', content_rowid = 'id', tokenize = 'porter unicode61');
create trigger notes_fts_insert after insert on notes begin
    insert into notes_fts (rowid, body) values (new.id, new.body);
end;
create trigger notes_fts_delete after delete on notes begin
    insert into notes_fts (notes_fts, rowid, body) values ('delete', old.id, old.body);
end;
create trigger notes_fts_update after update of body on notes begin
    insert into notes_fts (notes_fts, rowid, body) values ('delete', old.id, old.body);
    insert into notes_fts (rowid, body) values (new.id, new.body);
end;

create table messages (
    id              integer primary key,
    user_id         integer not null references users (id) on delete cascade,
    direction       text not null check (direction in ('inbound', 'outbound')),
    wamid           text unique,
    phone_number_id text,
    kind            text not null,
    body            text,
    content         text not null,
    status          text not null,
    status_at       text,
    error           text,
    context_wamid   text,
    call_id         text,
    sent_at         text,
    created_at      text not null
);
create index messages_user_time on messages (user_id, created_at);

create table calls (
    id              text primary key,
    wa_call_id      text unique,
    user_id         integer references users (id) on delete cascade,
    direction       text not null check (direction in ('inbound', 'outbound')),
    channel         text not null,
    state           text not null check (state in ('offered', 'dialing', 'ringing', 'answered', 'ended')),
    end_reason      text,
    purpose         text,
    reminder_id     integer references reminders (id) on delete set null,
    phone_number_id text,
    owner_instance  text,
    offered_at      text,
    answered_at     text,
    ended_at        text,
    duration_secs   integer,
    error_code      integer,
    usage           text,
    created_at      text not null,
    updated_at      text not null
);
create index calls_user on calls (user_id, created_at);
create index calls_open on calls (state) where state <> 'ended';

create table call_events (
    id      integer primary key,
    call_id text not null references calls (id) on delete cascade,
    kind    text not null,
    at      text not null,
    data    text not null
);
create index call_events_call on call_events (call_id, id);

create table call_permissions (
    user_id            integer primary key references users (id) on delete cascade,
    status             text not null check (status in ('none', 'temporary', 'permanent', 'rejected')),
    expires_at         text,
    source             text,
    last_request_wamid text,
    last_requested_at  text,
    responded_at       text,
    updated_at         text not null
);

create table webhook_deliveries (
    id          text primary key,
    received_at text not null,
    signature   text not null,
    event_count integer not null,
    body        text not null
);
create index webhook_deliveries_received on webhook_deliveries (received_at);

create table webhook_events (
    id              integer primary key,
    idempotency_key text not null unique,
    delivery_id     text not null,
    kind            text not null,
    phone_number_id text,
    wa_id           text,
    payload         text not null,
    state           text not null check (state in ('pending', 'processed', 'ignored', 'failed')),
    attempts        integer not null default 0,
    claimed_by      text,
    claimed_until   text,
    last_error      text,
    received_at     text not null,
    processed_at    text
);
create index webhook_events_pending on webhook_events (id) where state = 'pending';
create index webhook_events_received on webhook_events (received_at);
create index webhook_events_wa_id on webhook_events (wa_id);
