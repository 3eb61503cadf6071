// The client: seed 001's messageQueue calls, each one HTTP request to Herald, with the
// tenant's key, an idempotency key, and retries where Herald asks for them.

import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { HeraldError } from './errors.js';
import type {
  AuditEvent,
  ChatMessage,
  EmailNotification,
  HeraldClientOptions,
  NotificationData,
  NotifyReceipts,
  PushNotification,
  QueueStats,
  RealtimeToken,
  Receipt,
  SendOptions,
  TenantId,
} from './types.js';

/** Who a request authenticates as. */
type Credential = 'tenant' | 'admin' | 'none';

interface Request {
  method: 'GET' | 'POST';
  path: string;
  body?: unknown;
  credential: Credential;
  /** Sent as `Idempotency-Key`; the same on every attempt. */
  idempotencyKey?: string;
}

/** The wait after an unreachable Herald: doubling from this, up to the cap. */
const NETWORK_BACKOFF_MS = 250;
const NETWORK_BACKOFF_CAP_MS = 5_000;

/**
 * A Herald client with seed 001's `messageQueue` API. Settings not given are read from
 * the environment (`HERALD_URL`, `HERALD_API_KEY`, `HERALD_ADMIN_TOKEN`) at the first
 * call, so that a client may be made when its module loads.
 */
export class HeraldClient {
  readonly #options: HeraldClientOptions;
  #connected = false;

  constructor(options: HeraldClientOptions = {}) {
    this.#options = { ...options };
  }

  /**
   * Whether Herald took the last request: true once an answer came that was not a 503;
   * false before the first request, after a 503 (its broker is full or down) and when
   * Herald could not be reached. `checkHealth()` asks without sending anything.
   */
  get connected(): boolean {
    return this.#connected;
  }

  /** Asks Herald whether it is ready (`GET /health/ready`: database and broker). */
  async checkHealth(): Promise<boolean> {
    try {
      const response = await fetch(this.#url('/health/ready'), {
        signal: AbortSignal.timeout(this.#options.timeoutMs ?? 10_000),
      });
      await response.arrayBuffer();
      this.#connected = response.ok;
    } catch {
      this.#connected = false;
    }
    return this.#connected;
  }

  /**
   * Queues a chat message. Its `messageId` is its idempotency key (Herald's own rule for
   * chat), so that a message sent again after a lost answer is queued once, whichever
   * client sent it first; `options.idempotencyKey` sends a key of its own instead.
   */
  sendChatMessage(message: ChatMessage, options: SendOptions = {}): Promise<Receipt> {
    return this.#send('/v1/chat/messages', message, options.idempotencyKey ?? null);
  }

  /** Queues a push notification for users' devices. */
  sendPushNotification(notification: PushNotification, options: SendOptions = {}): Promise<Receipt> {
    return this.#send('/v1/notifications/push', notification, options.idempotencyKey);
  }

  /** Queues an email, rendered from its template and sent once per recipient. */
  sendEmailNotification(
    notification: EmailNotification,
    options: SendOptions = {},
  ): Promise<Receipt> {
    return this.#send('/v1/notifications/email', notification, options.idempotencyKey);
  }

  /** Queues an audit event for the tenant's audit chain. */
  sendAuditEvent(event: AuditEvent, options: SendOptions = {}): Promise<Receipt> {
    return this.#send('/v1/audit/events', event, options.idempotencyKey);
  }

  /** Seed 001's `trackUserAction`: an audit event of `action`, timed now. */
  trackUserAction(
    userId: string,
    tenantId: TenantId,
    action: string,
    entityType: string,
    entityId: string,
    changes: Record<string, unknown>,
    options: SendOptions = {},
  ): Promise<Receipt> {
    return this.sendAuditEvent(
      { eventType: action, userId, tenantId, entityType, entityId, changes, timestamp: new Date() },
      options,
    );
  }

