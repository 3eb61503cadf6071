//! What a routing key means, as the seeds' services mean it.
//!
//! Herald binds its work queues by pattern (`chat.*`, `push.*`, …), so every key a
//! service publishes with under a kind's prefix reaches that kind's queue. The second word
//! is not decoration: seed 001 publishes web pushes as `push.web` and compliance records
//! as `audit.compliance` without repeating it in the payload. Each key Herald knows gives
//! the field it implies; a key under a kind's prefix that Herald has no handler for
//! (`chat.typing`) is refused by name rather than read as something it is not.
//!
//! Seed 004's per-user updates are keyed `user.{userId}.{updateType}`: on the updates
//! queue such a key implies the user and, when the payload names none, the event type
//! (the rest of the key, `message.reaction.add`). A payload naming another user than its
//! key is refused ([`names_user`]): the key is what a broker routes by, so the two must
//! agree on who is told.

use super::events::EventKind;
use serde_json::Value;

/// A key under a kind's prefix that Herald has no handler for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no handler for routing key '{0}'")]
pub struct NoHandler(pub String);

/// What a routing key says about the event it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// The event's kind.
    pub kind: EventKind,
    /// The payload fields the key implies, and their values: applied when the payload does
    /// not name them itself (the payload's own word wins).
    pub implies: Vec<(&'static str, Value)>,
}

/// The field each known key of `kind` implies; `None` for a key Herald does not know.
fn implied(kind: EventKind, word: &str) -> Option<Option<(&'static str, Value)>> {
    let field = |name: &'static str, value: Value| Some(Some((name, value)));
    match (kind, word) {
        (EventKind::Chat, "direct" | "group") => field("conversationType", word.into()),
        (EventKind::Push, "mobile" | "web") => field("platform", word.into()),
        (EventKind::Email, "send" | "template") => Some(None),
        (EventKind::Audit, "track") => field("compliance", false.into()),
        (EventKind::Audit, "compliance") => field("compliance", true.into()),
        _ => None,
    }
}

/// Reads `routing_key` for a message taken off the queue of `queue_kind`.
///
/// A key whose first word is a kind (`push.web`) is that kind's; its second word must be
/// one Herald knows. A key outside that vocabulary, which only a queue's configured
/// bindings can bring (seed 000 publishes chat as `message.new`), is the queue's kind and
/// implies nothing.
pub fn route(queue_kind: EventKind, routing_key: &str) -> Result<Routed, NoHandler> {
    if queue_kind == EventKind::Update
        && let Some(rest) = routing_key.strip_prefix("user.")
    {
        let (user, update_type) = rest.split_once('.').unwrap_or((rest, ""));
        let mut implies = vec![("userId", Value::from(user))];
        if !update_type.is_empty() {
            implies.push(("eventType", Value::from(update_type)));
        }
        return Ok(Routed {
            kind: EventKind::Update,
            implies,
        });
    }
    let mut words = routing_key.splitn(2, '.');
    let Some(kind) = words.next().and_then(EventKind::parse) else {
        return Ok(Routed {
            kind: queue_kind,
            implies: Vec::new(),
        });
    };
    let implies = match words.next() {
        None => None,
        Some(word) => implied(kind, word).ok_or_else(|| NoHandler(routing_key.to_owned()))?,
    };
    Ok(Routed {
        kind,
        implies: implies.into_iter().collect(),
    })
}

/// Whether a `user.…` routing key is for `user`: `user.{user}` or `user.{user}.{type}`,
/// compared as text so that a user id holding dots is read whole. Keys outside `user.`
/// name no user and pass.
pub fn names_user(routing_key: &str, user: &str) -> bool {
    match routing_key.strip_prefix("user.") {
        None => true,
        Some(rest) => rest
            .strip_prefix(user)
            .is_some_and(|after| after.is_empty() || after.starts_with('.')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_seed_key_implies_its_field() {
        let implies = |key| route(EventKind::Chat, key).unwrap().implies;
        assert_eq!(implies("push.web"), [("platform", json!("web"))]);
        assert_eq!(implies("push.mobile"), [("platform", json!("mobile"))]);
        assert_eq!(implies("audit.compliance"), [("compliance", json!(true))]);
        assert_eq!(
            implies("chat.group"),
            [("conversationType", json!("group"))]
        );
        assert_eq!(implies("email.send"), []);
        assert_eq!(
            route(EventKind::Chat, "push.web").unwrap().kind,
            EventKind::Push
        );
    }

    #[test]
    fn a_key_without_a_handler_is_refused_by_name() {
        assert_eq!(
            route(EventKind::Chat, "chat.typing")
                .unwrap_err()
                .to_string(),
            "no handler for routing key 'chat.typing'"
        );
        assert!(route(EventKind::Push, "push.web.extra").is_err());
    }

    #[test]
    fn a_key_outside_the_vocabulary_is_the_queues_kind() {
        let routed = route(EventKind::Chat, "message.new").unwrap();
        assert_eq!(routed.kind, EventKind::Chat);
        assert_eq!(routed.implies, []);
    }

    #[test]
    fn a_seed_004_key_names_the_user_and_the_update_type() {
        let routed = route(EventKind::Update, "user.usr_1.message.reaction.add").unwrap();
        assert_eq!(routed.kind, EventKind::Update);
        assert_eq!(
            routed.implies,
            [
                ("userId", json!("usr_1")),
                ("eventType", json!("message.reaction.add"))
            ]
        );
        // Seed 004's own example names a category, not a type: the payload's type wins.
        let routed = route(EventKind::Update, "user.usr_1.messageupdate").unwrap();
        assert_eq!(routed.implies[1], ("eventType", json!("messageupdate")));
        assert_eq!(
            route(EventKind::Update, "user.usr_1").unwrap().implies,
            [("userId", json!("usr_1"))]
        );
    }

    #[test]
    fn a_user_key_names_its_user_whole() {
        assert!(names_user("user.usr_1.message.create", "usr_1"));
        assert!(names_user("user.a.b.message.create", "a.b"));
        assert!(names_user("user.usr_1", "usr_1"));
        assert!(!names_user("user.usr_10.message.create", "usr_1"));
        assert!(!names_user("user.usr_2.message.create", "usr_1"));
        assert!(names_user("update.anything", "usr_1"));
    }
}
