//! JSON Schemas for tool parameters, generated from the argument types.
//!
//! Function-calling APIs take a plain object schema: `{"type":"object","properties":…,
//! "required":…}`. They do not resolve `$ref`s into `definitions`, and some reject `$schema`,
//! so every subschema is inlined, the meta-schema is left out, and Rust-specific `format`s
//! (`int64`, `uint16`) are dropped. The argument type's doc comment becomes the tool's
//! description, so the words the model reads live next to the fields they describe.

use schemars::generate::SchemaSettings;
use schemars::transform::RestrictFormats;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::registry::ToolDefinition;
use super::when::Recurrence;
use crate::domain::{ReminderStatus, TaskPriority, TaskStatus};

/// The definition of a tool whose arguments are `T`.
pub(super) fn definition<T: JsonSchema>(name: &'static str) -> ToolDefinition {
    let mut formats = RestrictFormats::default();
    formats.infer_from_meta_schema = false;
    let generator = SchemaSettings::draft07()
        .with(|settings| {
            settings.meta_schema = None;
            settings.inline_subschemas = true;
        })
        .with_transform(formats)
        .into_generator();
    let mut parameters = match generator.into_root_schema_for::<T>().to_value() {
        Value::Object(object) => object,
        // Argument types are structs, whose schemas are objects; anything else has no fields.
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => {
            Map::new()
        }
    };
    let description = match parameters.remove("description") {
        Some(Value::String(text)) => unwrap_lines(&text),
        _ => String::new(),
    };
    parameters.remove("title");
    parameters.insert("type".to_owned(), json!("object"));
    parameters.entry("required").or_insert_with(|| json!([]));
    let required: Vec<Value> = parameters
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let properties = parameters.entry("properties").or_insert_with(|| json!({}));
    if let Value::Object(properties) = properties {
        for (field, property) in properties.iter_mut() {
            if !required.contains(&json!(field)) {
                drop_null(property);
            }
            if let Some(Value::String(text)) = property.get_mut("description") {
                *text = unwrap_lines(text);
            }
        }
    }
    ToolDefinition {
        name,
        description,
        parameters: Value::Object(parameters),
    }
}

/// An optional field is one the model leaves out, so `null` in its type, its enum and its
/// default (what schemars writes for `Option`) is noise in the model's context. A `null` that
/// arrives anyway still reads as "left out".
fn drop_null(property: &mut Value) {
    let Value::Object(property) = property else {
        return;
    };
    if property.get("default") == Some(&Value::Null) {
        property.remove("default");
    }
    if let Some(Value::Array(values)) = property.get_mut("enum") {
        values.retain(|value| !value.is_null());
    }
    if let Some(Value::Array(types)) = property.get_mut("type") {
        types.retain(|value| value != "null");
        if let [single] = types.as_slice() {
            let single = single.clone();
            property.insert("type".to_owned(), single);
        }
    }
}

/// Doc comments wrap at 100 columns; the model reads sentences. Single line breaks become
/// spaces, blank lines stay paragraph breaks.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A string schema listing `values`.
pub(super) fn string_enum<'a>(values: impl IntoIterator<Item = &'a str>) -> Schema {
    let values: Vec<&str> = values.into_iter().collect();
    object(json!({"type": "string", "enum": values}))
}

/// A schema from a JSON object literal (an empty schema for anything else).
pub(super) fn object(value: Value) -> Schema {
    match value {
        Value::Object(map) => Schema::from(map),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => {
            Schema::default()
        }
    }
}

/// Implements `JsonSchema` for an enum with `ALL` and `as_str`: a plain string enum, inlined.
macro_rules! string_enum_schema {
    ($($ty:ty),+ $(,)?) => {
        $(
            impl JsonSchema for $ty {
                fn inline_schema() -> bool {
                    true
                }

                fn schema_name() -> std::borrow::Cow<'static, str> {
                    stringify!($ty).into()
                }

                fn json_schema(_: &mut SchemaGenerator) -> Schema {
                    string_enum(<$ty>::ALL.iter().map(|value| value.as_str()))
                }
            }
        )+
    };
}

string_enum_schema!(TaskStatus, TaskPriority, ReminderStatus, Recurrence);
