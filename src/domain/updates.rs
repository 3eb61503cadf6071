//! Per-user updates (seed 004): a change to a message or a dialog that one user's clients
//! should hear of, published by any service over HTTP (`POST /v1/users/{userId}/updates`)
//! or over AMQP (exchange `chat3_updates`, routing key `user.{userId}.{updateType}`).
//!
//! An update's type is a dotted name under `message` or `dialog` (seed 004 lists
//! `message.reaction.add`, `dialog.member.add`, ...): its first word picks the second
//! event name clients hear it under besides `chat3:update` (`message:update`,
//! `dialog:update`), so no other family is admitted. Its `data` is carried as it is, within
//! a size bound, because it goes into every replayable log row of the user.

use super::ids::{ConversationId, EntityId, MessageId, TenantId, UserId};
use super::parse::{FieldErrors, Fields, FromJson};
use super::schema;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// The longest update type, in bytes (ASCII only).
pub const UPDATE_TYPE_MAX: usize = 64;

/// The most bytes an update's `data` may take as JSON text.
pub const UPDATE_DATA_MAX_BYTES: usize = 65_536;

/// What an update type must look like: `message` or `dialog`, then one to three lower-case
/// words (letters, digits, `_`), dot-separated.
pub const UPDATE_TYPE_PATTERN: &str = "^(message|dialog)(\\.[a-z][a-z0-9_]*){1,3}$";

/// The types seed 004 lists: all of them fit the pattern; they are named here so that the
/// documentation and the tests say which ones clients already handle.
pub const SEED_UPDATE_TYPES: [&str; 13] = [
    "message.create",
    "message.update",
    "message.delete",
    "message.reaction.add",
    "message.reaction.update",
    "message.reaction.remove",
    "message.status.create",
    "message.status.update",
    "dialog.create",
    "dialog.update",
    "dialog.delete",
    "dialog.member.add",
    "dialog.member.remove",
];

/// Which entity an update is about; it names the second event clients hear it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateFamily {
    /// `message.*`: also sent as `message:update`.
    Message,
    /// `dialog.*`: also sent as `dialog:update`.
    Dialog,
}

impl UpdateFamily {
    /// The event name of this family's updates, besides `chat3:update`.
    pub fn event_name(self) -> &'static str {
        match self {
            UpdateFamily::Message => "message:update",
            UpdateFamily::Dialog => "dialog:update",
        }
    }
}

/// An update's type, such as `message.reaction.add`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UpdateType(String);

impl UpdateType {
    /// Parses a type as a publisher wrote it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        const EXPECTED: &str = "must be message.* or dialog.*: one to three lower-case words \
                                after it, dot-separated (message.reaction.add), at most 64 \
                                characters";
        let mut words = raw.split('.');
        let family = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        let word = |w: &&str| {
            w.starts_with(|c: char| c.is_ascii_lowercase())
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let fits = raw.len() <= UPDATE_TYPE_MAX
            && matches!(family, "message" | "dialog")
            && (1..=3).contains(&rest.len())
            && rest.iter().all(word);
        fits.then(|| UpdateType(raw.to_owned()))
            .ok_or_else(|| EXPECTED.into())
    }

    /// The type as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its family, from its first word.
    pub fn family(&self) -> UpdateFamily {
        if self.0.starts_with("dialog.") {
            UpdateFamily::Dialog
        } else {
            UpdateFamily::Message
        }
    }
}

impl FromJson for UpdateType {
    fn from_json(value: &Value) -> Result<Self, String> {
        UpdateType::parse(value.as_str().ok_or("must be a string")?)
    }
}

/// An update's `data`: a JSON object of at most 64 KiB as JSON text.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct UpdateData(Map<String, Value>);

impl UpdateData {
    /// The object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl FromJson for UpdateData {
    fn from_json(value: &Value) -> Result<Self, String> {
        let object = <Map<String, Value> as FromJson>::from_json(value)?;
        let size = value.to_string().len();
        if size > UPDATE_DATA_MAX_BYTES {
            return Err(format!(
                "must be at most {UPDATE_DATA_MAX_BYTES} bytes as JSON, not {size}"
            ));
        }
        Ok(UpdateData(object))
    }
}

/// An update for one user, as seed 004's Update structure carries it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserUpdate {
    /// The tenant of the user.
    #[schema(schema_with = schema::optional::tenant_id, required = false)]
    pub tenant_id: TenantId,
    /// Who gets it (in the path over HTTP; the routing key's second word over AMQP).
    #[schema(schema_with = schema::opaque_id)]
    pub user_id: UserId,
    /// What happened: `message.*` or `dialog.*` (seed 004's types, such as
    /// `message.reaction.add`, `dialog.member.add`).
    #[schema(schema_with = update_type)]
    pub event_type: UpdateType,
    /// The dialog (conversation) it happened in.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::line::<128>, required = false)]
    pub dialog_id: Option<ConversationId>,
    /// The message or dialog it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::line::<128>, required = false)]
    pub entity_id: Option<EntityId>,
    /// The publisher's id of the event behind it; defaults to the update's own id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::line::<128>, required = false)]
    pub event_id: Option<EntityId>,
    /// The entity's data, carried as it is (a JSON object of at most 64 KiB).
    #[schema(value_type = Object)]
    pub data: UpdateData,
}

