//! Conversations: a tenant defines who is in each (`PUT`, then members added and removed),
//! so that a chat message sent without `recipientIds` goes to the conversation's members
//! but its sender; and a member marks the whole conversation read, which tells the
//! senders of what it covers (`message:read`).

use super::AppState;
use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::answers::{BodyRefusals, InputRefusals, KeyRefusals};
use super::error::{ApiError, ErrorBody, invalid};
use crate::domain::parse::{Bounded, Fields};
use crate::domain::{ConversationId, ConversationType, MessageId, TenantId, UserId, schema};
use crate::store::ConversationRead;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use utoipa::ToSchema;

/// The most members a conversation is given at once (`PUT`).
pub const MEMBERS_PER_PUT: usize = 10_000;
/// The most members added or removed at once.
pub const MEMBERS_PER_CHANGE: usize = 1000;
/// Members answered per page when the query names no `limit`.
const DEFAULT_PAGE: usize = 100;
/// The most members answered per page.
const MAX_PAGE: usize = 1000;

/// The conversation routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations/{conversation_id}", put(define).get(show))
        .route(
            "/v1/conversations/{conversation_id}/members",
            post(add_members).delete(remove_members),
        )
        .route("/v1/conversations/{conversation_id}/read", post(mark_read))
}

/// The `{conversationId}` of the conversation routes, as documented.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the parameter, which `conversation_in_path` reads.
struct ConversationPath {
    /// The conversation, as the tenant names it (the chat messages' `conversationId`).
    #[param(rename = "conversationId", schema_with = schema::opaque_id)]
    conversation_id: String,
}

/// The body of `PUT /v1/conversations/{conversationId}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct ConversationBody {
    /// Direct (one to one) or group; a direct conversation's members change only by PUT.
    #[schema(rename = "type")]
    conversation_type: ConversationType,
    /// Every member (1 to 10,000; repeats count once); replaces those it had.
    #[schema(schema_with = schema::user_ids::<MEMBERS_PER_PUT>)]
    members: Vec<String>,
}

/// The body of `POST` and `DELETE /v1/conversations/{conversationId}/members`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct MembersBody {
    /// The members to add or remove (1 to 1000).
    #[schema(schema_with = schema::user_ids::<MEMBERS_PER_CHANGE>)]
    members: Vec<String>,
}

/// The body of `POST /v1/conversations/{conversationId}/read`.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct ConversationReadBody {
    /// The member who read.
    #[schema(schema_with = schema::opaque_id)]
    user_id: String,
    /// The last message read (a `messageId` of this conversation); absent: every message
    /// so far.
    #[schema(schema_with = schema::optional::line::<128>, required = false)]
    up_to: Option<String>,
}

/// A conversation, with one page of its members.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    /// The conversation.
    pub conversation_id: String,
    /// Direct or group.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub conversation_type: ConversationType,
    /// How many members it has.
    pub member_count: i64,
    /// A page of its members, by user id.
    pub members: Vec<String>,
    /// Pass as `?after=` for the next page; null on the last one.
    pub next_after: Option<String>,
}

/// Where a member's reading of a conversation stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationReadView {
    /// The conversation.
    pub conversation_id: String,
    /// The member who read.
    pub user_id: String,
    /// The sequence number of the last message read (0: none).
    pub read_up_to: i64,
    /// Whether this request moved it (false: it had been read that far).
    pub recorded: bool,
    /// How many senders were sent `message:read`.
    pub senders_notified: usize,
}

/// The query of `GET /v1/conversations/{conversationId}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberPage {
    /// The `nextAfter` of the previous page; absent for the first.
    #[param(max_length = 128)]
    after: Option<String>,
    /// Members per page, from 1 to 1000 (default 100).
    #[param(pattern = "^([1-9][0-9]{0,2}|1000)$")]
    limit: Option<String>,
}

/// The `{conversationId}` of a path, checked as a message's `conversationId` is.
fn conversation_in_path(raw: &str) -> Result<ConversationId, ApiError> {
    ConversationId::parse(raw).map_err(|message| invalid("conversationId", message))
}

