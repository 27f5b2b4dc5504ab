//! Closed sets of values that rows carry (statuses, priorities, channels), each with one
//! stored spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A stored value that none of the variants spells.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}; expected one of: {}", expected.join(", "))]
pub struct InvalidValue {
    /// The kind of value.
    pub what: &'static str,
    /// What was given.
    pub value: String,
    /// The accepted spellings.
    pub expected: &'static [&'static str],
}

/// Defines an enum whose variants have one lower-case spelling each, used in the database, in
/// JSON and in tool arguments.
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every variant.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(InvalidValue {
                        what: $what,
                        value: other.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                value.parse()
            }
        }

        impl From<$name> for &'static str {
            fn from(value: $name) -> Self {
                value.as_str()
            }
        }
    };
}

named_enum!(
    /// Where a task stands.
    TaskStatus, "task status" {
        /// Not started.
        Pending = "pending",
        /// Being worked on.
        InProgress = "in_progress",
        /// Done.
        Completed = "completed",
        /// Dropped.
        Cancelled = "cancelled",
    }
);

named_enum!(
    /// How urgent a task is.
    TaskPriority, "task priority" {
        /// Low.
        Low = "low",
        /// Medium (the default).
        Medium = "medium",
        /// High.
        High = "high",
        /// Urgent.
        Urgent = "urgent",
    }
);

named_enum!(
    /// Where a reminder stands.
    ReminderStatus, "reminder status" {
        /// Waiting for its next occurrence.
        Scheduled = "scheduled",
        /// An instance has claimed the due occurrence and is delivering it.
        Delivering = "delivering",
        /// Nothing left to deliver (one-time reminder delivered, or marked done).
        Completed = "completed",
        /// Cancelled by the user or an operator.
        Cancelled = "cancelled",
        /// Delivery failed for good.
        Failed = "failed",
    }
);

named_enum!(
    /// Which way a message went.
    MessageDirection, "message direction" {
        /// From the user to us.
        Inbound = "inbound",
        /// From us to the user.
        Outbound = "outbound",
    }
);

named_enum!(
    /// Whether we may call a user (WhatsApp's business-initiated calling permission).
    PermissionStatus, "call permission status" {
        /// Never asked or expired.
        None = "none",
        /// Granted for a limited time (7 days, or until `expires_at`).
        Temporary = "temporary",
        /// Granted until revoked.
        Permanent = "permanent",
        /// The user declined.
        Rejected = "rejected",
    }
);

named_enum!(
    /// Where a call's user leg comes from.
    CallChannel, "call channel" {
        /// A WhatsApp call.
        WhatsApp = "whatsapp",
        /// The browser test phone.
        TestPhone = "test_phone",
    }
);

named_enum!(
    /// Who or what created a row (tasks, reminders, notes).
    Source, "source" {
        /// A voice call with the assistant.
        Voice = "voice",
        /// A WhatsApp chat with the assistant.
        Chat = "chat",
        /// The admin API or CLI.
        Api = "api",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(*status));
        }
        for status in ReminderStatus::ALL {
            assert_eq!(status.as_str().parse::<ReminderStatus>(), Ok(*status));
        }
    }

    #[test]
    fn an_unknown_spelling_lists_the_valid_ones() {
        let err = "done".parse::<TaskStatus>().expect_err("not a status");
        assert_eq!(
            err.to_string(),
            "invalid task status \"done\"; expected one of: pending, in_progress, completed, cancelled"
        );
        let json = serde_json::from_str::<TaskPriority>("\"high\"").expect("valid");
        assert_eq!(json, TaskPriority::High);
    }
}
