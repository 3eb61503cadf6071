// Seed 004's Chat3 update worker, as its RabbitMQ integration guide describes it, run by
// Herald's tests against the broker Herald uses: it creates the topic exchange
// `chat3_updates` (durable, no arguments) and publishes each personalised Update, the
// guide's Update structure as the JSON body, persistent, with the routing key
// `user.{userId}.{updateType}`.
//
//   node seed004.mjs <amqp-url> '<steps as JSON>'
//
// Each step runs on a confirm channel of its own and prints one line of JSON:
// {"step": i, "ok": true} or {"step": i, "error": "..."}.
//   {"setup": {}}                                  assertExchange('chat3_updates', 'topic')
//   {"update": {"routingKey", "update": {...}}}    the Update, its _id, eventId, published,
//                                                  publishedAt and createdAt filled in as
//                                                  the worker does when absent
import { runSteps } from './steps.mjs';
import { randomBytes } from 'node:crypto';

const EXCHANGE = 'chat3_updates';

// Chat3 is a MongoDB service: its ids are 24 hex digits.
const objectId = () => randomBytes(12).toString('hex');

async function setup(channel) {
  await channel.assertExchange(EXCHANGE, 'topic', { durable: true });
}

async function update(channel, { routingKey, update }) {
  const now = new Date();
  const body = {
    _id: objectId(),
    eventId: objectId(),
    published: true,
    publishedAt: now,
    createdAt: now,
    ...update,
  };
  channel.publish(EXCHANGE, routingKey, Buffer.from(JSON.stringify(body)), {
    persistent: true,
    contentType: 'application/json',
  });
  await channel.waitForConfirms();
}

await runSteps({ setup, update });
