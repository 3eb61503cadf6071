//! What a routing key means, as the seeds' services mean it.
//!
//! Herald binds its work queues by pattern (`chat.*`, `push.*`, …), so every key a
//! service publishes with under a kind's prefix reaches that kind's queue. The second word
//! is not decoration: seed 001 publishes web pushes as `push.web` and compliance records
//! as `audit.compliance` without repeating it in the payload. Each key Herald knows gives
//! the field it implies; a key under a kind's prefix that Herald has no handler for
//! (`chat.typing`) is refused by name rather than read as something it is not.

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
    /// The payload field the key implies, and its value: applied when the payload does not
    /// name it itself (the payload's own word wins).
    pub implies: Option<(&'static str, Value)>,
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
    let mut words = routing_key.splitn(2, '.');
    let Some(kind) = words.next().and_then(EventKind::parse) else {
        return Ok(Routed {
            kind: queue_kind,
            implies: None,
        });
    };
    let implies = match words.next() {
        None => None,
        Some(word) => implied(kind, word).ok_or_else(|| NoHandler(routing_key.to_owned()))?,
    };
    Ok(Routed { kind, implies })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_seed_key_implies_its_field() {
        let implies = |key| route(EventKind::Chat, key).unwrap().implies;
        assert_eq!(implies("push.web"), Some(("platform", json!("web"))));
        assert_eq!(implies("push.mobile"), Some(("platform", json!("mobile"))));
        assert_eq!(
            implies("audit.compliance"),
            Some(("compliance", json!(true)))
        );
        assert_eq!(
            implies("chat.group"),
            Some(("conversationType", json!("group")))
        );
        assert_eq!(implies("email.send"), None);
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
        assert_eq!(routed.implies, None);
    }
}
