//! Background jobs that run on a clock: the retention job now; the reminder scheduler (due
//! reminders → outbound calls and messages, lease-based claims in the store) joins it.
//!
//! Each job separates policy (how often, until when: `run_until_stopped`) from one unit of work
//! that tests call directly with a chosen time (`try_*`).

pub mod retention;
