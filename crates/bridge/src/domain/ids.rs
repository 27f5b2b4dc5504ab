//! Identifiers with rules, parsed once at the edge.
//!
//! WhatsApp ids (`wa_id`) are phone numbers: their `Debug` masks all but the last four digits
//! so that an accidental `?value` in a log line does not leak them. `Display` is the full value
//! (API responses and Graph requests need it); log through [`crate::telemetry::Masked`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value that failed to parse into one of the identifier types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidId {
    /// The kind of identifier ("WhatsApp id", "message id", ...).
    pub what: &'static str,
    /// Why it was refused, in words a caller can show.
    pub reason: String,
}

impl InvalidId {
    fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            what,
            reason: reason.into(),
        }
    }
}

/// A WhatsApp user id as it appears in webhooks' `wa_id` and `from`: the user's phone number
/// in international format, digits only (no `+`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WaId(String);

impl WaId {
    /// E.164 allows at most 15 digits; the shortest real international numbers have 7 or 8.
    const MIN_DIGITS: usize = 6;
    const MAX_DIGITS: usize = 15;

    /// Parses a WhatsApp id. A leading `+` is accepted and dropped (people paste numbers that
    /// way); anything else that is not a digit is refused rather than guessed at.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        const WHAT: &str = "WhatsApp id";
        let digits = value.strip_prefix('+').unwrap_or(value);
        if digits.is_empty() {
            return Err(InvalidId::new(WHAT, "it is empty"));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidId::new(
                WHAT,
                "it must be the phone number in international format, digits only (e.g. 15551234567)",
            ));
        }
        if digits.starts_with('0') {
            return Err(InvalidId::new(
                WHAT,
                "it must start with the country code, not 0",
            ));
        }
        if !(Self::MIN_DIGITS..=Self::MAX_DIGITS).contains(&digits.len()) {
            return Err(InvalidId::new(
                WHAT,
                format!(
                    "it must have {} to {} digits, not {}",
                    Self::MIN_DIGITS,
                    Self::MAX_DIGITS,
                    digits.len()
                ),
            ));
        }
        Ok(Self(digits.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last four digits, for logs and for people to recognise a number.
    pub fn last4(&self) -> &str {
        &self.0[self.0.len().saturating_sub(4)..]
    }
}

impl fmt::Debug for WaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WaId(***{})", self.last4())
    }
}

impl fmt::Display for WaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for WaId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<WaId> for String {
    fn from(value: WaId) -> Self {
        value.0
    }
}

impl std::str::FromStr for WaId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Defines an opaque identifier: non-empty, bounded, printable, otherwise not interpreted.
///
/// Meta's ids are documented as opaque (message ids are usually `wamid.…` but short ids such
/// as `ABGG…` appear in real payloads), so nothing beyond that is checked.
macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses the identifier: non-empty, at most
            #[doc = stringify!($max)]
            /// bytes, no whitespace or control characters.
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                if value.is_empty() {
                    return Err(InvalidId::new($what, "it is empty"));
                }
                if value.len() > $max {
                    return Err(InvalidId::new(
                        $what,
                        format!("it is longer than {} bytes", $max),
                    ));
                }
                if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(InvalidId::new($what, "it contains whitespace or control characters"));
                }
                Ok(Self(value.to_owned()))
            }

            /// The identifier as Meta wrote it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

opaque_id!(
    /// A WhatsApp message id (`wamid.…`), unique per message; the idempotency key of messages
    /// and their statuses.
    WamId,
    "message id",
    512
);

opaque_id!(
    /// A WhatsApp call id (`wacid.…`) as used by the Graph `calls` endpoint and call webhooks.
    WaCallId,
    "WhatsApp call id",
    512
);

opaque_id!(
    /// A business-scoped user id (BSUID, e.g. `US.1349…`): since 2026 webhooks identify users
    /// by it, and users with a username may come without a phone number.
    Bsuid,
    "business-scoped user id",
    256
);

/// The Graph id of a business phone number (`metadata.phone_number_id`): digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumberId(String);

impl PhoneNumberId {
    /// Parses a phone number id: 1 to 32 digits.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        const WHAT: &str = "phone number id";
        if value.is_empty() || value.len() > 32 {
            return Err(InvalidId::new(WHAT, "it must have 1 to 32 digits"));
        }
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidId::new(WHAT, "it must be digits only"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PhoneNumberId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PhoneNumberId> for String {
    fn from(value: PhoneNumberId) -> Self {
        value.0
    }
}

/// Our own id for a user row: the surrogate key every user-scoped table references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wa_id_accepts_international_digits_and_a_leading_plus() {
        assert_eq!(
            WaId::parse("15551234567").map(String::from),
            Ok("15551234567".into())
        );
        assert_eq!(
            WaId::parse("+4915112345678").map(String::from),
            Ok("4915112345678".into())
        );
    }

    #[test]
    fn wa_id_refuses_what_is_not_a_phone_number() {
        for bad in [
            "",
            "+",
            "abc",
            "1555 123 4567",
            "01234567",
            "12345",
            "1234567890123456",
            "١٢٣٤٥٦٧",
        ] {
            let err = WaId::parse(bad).expect_err(bad);
            assert_eq!(err.what, "WhatsApp id");
        }
    }

    #[test]
    fn wa_id_debug_masks_all_but_the_last_four_digits() {
        let id = WaId::parse("15551234567").expect("valid");
        assert_eq!(format!("{id:?}"), "WaId(***4567)");
        assert_eq!(id.to_string(), "15551234567");
    }

    #[test]
    fn opaque_ids_refuse_empty_and_whitespace() {
        assert!(WamId::parse("").is_err());
        assert!(WamId::parse("wamid. x").is_err());
        assert!(WamId::parse(&"x".repeat(513)).is_err());
        assert!(WamId::parse("ABGGFlA5FpafAgo6EhVHdcPV").is_ok());
    }

    #[test]
    fn ids_deserialize_through_their_parser() {
        let err = serde_json::from_str::<WaId>("\"12ab\"").expect_err("not digits");
        assert!(err.to_string().contains("invalid WhatsApp id"), "{err}");
        let id: PhoneNumberId = serde_json::from_str("\"106540352242922\"").expect("digits");
        assert_eq!(id.as_str(), "106540352242922");
    }

    proptest! {
        #[test]
        fn wa_id_parse_never_panics(s in ".*") {
            let _ = WaId::parse(&s);
        }

        #[test]
        fn valid_wa_ids_round_trip(n in 1_000_000u64..999_999_999_999_999u64) {
            let s = n.to_string();
            let id = WaId::parse(&s).expect("digits");
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }
}
