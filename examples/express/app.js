'use strict';
/**
 * An Express app that signs people up, logs them in and runs forgot-password through
 * latchkey. It keeps no passwords and no tokens (latchkeyd does); its sessions hold the user's
 * id and the credential epoch they logged in under, and end as soon as the account's epoch
 * moves on (a reset, a password change elsewhere, the account disabled).
 *
 * Behind a reverse proxy, pass its addresses as `trustedProxies`: Express's `trust proxy`
 * then takes `req.ip` from X-Forwarded-For, walking from the right past trusted hops only, so
 * a client that writes its own header changes nothing.
 *
 *   LATCHKEY_SOCKET=/run/latchkeyd/latchkeyd.sock TRUSTED_PROXIES=loopback node app.js
 */

const crypto = require('node:crypto');
const express = require('express');
const latchkey = require('latchkey-client');

const FORGOT_REPLY = 'If that address has an account, we have sent it a link to reset the password.';

function createApp(socketPath, { trustedProxies = ['loopback'] } = {}) {
  const lk = new latchkey.Client(socketPath);
  const sessions = new Map(); // session id -> { uid, epoch }
  const app = express();
  app.set('trust proxy', trustedProxies.length ? trustedProxies : false);
  app.use(express.json());

  const cookieOf = (req) => {
    const found = (req.headers.cookie || '').split(';').map((c) => c.trim()).find((c) => c.startsWith('sid='));
    return found ? found.slice(4) : null;
  };
  const logIn = (res, user) => {
    const sid = crypto.randomBytes(32).toString('base64url');
    sessions.set(sid, { uid: user.id, epoch: user.credential_epoch });
    res.setHeader('Set-Cookie', `sid=${sid}; HttpOnly; SameSite=Lax; Path=/`);
  };
  const refused = (res, e) => {
    if (e instanceof latchkey.RateLimitedError) {
      res.setHeader('Retry-After', String(e.details.retry_after_secs));
      return res.status(429).json({ error: e.code });
    }
    if (e instanceof latchkey.ApiError) return res.status(400).json({ error: e.code, message: e.message });
    throw e;
  };
  // The session's user, or null once the account's credentials changed since login.
  const currentUser = async (req) => {
    const sid = cookieOf(req);
    const session = sid && sessions.get(sid);
    if (!session) return null;
    let user = null;
    try {
      user = await lk.getUser(session.uid);
    } catch (e) {
      if (!(e instanceof latchkey.NotFoundError)) throw e;
    }
    if (!user || user.credential_epoch !== session.epoch || user.status !== 'active') {
      sessions.delete(sid);
      return null;
    }
    return { user, session };
  };
  const route = (handler) => (req, res, next) => handler(req, res).catch(next);

  app.post('/signup', route(async (req, res) => {
    const { email = '', password = '', name = '' } = req.body || {};
    try {
      const outcome = await lk.signUp({ email, password, name }, { clientIp: req.ip });
      if (outcome.outcome === 'created') {
        logIn(res, outcome.user);
        return res.status(201).json({ email: outcome.user.email });
      }
      return res.status(202).json({ message: 'Check your mail to finish signing up.' });
    } catch (e) {
      return refused(res, e);
    }
  }));

  app.post('/login', route(async (req, res) => {
    const { email = '', password = '' } = req.body || {};
    try {
      const user = await lk.verifyPassword(email, password, { clientIp: req.ip });
      logIn(res, user);
      return res.json({ email: user.email });
    } catch (e) {
      if (e instanceof latchkey.InvalidCredentialsError) {
        return res.status(401).json({ error: 'InvalidCredentials', message: 'Wrong email or password.' });
      }
      return refused(res, e);
    }
  }));

  app.get('/me', route(async (req, res) => {
    const current = await currentUser(req);
    if (!current) return res.status(401).json({ error: 'NotLoggedIn' });
    return res.json({ email: current.user.email });
  }));

  app.post('/password', route(async (req, res) => {
    const current = await currentUser(req);
    if (!current) return res.status(401).json({ error: 'NotLoggedIn' });
    const { current: old = '', new: fresh = '' } = req.body || {};
    try {
      const done = await lk.changePassword(current.user.id, old, fresh);
      current.session.epoch = done.credential_epoch; // this session lives on; others end
      return res.json({ ok: true });
    } catch (e) {
      return refused(res, e);
    }
  }));

  app.post('/forgot', route(async (req, res) => {
    try {
      await lk.requestPasswordReset((req.body || {}).email || '', { clientIp: req.ip });
    } catch (e) {
      return refused(res, e);
    }
    return res.json({ message: FORGOT_REPLY });
  }));

  app.get('/reset', route(async (req, res) => {
    try {
      const check = await lk.checkResetToken(String(req.query.token || ''), { clientIp: req.ip });
      return res.json({ state: check.state });
    } catch (e) {
      return refused(res, e);
    }
  }));

  app.post('/reset', route(async (req, res) => {
    const { token = '', password = '', confirm } = req.body || {};
    try {
      await lk.completePasswordReset(token, password, { confirmPassword: confirm, clientIp: req.ip });
    } catch (e) {
      return refused(res, e);
    }
    return res.json({ message: 'Your password was changed. Log in with the new one.' });
  }));

  app.close = () => lk.close();
  return app;
}

module.exports = { createApp, FORGOT_REPLY };

if (require.main === module) {
  const proxies = (process.env.TRUSTED_PROXIES || 'loopback').split(',').filter(Boolean);
  createApp(process.env.LATCHKEY_SOCKET || 'latchkey.sock', { trustedProxies: proxies })
    .listen(Number(process.env.PORT || 3000), '127.0.0.1');
}
