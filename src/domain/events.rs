//! The five kinds of event Herald accepts, in the contract's camelCase shapes.

use super::ids::{
    ConversationId, EmailAddress, EntityId, Locale, MessageId, TemplateName, TenantId, UserId,
};
use super::parse::{Bounded, FieldErrors, Fields, FromJson, text};
use super::schema;
use super::updates::{MessageChange, UserUpdate};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use utoipa::ToSchema;

/// Which worker pool an event is for; also the `kind` of the wire envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A chat message for the participants of a conversation.
    Chat,
    /// A push notification for users' devices.
    Push,
    /// An email rendered from a template.
    Email,
    /// An audit record to persist.
    Audit,
    /// An update for one user's clients (seed 004).
    Update,
}

impl EventKind {
    /// Every kind, in the order queues are listed.
    pub const ALL: [EventKind; 5] = [
        EventKind::Chat,
        EventKind::Push,
        EventKind::Email,
        EventKind::Audit,
        EventKind::Update,
    ];

    /// The kind's name on the wire and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Chat => "chat",
            EventKind::Push => "push",
            EventKind::Email => "email",
            EventKind::Audit => "audit",
            EventKind::Update => "update",
        }
    }

    /// Parses a kind's name.
    pub fn parse(raw: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The kind a routing key such as `push.mobile` belongs to, for events published
    /// straight to an exchange without an envelope.
    pub fn of_routing_key(routing_key: &str) -> Option<EventKind> {
        EventKind::parse(routing_key.split('.').next()?)
    }
}

impl EventKind {
    /// Reads a kind from a JSON value.
    pub fn from_json_value(value: &Value) -> Result<Self, String> {
        value
            .as_str()
            .and_then(EventKind::parse)
            .ok_or_else(|| "must be one of chat, push, email, audit, update".into())
    }
}

impl FromJson for EventKind {
    fn from_json(value: &Value) -> Result<Self, String> {
        EventKind::from_json_value(value)
    }
}

/// Declares a closed set of lower-case string values.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        // Every value is its variant's name in lower case, which `rename_all` states in a
        // form the OpenAPI derive reads (it cannot read a `rename` given through a macro).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The value as written on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value written as `raw`, if it is one.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl FromJson for $name {
            fn from_json(value: &Value) -> Result<Self, String> {
                value
                    .as_str()
                    .and_then($name::parse)
                    .ok_or_else(|| format!("must be one of {}", [$($text),+].join(", ")))
            }
        }
    };
}

string_enum!(
    /// What a chat message holds.
    MessageType {
        /// Plain text.
        Text = "text",
        /// An image reference.
        Image = "image",
        /// A file reference.
        File = "file",
        /// A message from the system rather than a participant.
        System = "system",
    }
);

string_enum!(
    /// Whether a conversation has two participants or more; it picks the routing key.
    ConversationType {
        /// One to one.
        Direct = "direct",
        /// Many participants.
        Group = "group",
    }
);

string_enum!(
    /// Which devices a push notification is for.
    Platform {
        /// iOS and Android devices (APNs and FCM).
        Mobile = "mobile",
        /// Browsers (web push through FCM).
        Web = "web",
    }
);

string_enum!(
    /// How urgently the push providers should deliver.
    Priority {
        /// Delivered when convenient for the device's battery.
        Normal = "normal",
        /// Delivered at once, waking the device.
        High = "high",
    }
);

/// A chat message for the participants of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The tenant the conversation belongs to.
    #[schema(schema_with = schema::optional::tenant_id, required = false)]
    pub tenant_id: TenantId,
    /// The sender's id for the message; it is also its idempotency key.
    #[schema(schema_with = schema::opaque_id)]
    pub message_id: MessageId,
    /// The conversation the message belongs to (`chatId` is read as another name for
    /// it).
    #[schema(schema_with = schema::opaque_id)]
    pub conversation_id: ConversationId,
    /// Who sent it; never delivered their own message.
    #[schema(schema_with = schema::opaque_id)]
    pub sender_id: UserId,
    /// The participants to deliver to (1 to 1000; `participants` is read as another name
    /// for it, and may include the sender). Absent: the conversation's members but the
    /// sender (see `PUT /v1/conversations/{conversationId}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::user_ids::<1000>, required = false)]
    pub recipient_ids: Option<Bounded<UserId, 1000>>,
    /// The message itself (at most 65,536 characters).
    #[schema(schema_with = schema::lines::<65_536>)]
    pub content: String,
    /// What the content is; defaults to text.
    #[schema(value_type = Option<MessageType>, required = false)]
    pub message_type: MessageType,
    /// When the sender sent it; defaults to when Herald accepted it.
    #[schema(schema_with = schema::optional::timestamp, required = false)]
    pub timestamp: DateTime<Utc>,
    /// Direct or group; defaults to direct.
    #[schema(value_type = Option<ConversationType>, required = false)]
    pub conversation_type: ConversationType,
}

