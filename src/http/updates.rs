//! Per-user updates (seed 004): any service posts an update for one user, which is queued
//! like every send (202 only once the broker holds it durably) and reaches the user's
//! connections as `chat3:update` and `message:update` or `dialog:update` (see
//! [`crate::realtime::updates`]). Edits, deletions and reactions of Herald's own chat
//! messages are updates too, queued the same way, for everyone the message went to.

use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::answers::{
    BodyRefusals, InputRefusals, KeyRefusals, MessageRefusals, SendRefusals,
};
use super::error::{ApiError, invalid};
use super::send::{Accepted, IdempotencyHeader, idempotency_key, send_one};
use super::{AppState, UserPath, user_in_path};
use crate::domain::parse::{Fields, FromJson, text};
use crate::domain::{Event, EventKind, MessageChange, MessageId, TenantId, UserId, schema};
use crate::ingress::Submission;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{patch, post};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

/// The route, also what an update's idempotency key is fingerprinted with.
const ROUTE: &str = "/v1/users/{userId}/updates";

/// The update routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{user_id}/updates", post(send_update))
        .route(
            "/v1/chat/messages/{message_id}",
            patch(edit_message).delete(delete_message),
        )
        .route("/v1/chat/messages/{message_id}/reactions", post(react))
}

/// The longest reaction, in characters (an emoji sequence or a short name).
const REACTION_MAX: usize = 64;

/// The body of `PATCH /v1/chat/messages/{messageId}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct EditBody {
    /// The message's new content (at most 65,536 characters), as a chat message's.
    #[schema(schema_with = schema::lines::<65_536>)]
    content: String,
}

/// The body of `POST /v1/chat/messages/{messageId}/reactions`.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct ReactionBody {
    /// Who reacted.
    #[schema(schema_with = schema::opaque_id)]
    user_id: String,
    /// The reaction (an emoji, or a name such as `thumbs_up`; at most 64 characters).
    #[schema(schema_with = schema::line::<64>)]
    reaction: String,
}

/// The body of `POST /v1/users/{userId}/updates`: seed 004's Update structure without
/// what Herald sets (`_id`, `createdAt`, `published`) and the user, who is in the path.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body, which is parsed as a `UserUpdate`.
pub struct UpdateBody {
    /// What happened: `message.` or `dialog.` then one to three lower-case words
    /// (seed 004's `message.create`, `message.update`, `message.delete`,
    /// `message.reaction.add|update|remove`, `message.status.create|update`,
    /// `dialog.create|update|delete`, `dialog.member.add|remove`); at most 64 characters.
    #[schema(
        max_length = 64,
        pattern = "^(message|dialog)(\\.[a-z][a-z0-9_]*){1,3}$"
    )]
    event_type: String,
    /// The dialog (conversation) it happened in.
    #[schema(schema_with = schema::optional::line::<128>, required = false)]
    dialog_id: Option<String>,
    /// The message or dialog it is about.
    #[schema(schema_with = schema::optional::line::<128>, required = false)]
    entity_id: Option<String>,
    /// The publisher's id of the event behind it; defaults to the update's id.
    #[schema(schema_with = schema::optional::line::<128>, required = false)]
    event_id: Option<String>,
    /// The entity's data, carried to the clients as it is: a JSON object of at most
    /// 65,536 bytes as JSON.
    #[schema(value_type = Object)]
    data: Value,
    /// The user's tenant; the API key's when absent.
    #[schema(schema_with = schema::optional::tenant_id, required = false)]
    tenant_id: Option<Value>,
}

/// Sends an update to one user's connections, as seed 004's update service does over
/// AMQP: each connection (and a reconnecting one, by replay) gets it as `chat3:update`,
/// and as `message:update` for `message.*` types or `dialog:update` for `dialog.*`, with
/// seed 004's Update structure. Without an `Idempotency-Key` every post is a new update.
#[utoipa::path(post, path = "/v1/users/{userId}/updates", tag = "send",
    security(("api_key" = [])),
    params(UserPath, IdempotencyHeader),
    request_body = UpdateBody,
    responses((status = 202, description = "Durably queued", body = Accepted,
                   headers(("Location" = String, description = "Where the update's status is"))),
              KeyRefusals, BodyRefusals, SendRefusals))]
pub async fn send_update(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(user): Path<String>,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    let user = user_in_path(&user)?;
    if let Some(fields) = body.as_object_mut() {
        // The path names the user: a body naming another is a mistake, not a choice.
        match fields.get("userId").filter(|v| !v.is_null()) {
            Some(given) if UserId::from_json(given).as_ref() != Ok(&user) => {
                return Err(invalid("userId", "must be the path's user, or be left out"));
            }
            _ => {
                fields.insert("userId".into(), Value::String(user.as_str().to_owned()));
            }
        }
    }
    send_one(state, tenant, headers, body, (EventKind::Update, ROUTE)).await
}

