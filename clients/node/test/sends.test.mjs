// Seed 001's calls against a real Herald: each send is queued, answered with Herald's
// receipt, and found in Herald's ledger; errors carry the contract's details.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { HeraldClient, HeraldError } from '../dist/index.js';
import { ADMIN_TOKEN, call, openSocket, startHerald, startProxy } from './support.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let herald;
let key;
let messageQueue;

before(async () => {
  herald = await startHerald();
  key = await herald.tenant('1');
  messageQueue = new HeraldClient({ baseUrl: herald.address, apiKey: key, adminToken: ADMIN_TOKEN });
});

after(async () => {
  await herald?.stop();
});

/** Seed 001's chat message, with the recipients Herald delivers to. */
function chatMessage(fields = {}) {
  return {
    messageId: `msg_${randomUUID()}`,
    conversationId: 'conv_456',
    senderId: 'user_789',
    recipientIds: ['user_123'],
    tenantId: 1,
    content: 'Hello world!',
    messageType: 'text',
    timestamp: new Date(),
    ...fields,
  };
}

/** Asserts a receipt is Herald's and the ledger knows it as a `kind` event; answers it. */
async function assertInLedger(receipt, kind, done = () => true) {
  assert.match(receipt.id, UUID);
  assert.equal(receipt.status, 'queued');
  const { status, body } = await herald.notification(key, receipt.id, done);
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.id, receipt.id);
  assert.equal(body.kind, kind);
  return body;
}

const delivered = (n) => n.status === 'delivered';

describe('each of seed 001 sends is queued by Herald and in its ledger', () => {
  test('sendChatMessage', async () => {
    await assertInLedger(await messageQueue.sendChatMessage(chatMessage()), 'chat');
  });

  test('sendPushNotification', async () => {
    const receipt = await messageQueue.sendPushNotification({
      recipientIds: ['user_123', 'user_456'],
      title: 'New Message',
      body: 'You have a new message from John',
      data: { conversationId: 'conv_789' },
      tenantId: 1,
    });
    await assertInLedger(receipt, 'push');
  });

  test('sendEmailNotification, delivered to the outbox', async () => {
    const receipt = await messageQueue.sendEmailNotification({
      to: ['user@example.com'],
      subject: 'Welcome to mono Platform',
      template: 'welcome',
      data: { name: 'John Doe' },
      tenantId: 1,
    });
    const ledger = await assertInLedger(receipt, 'email', delivered);
    assert.equal(ledger.status, 'delivered', JSON.stringify(ledger));
  });

  test('sendAuditEvent, with its Date timestamp sent as RFC 3339', async () => {
    const timestamp = new Date('2025-03-04T05:06:07.089Z');
    const receipt = await messageQueue.sendAuditEvent({
      eventType: 'USER_UPDATED',
      userId: 'user_123',
      tenantId: 1,
      entityType: 'User',
      entityId: 'user_456',
      changes: { email: 'new@example.com' },
      timestamp,
    });
    await assertInLedger(receipt, 'audit', delivered);
    const { body } = await call(`${herald.address}/v1/audit/events?entityId=user_456`, { token: key });
    const stored = body.items.find((item) => item.eventType === 'USER_UPDATED');
    assert.ok(stored, JSON.stringify(body));
    assert.equal(new Date(stored.timestamp).getTime(), timestamp.getTime());
  });

  test('trackUserAction sends an audit event of the action', async () => {
    const receipt = await messageQueue.trackUserAction('user_1', 1, 'PROJECT_RENAMED', 'Project', 'project_7', {
      name: 'New name',
    });
    await assertInLedger(receipt, 'audit', delivered);
    const { body } = await call(`${herald.address}/v1/audit/events?entityId=project_7`, { token: key });
    assert.deepEqual(
      body.items.map((i) => [i.eventType, i.userId, i.entityType, i.changes]),
      [['PROJECT_RENAMED', 'user_1', 'Project', { name: 'New name' }]],
    );
  });

  test('notifyUsers sends a push, and with sendEmail the notification email to the resolved addresses', async () => {
    const asked = [];
    const client = new HeraldClient({
      baseUrl: herald.address,
      apiKey: key,
      resolveEmails: async (userIds) => {
        asked.push(userIds);
        return userIds.map((id) => `${id}@example.com`);
      },
    });
    const receipts = await client.notifyUsers(['user_1', 'user_2'], {
      title: 'Build finished',
      body: 'Your build is green',
      data: { buildId: 42 },
      tenantId: 1,
      sendEmail: true,
    });
    assert.deepEqual(asked, [['user_1', 'user_2']]);
    await assertInLedger(receipts.push, 'push');
    const email = await assertInLedger(receipts.email, 'email', (n) => n.deliveries?.length === 2 && delivered(n));
    assert.equal(email.status, 'delivered', JSON.stringify(email));
    assert.deepEqual(email.deliveries.map((d) => d.recipient).sort(), ['user_1@example.com', 'user_2@example.com']);
  });

  test('notifyUsers without sendEmail sends the push only', async () => {
    const receipts = await messageQueue.notifyUsers(['user_1'], { title: 'Hi', body: 'There', tenantId: 1 });
    await assertInLedger(receipts.push, 'push');
    assert.equal(receipts.email, undefined);
  });

  test('notifyUsers with sendEmail but no way to find addresses fails before queuing anything', async () => {
    const proxy = await startProxy(herald.address);
    try {
      const client = new HeraldClient({ baseUrl: proxy.address, apiKey: key });
      await assert.rejects(
        client.notifyUsers(['user_1'], { title: 'Hi', body: 'There', sendEmail: true }),
        /resolveEmails/,
      );
      assert.equal(proxy.requests.length, 0);
    } finally {
      await proxy.close();
    }
  });
});

