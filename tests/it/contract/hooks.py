"""Schemathesis hooks for Herald's contract run (tests/it/contract.rs).

Herald is idempotent: a send that reuses an `Idempotency-Key` (or, for a chat message, a
`messageId`) with a different body is refused with 422, as the contract says. Schemathesis
draws such values from a small space and reuses them across different bodies, so each
schema-valid send is given fresh ones here, as a real client's would be. Invalid sends
are left exactly as drawn.
"""

import uuid

import schemathesis

SENDS = {"/v1/chat/messages", "/v1/notifications/push", "/v1/notifications/email",
         "/v1/audit/events", "/v1/batch", "/v1/users/{userId}/updates",
         "/v1/chat/messages/{messageId}", "/v1/chat/messages/{messageId}/reactions"}


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    meta = case.meta
    if case.operation.path not in SENDS or meta is None:
        return
    if not meta.generation.mode.is_positive:
        return
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = str(uuid.uuid4())
    body = case.body
    events = body.get("events") if isinstance(body, dict) else None
    documents = events if isinstance(events, list) else [body]
    for document in documents:
        if isinstance(document, dict) and "messageId" in document:
            document["messageId"] = str(uuid.uuid4())
