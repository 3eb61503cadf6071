//! What Herald needs of its queues and exchanges beyond their declaration, as RabbitMQ
//! policies.
//!
//! The services Herald replaces declare the same queues themselves (`assertQueue` with a
//! TTL and a length, seed 001), and RabbitMQ refuses a declaration whose arguments differ
//! from the queue's (406 PRECONDITION_FAILED). So a queue's declaration carries only what
//! the seeds declare, and everything else lives in a policy, which may change at any time:
//! overflow that refuses publishes instead of dropping the oldest message, the dead-letter
//! route of expired messages, the TTL and length as configured now, and the exchanges'
//! alternate exchange. Policies are set through the management API when it answers;
//! `herald migrate` prints the same as `rabbitmqctl set_policy` lines and writes them into
//! a definitions file for setups that load one.
//!
//! Herald works without its policies (its retries and dead letters are its own publishes),
//! but then a full queue drops its oldest message, expired messages vanish and unroutable
//! ones are dropped: each such gap is reported by name, at start and on `/health/ready`.

use super::topology::QueueType;
use crate::broker::{QueueSpec, Topology};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Herald's policies outrank a service's own catch-all policy, should it have one.
const PRIORITY: i64 = 10;

/// How long one call to the management API may take.
const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Its name (`herald.chat.messages`).
    pub name: String,
    /// The regular expression of the names it applies to.
    pub pattern: String,
    /// `queues` or `exchanges`.
    pub apply_to: &'static str,
    /// Its keys.
    pub definition: Map<String, Value>,
}

/// `name` as a regular expression matching exactly it.
fn exactly(names: &[&str]) -> String {
    let escaped: Vec<String> = names
        .iter()
        .map(|name| {
            name.chars()
                .flat_map(|c| {
                    let special = "\\^$.|?*+()[]{}".contains(c);
                    special.then_some('\\').into_iter().chain([c])
                })
                .collect()
        })
        .collect();
    format!("^({})$", escaped.join("|"))
}