/// `members` without repeats, in a stable order.
fn distinct<const MAX: usize>(members: &Bounded<UserId, MAX>) -> Vec<&str> {
    let set: BTreeSet<&str> = members.as_slice().iter().map(UserId::as_str).collect();
    set.into_iter().collect()
}

/// The conversation with the page of members after `after`, or 404.
async fn view(
    state: &AppState,
    tenant: &TenantId,
    conversation: &ConversationId,
    after: &str,
    limit: usize,
) -> Result<ConversationView, ApiError> {
    let store = &state.stores.conversations;
    let found = store
        .conversation(tenant, conversation.as_str())
        .await?
        .ok_or_else(|| unknown(conversation))?;
    // One more than asked tells whether there is a next page.
    let mut members = store
        .members_after(tenant, conversation.as_str(), None, after, limit + 1)
        .await?;
    let next_after = (members.len() > limit).then(|| {
        members.truncate(limit);
        members.last().cloned().unwrap_or_default()
    });
    Ok(ConversationView {
        conversation_id: conversation.as_str().to_owned(),
        conversation_type: found.conversation_type,
        member_count: found.member_count,
        members,
        next_after,
    })
}

fn unknown(conversation: &ConversationId) -> ApiError {
    ApiError::NotFound(format!("conversation {conversation}"))
}

/// Creates a conversation, or replaces its type and members.
#[utoipa::path(put, path = "/v1/conversations/{conversationId}", tag = "conversations",
    security(("api_key" = [])), params(ConversationPath), request_body = ConversationBody,
    responses((status = 201, description = "Created", body = ConversationView),
        (status = 200, description = "Replaced", body = ConversationView),
        KeyRefusals, BodyRefusals))]
pub async fn define(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(conversation): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<ConversationView>), ApiError> {
    let conversation = conversation_in_path(&conversation);
    let mut fields = Fields::of(&body)?;
    let conversation_type = fields.required::<ConversationType>("type");
    let members = fields.required::<Bounded<UserId, MEMBERS_PER_PUT>>("members");
    let members = members.as_ref().map(distinct);
    let conversation = conversation?;
    let (conversation_type, members) = fields.finish(|| Some((conversation_type?, members?)))?;
    let created = state
        .stores
        .conversations
        .put_conversation(&tenant, conversation.as_str(), conversation_type, &members)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = view(&state, &tenant, &conversation, "", DEFAULT_PAGE).await?;
    Ok((status, Json(view)))
}

/// A conversation, with its member count and a page of its members.
#[utoipa::path(get, path = "/v1/conversations/{conversationId}", tag = "conversations",
    security(("api_key" = [])), params(ConversationPath, MemberPage),
    responses((status = 200, body = ConversationView),
        (status = 404, description = "No such conversation", body = ErrorBody),
        KeyRefusals, InputRefusals))]
pub async fn show(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(conversation): Path<String>,
    query: Result<Query<MemberPage>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConversationView>, ApiError> {
    let conversation = conversation_in_path(&conversation)?;
    let Query(page) = query.map_err(|e| invalid("query", e.body_text()))?;
    let limit = match page.limit {
        None => DEFAULT_PAGE,
        Some(limit) => limit
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| invalid("limit", format!("must be from 1 to {MAX_PAGE}")))?,
    };
    let after = page.after.unwrap_or_default();
    if after.chars().count() > 128 {
        return Err(invalid(
            "after",
            "must be a user id (at most 128 characters)",
        ));
    }
    Ok(Json(
        view(&state, &tenant, &conversation, &after, limit).await?,
    ))
}

/// Which way a change of members goes.
#[derive(Clone, Copy)]
enum Change {
    Add,
    Remove,
}

