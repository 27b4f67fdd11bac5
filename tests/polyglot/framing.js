'use strict';
/**
 * The Node client's transport against a scripted fake daemon (no latchkeyd needed):
 * answers split into single bytes and several frames in one write, out of order; a throttled
 * server error; a timeout that sends a Cancel; a lost connection and the reconnect after it.
 *
 *     node tests/polyglot/framing.js
 *
 * Exits 1 with the reason at the first mismatch. tests/polyglot.rs runs it.
 */

const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');
const { Client, LatchkeyError } = require('../../client/node/latchkey.js');

function frame(message) {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

function ok(id, variant, value) {
  return frame({ request_id: id, message: { Ok: { [variant]: { Ok: value } } } });
}

/** A fake daemon: hands every decoded frame, with its socket, to `onMessage`. */
function fakeDaemon(socketPath, onMessage) {
  const server = net.createServer((socket) => {
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const length = buf.readUInt32BE(0);
        onMessage(JSON.parse(buf.subarray(4, 4 + length).toString('utf8')), socket);
        buf = buf.subarray(4 + length);
      }
    });
    socket.on('error', () => {});
  });
  return new Promise((resolve) => server.listen(socketPath, () => resolve(server)));
}

/** Writes `bytes` one byte per event-loop turn. */
async function dribble(socket, bytes) {
  for (const byte of bytes) {
    socket.write(Buffer.from([byte]));
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-framing-'));
  const socketPath = path.join(dir, 'fake.sock');
  const requests = [];
  const cancels = [];
  let behaviour = 'batch';
  const server = await fakeDaemon(socketPath, (message, socket) => {
    if (message.Cancel) {
      cancels.push(message.Cancel.request_id);
      return;
    }
    const request = message.Request;
    requests.push(request);
    const variant = Object.keys(request.message)[0];
    if (behaviour === 'batch' && requests.length === 3) {
      // All three answers in one buffer, newest first, a byte at a time.
      const answers = requests.slice().reverse().map((r) => {
        const v = Object.keys(r.message)[0];
        return ok(r.id, v, { echo: r.message[v].email ?? r.id });
      });
      dribble(socket, Buffer.concat(answers));
    } else if (behaviour === 'throttle') {
      socket.write(frame({ request_id: request.id, message: { Err: { kind: 10, detail: 'server throttled the request.' } } }));
    } else if (behaviour === 'api-error') {
      socket.write(frame({ request_id: request.id, message: { Ok: { [variant]: { Err: { RateLimited: { retry_after_secs: 7 } } } } } }));
    } else if (behaviour === 'hang-up') {
      socket.destroy();
    } else if (behaviour === 'answer') {
      socket.write(ok(request.id, variant, { status: 'ok' }));
    }
    // 'silent': no answer at all, as the daemon does past a deadline.
  });

  const lk = new Client(socketPath, { timeout: 2_000 });
  try {
    const answers = await Promise.all([
      lk.findUser('a@example.com'),
      lk.findUser('b@example.com'),
      lk.findUser('c@example.com'),
    ]);
    assert.deepEqual(answers.map((a) => a.echo), ['a@example.com', 'b@example.com', 'c@example.com']);
    const first = requests[0];
    assert.deepEqual(first.message, { FindUser: { email: 'a@example.com' } });
    assert.equal(first.context.trace_context.span_id, 0);
    assert.ok(first.context.deadline.secs <= 2 && first.context.deadline.secs >= 1, JSON.stringify(first.context));
    assert.equal(new Set(requests.map((r) => r.id)).size, 3, 'request ids must differ');
    console.log('ok   three answers, reversed and dribbled a byte at a time, reach their callers');

    behaviour = 'throttle';
    await assert.rejects(lk.health(), (e) => e instanceof LatchkeyError && e.code === 'Throttled'
      && e.kind === 'server' && e.details.kind === 10);
    console.log('ok   a throttled server error is code Throttled');

    behaviour = 'api-error';
    await assert.rejects(lk.health(), (e) => e.code === 'RateLimited' && e.isApiError
      && e.details.retry_after_secs === 7 && /retry after 7 s/.test(e.message));
    console.log('ok   a typed error carries its code and details');

    behaviour = 'silent';
    const silentId = requests.length + 1; // ids count up from 1 on this client
    await assert.rejects(lk.call('health', {}, { timeout: 200 }), (e) => e.code === 'Timeout');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(cancels, [silentId]);
    console.log('ok   a timeout rejects with Timeout and sends a Cancel for the request');

    behaviour = 'hang-up';
    await assert.rejects(lk.health(), (e) => e.code === 'ConnectionLost' && e.kind === 'transport');
    console.log('ok   a dropped connection fails the call with ConnectionLost');

    behaviour = 'answer';
    assert.deepEqual(await lk.health(), { status: 'ok' });
    console.log('ok   the next call reconnects');

    await assert.rejects(lk.getUser(-1), TypeError);
    await assert.rejects(lk.findUser('x'.repeat(70_000)), RangeError);
    console.log('ok   bad arguments and oversized requests are refused before sending');
  } finally {
    lk.close();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log('node client: framing and transport behaviour passed');
}

main().catch((e) => {
  console.error('FAIL', e);
  process.exitCode = 1;
});