fn millis(d: Duration) -> Value {
    json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The policy of one work queue.
fn queue_policy(queue: &QueueSpec, queue_type: QueueType) -> Policy {
    let mut definition = Map::new();
    definition.insert("message-ttl".into(), millis(queue.message_ttl));
    definition.insert("max-length".into(), json!(queue.max_length.get()));
    // A full queue nacks new publishes (the sender gets 503) instead of dropping the
    // oldest message, which is RabbitMQ's default (drop-head).
    definition.insert("overflow".into(), json!("reject-publish"));
    // Expired messages go through the default exchange straight to '<queue>.dlq'.
    definition.insert("dead-letter-exchange".into(), json!(""));
    definition.insert(
        "dead-letter-routing-key".into(),
        json!(queue.dead_letter_queue()),
    );
    if queue_type == QueueType::Quorum {
        // Without this, quorum queues dead-letter at most once and may lose dead letters.
        definition.insert("dead-letter-strategy".into(), json!("at-least-once"));
    }
    Policy {
        name: format!("herald.{}", queue.name),
        pattern: exactly(&[&queue.name]),
        apply_to: "queues",
        definition,
    }
}

/// Every policy Herald sets for `topology`.
pub fn policies(topology: &Topology, queue_type: QueueType) -> Vec<Policy> {
    let mut policies: Vec<Policy> = topology
        .queues
        .iter()
        .map(|queue| queue_policy(queue, queue_type))
        .collect();
    let mut exchanges = Map::new();
    // A message no queue is bound for lands in the unrouted queue, not nowhere.
    exchanges.insert("alternate-exchange".into(), json!(topology.unrouted));
    policies.push(Policy {
        name: format!("herald.exchanges.{}", topology.unrouted),
        pattern: exactly(&topology.exchanges()),
        apply_to: "exchanges",
        definition: exchanges,
    });
    policies
}

/// Quotes `text` for a POSIX shell.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The `rabbitmqctl set_policy` lines that set `policies` on `vhost`.
pub fn rabbitmqctl_lines(policies: &[Policy], vhost: &str) -> Vec<String> {
    policies
        .iter()
        .map(|p| {
            format!(
                "rabbitmqctl set_policy --vhost {} --priority {PRIORITY} --apply-to {} {} {} {}",
                shell_quoted(vhost),
                p.apply_to,
                shell_quoted(&p.name),
                shell_quoted(&p.pattern),
                shell_quoted(&Value::Object(p.definition.clone()).to_string()),
            )
        })
        .collect()
}

/// A RabbitMQ definitions file holding `policies` for `vhost`, as the management plugin
/// loads it (`load_definitions`).
pub fn definitions(policies: &[Policy], vhost: &str) -> Value {
    let policies: Vec<Value> = policies
        .iter()
        .map(|p| {
            json!({
                "vhost": vhost,
                "name": p.name,
                "pattern": p.pattern,
                "apply-to": p.apply_to,
                "priority": PRIORITY,
                "definition": p.definition,
            })
        })
        .collect();
    json!({ "policies": policies })
}

/// RabbitMQ's management API, where Herald sets its policies and reads its queues.
#[derive(Debug, Clone)]
pub struct Management {
    /// `http://host:15672`, without credentials.
    pub base: String,
    /// The user and password.
    pub credentials: (String, String),
    /// The virtual host Herald's queues live in.
    pub vhost: String,
    client: reqwest::Client,
}

/// Why the management API could not be used.
#[derive(Debug, thiserror::Error)]
#[error("RabbitMQ's management API at {base} {cause}")]
pub struct ManagementError {
    base: String,
    cause: String,
}

impl Management {
    /// The management API of the broker at `amqp_url`: `management_url` if given
    /// (`http://user:password@host:15672`), else the AMQP URL's host on port 15672 with
    /// its credentials. Herald's queues are in the AMQP URL's virtual host.
    pub fn of(amqp_url: &str, management_url: Option<&str>) -> Result<Self, String> {
        let amqp: lapin::uri::AMQPUri = amqp_url.parse()?;
        let Some(given) = management_url else {
            let userinfo = amqp.authority.userinfo;
            return Management::at(
                format!("http://{}:15672", amqp.authority.host),
                (userinfo.username, userinfo.password),
                amqp.vhost,
            );
        };
        let mut url = reqwest::Url::parse(given).map_err(|e| e.to_string())?;
        let decoded = |text: &str| percent_decoded(text).unwrap_or_else(|| text.to_owned());
        let credentials = (
            decoded(url.username()),
            decoded(url.password().unwrap_or("")),
        );
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Management::at(url.to_string(), credentials, amqp.vhost)
    }

    /// The management API at `base` (`http://host:15672`) for `vhost`. The client is
    /// built here, once: an `https://` API needs rustls' provider installed, and a client
    /// that cannot be built is a reason the policies are not applied, not a panic.
    fn at(base: String, credentials: (String, String), vhost: String) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(MANAGEMENT_TIMEOUT)
            .build()
            .map_err(|e| format!("an HTTP client for it cannot be built: {e}"))?;
        Ok(Management {
            base: base.trim_end_matches('/').to_owned(),
            credentials,
            vhost,
            client,
        })
    }

    fn error(&self, cause: impl std::fmt::Display) -> ManagementError {
        ManagementError {
            base: self.base.clone(),
            cause: cause.to_string(),
        }
    }

    /// The API's URL for `parts`, each a path segment of its own: the default vhost `/`
    /// is sent as `%2F`, as the API wants it.
    fn url(&self, parts: &[&str]) -> Result<reqwest::Url, ManagementError> {
        let mut url = reqwest::Url::parse(&self.base).map_err(|e| self.error(e))?;
        url.path_segments_mut()
            .map_err(|()| self.error("is not a base URL"))?
            .pop_if_empty()
            .push("api")
            .extend(parts);
        Ok(url)
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<Value>, ManagementError> {
        let response = request
            .basic_auth(&self.credentials.0, Some(&self.credentials.1))
            .send()
            .await
            .map_err(|e| self.error(format_args!("did not answer: {e}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(self.error(format_args!("answered {status}: {body}")));
        }
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(Some(Value::Null));
        }
        let body = response.bytes().await.map_err(|e| self.error(e))?;
        Ok(Some(serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// Sets `policy` (idempotent: the same policy again changes nothing).
    pub async fn set(&self, policy: &Policy) -> Result<(), ManagementError> {
        let body = json!({
            "pattern": policy.pattern,
            "definition": policy.definition,
            "priority": PRIORITY,
            "apply-to": policy.apply_to,
        });
        let url = self.url(&["policies", &self.vhost, &policy.name])?;
        self.call(self.client.put(url).json(&body)).await?;
        Ok(())
    }

    /// Deletes the policy `name`, if there is one.
    pub async fn delete(&self, name: &str) -> Result<(), ManagementError> {
        let url = self.url(&["policies", &self.vhost, name])?;
        self.call(self.client.delete(url)).await?;
        Ok(())
    }

    /// The virtual host's policies.
    pub async fn policies(&self) -> Result<Vec<Value>, ManagementError> {
        let url = self.url(&["policies", &self.vhost])?;
        let listed = self.call(self.client.get(url)).await?;
        Ok(listed
            .and_then(|list| list.as_array().cloned())
            .unwrap_or_default())
    }

    /// The queue `name` as the management API shows it, if it exists.
    pub async fn queue(&self, name: &str) -> Result<Option<Value>, ManagementError> {
        let url = self.url(&["queues", &self.vhost, name])?;
        self.call(self.client.get(url)).await
    }
}

/// `text` with its `%XX` escapes decoded, if they decode to UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Sets Herald's policies for `topology` and reads back each work queue as it now is:
/// one sentence per gap between what Herald needs and what the broker does (none when
/// every policy applies).
pub async fn apply(
    management: &Management,
    topology: &Topology,
    queue_type: QueueType,
) -> Vec<String> {
    for policy in policies(topology, queue_type) {
        if let Err(e) = management.set(&policy).await {
            return vec![unapplied(e)];
        }
    }
    // The policies as set, not a queue's own view of its policy: that comes from
    // statistics collected every few seconds, and is empty until then.
    let set = match management.policies().await {
        Ok(set) => set,
        Err(e) => return vec![unapplied(e)],
    };
    let mut found = Vec::new();
    for queue in &topology.queues {
        match management.queue(&queue.name).await {
            Ok(Some(shown)) => {
                let arguments = shown.get("arguments").cloned().unwrap_or_default();
                found.extend(gaps(queue, &arguments, &effective(&set, &queue.name)));
            }
            Ok(None) => {}
            Err(e) => return vec![unapplied(e)],
        }
    }
    found
}

/// The definition of the policy that applies to the queue `name` among `set` (the
/// virtual host's policies, as the management API lists them): the highest priority
/// among those that apply to queues and whose pattern matches the name.
pub fn effective(set: &[Value], name: &str) -> Map<String, Value> {
    set.iter()
        .filter(|p| matches!(p["apply-to"].as_str(), Some("queues" | "all")))
        .filter(|p| {
            p["pattern"]
                .as_str()
                .and_then(|pattern| regex_lite::Regex::new(pattern).ok())
                .is_some_and(|pattern| pattern.is_match(name))
        })
        .max_by_key(|p| p["priority"].as_i64().unwrap_or(0))
        .and_then(|p| p["definition"].as_object().cloned())
        .unwrap_or_default()
}

/// The sentence for policies that could not be set, and what follows.
fn unapplied(e: ManagementError) -> String {
    format!(
        "{e}; Herald's policies are not applied, so full queues drop their oldest messages, \
         expired messages are dropped, and messages nothing is bound for vanish (apply the \
         policies `herald migrate` prints, or enable the management plugin)"
    )
}

/// What a queue, as it exists, lacks of what Herald needs: one sentence per gap, naming
/// the queue. `arguments` are the queue's own, `policy` the definition of the policy that
/// applies to it.
pub fn gaps(queue: &QueueSpec, arguments: &Value, policy: &Map<String, Value>) -> Vec<String> {
    let name = &queue.name;
    let mut gaps = Vec::new();
    // A queue's own argument wins over a policy for overflow and dead-lettering.
    let setting = |argument: &str, key: &str| -> Option<Value> {
        arguments
            .get(argument)
            .or_else(|| policy.get(key))
            .filter(|v| !v.is_null())
            .cloned()
    };
    let overflow = setting("x-overflow", "overflow");
    if overflow.as_ref().and_then(Value::as_str) != Some("reject-publish") {
        let overflow = overflow
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or("drop-head");
        gaps.push(format!(
            "queue {name} overflows with '{overflow}': when full it drops messages instead of \
             refusing new ones, so an accepted event can be lost (Herald needs reject-publish)"
        ));
    }
    let exchange = setting("x-dead-letter-exchange", "dead-letter-exchange");
    let key = setting("x-dead-letter-routing-key", "dead-letter-routing-key");
    match exchange.as_ref().and_then(Value::as_str) {
        None => gaps.push(format!(
            "queue {name} has no dead-letter route: its expired messages are dropped, not kept \
             in {}",
            queue.dead_letter_queue()
        )),
        Some("") if key.as_ref().and_then(Value::as_str) == Some(&queue.dead_letter_queue()) => {}
        Some(exchange) => gaps.push(format!(
            "queue {name} dead-letters its expired messages to exchange '{exchange}', not to {}",
            queue.dead_letter_queue()
        )),
    }
    // For the TTL and the length, the lower of the argument and the policy applies, so
    // a value declared with the queue cannot be raised by a policy.
    let declared = |argument: &str| arguments.get(argument).and_then(Value::as_u64);
    let ttl = u64::try_from(queue.message_ttl.as_millis()).unwrap_or(u64::MAX);
    if let Some(declared) = declared("x-message-ttl").filter(|d| *d < ttl) {
        gaps.push(format!(
            "queue {name} was declared with x-message-ttl {declared} ms, below the configured \
             {ttl} ms: the lower applies until the queue is declared again"
        ));
    }
    let length = u64::from(queue.max_length.get());
    if let Some(declared) = declared("x-max-length").filter(|d| *d < length) {
        gaps.push(format!(
            "queue {name} was declared with x-max-length {declared}, below the configured \
             {length}: the lower applies until the queue is declared again"
        ));
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;
    use std::num::{NonZeroU32, NonZeroUsize};

    fn queue() -> QueueSpec {
        QueueSpec {
            kind: EventKind::Chat,
            configured_name: "chat.messages".into(),
            name: "chat.messages".into(),
            exchange: "messages".into(),
            routing_keys: vec!["chat.*".into()],
            message_ttl: Duration::from_secs(86_400),
            max_length: NonZeroU32::new(100_000).unwrap(),
            concurrency: NonZeroUsize::MIN,
            max_attempts: 3,
            backoff: crate::broker::Backoff::new(vec![Duration::from_secs(1)]).unwrap(),
            dead_letter_max_length: 10,
            dead_letter_max_age: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_policy_that_applies_is_the_highest_matching_one() {
        let set = vec![
            json!({"name": "catch-all", "pattern": ".*", "apply-to": "all", "priority": 0,
                   "definition": {"max-length": 1}}),
            json!({"name": "herald.chat.messages", "pattern": r"^(chat\.messages)$",
                   "apply-to": "queues", "priority": 10, "definition": {"max-length": 2}}),
            json!({"name": "exchanges", "pattern": ".*", "apply-to": "exchanges",
                   "priority": 99, "definition": {"alternate-exchange": "u"}}),
        ];
        assert_eq!(effective(&set, "chat.messages")["max-length"], 2);
        assert_eq!(effective(&set, "chat_messages")["max-length"], 1);
    }

    #[test]
    fn a_policy_names_exactly_its_queue() {
        let policy = queue_policy(&queue(), QueueType::Classic);
        assert_eq!(policy.pattern, r"^(chat\.messages)$");
        assert_eq!(policy.definition["overflow"], "reject-publish");
        assert_eq!(policy.definition["max-length"], 100_000);
        let line = &rabbitmqctl_lines(&[policy], "/")[0];
        assert!(
            line.starts_with("rabbitmqctl set_policy --vhost '/' --priority 10 --apply-to queues 'herald.chat.messages' '^(chat\\.messages)$' '{"),
            "{line}"
        );
    }

    #[test]
    fn a_queue_under_herald_policy_lacks_nothing_and_a_seeds_own_is_named() {
        let ours = queue_policy(&queue(), QueueType::Classic).definition;
        let declared = json!({"x-message-ttl": 86_400_000, "x-max-length": 100_000});
        assert_eq!(gaps(&queue(), &declared, &ours), Vec::<String>::new());
        let seeds = json!({"x-max-length": 500, "x-dead-letter-exchange": "dlx"});
        let found = gaps(&queue(), &seeds, &Map::new());
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("overflows with 'drop-head'"));
        assert!(found[1].contains("to exchange 'dlx'"));
        assert!(found[2].contains("x-max-length 500"));
    }
}