/// A push notification for users' registered devices.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushNotification {
    /// The tenant whose users receive it.
    #[schema(schema_with = schema::optional::tenant_id, required = false)]
    pub tenant_id: TenantId,
    /// The users to notify (1 to 1000).
    #[schema(schema_with = schema::user_ids::<1000>)]
    pub recipient_ids: Bounded<UserId, 1000>,
    /// The title line.
    #[schema(schema_with = schema::line::<256>)]
    pub title: String,
    /// The body text.
    #[schema(schema_with = schema::lines::<4096>)]
    pub body: String,
    /// Custom data handed to the app.
    #[schema(value_type = Option<Object>, required = false)]
    pub data: Map<String, Value>,
    /// Mobile (iOS, Android) or web devices; defaults to mobile.
    #[schema(value_type = Option<Platform>, required = false)]
    pub platform: Platform,
    /// Delivery priority; defaults to normal.
    #[schema(value_type = Option<Priority>, required = false)]
    pub priority: Priority,
    /// Notifications with the same key replace each other on the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::line::<64>, required = false)]
    pub collapse_key: Option<String>,
    /// How long providers may hold the notification for an offline device (at most 28
    /// days).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::whole_number::<2_419_200>, required = false)]
    pub ttl_seconds: Option<u32>,
    /// The app icon badge count (iOS).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::whole_number::<4_294_967_295>, required = false)]
    pub badge: Option<u32>,
    /// The sound to play.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::line::<256>, required = false)]
    pub sound: Option<String>,
    /// Also keep the notification in each recipient's in-app inbox.
    #[schema(value_type = Option<bool>, required = false)]
    pub in_app: bool,
}

/// An email rendered from a template, sent to each address on its own.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailNotification {
    /// The tenant sending it.
    #[schema(schema_with = schema::optional::tenant_id, required = false)]
    pub tenant_id: TenantId,
    /// The recipients (1 to 100); each gets a message of their own.
    #[schema(schema_with = schema::email_addresses)]
    pub to: Bounded<EmailAddress, 100>,
    /// The template to render.
    #[schema(schema_with = schema::template_name)]
    pub template: TemplateName,
    /// The values the template reads.
    #[schema(value_type = Option<Object>, required = false)]
    pub data: Map<String, Value>,
    /// Replaces the template's subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::line::<998>, required = false)]
    pub subject: Option<String>,
    /// The translation to render (`fr-CA` falls back to `fr`, then the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::locale, required = false)]
    pub locale: Option<Locale>,
    /// Overrides the configured sender address.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::optional::email_address, required = false)]
    pub from: Option<EmailAddress>,
}

/// A change to record in the tenant's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// The tenant whose trail it joins.
    #[schema(schema_with = schema::optional::tenant_id, required = false)]
    pub tenant_id: TenantId,
    /// What happened (`USER_UPDATED`).
    #[schema(schema_with = schema::line::<128>)]
    pub event_type: String,
    /// Who did it.
    #[schema(schema_with = schema::opaque_id)]
    pub user_id: UserId,
    /// The kind of thing it happened to (`User`).
    #[schema(schema_with = schema::line::<128>)]
    pub entity_type: String,
    /// Which one.
    #[schema(schema_with = schema::opaque_id)]
    pub entity_id: EntityId,
    /// What changed.
    #[schema(value_type = Object)]
    pub changes: Map<String, Value>,
    /// When it happened.
    #[schema(schema_with = schema::timestamp)]
    pub timestamp: DateTime<Utc>,
    /// Whether the record is kept for compliance; it picks the routing key.
    #[schema(value_type = Option<bool>, required = false)]
    pub compliance: bool,
}

/// Parses a bounded text field: `max` characters, no control characters but for newlines
/// where `multiline`.
struct Text<const MAX: usize, const MULTILINE: bool>(String);