describe('idempotency keys', () => {
  test('every send but chat carries a fresh key, reused by none of the others', async () => {
    const proxy = await startProxy(herald.address);
    try {
      const client = new HeraldClient({ baseUrl: proxy.address, apiKey: key });
      const push = { recipientIds: ['user_1'], title: 'T', body: 'B' };
      await client.sendPushNotification(push);
      await client.sendPushNotification(push);
      await client.sendEmailNotification({ to: ['a@example.com'], template: 'welcome', data: { name: 'A' } });
      await client.trackUserAction('u', 1, 'A', 'E', 'e', {});
      const keys = proxy.requests.map((r) => r.headers['idempotency-key']);
      assert.equal(keys.length, 4);
      for (const k of keys) assert.match(k, UUID);
      assert.equal(new Set(keys).size, 4);
    } finally {
      await proxy.close();
    }
  });

  test('the same key answers the same receipt and queues once', async () => {
    const idempotencyKey = `order-${randomUUID()}`;
    const push = { recipientIds: ['user_1'], title: 'Shipped', body: 'Your order shipped' };
    const first = await messageQueue.sendPushNotification(push, { idempotencyKey });
    const again = await messageQueue.sendPushNotification(push, { idempotencyKey });
    assert.deepEqual(again, first);
    const other = await messageQueue.sendPushNotification(push);
    assert.notEqual(other.id, first.id);
  });

  test("a chat message is keyed by its messageId, Herald's own key for chat", async () => {
    const proxy = await startProxy(herald.address);
    try {
      const client = new HeraldClient({ baseUrl: proxy.address, apiKey: key });
      const message = chatMessage();
      const first = await client.sendChatMessage(message);
      const again = await client.sendChatMessage(message);
      assert.equal(again.id, first.id);
      // Herald keys a chat message by its messageId when no header overrides it.
      assert.equal(proxy.requests[0].headers['idempotency-key'], undefined);
      // The same message from another client (any HTTP sender) is the same send too.
      const plain = await call(`${herald.address}/v1/chat/messages`, { method: 'POST', token: key, body: message });
      assert.equal(plain.status, 202);
      assert.equal(plain.body.id, first.id);
    } finally {
      await proxy.close();
    }
  });

  test('the same key with another body is refused, naming the key', async () => {
    const idempotencyKey = randomUUID();
    await messageQueue.sendPushNotification({ recipientIds: ['a'], title: 'T', body: 'one' }, { idempotencyKey });
    const refused = await messageQueue
      .sendPushNotification({ recipientIds: ['a'], title: 'T', body: 'two' }, { idempotencyKey })
      .catch((e) => e);
    assert.ok(refused instanceof HeraldError, String(refused));
    assert.equal(refused.status, 422);
    assert.equal(refused.details[0].field, 'Idempotency-Key');
  });
});

