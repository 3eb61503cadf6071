//! The domain: validated newtypes and the five event kinds Herald carries.
//!
//! Everything that enters Herald, over HTTP or straight from a broker, is parsed here once
//! (parse, don't validate); inner code takes these types and never re-checks them.

mod envelope;
mod events;
mod ids;
pub mod parse;
pub mod routing;
pub mod schema;
mod updates;

pub use envelope::{Envelope, EnvelopeError, Published, WireProperties, id_from_message_id};
pub use events::{
    AuditEvent, ChatMessage, ConversationType, EmailNotification, Event, EventKind, MessageType,
    Platform, Priority, PushNotification,
};
pub use ids::{
    ConversationId, EmailAddress, EntityId, Locale, MessageId, NotificationId, TENANT_NAME_MAX,
    TemplateName, TenantId, UserId, check_tenant_name,
};
pub use updates::{
    MESSAGE_CHANGE_TYPES, MessageChange, SEED_UPDATE_TYPES, UPDATE_DATA_MAX_BYTES, UPDATE_TYPE_MAX,
    UPDATE_TYPE_PATTERN, UpdateData, UpdateFamily, UpdateType, UserUpdate,
};
