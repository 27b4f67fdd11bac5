'use strict';
// The Express example over real HTTP, against the real daemon (LATCHKEYD names the binary):
// sign-up, login, sessions ended by the credential epoch, forgot password with the mailed
// link, and req.ip from X-Forwarded-For only when a trusted proxy sent it.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const latchkey = require('latchkey-client');
const { Daemon } = require('../../../client/node/testing/daemon');
const { createApp, FORGOT_REPLY } = require('../app');

const PASSWORD = 'correct horse battery staple';
const NEW_PASSWORD = 'a brand new passphrase 6';

async function serve(app) {
  const server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  return { base: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/** One visitor with its cookie. */
class Browser {
  constructor(base) {
    this.base = base;
    this.cookie = null;
  }

  async send(method, url, body, forwardedFor) {
    const headers = { 'content-type': 'application/json' };
    if (this.cookie) headers.cookie = this.cookie;
    if (forwardedFor) headers['x-forwarded-for'] = forwardedFor;
    const res = await fetch(this.base + url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const set = res.headers.get('set-cookie');
    if (set) this.cookie = set.split(';')[0];
    return { status: res.status, body: await res.json() };
  }
}

/** The token of the newest reset mail to `to` in the daemon's mail directory. */
async function mailedToken(daemon, to) {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    for (const dir of [path.join(daemon.dir, 'data', 'mail'), path.join(daemon.dir, 'latchkey-data', 'mail')]) {
      if (!fs.existsSync(dir)) continue;
      for (const name of fs.readdirSync(dir).filter((n) => n.endsWith('.eml')).sort()) {
        // Quoted-printable soft breaks ("=\r\n") and "=3D" undone: enough to find the link.
        const text = fs.readFileSync(path.join(dir, name), 'utf8').replace(/=\r?\n/g, '').replace(/=3D/g, '=');
        if (!text.toLowerCase().includes(`to: ${to}`)) continue;
        const found = /[?&]token=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)/.exec(text);
        if (found) return found[1];
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no reset mail to ${to} within 20 s`);
}

test('sign-up, login, and a password change ends the other sessions', async () => {
  const daemon = new Daemon();
  await daemon.start();
  const app = createApp(daemon.socket);
  const site = await serve(app);
  try {
    const laptop = new Browser(site.base);
    const phone = new Browser(site.base);
    assert.deepEqual(await laptop.send('POST', '/signup', { email: 'ada.express@example.com', password: PASSWORD }),
      { status: 201, body: { email: 'ada.express@example.com' } });
    assert.equal((await phone.send('POST', '/signup', { email: 'ada.express@example.com', password: PASSWORD })).body.error, 'EmailTaken');
    assert.equal((await phone.send('POST', '/login', { email: 'ada.express@example.com', password: 'wrong' })).status, 401);
    assert.equal((await phone.send('POST', '/login', { email: 'ada.express@example.com', password: PASSWORD })).status, 200);
    assert.equal((await phone.send('GET', '/me')).status, 200);
    assert.equal((await laptop.send('POST', '/password', { current: PASSWORD, new: NEW_PASSWORD })).status, 200);
    assert.equal((await laptop.send('GET', '/me')).status, 200);
    assert.equal((await phone.send('GET', '/me')).status, 401, 'the other session outlived the password change');
  } finally {
    await site.close();
    app.close();
    await daemon.stop();
  }
});

test('forgot password answers alike; the mailed link resets and ends every session', async () => {
  const daemon = new Daemon();
  await daemon.start();
  const app = createApp(daemon.socket);
  const site = await serve(app);
  try {
    const ada = new Browser(site.base);
    const stranger = new Browser(site.base);
    await ada.send('POST', '/signup', { email: 'reset.express@example.com', password: PASSWORD });
    const known = await stranger.send('POST', '/forgot', { email: 'reset.express@example.com' });
    const unknown = await stranger.send('POST', '/forgot', { email: 'nobody.express@example.com' });
    assert.deepEqual(known, { status: 200, body: { message: FORGOT_REPLY } });
    assert.deepEqual(unknown, known);
    const token = await mailedToken(daemon, 'reset.express@example.com');
    assert.deepEqual((await stranger.send('GET', `/reset?token=${token}`)).body, { state: 'valid' });
    assert.equal((await stranger.send('POST', '/reset', { token, password: NEW_PASSWORD, confirm: `${NEW_PASSWORD}!` })).body.error,
      'PasswordMismatch');
    assert.equal((await stranger.send('POST', '/reset', { token, password: NEW_PASSWORD, confirm: NEW_PASSWORD })).status, 200);
    assert.deepEqual((await stranger.send('GET', `/reset?token=${token}`)).body, { state: 'used' });
    assert.equal((await ada.send('GET', '/me')).status, 401, 'the session outlived the reset');
    assert.equal((await ada.send('POST', '/login', { email: 'reset.express@example.com', password: NEW_PASSWORD })).status, 200);
  } finally {
    await site.close();
    app.close();
    await daemon.stop();
  }
});

test('the client IP comes from X-Forwarded-For only behind a trusted proxy', async () => {
  const daemon = new Daemon();
  await daemon.start();
  const admin = new latchkey.Client(daemon.socket);
  await admin.createUser({ email: 'ip.express@example.com', password: PASSWORD });
  const failedLoginIp = async (trustedProxies, forwardedFor) => {
    const app = createApp(daemon.socket, { trustedProxies });
    const site = await serve(app);
    await new Browser(site.base).send('POST', '/login', { email: 'ip.express@example.com', password: 'nope' }, forwardedFor);
    await site.close();
    app.close();
    const failures = (await admin.events({ limit: 1000 })).filter((e) => e.kind === 'login_failed');
    return failures[failures.length - 1].client_ip;
  };
  try {
    assert.equal(await failedLoginIp(['loopback'], '198.51.100.7'), '198.51.100.7');
    assert.equal(await failedLoginIp(['loopback'], '203.0.113.66, 198.51.100.8'), '198.51.100.8');
    assert.equal(await failedLoginIp([], '198.51.100.9'), '127.0.0.1');
  } finally {
    admin.close();
    await daemon.stop();
  }
});
