//! Identifier and address newtypes, each parsed once at the edge.

use super::parse::{FromJson, text, whole_number};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Declares an opaque identifier chosen by the client: 1 to 128 printable characters.
macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses an identifier as a client sent it.
            pub fn parse(raw: &str) -> Result<Self, String> {
                text(&Value::String(raw.to_owned()), 128, false).map(Self)
            }

            /// The identifier as the client sent it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromJson for $name {
            fn from_json(value: &Value) -> Result<Self, String> {
                text(value, 128, false).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// A user of a tenant's product, as the tenant names it (`user_123`).
    UserId
);
opaque_id!(
    /// A chat conversation, as the tenant names it.
    ConversationId
);
opaque_id!(
    /// A chat message's own id, chosen by the sender; it doubles as its idempotency key.
    MessageId
);
opaque_id!(
    /// The entity an audit event is about.
    EntityId
);

/// The tenant an event belongs to. Seeds send it as a number or a string; it is always
/// kept and answered as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

/// The longest tenant name, in characters.
pub const TENANT_NAME_MAX: usize = 200;

/// Checks a tenant's name, which is for people: it shows in lists and logs, so it is
/// printable and bounded.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    let length = name.chars().count();
    if name.trim().is_empty() || length > TENANT_NAME_MAX || name.chars().any(char::is_control) {
        return Err(format!(
            "must be 1 to {TENANT_NAME_MAX} printable characters, not only spaces"
        ));
    }
    Ok(())
}

impl TenantId {
    /// Parses a tenant id from its string form: 1 to 64 of `A-Z a-z 0-9 _ - .`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if valid {
            Ok(TenantId(raw.to_owned()))
        } else {
            Err("must be 1 to 64 letters, digits, '_', '-' or '.'".into())
        }
    }

    /// The tenant id in its string form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tenant id read back from where it was stored.
impl TryFrom<String> for TenantId {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        TenantId::parse(&raw).map_err(|e| format!("tenant id '{raw}': {e}"))
    }
}

impl FromJson for TenantId {
    fn from_json(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(s) => TenantId::parse(s),
            Value::Number(_) => match whole_number(value) {
                Some(n) => TenantId::parse(&n.to_string()),
                None => Err("must be a string or a non-negative whole number".into()),
            },
            _ => Err("must be a string or a non-negative whole number".into()),
        }
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Herald's own id for an accepted event: a UUID v7, so that ids sort by acceptance time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NotificationId(uuid::Uuid);

impl NotificationId {
    /// A fresh id for an event accepted now.
    pub fn new() -> Self {
        NotificationId(uuid::Uuid::now_v7())
    }

    /// The UUID itself.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// Parses an id from its hyphenated form.
    pub fn parse(raw: &str) -> Result<Self, String> {
        uuid::Uuid::parse_str(raw)
            .map(NotificationId)
            .map_err(|_| "must be a UUID".into())
    }
}

impl Default for NotificationId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromJson for NotificationId {
    fn from_json(value: &Value) -> Result<Self, String> {
        NotificationId::parse(value.as_str().ok_or("must be a string")?)
    }
}

impl fmt::Display for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A single email address (`someone@example.com`), checked against RFC 5322's addr-spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses one address; display names and CR/LF are refused so that an address can
    /// never carry a header of its own.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > 254 || raw.chars().any(char::is_control) {
            return Err("must be an email address of at most 254 characters".into());
        }
        match email_address::EmailAddress::parse_with_options(
            raw,
            email_address::Options::default().without_display_text(),
        ) {
            Ok(_) => Ok(EmailAddress(raw.to_owned())),
            Err(_) => Err(format!("'{raw}' is not an email address")),
        }
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromJson for EmailAddress {
    fn from_json(value: &Value) -> Result<Self, String> {
        EmailAddress::parse(value.as_str().ok_or("must be a string")?)
    }
}

/// A template's name: 1 to 64 of `a-z 0-9 _ - .`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TemplateName(String);

impl TemplateName {
    /// Parses a template name.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bytes = raw.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 64
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(b));
        if valid {
            Ok(TemplateName(raw.to_owned()))
        } else {
            Err("must be 1 to 64 of a-z, 0-9, '_', '-' or '.'".into())
        }
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromJson for TemplateName {
    fn from_json(value: &Value) -> Result<Self, String> {
        TemplateName::parse(value.as_str().ok_or("must be a string")?)
    }
}

/// A BCP 47 language tag such as `fr` or `fr-CA`, used to pick a template's translation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Locale(String);

impl Locale {
    /// Parses a language tag: a 2 or 3 letter language, then subtags of 1 to 8 letters or
    /// digits.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = raw.split('-');
        let language_ok = parts.next().is_some_and(|l| {
            (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic())
        });
        let rest_ok = parts
            .all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
        if language_ok && rest_ok && raw.len() <= 35 {
            Ok(Locale(raw.to_owned()))
        } else {
            Err("must be a language tag such as 'en' or 'fr-CA'".into())
        }
    }

    /// The tag as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A tag in its conventional case (`fr-CA`, `zh-Hant-TW`), however it was written or
    /// stored: templates are matched lower-cased, but always shown in this one form.
    pub fn conventional(tag: &str) -> String {
        tag.split('-')
            .enumerate()
            .map(|(i, part)| {
                let letters = part.bytes().all(|b| b.is_ascii_alphabetic());
                match part.len() {
                    _ if i == 0 => part.to_ascii_lowercase(),
                    2 if letters => part.to_ascii_uppercase(),
                    4 if letters => {
                        let lower = part.to_ascii_lowercase();
                        lower[..1].to_ascii_uppercase() + &lower[1..]
                    }
                    _ => part.to_ascii_lowercase(),
                }
            })
            .collect::<Vec<_>>()
            .join("-")
    }
}

impl FromJson for Locale {
    fn from_json(value: &Value) -> Result<Self, String> {
        Locale::parse(value.as_str().ok_or("must be a string")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_locale_is_shown_in_its_conventional_case() {
        assert_eq!(Locale::conventional("fr-ca"), "fr-CA");
        assert_eq!(Locale::conventional("ZH-hant-tw"), "zh-Hant-TW");
        assert_eq!(Locale::conventional("es-419"), "es-419");
        assert_eq!(Locale::conventional("en"), "en");
    }

    #[test]
    fn tenant_id_is_accepted_as_number_or_string_and_kept_as_string() {
        assert_eq!(TenantId::from_json(&json!(1)).unwrap().as_str(), "1");
        assert_eq!(
            TenantId::from_json(&json!("tnt_default")).unwrap().as_str(),
            "tnt_default"
        );
        assert!(TenantId::from_json(&json!(-3)).is_err());
        assert!(TenantId::from_json(&json!(1.5)).is_err());
        assert!(TenantId::from_json(&json!("a b")).is_err());
    }

    #[test]
    fn email_addresses_refuse_display_names_and_line_breaks() {
        assert!(EmailAddress::parse("ada@example.com").is_ok());
        assert!(EmailAddress::parse("Ada <ada@example.com>").is_err());
        assert!(EmailAddress::parse("ada@example.com\r\nBcc: x@y.z").is_err());
        assert!(EmailAddress::parse("not-an-address").is_err());
    }

    #[test]
    fn locales_follow_bcp47_shape() {
        assert!(Locale::parse("fr-CA").is_ok());
        assert!(Locale::parse("en").is_ok());
        assert!(Locale::parse("f").is_err());
        assert!(Locale::parse("fr_CA").is_err());
    }
}
