// A real browser (Debian's Chromium, headless, driven by playwright-core) on a page of
// another origin than Herald's, with the socket.io client the seeds' front ends load: the
// copy in node_modules, served here with the page, so that nothing comes from a CDN.
// Cross-origin long polling works only if Herald answers with the CORS headers the browser
// asks for.
//
//   node browser.mjs
//
// It serves the page first and prints {"origin", "refusedOrigin"}: Herald is to allow the
// first and not the second. Then it reads one line of JSON from stdin, {"base", "key",
// "token", "user", "chromium"}, runs the scenario and prints one line of what the page saw.
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import { post, report, stored } from './herald.mjs';

const client = await readFile(
  new URL('./node_modules/socket.io-client/dist/socket.io.min.js', import.meta.url),
);

// The page: the client library, and what the scenario calls in it.
const page = `<!doctype html>
<meta charset="utf-8">
<title>Herald from another origin</title>
<link rel="icon" href="data:,">
<script src="/socket.io.min.js"></script>
<script>
  const seen = [];
  let socket;
  window.herald = {
    seen,
    // Connects and resolves with ready's cursor, or rejects with the connect_error.
    connect(base, auth, transports) {
      return new Promise((resolve, reject) => {
        socket = io(base, { auth, transports, reconnection: false, forceNew: true });
        socket.on('message:new', (message, meta) => {
          seen.push({ content: message.content, cursor: meta.cursor });
        });
        socket.once('ready', (ready) => resolve(ready.cursor));
        socket.once('connect_error', (e) => reject(new Error('connect_error: ' + e.message)));
      });
    },
    transport: () => socket.io.engine.transport.name,
    disconnect: () => socket.disconnect(),
  };
</script>
`;

// Serves the page and the client library on a port of its own; answers its origin.
async function serve() {
  const server = http.createServer((request, response) => {
    const [type, body] = {
      '/': ['text/html; charset=utf-8', page],
      '/socket.io.min.js': ['text/javascript', client],
    }[request.url] ?? ['text/plain', null];
    response.writeHead(body === null ? 404 : 200, { 'content-type': type });
    response.end(body ?? 'not found');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  return `http://127.0.0.1:${server.address().port}`;
}

const origin = await serve();
const refusedOrigin = await serve();
console.log(JSON.stringify({ origin, refusedOrigin }));
const lines = createInterface({ input: process.stdin });
const config = JSON.parse((await lines[Symbol.asyncIterator]().next()).value);
lines.close();
const { base, token } = config;

async function scenario() {
  const browser = await chromium.launch({
    executablePath: config.chromium,
    // No sandbox: the tests run as root, where Chromium's sandbox will not start.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    const tab = await browser.newPage();
    const origins = new Set();
    const errors = [];
    tab.on('request', (request) => origins.add(new URL(request.url()).origin));
    tab.on('pageerror', (e) => errors.push(String(e)));
    tab.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    const count = (n) => tab.waitForFunction((n) => herald.seen.length >= n, n, { timeout: 10000 });

    // From an origin Herald does not allow, long polling cannot even connect.
    await tab.goto(`${refusedOrigin}/`);
    const refused = await tab.evaluate(
      ({ base, token }) => herald.connect(base, { token }, ['polling']).then(() => 'connected', (e) => e.message),
      { base, token },
    );

    await tab.goto(`${origin}/`);
    // Long polling only: every request is a cross-origin XHR.
    await tab.evaluate(({ base, token }) => herald.connect(base, { token }, ['polling']), { base, token });
    const transports = [await tab.evaluate(() => herald.transport())];
    await post(config, 'br-0', 'before');
    await count(1);
    const [first] = await tab.evaluate(() => herald.seen);
    await tab.evaluate(() => herald.disconnect());

    for (const [i, content] of ['one', 'two', 'three'].entries()) {
      await stored(config, await post(config, `br-${i + 1}`, content));
    }
    // Polling first, then the upgrade to WebSocket, as the client does by default.
    await tab.evaluate(
      ({ base, token, since }) => herald.connect(base, { token, since }),
      { base, token, since: first.cursor },
    );
    const missed = (await tab.evaluate(() => herald.seen)).slice(1);
    await post(config, 'br-4', 'live');
    await count(5);
    await tab.waitForFunction(() => herald.transport() === 'websocket', null, { timeout: 10000 });
    transports.push(await tab.evaluate(() => herald.transport()));
    const seen = await tab.evaluate(() => herald.seen);
    await tab.evaluate(() => herald.disconnect());
    return { refused, first, missed, seen, transports, origins: [...origins].sort(), errors };
  } finally {
    await browser.close();
  }
}

await report(scenario);
