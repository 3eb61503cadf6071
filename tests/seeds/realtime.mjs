// The seeds' real-time clients (socket.io-client v4 as seeds 000, 002 and 004 use it, and
// an EventSource, the eventsource package), run by Herald's tests against a real Herald.
// Each scenario posts chat messages over Herald's HTTP API itself, so that it can post
// while it is disconnected, and prints one line of JSON saying what it saw.
//
//   node realtime.mjs socketio    '{"base", "key", "token", "user", "transports"?}'
//   node realtime.mjs refused     '{"base", "token"}'
//   node realtime.mjs eventsource '{"base", "key", "token", "user"}'
//   node realtime.mjs conversation '{"key", "conversation", "ann": {"base", "token", "user"},
//                                    "bob": {"base", "token", "user"}}'
//     seed 002's two members of a conversation, each on its own Herald (or the same):
//     typing, message:send with its acknowledgement, and bob's replay after being away.
//   node realtime.mjs updates '{"base", "ann": {"token"}, "ben": {"token"}, "amqp", "steps"}'
//     two users connected while seed 004's worker (seed004.mjs) publishes `steps` to the
//     broker at `amqp`: the events each receives.
import { io } from 'socket.io-client';
import { EventSource } from 'eventsource';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { post, report, sleep, stored } from './herald.mjs';

const [scenario, config] = [process.argv[2], JSON.parse(process.argv[3])];
const { base, token } = config;

