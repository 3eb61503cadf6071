// Seed 001's ChatMessage exactly as the seed writes it, with no recipientIds: Herald
// delivers it to its conversation's members (`PUT /v1/conversations/{id}`), and the
// client sends it as given.
//
// Not in `npm test` yet: PUT /v1/conversations/{id} is built on the conversations branch.
// Once that is merged, add this file to the `test` script in package.json.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { HeraldClient } from '../dist/index.js';
import { call, openSocket, startHerald } from './support.mjs';

let herald;
let key;

before(async () => {
  herald = await startHerald();
  key = await herald.tenant('1');
});

after(async () => {
  await herald?.stop();
});

test("seed 001's chat message, without recipientIds, reaches its conversation's members", async () => {
  const messageQueue = new HeraldClient({ baseUrl: herald.address, apiKey: key });
  const conversationId = `conv_${randomUUID()}`;
  const defined = await call(`${herald.address}/v1/conversations/${conversationId}`, {
    method: 'PUT',
    token: key,
    body: { type: 'group', members: ['user_789', 'user_123', 'user_456'] },
  });
  assert.equal(defined.status, 201, JSON.stringify(defined.body));

  const member = await openSocket((await messageQueue.createRealtimeToken('user_123')).url);
  try {
    assert.equal(member.status, 101);
    await member.next((f) => f.type === 'ready');
    // Seed 001's usage, to the letter.
    const receipt = await messageQueue.sendChatMessage({
      messageId: `msg_${randomUUID()}`,
      conversationId,
      senderId: 'user_789',
      tenantId: 1,
      content: 'Hello world!',
      messageType: 'text',
      timestamp: new Date(),
    });
    const frame = await member.next((f) => f.type === 'message:new');
    assert.equal(frame.data.conversationId, conversationId);
    assert.equal(frame.data.content, 'Hello world!');
    const { body } = await herald.notification(key, receipt.id, (n) => n.status === 'delivered');
    assert.equal(body.status, 'delivered', JSON.stringify(body));
  } finally {
    member.close();
  }
});