/// Adds or removes members of a group conversation; a direct one's members are fixed.
async fn change_members(
    state: AppState,
    tenant: TenantId,
    conversation: &str,
    body: serde_json::Value,
    change: Change,
) -> Result<Json<ConversationView>, ApiError> {
    let conversation = conversation_in_path(conversation);
    let mut fields = Fields::of(&body)?;
    let members = fields.required::<Bounded<UserId, MEMBERS_PER_CHANGE>>("members");
    let conversation = conversation?;
    let members = fields.finish(|| members)?;
    let members = distinct(&members);
    let store = &state.stores.conversations;
    let found = store
        .conversation(&tenant, conversation.as_str())
        .await?
        .ok_or_else(|| unknown(&conversation))?;
    if found.conversation_type == ConversationType::Direct {
        return Err(ApiError::Conflict(format!(
            "conversation {conversation} is direct: its members are fixed; PUT it as a group \
             to change them"
        )));
    }
    match change {
        Change::Add => {
            store
                .add_members(&tenant, conversation.as_str(), &members)
                .await?
        }
        Change::Remove => {
            store
                .remove_members(&tenant, conversation.as_str(), &members)
                .await?
        }
    }
    Ok(Json(
        view(&state, &tenant, &conversation, "", DEFAULT_PAGE).await?,
    ))
}

/// Adds members to a group conversation (those already in stay as they are).
#[utoipa::path(post, path = "/v1/conversations/{conversationId}/members", tag = "conversations",
    security(("api_key" = [])), params(ConversationPath), request_body = MembersBody,
    responses((status = 200, body = ConversationView),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 409, description = "A direct conversation's members are fixed", body = ErrorBody),
        KeyRefusals, BodyRefusals))]
pub async fn add_members(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(conversation): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<ConversationView>, ApiError> {
    change_members(state, tenant, &conversation, body, Change::Add).await
}

/// Removes members from a group conversation (those not in are ignored).
#[utoipa::path(delete, path = "/v1/conversations/{conversationId}/members", tag = "conversations",
    security(("api_key" = [])), params(ConversationPath), request_body = MembersBody,
    responses((status = 200, body = ConversationView),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 409, description = "A direct conversation's members are fixed", body = ErrorBody),
        KeyRefusals, BodyRefusals))]
pub async fn remove_members(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(conversation): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<ConversationView>, ApiError> {
    change_members(state, tenant, &conversation, body, Change::Remove).await
}

/// Marks a conversation read by one of its members, up to a message or all of it; each
/// sender of a message it newly covers gets one `message:read` (for the last such
/// message of theirs) over the real-time streams.
#[utoipa::path(post, path = "/v1/conversations/{conversationId}/read", tag = "conversations",
    security(("api_key" = [])), params(ConversationPath), request_body = ConversationReadBody,
    responses((status = 200, body = ConversationReadView),
        (status = 403, description = "The user is not a member", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        KeyRefusals, BodyRefusals))]
pub async fn mark_read(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(conversation): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<ConversationReadView>, ApiError> {
    let conversation = conversation_in_path(&conversation);
    let mut fields = Fields::of(&body)?;
    let user = fields.required::<UserId>("userId");
    let up_to = fields.optional::<MessageId>("upTo");
    let conversation = conversation?;
    let user = fields.finish(|| user)?;
    let read = state
        .realtime
        .read_conversation(
            &tenant,
            conversation.as_str(),
            user.as_str(),
            up_to.as_ref().map(MessageId::as_str),
        )
        .await?;
    let (read_up_to, recorded, senders_notified) = match read {
        ConversationRead::UnknownConversation => return Err(unknown(&conversation)),
        ConversationRead::NotAMember => {
            return Err(ApiError::Forbidden(format!(
                "{user} is not a member of conversation {conversation}"
            )));
        }
        ConversationRead::UnknownMessage => {
            return Err(invalid("upTo", "names no message of this conversation"));
        }
        ConversationRead::Marked { sequence, senders } => (sequence, true, senders.len()),
        ConversationRead::AlreadyRead { sequence } => (sequence, false, 0),
    };
    Ok(Json(ConversationReadView {
        conversation_id: conversation.as_str().to_owned(),
        user_id: user.as_str().to_owned(),
        read_up_to,
        recorded,
        senders_notified,
    }))
}
