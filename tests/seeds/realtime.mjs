// The seeds' real-time clients (socket.io-client v4 as seeds 000, 002 and 004 use it), run by Herald's tests against a real Herald. Each scenario posts chat
// messages over Herald's HTTP API itself, so that it can post while it is disconnected,
// and prints one line of JSON saying what it saw.
//
//   node realtime.mjs socketio '{"base", "key", "token", "user", "transports"?}'
//   node realtime.mjs refused  '{"base", "token"}'
//   node realtime.mjs conversation '{"key", "conversation", "ann": {"base", "token", "user"},
//                                    "bob": {"base", "token", "user"}}'
//     seed 002's two members of a conversation, each on its own Herald (or the same):
//     typing, message:send with its acknowledgement, and bob's replay after being away.
//   node realtime.mjs updates '{"base", "ann": {"token"}, "ben": {"token"}, "amqp", "steps"}'
//     two users connected while seed 004's worker (seed004.mjs) publishes `steps` to the
//     broker at `amqp`: the events each receives.
import { io } from 'socket.io-client';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const [scenario, config] = [process.argv[2], JSON.parse(process.argv[3])];
const { base, key, token, user } = config;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function post(id, content) {
  const response = await fetch(`${base}/v1/chat/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      messageId: id, conversationId: 'c-rt', senderId: 'ada', recipientIds: [user],
      content, messageType: 'text', timestamp: new Date().toISOString(),
    }),
  });
  if (response.status !== 202) throw new Error(`POST answered ${response.status}`);
}

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
  await post('sio-0', 'before');
  while (news.length === 0) await sleep(20);
  const seen = { content: news[0].message.content, cursor: news[0].meta.cursor };
  // Let a polling client that may upgrade do so before it is asked which transport it is.
  await sleep(500);
  seen.transport = first.io.engine.transport.name;
  first.disconnect();

  for (const [i, content] of ['one', 'two', 'three'].entries()) await post(`sio-${i + 1}`, content);
  // Let the worker store them while the client is away.
  await sleep(1500);

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
  const { key, ann, bob } = config;
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

const scenarios = { socketio, refused, conversation, updates };
try {
  console.log(JSON.stringify(await scenarios[scenario]()));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.stack ?? e) }));
  process.exit(1);
}
