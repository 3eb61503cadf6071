// Herald's error shape, `{"error": {"code", "message", "details"}}`, as one exception.

/**
 * A call Herald refused, or could not be asked. `status` is the HTTP status (0 when Herald
 * could not be reached); `code`, `message` and `details` are the contract's error body:
 * for a 422, `details` holds one `{field, message}` per invalid field; for a 503 of a
 * batch, one `{index, id, status}` per event.
 */
export class HeraldError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown[];
  /** The `Retry-After` of a 429 or 503, in seconds. */
  readonly retryAfter: number | undefined;

  constructor(
    status: number,
    code: string,
    message: string,
    details: unknown[] = [],
    options: { retryAfter?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HeraldError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = options.retryAfter;
  }

  /** The error of an answer: its body's `error`, or the status alone if it has none. */
  static fromAnswer(status: number, body: unknown, retryAfter?: number): HeraldError {
    const error = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } })
      ?.error;
    return new HeraldError(
      status,
      typeof error?.code === 'string' ? error.code : `http_${status}`,
      typeof error?.message === 'string' ? error.message : `Herald answered ${status}`,
      Array.isArray(error?.details) ? error.details : [],
      { retryAfter },
    );
  }
}
