//! Field-by-field parsing of JSON objects into domain types.
//!
//! Serde stops at the first error and names it in Rust's words; a client wants every bad
//! field named at once, in the contract's camelCase, so requests are parsed with this small
//! collector instead. The same code parses events that arrive straight from the broker.

use serde_json::{Map, Value};

/// One field that failed to parse, named by its JSON path (`events[2].recipientIds`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the offending field.
    pub field: String,
    /// What is wrong with it, as a sentence fragment a client developer can act on.
    pub message: String,
}

/// Every field error found in one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// Prefixes every field path, for errors found inside a nested document.
    pub fn nested(self, prefix: &str) -> Self {
        FieldErrors(
            self.0
                .into_iter()
                .map(|e| FieldError {
                    field: if e.field.is_empty() {
                        prefix.to_owned()
                    } else if e.field.starts_with('[') {
                        format!("{prefix}{}", e.field)
                    } else {
                        format!("{prefix}.{}", e.field)
                    },
                    message: e.message,
                })
                .collect(),
        )
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

/// A domain type that can be read from one JSON value.
pub trait FromJson: Sized {
    /// Parses the value, or says in a fragment ("must be a string") why it cannot.
    fn from_json(value: &Value) -> Result<Self, String>;
}

/// Reads the fields of one JSON object, collecting every error instead of stopping.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// Starts reading `value`, which must be a JSON object.
    pub fn of(value: &'a Value) -> Result<Self, FieldErrors> {
        match value {
            Value::Object(object) => Ok(Fields {
                object,
                errors: Vec::new(),
            }),
            _ => Err(FieldErrors(vec![FieldError {
                field: String::new(),
                message: "must be a JSON object".into(),
            }])),
        }
    }

    /// A field that must be present and not null.
    pub fn required<T: FromJson>(&mut self, name: &str) -> Option<T> {
        match self.object.get(name) {
            None | Some(Value::Null) => {
                self.error(name, "is required");
                None
            }
            Some(value) => self.parse(name, value),
        }
    }

    /// A field that may be absent or null.
    pub fn optional<T: FromJson>(&mut self, name: &str) -> Option<T> {
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => self.parse(name, value),
        }
    }

    /// The raw value of a field, for parsers that need to look at it themselves.
    pub fn raw(&self, name: &str) -> Option<&'a Value> {
        self.object.get(name).filter(|v| !v.is_null())
    }

    /// Records an error found by the caller, for rules that span several fields.
    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: name.to_owned(),
            message: message.into(),
        });
    }

    /// Records errors found in a nested document under `name`.
    pub fn nested_errors(&mut self, name: &str, errors: FieldErrors) {
        self.errors.extend(errors.nested(name).0);
    }

    /// Ends reading: the built value if no field failed, every error otherwise.
    ///
    /// `build` runs only when every field parsed, so it may unwrap the `Option`s it holds.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, FieldErrors> {
        if self.errors.is_empty() {
            build().ok_or_else(|| FieldErrors(Vec::new()))
        } else {
            Err(FieldErrors(self.errors))
        }
    }

    fn parse<T: FromJson>(&mut self, name: &str, value: &Value) -> Option<T> {
        match T::from_json(value) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                self.error(name, message);
                None
            }
        }
    }
}

impl FromJson for String {
    fn from_json(value: &Value) -> Result<Self, String> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "must be a string".into())
    }
}

impl FromJson for bool {
    fn from_json(value: &Value) -> Result<Self, String> {
        value
            .as_bool()
            .ok_or_else(|| "must be true or false".into())
    }
}

/// A non-negative whole number, however it is written: JSON has one number type, and
/// clients (JavaScript's among them) may write 4502 as `4502.0`.
pub fn whole_number(value: &Value) -> Option<u64> {
    /// Beyond 2^53 a float no longer holds every whole number exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    value.as_u64().or_else(|| {
        let n = value.as_f64()?;
        (n.fract() == 0.0 && (0.0..=EXACT).contains(&n)).then_some(n as u64)
    })
}

/// Reads an optional port for serde, written as any whole number (see [`whole_number`]).
pub fn optional_port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    use serde::Deserialize;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(value) => whole_number(&value)
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("must be a whole number from 0 to 65535")),
    }
}

impl FromJson for u32 {
    fn from_json(value: &Value) -> Result<Self, String> {
        whole_number(value)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| "must be a whole number from 0 to 4294967295".into())
    }
}

/// A JSON object kept as it is (`data`, `changes`): Herald carries it, templates read it.
impl FromJson for Map<String, Value> {
    fn from_json(value: &Value) -> Result<Self, String> {
        value
            .as_object()
            .cloned()
            .ok_or_else(|| "must be a JSON object".into())
    }
}

/// A timestamp as the seeds write it: an RFC 3339 string (`new Date()` in JSON) or
/// milliseconds since the epoch (`Date.now()`).
impl FromJson for chrono::DateTime<chrono::Utc> {
    fn from_json(value: &Value) -> Result<Self, String> {
        const EXPECTED: &str = "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z \
                                or milliseconds since the epoch";
        if value.is_number() {
            return whole_number(value)
                .filter(|ms| *ms <= super::schema::LAST_MILLISECOND)
                .and_then(|ms| i64::try_from(ms).ok())
                .and_then(chrono::DateTime::from_timestamp_millis)
                .ok_or_else(|| EXPECTED.into());
        }
        let text = value.as_str().ok_or(EXPECTED)?;
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| EXPECTED.into())
    }
}

/// A non-empty list with at most `MAX` items, each parsed on its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Bounded<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> Bounded<T, MAX> {
    /// The items, in the order the client gave them.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }
}

impl<T: FromJson, const MAX: usize> FromJson for Bounded<T, MAX> {
    fn from_json(value: &Value) -> Result<Self, String> {
        let items = value
            .as_array()
            .ok_or_else(|| format!("must be an array of 1 to {MAX} items"))?;
        if items.is_empty() || items.len() > MAX {
            return Err(format!("must hold 1 to {MAX} items, not {}", items.len()));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| T::from_json(item).map_err(|m| format!("item {i} {m}")))
            .collect::<Result<Vec<T>, String>>()
            .map(Bounded)
    }
}

/// Checks a string's length in characters and that it holds no control characters.
pub fn text(value: &Value, max_chars: usize, allow_newlines: bool) -> Result<String, String> {
    let text = value.as_str().ok_or("must be a string")?;
    let len = text.chars().count();
    if len == 0 {
        return Err("must not be empty".into());
    }
    if len > max_chars {
        return Err(format!("must be at most {max_chars} characters, not {len}"));
    }
    let bad = |c: char| c.is_control() && !(allow_newlines && matches!(c, '\n' | '\r' | '\t'));
    if text.chars().any(bad) {
        return Err("must not contain control characters".into());
    }
    Ok(text.to_owned())
}
