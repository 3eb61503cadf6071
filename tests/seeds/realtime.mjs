// The seeds' real-time clients (socket.io-client v4 as seeds 000, 002 and 004 use it), run by Herald's tests against a real Herald. Each scenario posts chat
// messages over Herald's HTTP API itself, so that it can post while it is disconnected,
// and prints one line of JSON saying what it saw.
//
//   node realtime.mjs socketio '{"base", "key", "token", "user", "transports"?}'
//   node realtime.mjs refused  '{"base", "token"}'
import { io } from 'socket.io-client';

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

const scenarios = { socketio, refused };
try {
  console.log(JSON.stringify(await scenarios[scenario]()));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.stack ?? e) }));
  process.exit(1);
}
