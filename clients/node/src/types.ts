// The events as seed 001's service writes them, with the optional fields Herald adds.
// Field names are Herald's contract (docs/API.md): camelCase, as the seeds spell them.

/** A tenant id as the seeds write it; Herald takes a number or a string. */
export type TenantId = number | string;

/**
 * A time: a `Date` is sent as RFC 3339 (`toISOString()`); a string is sent as it is.
 */
export type Timestamp = Date | string;

/** Seed 001's chat message. */
export interface ChatMessage {
  /** The message's id, and its idempotency key: a message is queued once per id. */
  messageId: string;
  conversationId: string;
  senderId: string;
  /** May be left out: the API key decides the tenant, and a different one is refused (403). */
  tenantId?: TenantId;
  content: string;
  messageType: 'text' | 'image' | 'file' | 'system';
  timestamp: Timestamp;
  /**
   * The participants to deliver to. Seed 001's messages have none; the message is sent as
   * given, and Herald says (422, naming the field) whether it can deliver without them.
   */
  recipientIds?: string[];
  conversationType?: 'direct' | 'group';
}

/** Seed 001's push notification. */
export interface PushNotification {
  /** 1 to 1000 user ids. */
  recipientIds: string[];
  title: string;
  body: string;
  data?: Record<string, unknown>;
  tenantId?: TenantId;
  platform?: 'mobile' | 'web';
  priority?: 'normal' | 'high';
  collapseKey?: string;
  ttlSeconds?: number;
  badge?: number;
  sound?: string;
  /** Also keep it in each recipient's in-app inbox. */
  inApp?: boolean;
}

/** Seed 001's email notification: a template and its data, one message per recipient. */
export interface EmailNotification {
  /** 1 to 100 addresses. */
  to: string[];
  /** Overrides the template's subject. */
  subject?: string;
  template: string;
  data?: Record<string, unknown>;
  tenantId?: TenantId;
  locale?: string;
  from?: string;
}

/** Seed 001's audit event. */
export interface AuditEvent {
  eventType: string;
  userId: string;
  tenantId?: TenantId;
  entityType: string;
  entityId: string;
  changes: Record<string, unknown>;
  timestamp: Timestamp;
  compliance?: boolean;
}

/** What seed 001's `notifyUsers` takes. */
export interface NotificationData {
  title: string;
  body: string;
  data?: Record<string, unknown>;
  tenantId?: TenantId;
  /** Also send the built-in `notification` email template to the users. */
  sendEmail?: boolean;
  /**
   * The users' addresses, for `sendEmail`. Without them the client's `resolveEmails`
   * option is asked (seed 001's `getUserEmails`).
   */
  emails?: string[];
}

/** Herald's answer to a send: the event is durably queued. */
export interface Receipt {
  /** The notification's id: `GET /v1/notifications/{id}` follows it. */
  id: string;
  /** `queued`. */
  status: string;
}

/** What `notifyUsers` queued. */
export interface NotifyReceipts {
  push: Receipt;
  /** Present when `sendEmail` was asked for. */
  email?: Receipt;
}

/** How full one queue is, as seed 001's `getQueueStats` shows it. */
export interface QueueStats {
  messageCount: number;
  consumerCount: number;
}

/** A token for one user's WebSocket. */
export interface RealtimeToken {
  token: string;
  /** When it stops opening sockets (an open socket stays open). */
  expiresAt: Date;
  /** The WebSocket's address with the token: `ws(s)://.../v1/realtime?token=...`. */
  url: string;
}

/** Per call: the idempotency key to send instead of a fresh one. */
export interface SendOptions {
  /**
   * 1 to 255 printable ASCII characters. The same key within 24 h answers the first send's
   * receipt and queues nothing. Default: a random UUID per call (reused on its retries);
   * for a chat message, its `messageId`.
   */
  idempotencyKey?: string;
}

/** A retry about to be waited for. */
export interface RetryInfo {
  /** The attempt that failed, from 1. */
  attempt: number;
  /** 429 or 503, or 0 when Herald could not be reached. */
  status: number;
  /** How long the client waits before the next attempt. */
  waitMs: number;
  method: string;
  path: string;
}

/** How a client reaches Herald. */
export interface HeraldClientOptions {
  /** Herald's address, e.g. `http://localhost:8080`. Default: `HERALD_URL`. */
  baseUrl?: string;
  /** The tenant's API key. Default: `HERALD_API_KEY`. */
  apiKey?: string;
  /** The admin token, needed by `getQueueStats` only. Default: `HERALD_ADMIN_TOKEN`. */
  adminToken?: string;
  /** Answers the users' email addresses for `notifyUsers` (seed 001's `getUserEmails`). */
  resolveEmails?: (userIds: string[]) => Promise<string[]> | string[];
  /** Attempts per call, the first included (default 5). */
  maxAttempts?: number;
  /** The most a call waits between its attempts, in all (default 30 000 ms). */
  maxRetryWaitMs?: number;
  /** Each request's timeout (default 10 000 ms). */
  timeoutMs?: number;
  /** Told of each retry before its wait, e.g. to log it. */
  onRetry?: (info: RetryInfo) => void;
}
