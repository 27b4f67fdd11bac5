'use strict';
// The package's tests against the real latchkeyd (LATCHKEYD names the binary; cargo's
// tests/polyglot.rs passes it): error classes, and a daemon restart mid-traffic.
// `npm test` in client/node runs them; `node --test test/` too.

const test = require('node:test');
const assert = require('node:assert/strict');
const latchkey = require('..');
const { Daemon } = require('../testing/daemon');

test('a connection closed before any answer says the uid may have no role', async () => {
  const net = require('node:net');
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'latchkey-closes-'));
  const socketPath = path.join(dir, 'closes.sock');
  const server = net.createServer((socket) => socket.destroy());
  await new Promise((resolve) => server.listen(socketPath, resolve));
  const lk = new latchkey.Client(socketPath, { retries: 0 });
  try {
    await assert.rejects(lk.health(), (e) => e instanceof latchkey.ConnectionLostError && /auth\.app_gids/.test(e.message));
  } finally {
    lk.close();
    server.close();
  }
});

test('the ES module entry point exports the same client and classes', async () => {
  const esm = await import('latchkey-client');
  assert.equal(esm.Client, latchkey.Client);
  assert.equal(esm.InvalidCredentialsError, latchkey.InvalidCredentialsError);
  assert.equal(esm.default, latchkey);
});

test('every failure is an instance of its own class, its kind and LatchkeyError', async () => {
  const daemon = new Daemon();
  await daemon.start();
  const lk = new latchkey.Client(daemon.socket);
  try {
    const health = await lk.health();
    assert.equal(health.protocol, 2);
    assert.ok(health.methods.includes('CredentialChanges'));
    const user = await lk.createUser({ email: 'node.pkg@example.com', password: 'correct horse battery staple' });
    await assert.rejects(lk.createUser({ email: 'node.pkg@example.com', password: 'correct horse battery staple' }),
      (e) => e instanceof latchkey.EmailTakenError && e instanceof latchkey.ApiError
        && e instanceof latchkey.LatchkeyError && e.code === 'EmailTaken' && e.name === 'EmailTakenError');
    await assert.rejects(lk.verifyPassword('node.pkg@example.com', 'a wrong guess'),
      (e) => e instanceof latchkey.InvalidCredentialsError && e.isApiError);
    await assert.rejects(lk.getUser(user.id + 1000), (e) => e instanceof latchkey.NotFoundError);
    await assert.rejects(lk.call('teleportUser', { id: user.id }),
      (e) => e instanceof latchkey.UnknownMethodError && e instanceof latchkey.ServerError
        && e.kind === 'server' && /TeleportUser/.test(e.details.detail));
    await assert.rejects(lk.call('getUser', { id: 'one' }), (e) => e instanceof latchkey.InvalidRequestError);
    // The connection serves on after the refusals.
    assert.equal((await lk.getUser(user.id)).email, 'node.pkg@example.com');
    lk.close();
    await assert.rejects(lk.health(), (e) => e instanceof latchkey.ClosedError && e instanceof latchkey.TransportError);
  } finally {
    lk.close();
    await daemon.stop();
  }
});

test('reads ride out a daemon restart, and the next change goes out once on the new connection', async () => {
  const daemon = new Daemon();
  await daemon.start();
  const lk = new latchkey.Client(daemon.socket, { retries: 8, retryBackoff: 50, timeout: 30_000 });
  try {
    const user = await lk.createUser({ email: 'restart@example.com', password: 'correct horse battery staple' });
    let stop = false;
    let reads = 0;
    const readers = Array.from({ length: 4 }, async () => {
      while (!stop) {
        const got = await lk.getUser(user.id); // must never fail: retried across the restart
        assert.equal(got.id, user.id);
        reads += 1;
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const before = reads;
    await daemon.restart();
    await new Promise((resolve) => setTimeout(resolve, 200));
    stop = true;
    await Promise.all(readers);
    assert.ok(before > 0 && reads > before, `reads before ${before}, after ${reads}`);
    // A change is never sent twice: after a restart it goes out once on the new connection.
    const again = await lk.changePassword(user.id, 'correct horse battery staple', 'a brand new passphrase 7');
    assert.equal(again.credential_epoch, 1);
  } finally {
    lk.close();
    await daemon.stop();
  }
});
