// Retries: a 429 and a 503 are sent again after their Retry-After, with the same
// idempotency key, within bounded attempts; what is still refused then is thrown.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { HeraldClient, HeraldError } from '../dist/index.js';
import { startHerald, startProxy } from './support.mjs';

let herald;
let slowKey;
let key;

before(async () => {
  // Tenant "slow" may send one event a second, one at a time.
  herald = await startHerald({
    settings: {
      HERALD__RATE_LIMITS__TENANTS__SLOW__PER_SECOND: '1',
      HERALD__RATE_LIMITS__TENANTS__SLOW__BURST: '1',
    },
  });
  slowKey = await herald.tenant('slow');
  key = await herald.tenant('1');
});

after(async () => {
  await herald?.stop();
});

const audit = (entityId) => ({
  eventType: 'LOGIN',
  userId: 'user_1',
  entityType: 'Session',
  entityId,
  changes: {},
  timestamp: new Date(),
});

test('a 429 is sent again after its Retry-After, with the same key, and then queued', async () => {
  const proxy = await startProxy(herald.address);
  try {
    const retries = [];
    const client = new HeraldClient({ baseUrl: proxy.address, apiKey: slowKey, onRetry: (r) => retries.push(r) });
    await client.sendAuditEvent(audit('s1'));
    const started = Date.now();
    const receipt = await client.sendAuditEvent(audit('s2'));
    const took = Date.now() - started;

    assert.equal(retries.length >= 1, true, 'the second send was over the limit');
    assert.equal(retries[0].status, 429);
    assert.equal(retries[0].waitMs, 1000, "Herald's Retry-After: 1");
    assert.ok(took >= 1000, `waited ${took} ms`);
    const [, ...second] = proxy.requests.map((r) => r.headers['idempotency-key']);
    assert.equal(second.length, 1 + retries.length);
    assert.equal(new Set(second).size, 1, 'every attempt carries the same key');
    const { body } = await herald.notification(slowKey, receipt.id);
    assert.equal(body.kind, 'audit');
  } finally {
    await proxy.close();
  }
});

test('a 429 that outlasts the attempts is thrown with its Retry-After', async () => {
  const client = new HeraldClient({ baseUrl: herald.address, apiKey: slowKey, maxAttempts: 1 });
  const outcomes = await Promise.allSettled([client.sendAuditEvent(audit('a')), client.sendAuditEvent(audit('b'))]);
  const refused = outcomes.find((o) => o.status === 'rejected')?.reason;
  assert.ok(refused instanceof HeraldError, String(refused));
  assert.equal(refused.status, 429);
  assert.equal(refused.code, 'rate_limited');
  assert.equal(refused.retryAfter, 1);
});

test('the total wait is bounded: a Retry-After past it is not waited for', async () => {
  const proxy = await startProxy(herald.address, [
    { status: 503, headers: { 'retry-after': '120' }, body: { error: { code: 'queue_unavailable', message: 'full', details: [] } } },
  ]);
  try {
    const client = new HeraldClient({ baseUrl: proxy.address, apiKey: key, maxRetryWaitMs: 5_000 });
    const started = Date.now();
    const refused = await client.sendPushNotification({ recipientIds: ['a'], title: 'T', body: 'B' }).catch((e) => e);
    assert.ok(Date.now() - started < 2_000);
    assert.equal(refused.status, 503);
    assert.equal(refused.retryAfter, 120);
    assert.equal(proxy.requests.length, 1);
  } finally {
    await proxy.close();
  }
});

test('a 503 is sent again after its Retry-After, with the same key, and then queued', async () => {
  // Herald answers 503 when its broker is full or down; the stand-in answers the first
  // request so, as Herald would, and forwards the retry to Herald.
  const proxy = await startProxy(herald.address, [
    {
      status: 503,
      headers: { 'retry-after': '1' },
      body: { error: { code: 'queue_unavailable', message: 'the queue is full', details: [] } },
    },
  ]);
  try {
    const retries = [];
    const client = new HeraldClient({ baseUrl: proxy.address, apiKey: key, onRetry: (r) => retries.push(r) });
    const started = Date.now();
    const receipt = await client.sendPushNotification({ recipientIds: ['user_1'], title: 'T', body: 'B' });
    assert.ok(Date.now() - started >= 1000);
    assert.deepEqual(
      retries.map((r) => [r.status, r.waitMs, r.path]),
      [[503, 1000, '/v1/notifications/push']],
    );
    const keys = proxy.requests.map((r) => r.headers['idempotency-key']);
    assert.equal(keys.length, 2);
    assert.equal(keys[0], keys[1]);
    const { body } = await herald.notification(key, receipt.id);
    assert.equal(body.kind, 'push');
    assert.equal(client.connected, true);
  } finally {
    await proxy.close();
  }
});

test("Herald's own 503 of a full queue is retried, then thrown with its details", async () => {
  // The API alone (no workers drain the queue) with room for one push.
  const full = await startHerald({
    args: ['api'],
    settings: { HERALD__QUEUES__PUSH__MAX_LENGTH: '1', HERALD__HTTP__RETRY_AFTER: '1s' },
  });
  try {
    const fullKey = await full.tenant('1');
    const retries = [];
    const client = new HeraldClient({
      baseUrl: full.address,
      apiKey: fullKey,
      maxAttempts: 3,
      onRetry: (r) => retries.push(r),
    });
    const push = { recipientIds: ['user_1'], title: 'T', body: 'B' };
    await client.sendPushNotification(push);
    const refused = await client.sendPushNotification(push).catch((e) => e);
    assert.ok(refused instanceof HeraldError, String(refused));
    assert.equal(refused.status, 503);
    assert.equal(refused.code, 'queue_unavailable');
    assert.equal(refused.retryAfter, 1);
    assert.deepEqual(
      retries.map((r) => [r.attempt, r.status, r.waitMs]),
      [
        [1, 503, 1000],
        [2, 503, 1000],
      ],
    );
    assert.equal(refused.details.length, 1);
    assert.equal(refused.details[0].status, 'rejected');
    assert.equal(client.connected, false, 'a 503 means Herald cannot take events');
  } finally {
    await full.stop();
  }
});