impl<const MAX: usize, const MULTILINE: bool> FromJson for Text<MAX, MULTILINE> {
    fn from_json(value: &Value) -> Result<Self, String> {
        text(value, MAX, MULTILINE).map(Text)
    }
}

/// An optional field that may also be written under `alias`; both at once is an error.
fn aliased<T: FromJson>(f: &mut Fields<'_>, name: &str, alias: &str) -> Option<T> {
    match (f.raw(name), f.raw(alias)) {
        (Some(_), Some(_)) => {
            f.error(
                alias,
                format!("is another name for {name}: give one of them"),
            );
            None
        }
        (None, Some(_)) => f.optional(alias),
        _ => f.optional(name),
    }
}

impl ChatMessage {
    /// The recipients the message names, without its sender (seed 000's `participants`
    /// include the sender, who is never delivered their own message); `None` when it names
    /// none, and goes to its conversation's members.
    pub fn listed_recipients(&self) -> Option<Vec<&UserId>> {
        self.recipient_ids.as_ref().map(|ids| {
            ids.as_slice()
                .iter()
                .filter(|id| **id != self.sender_id)
                .collect()
        })
    }

    /// Parses a chat message from its JSON document.
    pub fn parse(value: &Value) -> Result<Self, FieldErrors> {
        let mut f = Fields::of(value)?;
        let tenant_id = f.required("tenantId");
        let message_id = f.required("messageId");
        // Seed 000's clients name the conversation `chatId` and its recipients
        // `participants`.
        let conversation_id = aliased(&mut f, "conversationId", "chatId");
        if f.raw("conversationId").is_none() && f.raw("chatId").is_none() {
            f.error("conversationId", "is required");
        }
        let sender_id = f.required("senderId");
        let recipient_ids = aliased(&mut f, "recipientIds", "participants");
        let content = f.required::<Text<65_536, true>>("content");
        let message_type = f.optional("messageType");
        let timestamp = f.optional("timestamp");
        let conversation_type = f.optional("conversationType");
        f.finish(|| {
            Some(ChatMessage {
                tenant_id: tenant_id?,
                message_id: message_id?,
                conversation_id: conversation_id?,
                sender_id: sender_id?,
                recipient_ids,
                content: content?.0,
                message_type: message_type.unwrap_or(MessageType::Text),
                // Parsed where Herald accepts it: at the edge, or off the broker for an
                // event published without an envelope (an envelope carries the time
                // filled in here).
                timestamp: timestamp.unwrap_or_else(Utc::now),
                conversation_type: conversation_type.unwrap_or(ConversationType::Direct),
            })
        })
    }
}

impl PushNotification {
    /// Parses a push notification from its JSON document.
    pub fn parse(value: &Value) -> Result<Self, FieldErrors> {
        let mut f = Fields::of(value)?;
        let tenant_id = f.required("tenantId");
        let recipient_ids = f.required("recipientIds");
        let title = f.required::<Text<256, false>>("title");
        let body = f.required::<Text<4096, true>>("body");
        let data = f.optional("data");
        let platform = f.optional("platform");
        let priority = f.optional("priority");
        let collapse_key = f.optional::<Text<64, false>>("collapseKey");
        let ttl_seconds = f.optional::<u32>("ttlSeconds");
        if ttl_seconds.is_some_and(|t| t > 2_419_200) {
            f.error("ttlSeconds", "must be at most 2419200 (28 days)");
        }
        let badge = f.optional("badge");
        let sound = f.optional::<Text<256, false>>("sound");
        let in_app = f.optional("inApp");
        f.finish(|| {
            Some(PushNotification {
                tenant_id: tenant_id?,
                recipient_ids: recipient_ids?,
                title: title?.0,
                body: body?.0,
                data: data.unwrap_or_default(),
                platform: platform.unwrap_or(Platform::Mobile),
                priority: priority.unwrap_or(Priority::Normal),
                collapse_key: collapse_key.map(|t| t.0),
                ttl_seconds,
                badge,
                sound: sound.map(|t| t.0),
                in_app: in_app.unwrap_or(false),
            })
        })
    }
}