// Resolves with the first of `events` to arrive on `socket`, or rejects after 10 s.
function once(socket, ...events) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${events} within 10 s`)), 10000);
    for (const event of events) {
      socket.once(event, (...args) => { clearTimeout(timer); resolve({ event, args }); });
    }
  });
}

async function socketio() {
  const options = (auth) => ({ auth, transports: config.transports, reconnection: false, forceNew: true });
  const first = io(base, options({ token }));
  const news = [];
  first.on('message:new', (message, meta) => news.push({ message, meta }));
  await once(first, 'ready');
  await post(config, 'sio-0', 'before');
  await until(() => news.length > 0, 'the first message');
  const seen = { content: news[0].message.content, cursor: news[0].meta.cursor };
  // Let a polling client that may upgrade do so before it is asked which transport it is.
  await sleep(500);
  seen.transport = first.io.engine.transport.name;
  first.disconnect();

  // Stored in the log while the client is away.
  for (const [i, content] of ['one', 'two', 'three'].entries()) {
    await stored(config, await post(config, `sio-${i + 1}`, content));
  }

  const again = io(base, options({ token, since: seen.cursor }));
  const missed = [];
  again.on('message:new', (message, meta) => missed.push({ content: message.content, cursor: meta.cursor }));
  await once(again, 'ready');
  await sleep(500);

  // Seed 002: acknowledge the first message, then ask for what was missed since.
  const received = [];
  again.on('message:received', (message) => received.push(message.content));
  again.emit('ack', { cursor: seen.cursor });
  again.emit('user:reconnected');
  await sleep(1000);
  again.disconnect();
  return { first: seen, missed, received };
}

async function refused() {
  const socket = io(base, { auth: { token }, reconnection: false, forceNew: true });
  const { event, args } = await once(socket, 'connect', 'connect_error');
  socket.disconnect();
  return { event, message: args[0]?.message };
}

// Collects every event `socket` receives: its name, its data and, for a log event, its cursor.
function record(socket) {
  const seen = [];
  socket.onAny((event, data, meta) => seen.push({ event, data, cursor: meta?.cursor }));
  return seen;
}

// Emits `event` with `data` and resolves with what the acknowledgement callback got.
function ask(socket, event, data) {
  return socket.timeout(10000).emitWithAck(event, data);
}

async function conversation() {
  const { ann, bob } = config;
  const connect = (who, since) =>
    io(who.base, { auth: { token: who.token, since }, reconnection: false, forceNew: true });
  const a = connect(ann);
  const b = connect(bob);
  const annSaw = record(a);
  const bobSaw = record(b);
  await Promise.all([once(a, 'ready'), once(b, 'ready')]);
  const result = {};

  // Typing: five starts in a row are one indicator, then a stop; never back to the typer.
  for (let i = 0; i < 5; i++) a.emit('typing', { conversationId: config.conversation, isTyping: true });
  await sleep(500);
  a.emit('typing', { conversationId: config.conversation, isTyping: false });
  await sleep(700);
  result.typing = bobSaw.filter((e) => e.event === 'typing').map((e) => e.data);
  result.typingToTyper = annSaw.filter((e) => e.event === 'typing').length;
  result.typingElsewhere = await ask(a, 'typing', { conversationId: 'not-a-member-here', isTyping: true });
  if (config.crowd) result.typingInCrowd = await ask(a, 'typing', { conversationId: config.crowd, isTyping: true });

  // Seed 002's message:send, claiming another sender, answered with message:sent and the ack.
  const sentEvent = once(a, 'message:sent');
  result.ack = await ask(a, 'message:send', {
    chatId: config.conversation, content: 'from the socket', messageType: 'text', senderId: 'mallory',
  });
  result.sent = (await sentEvent).args[0];
  // The same messageId twice: one message, the same answer.
  result.repeat = [
    await ask(a, 'message:send', { messageId: 'm-fixed', chatId: config.conversation, content: 'once' }),
    await ask(a, 'message:send', { messageId: 'm-fixed', chatId: config.conversation, content: 'once' }),
  ];
  const errorEvent = once(a, 'message:error');
  result.invalid = await ask(a, 'message:send', { messageId: 'm-bad', chatId: config.conversation });
  result.errorEvent = (await errorEvent).args[0];
  await sleep(1500);
  result.bobGot = bobSaw.filter((e) => e.event === 'message:new')
    .map((e) => ({ messageId: e.data.messageId, senderId: e.data.senderId, content: e.data.content }));
  result.annGotOwn = annSaw.filter((e) => e.event === 'message:new').length;

  // Bob goes away; three messages are sent meanwhile; he comes back from his last cursor.
  const news = bobSaw.filter((e) => e.event === 'message:new');
  const lastNew = news[news.length - 1]?.cursor;
  b.disconnect();
  for (const content of ['away one', 'away two', 'away three']) {
    await ask(a, 'message:send', { chatId: config.conversation, content });
  }
  await sleep(1500);
  const again = connect(bob, lastNew);
  const missed = [];
  again.on('message:new', (message) => missed.push(message.content));
  await once(again, 'ready');
  result.missed = [...missed];
  const live = once(again, 'message:new');
  await ask(a, 'message:send', { chatId: config.conversation, content: 'live again' });
  result.live = (await live).args[0].content;
  a.disconnect();
  again.disconnect();
  return result;
}

async function updates() {
  const connect = (who) => io(config.base, { auth: { token: who.token }, reconnection: false, forceNew: true });
  const ann = connect(config.ann);
  const ben = connect(config.ben);
  const annSaw = record(ann);
  const benSaw = record(ben);
  await Promise.all([once(ann, 'ready'), once(ben, 'ready')]);
  const script = new URL('./seed004.mjs', import.meta.url).pathname;
  const { stdout } = await promisify(execFile)('node', [script, config.amqp, JSON.stringify(config.steps)]);
  const deadline = Date.now() + 10000;
  while (annSaw.filter((e) => e.event !== 'ready').length < 2 && Date.now() < deadline) await sleep(50);
  await sleep(800);
  ann.disconnect();
  ben.disconnect();
  const events = (seen) => seen.filter((e) => e.event !== 'ready').map(({ event, data }) => ({ event, data }));
  return { published: stdout.trim().split('\n').map((line) => JSON.parse(line)), ann: events(annSaw), ben: events(benSaw) };
}

// Resolves once `holds()` does, or rejects after 10 s saying `what` did not happen.
async function until(holds, what) {
  for (let waited = 0; !holds(); waited += 20) {
    if (waited >= 10000) throw new Error(`${what} did not happen within 10 s`);
    await sleep(20);
  }
}

// A TCP proxy to `target` (a URL) that can cut every connection through it, as a restart
// or a load balancer would, and then hold new ones until released. It notes each
// request's Last-Event-ID, from the first bytes the client sends.
async function cuttableProxy(target) {
  const live = new Set();
  const held = [];
  const requests = [];
  let holding = false;
  const forward = (client, head) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    upstream.on('error', () => client.destroy());
    live.add({ client, upstream });
    upstream.write(head);
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const server = net.createServer((client) => {
    client.on('error', () => {});
    client.once('data', (head) => {
      // Piped once forwarded; until then what follows waits in the socket.
      client.pause();
      const header = /^last-event-id: *(.*)\r$/im.exec(head.toString());
      requests.push({ lastEventId: header ? header[1] : null });
      if (holding) held.push({ client, head });
      else forward(client, head);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    cut() {
      holding = true;
      for (const { client, upstream } of live) { client.destroy(); upstream.destroy(); }
      live.clear();
    },
    release() {
      holding = false;
      for (const { client, head } of held.splice(0)) forward(client, head);
    },
    close() {
      this.cut();
      server.close();
    },
  };
}

// An EventSource on the SSE stream through a proxy that cuts its connection: it must
// reconnect by itself with Last-Event-ID and get exactly the messages posted meanwhile, in
// order, then live ones.
async function eventsource() {
  const proxy = await cuttableProxy(new URL(base));
  const source = new EventSource(`${proxy.url}/v1/realtime/sse?token=${token}`);
  const news = [];
  const readies = [];
  let errors = 0;
  source.addEventListener('message:new', (e) => {
    news.push({ content: JSON.parse(e.data).content, id: e.lastEventId });
  });
  source.addEventListener('ready', (e) => readies.push(e.lastEventId));
  source.addEventListener('error', () => { errors += 1; });
  await until(() => readies.length === 1, 'the first ready');
  await stored(config, await post(config, 'es-0', 'before'));
  await until(() => news.length >= 1, 'the first message');

  proxy.cut();
  await until(() => errors === 1, 'the EventSource seeing its connection cut');
  for (const [i, content] of ['one', 'two', 'three'].entries()) {
    await stored(config, await post(config, `es-${i + 1}`, content));
  }
  // Its reconnection (after the EventSource's own delay, 3 s) goes through now.
  proxy.release();
  await until(() => readies.length === 2, 'the ready after reconnecting');
  const missed = news.slice(1);
  await post(config, 'es-4', 'live');
  await until(() => news.length >= 5, 'the live message');
  // Room for a duplicate to show.
  await sleep(300);
  source.close();
  proxy.close();
  return { news, missed, readies, requests: proxy.requests };
}

const scenarios = { socketio, refused, eventsource, conversation, updates };
await report(scenarios[scenario]);
