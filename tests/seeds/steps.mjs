// What the seeds' scripts share: connect to <amqp-url>, run each of the steps given as
// JSON on a confirm channel of its own (a refused declaration closes its channel), print
// one line of JSON per step, {"step": i, "ok": true} or {"step": i, "error": "..."}, and
// exit 1 if any failed. `handlers` maps a step's one key to what runs it.
import amqp from 'amqplib';

export async function runSteps(handlers) {
  const [url, stepsJson] = process.argv.slice(2);
  const steps = JSON.parse(stepsJson);
  const connection = await amqp.connect(url);
  connection.on('error', () => {});
  let failed = false;
  for (const [i, step] of steps.entries()) {
    const channel = await connection.createConfirmChannel();
    channel.on('error', () => {});
    try {
      const [name, argument] = Object.entries(step)[0] ?? [];
      const handler = handlers[name];
      if (!handler) throw new Error(`unknown step ${JSON.stringify(step)}`);
      await handler(channel, argument);
      console.log(JSON.stringify({ step: i, ok: true }));
    } catch (e) {
      failed = true;
      console.log(JSON.stringify({ step: i, error: e.message }));
    }
    try { await channel.close(); } catch { /* closed by the broker */ }
  }
  await connection.close();
  process.exit(failed ? 1 : 0);
}
