// Seed 001's message-queue service, as its RabbitMQ guide describes it, run by Herald's
// tests against the broker Herald uses: its exchanges (topic, durable), its queues with
// the TTL and max length of the guide's table (amqplib's `messageTtl` and `maxLength`,
// which it sends as x-message-ttl and x-max-length), its bindings by pattern, and
// persistent publishes of the `{id, type, payload, timestamp}` envelope.
//
//   node seed001.mjs <amqp-url> '<steps as JSON>'
//
// Each step runs on a channel of its own (a refused declaration closes its channel) and
// prints one line of JSON: {"step": i, "ok": true} or {"step": i, "error": "..."}.
//   {"setup": {}}                       the guide's exchanges, queues and bindings
//   {"setup": {"deadLetterExchange": "dlx"}}   the same, queues with their own DLX
//   {"publish": {"exchange", "routingKey", "body", "messageId"?}}   body as it is
//   {"send": {"exchange", "routingKey", "type", "payload"}}   the service's envelope
import { runSteps } from './steps.mjs';
import { randomUUID } from 'node:crypto';

const HOUR = 60 * 60 * 1000;
export const QUEUES = [
  { name: 'chat.messages', exchange: 'messages', pattern: 'chat.*', ttl: 24 * HOUR, max: 100000 },
  { name: 'push.notifications', exchange: 'notifications', pattern: 'push.*', ttl: HOUR, max: 50000 },
  { name: 'email.notifications', exchange: 'notifications', pattern: 'email.*', ttl: HOUR, max: 25000 },
  { name: 'audit.events', exchange: 'audit', pattern: 'audit.*', ttl: 7 * 24 * HOUR, max: 500000 },
];

async function setup(channel, { deadLetterExchange } = {}) {
  for (const exchange of ['messages', 'notifications', 'audit']) {
    await channel.assertExchange(exchange, 'topic', { durable: true });
  }
  for (const queue of QUEUES) {
    const options = { durable: true, messageTtl: queue.ttl, maxLength: queue.max };
    if (deadLetterExchange) options.deadLetterExchange = deadLetterExchange;
    await channel.assertQueue(queue.name, options);
    await channel.bindQueue(queue.name, queue.exchange, queue.pattern);
  }
}

async function publish(channel, { exchange, routingKey, body, messageId }) {
  const options = { persistent: true, contentType: 'application/json' };
  if (messageId) options.messageId = messageId;
  channel.publish(exchange, routingKey, Buffer.from(JSON.stringify(body)), options);
  await channel.waitForConfirms();
}

// The service's sendChatMessage, sendPushNotification, ...: the payload in its envelope.
async function send(channel, { exchange, routingKey, type, payload }) {
  const body = { id: randomUUID(), type, payload, timestamp: new Date() };
  await publish(channel, { exchange, routingKey, body });
}

await runSteps({ setup, publish, send });