/// The schema of an update type, as [`UpdateType::parse`] reads it.
fn update_type() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(UPDATE_TYPE_MAX))
        .pattern(Some(UPDATE_TYPE_PATTERN))
        .into()
}

impl UserUpdate {
    /// Parses an update from its JSON document: seed 004's Update structure, whose other
    /// fields (`_id`, `createdAt`, `published`, ...) are Herald's to set and are ignored.
    pub fn parse(value: &Value) -> Result<Self, FieldErrors> {
        let mut f = Fields::of(value)?;
        let tenant_id = f.required("tenantId");
        let user_id = f.required("userId");
        let event_type = f.required("eventType");
        let dialog_id = f.optional("dialogId");
        let entity_id = f.optional("entityId");
        let event_id = f.optional("eventId");
        let data = f.required("data");
        f.finish(|| {
            Some(UserUpdate {
                tenant_id: tenant_id?,
                user_id: user_id?,
                event_type: event_type?,
                dialog_id,
                entity_id,
                event_id,
                data: data?,
            })
        })
    }

    /// The routing key it is published with: seed 004's `user.{userId}.{updateType}`,
    /// the type being the whole dotted event type.
    pub fn routing_key(&self) -> String {
        format!("user.{}.{}", self.user_id, self.event_type.as_str())
    }
}

/// The changes to Herald's own chat messages that its API makes: an edit, a deletion and
/// a reaction, each sent as seed 004 names it.
pub const MESSAGE_CHANGE_TYPES: [&str; 3] =
    ["message.update", "message.delete", "message.reaction.add"];

/// A change to one of Herald's own chat messages, for everyone the message went to (its
/// listed recipients and its sender, or its conversation's members): the updates worker
/// looks the audience up when it appends, a page at a time, so that a conversation of any
/// size costs the API nothing and the fan-out bounded memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageChange {
    /// The message's tenant.
    pub tenant_id: TenantId,
    /// The message, as its sender named it.
    pub message_id: MessageId,
    /// One of [`MESSAGE_CHANGE_TYPES`].
    pub event_type: UpdateType,
    /// What changed (`{content}`, `{}` or `{userId, reaction}`), carried as it is.
    pub data: UpdateData,
}

impl MessageChange {
    /// Parses a change from its JSON document (as Herald's envelope carries it).
    pub fn parse(value: &Value) -> Result<Self, FieldErrors> {
        let mut f = Fields::of(value)?;
        let tenant_id = f.required("tenantId");
        let message_id = f.required("messageId");
        let event_type = f.required::<UpdateType>("eventType");
        if let Some(t) = &event_type
            && !MESSAGE_CHANGE_TYPES.contains(&t.as_str())
        {
            f.error(
                "eventType",
                "must be message.update, message.delete or message.reaction.add",
            );
        }
        let data = f.required("data");
        f.finish(|| {
            Some(MessageChange {
                tenant_id: tenant_id?,
                message_id: message_id?,
                event_type: event_type?,
                data: data?,
            })
        })
    }

    /// The change of `kind` to `message`, with `data`.
    pub fn new(
        tenant_id: TenantId,
        message_id: MessageId,
        kind: &'static str,
        data: Map<String, Value>,
    ) -> Self {
        debug_assert!(MESSAGE_CHANGE_TYPES.contains(&kind));
        MessageChange {
            tenant_id,
            message_id,
            event_type: UpdateType(kind.to_owned()),
            data: UpdateData(data),
        }
    }

    /// The routing key it is published with on the updates exchange: `message.{id}.{type}`,
    /// beside seed 004's `user.{id}.{type}`.
    pub fn routing_key(&self) -> String {
        format!("message.{}.{}", self.message_id, self.event_type.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_seed_type_parses_and_names_its_family() {
        for raw in SEED_UPDATE_TYPES {
            let parsed = UpdateType::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            let expected = if raw.starts_with("dialog") {
                UpdateFamily::Dialog
            } else {
                UpdateFamily::Message
            };
            assert_eq!(parsed.family(), expected, "{raw}");
        }
        assert_eq!(
            UpdateType::parse("message.reaction.add")
                .unwrap()
                .family()
                .event_name(),
            "message:update"
        );
    }

    #[test]
    fn a_type_outside_the_two_families_or_too_long_is_refused() {
        for raw in [
            "message",
            "user.create",
            "messageupdate",
            "message.",
            "message.Reaction",
            "message.a.b.c.d",
            "dialog.member add",
            &format!("message.{}", "a".repeat(60)),
        ] {
            assert!(UpdateType::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn a_seed_update_parses_and_its_data_is_bounded() {
        let seed = json!({
            "_id": "507f1f77bcf86cd799439011", "tenantId": "tnt_default",
            "userId": "usr_a3f9k2p1", "dialogId": "507f1f77bcf86cd799439012",
            "entityId": "507f1f77bcf86cd799439013", "eventId": "507f1f77bcf86cd799439014",
            "eventType": "message.create", "data": {"content": "Hello!"},
            "published": true, "createdAt": "2025-11-04T12:18:32.450Z"
        });
        let update = UserUpdate::parse(&seed).unwrap();
        assert_eq!(update.routing_key(), "user.usr_a3f9k2p1.message.create");
        let mut big = seed.clone();
        big["data"] = json!({"blob": "x".repeat(UPDATE_DATA_MAX_BYTES)});
        big["eventType"] = json!("user.create");
        let errors = UserUpdate::parse(&big).unwrap_err();
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["eventType", "data"]);
    }
}