impl EmailNotification {
    /// Parses an email notification from its JSON document.
    pub fn parse(value: &Value) -> Result<Self, FieldErrors> {
        let mut f = Fields::of(value)?;
        let tenant_id = f.required("tenantId");
        let to = f.required("to");
        let template = f.required("template");
        let data = f.optional("data");
        // A subject goes into a header: no line breaks, so data can never add a header.
        let subject = f.optional::<Text<998, false>>("subject");
        let locale = f.optional("locale");
        let from = f.optional("from");
        f.finish(|| {
            Some(EmailNotification {
                tenant_id: tenant_id?,
                to: to?,
                template: template?,
                data: data.unwrap_or_default(),
                subject: subject.map(|t| t.0),
                locale,
                from,
            })
        })
    }
}

impl AuditEvent {
    /// Parses an audit event from its JSON document.
    pub fn parse(value: &Value) -> Result<Self, FieldErrors> {
        let mut f = Fields::of(value)?;
        let tenant_id = f.required("tenantId");
        let event_type = f.required::<Text<128, false>>("eventType");
        let user_id = f.required("userId");
        let entity_type = f.required::<Text<128, false>>("entityType");
        let entity_id = f.required("entityId");
        let changes = f.required("changes");
        let timestamp = f.required("timestamp");
        let compliance = f.optional("compliance");
        f.finish(|| {
            Some(AuditEvent {
                tenant_id: tenant_id?,
                event_type: event_type?.0,
                user_id: user_id?,
                entity_type: entity_type?.0,
                entity_id: entity_id?,
                changes: changes?,
                timestamp: timestamp?,
                compliance: compliance.unwrap_or(false),
            })
        })
    }
}

/// Any event Herald carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// See [`ChatMessage`].
    Chat(ChatMessage),
    /// See [`PushNotification`].
    Push(PushNotification),
    /// See [`EmailNotification`].
    Email(EmailNotification),
    /// See [`AuditEvent`].
    Audit(AuditEvent),
    /// See [`UserUpdate`].
    Update(UserUpdate),
    /// See [`MessageChange`]; carried on the updates queue.
    MessageChange(MessageChange),
}