  /**
   * Seed 001's `notifyUsers`: a push to the users, and with `sendEmail` the built-in
   * `notification` template (subject `title`; its data is `data` with `title` and `body`)
   * to their addresses: `notification.emails`, else what `resolveEmails` answers.
   * `options.idempotencyKey` keys the push as `KEY:push` and the email as `KEY:email`.
   */
  async notifyUsers(
    userIds: string[],
    notification: NotificationData,
    options: SendOptions = {},
  ): Promise<NotifyReceipts> {
    const key = (part: string) =>
      options.idempotencyKey === undefined ? {} : { idempotencyKey: `${options.idempotencyKey}:${part}` };
    let to: string[] | undefined;
    if (notification.sendEmail) {
      // Resolved first: a missing resolver fails the call before anything is queued.
      to = notification.emails ?? (await this.#resolveEmails(userIds));
    }
    const push = await this.sendPushNotification(
      {
        recipientIds: userIds,
        title: notification.title,
        body: notification.body,
        data: notification.data,
        tenantId: notification.tenantId,
      },
      key('push'),
    );
    if (to === undefined) {
      return { push };
    }
    const email = await this.sendEmailNotification(
      {
        to,
        subject: notification.title,
        template: 'notification',
        data: { ...notification.data, title: notification.title, body: notification.body },
        tenantId: notification.tenantId,
      },
      key('email'),
    );
    return { push, email };
  }

  /**
   * Each queue's messages and consumers, seed 001's shape, dead-letter queues included
   * (`email.notifications.dlq`). Needs the admin token.
   */
  async getQueueStats(): Promise<Record<string, QueueStats>> {
    return (await this.#request({ method: 'GET', path: '/admin/queues', credential: 'admin' })) as Record<
      string,
      QueueStats
    >;
  }

  /** A short-lived token that opens `userId`'s WebSocket on Herald. */
  async createRealtimeToken(
    userId: string,
    options: { ttlSeconds?: number } = {},
  ): Promise<RealtimeToken> {
    const issued = (await this.#request({
      method: 'POST',
      path: '/v1/realtime/tokens',
      body: { userId, ttlSeconds: options.ttlSeconds },
      credential: 'tenant',
    })) as { token: string; expiresAt: string };
    const url = new URL(this.#url('/v1/realtime'));
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('token', issued.token);
    return { token: issued.token, expiresAt: new Date(issued.expiresAt), url: url.toString() };
  }

  /** Sends one event; `key` null sends no header (chat: Herald keys it by `messageId`). */
  async #send(path: string, event: object, key: string | null | undefined): Promise<Receipt> {
    const idempotencyKey = key === null ? undefined : (key ?? randomUUID());
    return (await this.#request({ method: 'POST', path, body: event, credential: 'tenant', idempotencyKey })) as Receipt;
  }

  async #resolveEmails(userIds: string[]): Promise<string[]> {
    const resolve = this.#options.resolveEmails;
    if (resolve === undefined) {
      throw new TypeError(
        'notifyUsers with sendEmail needs the addresses: pass notification.emails or the resolveEmails option',
      );
    }
    return resolve(userIds);
  }

  #url(path: string): string {
    const base = this.#options.baseUrl ?? process.env.HERALD_URL;
    if (!base) {
      throw new TypeError('Herald client: no baseUrl option and no HERALD_URL');
    }
    return `${base.replace(/\/+$/, '')}${path}`;
  }

  #authorization(credential: Credential): string | undefined {
    if (credential === 'none') {
      return undefined;
    }
    const [secret, name] =
      credential === 'tenant'
        ? [this.#options.apiKey ?? process.env.HERALD_API_KEY, 'apiKey option or HERALD_API_KEY']
        : [this.#options.adminToken ?? process.env.HERALD_ADMIN_TOKEN, 'adminToken option or HERALD_ADMIN_TOKEN'];
    if (!secret) {
      throw new TypeError(`Herald client: this call needs the ${name}`);
    }
    return `Bearer ${secret}`;
  }

  /**
   * One call: sent until Herald answers other than 429 or 503 and is reachable, or the
   * attempts or the total wait run out. A 429 or 503 waits its `Retry-After`; an
   * unreachable Herald waits a doubling backoff. The body and idempotency key are the
   * same on every attempt, so a retry never queues an event twice.
   */
  async #request(request: Request): Promise<unknown> {
    const url = this.#url(request.path);
    const headers: Record<string, string> = { accept: 'application/json' };
    const authorization = this.#authorization(request.credential);
    if (authorization !== undefined) {
      headers.authorization = authorization;
    }
    if (request.idempotencyKey !== undefined) {
      headers['idempotency-key'] = request.idempotencyKey;
    }
    // Serialized once: a Date becomes RFC 3339 (Date.prototype.toJSON).
    const body = request.body === undefined ? undefined : JSON.stringify(request.body);
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
    }
    const maxAttempts = Math.max(1, this.#options.maxAttempts ?? 5);
    const maxWait = this.#options.maxRetryWaitMs ?? 30_000;
    let waited = 0;
    for (let attempt = 1; ; attempt += 1) {
      let failure: HeraldError;
      let waitMs: number;
      try {
        const response = await fetch(url, {
          method: request.method,
          headers,
          body,
          signal: AbortSignal.timeout(this.#options.timeoutMs ?? 10_000),
        });
        const text = await response.text();
        const answer = text === '' ? null : parseJson(text);
        this.#connected = response.status !== 503;
        if (response.ok) {
          return answer;
        }
        const retryAfter = parseRetryAfter(response.headers.get('retry-after'));
        failure = HeraldError.fromAnswer(response.status, answer, retryAfter);
        if (response.status !== 429 && response.status !== 503) {
          throw failure;
        }
        waitMs = (retryAfter ?? 1) * 1000;
      } catch (cause) {
        if (cause instanceof HeraldError) {
          throw cause;
        }
        this.#connected = false;
        failure = new HeraldError(0, 'unreachable', `Herald could not be reached at ${url}: ${String(cause)}`, [], {
          cause,
        });
        waitMs = Math.min(NETWORK_BACKOFF_MS * 2 ** (attempt - 1), NETWORK_BACKOFF_CAP_MS);
      }
      if (attempt >= maxAttempts || waited + waitMs > maxWait) {
        throw failure;
      }
      this.#options.onRetry?.({
        attempt,
        status: failure.status,
        waitMs,
        method: request.method,
        path: request.path,
      });
      await sleep(waitMs);
      waited += waitMs;
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** `Retry-After` in seconds: a number of seconds or an HTTP date. */
function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) {
    return undefined;
  }
  if (/^\d+$/.test(value.trim())) {
    return Number(value.trim());
  }
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}