/// Queues a change of `kind` with `data` to the tenant's stored message `message` (404
/// when it is not stored): everyone the message went to gets it as `chat3:update` and
/// `message:update`, with the conversation as `dialogId` and the message as `entityId`.
async fn change_message(
    state: AppState,
    tenant: TenantId,
    headers: &HeaderMap,
    message: Result<MessageId, ApiError>,
    (kind, route): (&'static str, &str),
    data: Map<String, Value>,
) -> Result<Response, ApiError> {
    let message = message?;
    if state
        .stores
        .chat
        .chat_message(&tenant, message.as_str())
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!("message {message}")));
    }
    let fingerprinted = json!({"messageId": message.as_str(), "data": &data});
    let key = idempotency_key(headers, None, route, &fingerprinted)?;
    let change = MessageChange::new(tenant.clone(), message, kind, data);
    let event = Event::MessageChange(change);
    state.accept(&tenant, key, Submission::One(event)).await
}

/// The `{messageId}` of the message routes, as documented.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the parameter, which `message_in_path` reads.
struct MessagePath {
    /// The message, as its sender named it (the chat message's `messageId`).
    #[param(rename = "messageId", schema_with = schema::opaque_id)]
    message_id: String,
}

/// The `{messageId}` of a path, checked as a chat message's `messageId` is.
fn message_in_path(raw: &str) -> Result<MessageId, ApiError> {
    MessageId::parse(raw).map_err(|message| invalid("messageId", message))
}

/// Reads bounded text `name` of `fields`, noting what is wrong with it.
fn required_text(
    fields: &mut Fields<'_>,
    name: &str,
    max: usize,
    multiline: bool,
) -> Option<String> {
    match fields.raw(name) {
        None => {
            fields.error(name, "is required");
            None
        }
        Some(value) => text(value, max, multiline)
            .map_err(|message| fields.error(name, message))
            .ok(),
    }
}

/// Edits one of Herald's chat messages: everyone it went to (its recipients and sender,
/// or its conversation's members) gets `chat3:update` and `message:update` with
/// `eventType` `message.update` and `data` `{content}`.
#[utoipa::path(patch, path = "/v1/chat/messages/{messageId}", tag = "send",
    security(("api_key" = [])),
    params(MessagePath, IdempotencyHeader),
    request_body = EditBody,
    responses((status = 202, description = "Durably queued", body = Accepted),
              MessageRefusals, BodyRefusals, SendRefusals))]
pub async fn edit_message(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(message): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let message = message_in_path(&message);
    let mut fields = Fields::of(&body)?;
    let content = required_text(&mut fields, "content", 65_536, true);
    let content = fields.finish(|| content)?;
    let data = Map::from_iter([("content".to_owned(), Value::String(content))]);
    let route = ("message.update", "PATCH /v1/chat/messages/{messageId}");
    change_message(state, tenant, &headers, message, route, data).await
}

/// Deletes one of Herald's chat messages for everyone it went to: they get
/// `chat3:update` and `message:update` with `eventType` `message.delete` and `data` `{}`.
#[utoipa::path(delete, path = "/v1/chat/messages/{messageId}", tag = "send",
    security(("api_key" = [])),
    params(MessagePath, IdempotencyHeader),
    responses((status = 202, description = "Durably queued", body = Accepted),
              MessageRefusals, InputRefusals, SendRefusals))]
pub async fn delete_message(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(message): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let message = message_in_path(&message);
    let route = ("message.delete", "DELETE /v1/chat/messages/{messageId}");
    change_message(state, tenant, &headers, message, route, Map::new()).await
}

/// Adds a user's reaction to one of Herald's chat messages: everyone it went to gets
/// `chat3:update` and `message:update` with `eventType` `message.reaction.add` and `data`
/// `{userId, reaction}`.
#[utoipa::path(post, path = "/v1/chat/messages/{messageId}/reactions", tag = "send",
    security(("api_key" = [])),
    params(MessagePath, IdempotencyHeader),
    request_body = ReactionBody,
    responses((status = 202, description = "Durably queued", body = Accepted),
              MessageRefusals, BodyRefusals, SendRefusals))]
pub async fn react(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(message): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let message = message_in_path(&message);
    let mut fields = Fields::of(&body)?;
    let user = fields.required::<UserId>("userId");
    let reaction = required_text(&mut fields, "reaction", REACTION_MAX, false);
    let (user, reaction) = fields.finish(|| Some((user?, reaction?)))?;
    let data = Map::from_iter([
        ("userId".to_owned(), Value::String(user.as_str().to_owned())),
        ("reaction".to_owned(), Value::String(reaction)),
    ]);
    let route = (
        "message.reaction.add",
        "POST /v1/chat/messages/{messageId}/reactions",
    );
    change_message(state, tenant, &headers, message, route, data).await
}