describe('errors', () => {
  test("a 422 is a HeraldError with the contract's code, message and details naming each field", async () => {
    const refused = await messageQueue
      .sendChatMessage(chatMessage({ messageType: 'video', recipientIds: [] }))
      .catch((e) => e);
    assert.ok(refused instanceof HeraldError, String(refused));
    assert.equal(refused.name, 'HeraldError');
    assert.equal(refused.status, 422);
    assert.equal(refused.code, 'validation_failed');
    assert.match(refused.message, /invalid/);
    const fields = refused.details.map((d) => d.field).sort();
    assert.deepEqual(fields, ['messageType', 'recipientIds']);
    assert.match(refused.details.find((d) => d.field === 'messageType').message, /text, image, file, system/);
  });

  test('a tenantId other than the key\'s is a 403', async () => {
    const refused = await messageQueue.sendAuditEvent({
      eventType: 'X', userId: 'u', tenantId: 2, entityType: 'E', entityId: 'e', changes: {}, timestamp: new Date(),
    }).catch((e) => e);
    assert.ok(refused instanceof HeraldError);
    assert.equal(refused.status, 403);
    assert.equal(refused.code, 'forbidden');
  });

  test('a wrong key is a 401, not retried', async () => {
    const retries = [];
    const client = new HeraldClient({ baseUrl: herald.address, apiKey: 'hk_000000000000_wrong', onRetry: (r) => retries.push(r) });
    const refused = await client.sendPushNotification({ recipientIds: ['a'], title: 'T', body: 'B' }).catch((e) => e);
    assert.ok(refused instanceof HeraldError);
    assert.equal(refused.status, 401);
    assert.equal(refused.code, 'unauthorized');
    assert.deepEqual(retries, []);
  });
});

describe('queues, connection and real time', () => {
  test("getQueueStats answers seed 001's shape from Herald's queues", async () => {
    const stats = await messageQueue.getQueueStats();
    for (const queue of ['chat.messages', 'push.notifications', 'email.notifications', 'audit.events']) {
      assert.ok(stats[queue], `${queue} in ${JSON.stringify(stats)}`);
      assert.deepEqual(Object.keys(stats[queue]).sort(), ['consumerCount', 'messageCount']);
      assert.ok(Number.isInteger(stats[queue].messageCount));
      assert.ok(stats[queue].consumerCount >= 1, `${queue} has Herald's workers as consumers`);
    }
  });

  test('getQueueStats needs the admin token', async () => {
    const client = new HeraldClient({ baseUrl: herald.address, apiKey: key });
    const saved = process.env.HERALD_ADMIN_TOKEN;
    delete process.env.HERALD_ADMIN_TOKEN;
    try {
      await assert.rejects(client.getQueueStats(), /adminToken/);
    } finally {
      if (saved !== undefined) process.env.HERALD_ADMIN_TOKEN = saved;
    }
    const tenantKeyAsAdmin = new HeraldClient({ baseUrl: herald.address, apiKey: key, adminToken: key });
    const refused = await tenantKeyAsAdmin.getQueueStats().catch((e) => e);
    assert.ok(refused instanceof HeraldError);
    assert.equal(refused.status, 401);
  });

  test('connected is false before any call, true once Herald answered, false when it cannot be reached', async () => {
    const client = new HeraldClient({ baseUrl: herald.address, apiKey: key });
    assert.equal(client.connected, false);
    await client.sendPushNotification({ recipientIds: ['a'], title: 'T', body: 'B' });
    assert.equal(client.connected, true);

    const closed = await startProxy(herald.address);
    await closed.close(); // Nothing listens on its port now.
    const retries = [];
    const unreachable = new HeraldClient({
      baseUrl: closed.address, apiKey: key, maxAttempts: 2, onRetry: (r) => retries.push(r),
    });
    const refused = await unreachable.sendPushNotification({ recipientIds: ['a'], title: 'T', body: 'B' }).catch((e) => e);
    assert.ok(refused instanceof HeraldError);
    assert.equal(refused.status, 0);
    assert.equal(refused.code, 'unreachable');
    assert.deepEqual(retries.map((r) => r.status), [0], 'a network error is retried');
    assert.equal(unreachable.connected, false);
    assert.equal(await unreachable.checkHealth(), false);
    assert.equal(await client.checkHealth(), true);
  });

  test("createRealtimeToken answers a token that opens the user's WebSocket on Herald", async () => {
    const { token, expiresAt, url } = await messageQueue.createRealtimeToken('user_ws', { ttlSeconds: 60 });
    assert.ok(token.length > 0);
    assert.ok(expiresAt instanceof Date && expiresAt > new Date());
    assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+\/v1\/realtime\?token=/);
    const forged = await openSocket(url.replace(/token=[^&]+/, 'token=forged'));
    assert.equal(forged.status, 401);

    const socket = await openSocket(url);
    try {
      assert.equal(socket.status, 101);
      await socket.next((f) => f.type === 'ready');
      const message = chatMessage({ recipientIds: ['user_ws'] });
      await messageQueue.sendChatMessage(message);
      const frame = await socket.next((f) => f.type === 'message:new');
      assert.equal(frame.data.messageId, message.messageId);
      assert.equal(frame.data.content, 'Hello world!');
    } finally {
      socket.close();
    }
  });
});
