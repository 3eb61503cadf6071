// What the tests share: a real Herald binary, started per test file on a port of its own
// (port 0, read back from its log), with a temporary SQLite database and the embedded
// broker, a tenant "1" (the seed's tenantId) made through the admin API, and a way to ask
// Herald's ledger about a notification.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = fileURLToPath(new URL('.', import.meta.url));

/** The binary: `HERALD_BIN`, else the repository's debug build. */
export const heraldBin = process.env.HERALD_BIN ?? resolve(here, '../../../target/debug/herald');

export const ADMIN_TOKEN = 'node-client-admin-token-0123456789';

/**
 * Starts `herald serve` (or `args`) with `settings` (environment variables
 * `HERALD__SECTION__KEY`) on top of the test's own; answers once it accepts events.
 */
export async function startHerald({ settings = {}, args = [] } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'herald-node-'));
  const env = { ...process.env };
  delete env.RABBITMQ_URL;
  delete env.DATABASE_URL;
  Object.assign(env, {
    RUST_LOG: 'info',
    HERALD__HTTP__LISTEN: '127.0.0.1:0',
    HERALD__ADMIN__TOKEN: ADMIN_TOKEN,
    HERALD__DATABASE__URL: `sqlite://${join(dir, 'herald.db')}`,
    HERALD__BROKER__KIND: 'embedded',
    HERALD__BROKER__EMBEDDED__PATH: join(dir, 'broker.db'),
    HERALD__BROKER__EMBEDDED__POLL_INTERVAL: '50ms',
    HERALD__EMAIL__OUTBOX_DIR: join(dir, 'outbox'),
    HERALD__PUSH__OUTBOX: join(dir, 'outbox', 'push.jsonl'),
    HERALD__WORKERS__SHUTDOWN_GRACE: '2s',
    ...settings,
  });
  const child = spawn(heraldBin, args, { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const address = await new Promise((resolveAddress, reject) => {
    const timer = setTimeout(() => reject(new Error(`Herald did not start in 30 s:\n${log}`)), 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${heraldBin} (set HERALD_BIN): ${e.message}`));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`Herald exited with ${code} before accepting events:\n${log}`));
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const started = /accepting events.*?address=(\S+)/.exec(log);
      if (started) {
        clearTimeout(timer);
        resolveAddress(`http://${started[1]}`);
      }
    });
  });
  const herald = {
    address,
    dir,
    get log() {
      return log;
    },
    /** Creates tenant `id` and answers its first API key. */
    async tenant(id) {
      const created = await call(`${address}/admin/tenants`, {
        method: 'POST',
        token: ADMIN_TOKEN,
        body: { name: `tenant ${id}`, id },
      });
      if (created.status !== 201 && created.status !== 200) {
        throw new Error(`creating tenant ${id}: ${created.status} ${JSON.stringify(created.body)}`);
      }
      return created.body.apiKey.key;
    },
    /** The ledger's view of notification `id`, once `done` holds for it (or after 20 s). */
    async notification(key, id, done = () => true) {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const answer = await call(`${address}/v1/notifications/${id}`, { token: key });
        if ((answer.status === 200 && done(answer.body)) || Date.now() > deadline) {
          return answer;
        }
        await sleep(50);
      }
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
  return herald;
}

/** One request with a bearer token; answers the status, headers and JSON body. */
export async function call(url, { method = 'GET', token, body, headers = {} } = {}) {
  const response = await fetch(url, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
}

/**
 * A stand-in in front of Herald, for what Herald cannot be made to answer on cue: it
 * records every request's method, path and headers, answers the first `refusals` (each
 * `{status, headers, body}`) itself, and forwards the rest to `target`.
 */
export async function startProxy(target, refusals = []) {
  const { createServer } = await import('node:http');
  const requests = [];
  const queue = [...refusals];
  const server = createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    requests.push({ method: request.method, path: request.url, headers: request.headers });
    const refusal = queue.shift();
    if (refusal) {
      response.writeHead(refusal.status, { 'content-type': 'application/json', ...refusal.headers });
      response.end(JSON.stringify(refusal.body ?? {}));
      return;
    }
    const headers = { ...request.headers };
    delete headers.host;
    delete headers.connection;
    delete headers['content-length'];
    const answer = await fetch(`${target}${request.url}`, {
      method: request.method,
      headers,
      body: chunks.length ? Buffer.concat(chunks) : undefined,
    });
    response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'text/plain' });
    response.end(Buffer.from(await answer.arrayBuffer()));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    address: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => new Promise((r) => server.close(r)),
  };
}

/**
 * Opens the WebSocket at `url` (Node 20 has no WebSocket client: the handshake and the
 * server's unmasked frames are read by hand). Answers `{status}` when Herald refuses the
 * upgrade, else `{status: 101, next(), close()}`, where `next(match)` resolves with the
 * first JSON text frame for which `match` holds (10 s at most).
 */
export async function openSocket(url) {
  const { request } = await import('node:http');
  const { randomBytes } = await import('node:crypto');
  const target = new URL(url.replace(/^ws/, 'http'));
  const upgraded = await new Promise((resolveUpgrade, reject) => {
    const req = request(target, {
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': randomBytes(16).toString('base64'),
      },
    });
    req.on('upgrade', (response, socket, head) => resolveUpgrade({ status: response.statusCode, socket, head }));
    req.on('response', (response) => {
      response.resume();
      resolveUpgrade({ status: response.statusCode });
    });
    req.on('error', reject);
    req.end();
  });
  if (!upgraded.socket) {
    return { status: upgraded.status };
  }
  const { socket } = upgraded;
  let buffered = upgraded.head ?? Buffer.alloc(0);
  const frames = [];
  const waiting = [];
  const drain = () => {
    for (;;) {
      if (buffered.length < 2) return;
      const opcode = buffered[0] & 0x0f;
      let length = buffered[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffered.length < 4) return;
        length = buffered.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buffered.length < 10) return;
        length = Number(buffered.readBigUInt64BE(2));
        offset = 10;
      }
      if (buffered.length < offset + length) return;
      const payload = buffered.subarray(offset, offset + length);
      buffered = buffered.subarray(offset + length);
      if (opcode === 1) frames.push(JSON.parse(payload.toString('utf8')));
    }
  };
  const deliver = () => {
    for (const w of [...waiting]) {
      const index = frames.findIndex(w.match);
      if (index >= 0) {
        waiting.splice(waiting.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(frames.splice(index, 1)[0]);
      }
    }
  };
  socket.on('data', (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    drain();
    deliver();
  });
  drain();
  return {
    status: 101,
    next(match = () => true) {
      return new Promise((resolveFrame, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no matching frame in 10 s; got ${JSON.stringify(frames)}`)),
          10_000,
        );
        waiting.push({ match, resolve: resolveFrame, timer });
        deliver();
      });
    },
    close() {
      socket.destroy();
    },
  };
}
