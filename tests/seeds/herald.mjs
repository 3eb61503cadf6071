// What the real-time scripts share (realtime.mjs, browser.mjs): Herald's HTTP API as a
// service calls it, to post chat messages while a client is away and to wait until they
// are in the recipient's log, and the one line of JSON each script prints.

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Posts chat message `id` with `content` to `user` through the API at `base`; answers the
// notification's id.
export async function post({ base, key, user }, id, content) {
  const response = await fetch(`${base}/v1/chat/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      messageId: id, conversationId: 'c-rt', senderId: 'ada', recipientIds: [user],
      content, messageType: 'text', timestamp: new Date().toISOString(),
    }),
  });
  if (response.status !== 202) throw new Error(`POST answered ${response.status}`);
  return (await response.json()).id;
}

// Resolves once the chat worker has stored notification `id` in its recipients' logs
// (the ledger says delivered), so that a client that comes back finds it there; rejects
// after 10 s.
export async function stored({ base, key }, id) {
  for (let waited = 0; waited < 10000; waited += 50) {
    const response = await fetch(`${base}/v1/notifications/${id}`, {
      headers: { authorization: `Bearer ${key}` },
    });
    if (response.status === 200 && (await response.json()).status === 'delivered') return;
    await sleep(50);
  }
  throw new Error(`notification ${id} was not delivered within 10 s`);
}

// Prints what `run` answers as one line of JSON and exits 0, or its error as
// {"error": "..."} and exits 1: the tests read the last line.
export async function report(run) {
  try {
    console.log(JSON.stringify(await run()));
    process.exit(0);
  } catch (e) {
    console.log(JSON.stringify({ error: String(e?.stack ?? e) }));
    process.exit(1);
  }
}
