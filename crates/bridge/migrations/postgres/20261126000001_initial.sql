-- The whole product's schema. Every row about a person references users(id) and goes with it
-- (on delete cascade). Times are timestamptz written by the application's clock.

create table users (
    id             bigint generated always as identity primary key,
    wa_id          text unique,          -- phone number, digits; absent for username-only users
    bsuid          text unique,          -- business-scoped user id (2026 identity change)
    parent_bsuid   text,
    username       text,
    name           text,
    time_zone      text,                 -- IANA name
    language       text,                 -- BCP 47
    opted_out_at   timestamptz,
    created_at     timestamptz not null,
    updated_at     timestamptz not null,
    constraint users_identified check (wa_id is not null or bsuid is not null)
);

create table tasks (
    id           bigint generated always as identity primary key,
    user_id      bigint not null references users (id) on delete cascade,
    title        text not null,
    description  text,
    status       text not null check (status in ('pending', 'in_progress', 'completed', 'cancelled')),
    priority     text not null check (priority in ('low', 'medium', 'high', 'urgent')),
    due_at       timestamptz,
    source       text not null,
    created_at   timestamptz not null,
    updated_at   timestamptz not null,
    completed_at timestamptz
);
create index tasks_user_status on tasks (user_id, status);

create table reminders (
    id              bigint generated always as identity primary key,
    user_id         bigint not null references users (id) on delete cascade,
    text            text not null,
    time_zone       text not null,
    local_time      text not null,       -- the wall-clock time asked for, 'YYYY-MM-DD HH:MM'
    recurrence      text,                -- RFC 5545 RRULE; null for one-time reminders
    next_due_at     timestamptz,         -- next occurrence; null when nothing is left
    status          text not null check (status in ('scheduled', 'delivering', 'completed', 'cancelled', 'failed')),
    attempts        bigint not null default 0,
    last_attempt_at timestamptz,
    lease_owner     text,                -- instance delivering the due occurrence
    lease_until     timestamptz,         -- after this, another instance may retake it
    last_call_id    text,
    source          text not null,
    created_at      timestamptz not null,
    updated_at      timestamptz not null,
    completed_at    timestamptz
);
create index reminders_due on reminders (next_due_at) where status = 'scheduled';
create index reminders_leases on reminders (lease_until) where status = 'delivering';
create index reminders_user on reminders (user_id, status);

create table notes (
    id         bigint generated always as identity primary key,
    user_id    bigint not null references users (id) on delete cascade,
    body       text not null,
    source     text not null,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    search     tsvector generated always as (to_tsvector('english', body)) stored
);
create index notes_user on notes (user_id, created_at);
create index notes_search on notes using gin (search);

create table messages (
    id              bigint generated always as identity primary key,
    user_id         bigint not null references users (id) on delete cascade,
    direction       text not null check (direction in ('inbound', 'outbound')),
    wamid           text unique,         -- null for an outbound message the Graph API refused
    phone_number_id text,
    kind            text not null,       -- WhatsApp message type
    body            text,                -- what a person reads: text, caption, tapped title
    content         jsonb not null,      -- the typed content
    status          text not null,       -- received (inbound) | accepted, sent, delivered, read, failed, deleted
    status_at       timestamptz,
    error           jsonb,
    context_wamid   text,
    call_id         text,
    sent_at         timestamptz,         -- WhatsApp's timestamp
    created_at      timestamptz not null
);
create index messages_user_time on messages (user_id, created_at);

create table calls (
    id              text primary key,    -- our id (UUIDv7)
    wa_call_id      text unique,         -- WhatsApp's wacid
    user_id         bigint references users (id) on delete cascade,
    direction       text not null check (direction in ('inbound', 'outbound')),
    channel         text not null,
    state           text not null check (state in ('offered', 'dialing', 'ringing', 'answered', 'ended')),
    end_reason      text,
    purpose         text,
    reminder_id     bigint references reminders (id) on delete set null,
    phone_number_id text,
    owner_instance  text,                -- the instance holding the call's media
    offered_at      timestamptz,
    answered_at     timestamptz,
    ended_at        timestamptz,
    duration_secs   bigint,
    error_code      bigint,
    usage           jsonb,
    created_at      timestamptz not null,
    updated_at      timestamptz not null
);
create index calls_user on calls (user_id, created_at);
create index calls_open on calls (state) where state <> 'ended';

create table call_events (
    id      bigint generated always as identity primary key,
    call_id text not null references calls (id) on delete cascade,
    kind    text not null,
    at      timestamptz not null,
    data    jsonb not null
);
create index call_events_call on call_events (call_id, id);

create table call_permissions (
    user_id            bigint primary key references users (id) on delete cascade,
    status             text not null check (status in ('none', 'temporary', 'permanent', 'rejected')),
    expires_at         timestamptz,
    source             text,
    last_request_wamid text,
    last_requested_at  timestamptz,
    responded_at       timestamptz,
    updated_at         timestamptz not null
);

-- Raw webhook bodies, kept for debugging until retention deletes them.
create table webhook_deliveries (
    id          text primary key,        -- UUIDv7
    received_at timestamptz not null,
    signature   text not null,           -- verified | unsigned
    event_count bigint not null,
    body        text not null
);
create index webhook_deliveries_received on webhook_deliveries (received_at);

-- One row per event; the unique key is what makes a redelivery a no-op.
create table webhook_events (
    id              bigint generated always as identity primary key,
    idempotency_key text not null unique,
    delivery_id     text not null,
    kind            text not null,
    phone_number_id text,
    wa_id           text,                -- the user it is about
    payload         jsonb not null,      -- the parsed event
    state           text not null check (state in ('pending', 'processed', 'ignored', 'failed')),
    attempts        bigint not null default 0,
    claimed_by      text,
    claimed_until   timestamptz,
    last_error      text,
    received_at     timestamptz not null,
    processed_at    timestamptz
);
create index webhook_events_pending on webhook_events (id) where state = 'pending';
create index webhook_events_received on webhook_events (received_at);
create index webhook_events_wa_id on webhook_events (wa_id);