impl Event {
    /// Parses the document of an event of `kind`.
    pub fn parse(kind: EventKind, value: &Value) -> Result<Event, FieldErrors> {
        match kind {
            EventKind::Chat => ChatMessage::parse(value).map(Event::Chat),
            EventKind::Push => PushNotification::parse(value).map(Event::Push),
            EventKind::Email => EmailNotification::parse(value).map(Event::Email),
            EventKind::Audit => AuditEvent::parse(value).map(Event::Audit),
            // A change to a Herald chat message names its message and no user.
            EventKind::Update => {
                let names = |field: &str| value.get(field).is_some_and(|v| !v.is_null());
                if names("messageId") && !names("userId") {
                    MessageChange::parse(value).map(Event::MessageChange)
                } else {
                    UserUpdate::parse(value).map(Event::Update)
                }
            }
        }
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Chat(_) => EventKind::Chat,
            Event::Push(_) => EventKind::Push,
            Event::Email(_) => EventKind::Email,
            Event::Audit(_) => EventKind::Audit,
            Event::Update(_) | Event::MessageChange(_) => EventKind::Update,
        }
    }

    /// The tenant the event belongs to.
    pub fn tenant_id(&self) -> &TenantId {
        match self {
            Event::Chat(e) => &e.tenant_id,
            Event::Push(e) => &e.tenant_id,
            Event::Email(e) => &e.tenant_id,
            Event::Audit(e) => &e.tenant_id,
            Event::Update(e) => &e.tenant_id,
            Event::MessageChange(e) => &e.tenant_id,
        }
    }

    /// The routing key the event is published with, as in the contract's topology; an
    /// update's names its user, as seed 004's do.
    pub fn routing_key(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Event::Chat(e) => match e.conversation_type {
                ConversationType::Direct => "chat.direct",
                ConversationType::Group => "chat.group",
            },
            Event::Push(e) => match e.platform {
                Platform::Mobile => "push.mobile",
                Platform::Web => "push.web",
            },
            Event::Email(_) => "email.template",
            Event::Audit(e) if e.compliance => "audit.compliance",
            Event::Audit(_) => "audit.track",
            Event::Update(e) => return Cow::Owned(e.routing_key()),
            Event::MessageChange(e) => return Cow::Owned(e.routing_key()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat() -> Value {
        json!({
            "tenantId": 1, "messageId": "msg_123", "conversationId": "conv_456",
            "senderId": "user_789", "recipientIds": ["user_1"], "content": "Hello world!",
            "messageType": "text", "timestamp": "2026-01-31T12:00:00Z"
        })
    }

    #[test]
    fn a_seed_chat_message_parses_and_defaults_to_a_direct_conversation() {
        let message = ChatMessage::parse(&chat()).unwrap();
        assert_eq!(message.tenant_id.as_str(), "1");
        assert_eq!(message.conversation_type, ConversationType::Direct);
        assert_eq!(Event::Chat(message).routing_key(), "chat.direct");
    }

    #[test]
    fn seed_000s_chat_id_and_participants_are_read_and_omitted_fields_default() {
        let message = ChatMessage::parse(&json!({
            "tenantId": 1, "messageId": "m", "chatId": "c", "senderId": "ada",
            "content": "Hello!", "participants": ["ada", "bob"],
        }))
        .unwrap();
        assert_eq!(message.conversation_id.as_str(), "c");
        assert_eq!(message.message_type, MessageType::Text);
        let listed: Vec<&str> = message
            .listed_recipients()
            .unwrap()
            .into_iter()
            .map(UserId::as_str)
            .collect();
        assert_eq!(listed, ["bob"], "the sender is never a recipient");
        let mut doc = chat();
        doc.as_object_mut().unwrap().remove("recipientIds");
        assert_eq!(ChatMessage::parse(&doc).unwrap().listed_recipients(), None);
        doc["chatId"] = json!("other");
        let errors = ChatMessage::parse(&doc).unwrap_err();
        assert_eq!(errors.0[0].field, "chatId");
        doc.as_object_mut().unwrap().remove("chatId");
        doc.as_object_mut().unwrap().remove("conversationId");
        assert_eq!(
            ChatMessage::parse(&doc).unwrap_err().0[0].field,
            "conversationId"
        );
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let mut doc = chat();
        doc["recipientIds"] = json!([]);
        doc["messageType"] = json!("video");
        doc.as_object_mut().unwrap().remove("senderId");
        let errors = ChatMessage::parse(&doc).unwrap_err();
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["senderId", "recipientIds", "messageType"]);
        assert_eq!(
            errors.0[2].message,
            "must be one of text, image, file, system"
        );
    }

    #[test]
    fn a_value_is_written_and_documented_as_it_is_parsed() {
        let written = [
            (serde_json::to_value(MessageType::File).unwrap(), "file"),
            (
                serde_json::to_value(ConversationType::Group).unwrap(),
                "group",
            ),
            (serde_json::to_value(Platform::Mobile).unwrap(), "mobile"),
            (serde_json::to_value(Priority::High).unwrap(), "high"),
        ];
        for (value, text) in written {
            assert_eq!(value, json!(text));
        }
        assert_eq!(
            MessageType::from_json(&json!("file")),
            Ok(MessageType::File)
        );
        let schema =
            serde_json::to_value(<MessageType as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["enum"], json!(["text", "image", "file", "system"]));
    }

    #[test]
    fn a_whole_number_written_with_a_point_is_a_whole_number() {
        let mut doc = chat();
        doc["tenantId"] = json!(4502.0);
        assert_eq!(ChatMessage::parse(&doc).unwrap().tenant_id.as_str(), "4502");
        doc["tenantId"] = json!(4502.5);
        assert!(ChatMessage::parse(&doc).is_err());
    }

    #[test]
    fn a_subject_with_a_line_break_is_refused() {
        let doc = json!({"tenantId": "t", "to": ["a@example.com"], "template": "welcome",
                         "subject": "Hi\r\nBcc: victim@example.com"});
        let errors = EmailNotification::parse(&doc).unwrap_err();
        assert_eq!(errors.0[0].field, "subject");
    }

    #[test]
    fn routing_keys_follow_the_contract() {
        let push = json!({"tenantId": 1, "recipientIds": ["u"], "title": "t", "body": "b", "platform": "web"});
        assert_eq!(
            Event::parse(EventKind::Push, &push).unwrap().routing_key(),
            "push.web"
        );
        let audit = json!({"tenantId": 1, "eventType": "USER_UPDATED", "userId": "u", "entityType": "User",
                           "entityId": "e", "changes": {}, "timestamp": "2026-01-31T12:00:00Z", "compliance": true});
        assert_eq!(
            Event::parse(EventKind::Audit, &audit)
                .unwrap()
                .routing_key(),
            "audit.compliance"
        );
        assert_eq!(
            EventKind::of_routing_key("push.mobile"),
            Some(EventKind::Push)
        );
    }
}
