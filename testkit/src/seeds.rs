//! Events as the seed services send them: the payloads Herald replaces the RabbitMQ glue
//! of, which the tests send and the ingress bench measures with.

use serde_json::{Value, json};

/// An email event as the seeds send one.
pub fn email_event() -> Value {
    json!({
        "tenantId": 1,
        "to": ["ada@example.com"],
        "template": "welcome",
        "data": {"name": "Ada"}
    })
}

/// A push event as the seeds send one.
pub fn push_event() -> Value {
    json!({
        "tenantId": 1,
        "recipientIds": ["user_123", "user_456"],
        "title": "New Message",
        "body": "You have a new message from John",
        "data": {"conversationId": "conv_789"}
    })
}

/// An audit event as the seeds send one.
pub fn audit_event() -> Value {
    json!({
        "eventType": "USER_UPDATED",
        "userId": "user_123",
        "tenantId": 1,
        "entityType": "User",
        "entityId": "user_456",
        "changes": {"email": "new@example.com"},
        "timestamp": "2026-01-31T12:00:00Z"
    })
}
