'use strict';
// The package's tests against the real latchkeyd (LATCHKEYD names the binary; cargo's
// tests/polyglot.rs passes it): error classes, and a daemon restart mid-traffic.
// `npm test` in client/node runs them; `node --test test/` too.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const latchkey = require('..');

const BINARY = process.env.LATCHKEYD;

/** A daemon in a temporary directory, which `restart` stops and starts on the same socket. */
class Daemon {
  constructor() {
    assert.ok(BINARY, 'set LATCHKEYD to the latchkeyd binary (cargo test -p latchkeyd --test polyglot does)');
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'latchkey-node-'));
    this.socket = path.join(this.dir, 'latchkey.sock');
    this.config = path.join(this.dir, 'config.toml');
    fs.writeFileSync(this.config, [
      '[server]', `socket = ${JSON.stringify(this.socket)}`, 'allow_root = true',
      '[store]', `data_dir = ${JSON.stringify(path.join(this.dir, 'data'))}`, '',
    ].join('\n'));
    this.log = fs.openSync(path.join(this.dir, 'daemon.log'), 'a');
    this.child = null;
  }

  async start() {
    this.child = spawn(BINARY, ['--config', this.config], { stdio: ['ignore', this.log, this.log] });
    const probe = new latchkey.Client(this.socket, { retries: 0, timeout: 1000 });
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await probe.health();
        probe.close();
        return;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`the daemon did not answer within 20 s: ${e.message}\n${this.logText()}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  async stop() {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  logText() {
    return fs.readFileSync(path.join(this.dir, 'daemon.log'), 'utf8');
  }
}

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
