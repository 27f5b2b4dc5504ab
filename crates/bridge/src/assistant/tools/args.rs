//! Argument values with rules, parsed while the model's JSON is read, so a tool only ever
//! sees valid values and a bad one comes back to the model with the reason.

use std::fmt;

use chrono::NaiveDateTime;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::json;

use crate::assistant::schema::object;
use crate::assistant::when::{self, Tz};

/// Text from the model: trimmed, not empty, at most `MAX` characters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    pub fn into_inner(self) -> String {
        self.0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<String> for Text<MAX> {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err("a text value is empty".to_owned());
        }
        let length = trimmed.chars().count();
        if length > MAX {
            return Err(format!(
                "a text value has {length} characters; at most {MAX} are allowed"
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

impl<const MAX: usize> JsonSchema for Text<MAX> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Text{MAX}").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        object(json!({"type": "string", "minLength": 1, "maxLength": MAX}))
    }
}

/// A row id the model read from an earlier output. Models sometimes quote numbers, so `"12"`
/// is accepted as well as `12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Id(pub i64);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;

        impl Visitor<'_> for IdVisitor {
            type Value = Id;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id: a positive whole number from an earlier list or add")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Id, E> {
                if value > 0 {
                    Ok(Id(value))
                } else {
                    Err(E::invalid_value(de::Unexpected::Signed(value), &self))
                }
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Id, E> {
                i64::try_from(value)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &self))
                    .and_then(|value| self.visit_i64(value))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Id, E> {
                value
                    .trim()
                    .trim_start_matches('#')
                    .parse::<i64>()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(value), &self))
                    .and_then(|value| self.visit_i64(value))
            }
        }

        deserializer.deserialize_any(IdVisitor)
    }
}

impl JsonSchema for Id {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Id".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        object(json!({"type": "integer", "minimum": 1}))
    }
}

/// A wall-clock time in the user's zone, `YYYY-MM-DD HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct LocalTime(pub NaiveDateTime);

impl TryFrom<String> for LocalTime {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        when::parse_local_time(&value)
            .map(LocalTime)
            .map_err(|e| e.to_string())
    }
}

impl JsonSchema for LocalTime {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LocalTime".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        object(
            json!({"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}$"}),
        )
    }
}

/// An IANA time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct TimeZone(pub Tz);

impl TryFrom<String> for TimeZone {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        when::parse_time_zone(&value)
            .map(TimeZone)
            .map_err(|e| e.to_string())
    }
}

impl JsonSchema for TimeZone {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeZone".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        object(json!({"type": "string"}))
    }
}

/// A language as an ISO 639-1 code: two letters, stored in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct Language(String);

impl Language {
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Language {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let code = value.trim();
        if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(code.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{code:?} is not a language code; use the two-letter ISO 639-1 code, e.g. en, de, es"
            ))
        }
    }
}

impl JsonSchema for Language {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Language".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        object(json!({"type": "string", "minLength": 2, "maxLength": 2}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        let text: Text<5> = serde_json::from_str("\"  milk \"").expect("valid");
        assert_eq!(text.as_str(), "milk");
        let err = serde_json::from_str::<Text<5>>("\"   \"").expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
        let err = serde_json::from_str::<Text<5>>("\"cheese\"").expect_err("long");
        assert!(err.to_string().contains("at most 5"), "{err}");
    }

    #[test]
    fn ids_are_positive_numbers_quoted_or_not() {
        assert_eq!(serde_json::from_str::<Id>("12").ok(), Some(Id(12)));
        assert_eq!(serde_json::from_str::<Id>("\"12\"").ok(), Some(Id(12)));
        assert_eq!(serde_json::from_str::<Id>("\"#7\"").ok(), Some(Id(7)));
        for bad in ["0", "-3", "\"twelve\"", "1.5", "null"] {
            let err = serde_json::from_str::<Id>(bad).expect_err(bad);
            assert!(err.to_string().contains("an id"), "{bad}: {err}");
        }
    }

    #[test]
    fn languages_are_two_letters() {
        let lang: Language = serde_json::from_str("\"DE\"").expect("valid");
        assert_eq!(lang.into_inner(), "de");
        assert!(serde_json::from_str::<Language>("\"german\"").is_err());
        assert!(serde_json::from_str::<Language>("\"e1\"").is_err());
    }
}
