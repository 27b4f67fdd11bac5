'use strict';
/**
 * Node.js client for latchkeyd, the password-reset and credential daemon.
 *
 * The package `latchkey-client` (client/node: `npm install ./client/node`): this CommonJS
 * module with no dependencies (only `node:net`), for Node 18 or later, `latchkey.mjs` for ES
 * modules and `latchkey.d.ts` for TypeScript. It speaks the daemon's wire protocol (tarpc's
 * JSON messages on length-delimited frames over a Unix socket), described in full in
 * `docs/PROTOCOL.md`. Errors, retries and reconnecting: README.md beside it.
 *
 * @example
 * const { Client, LatchkeyError } = require('./latchkey');
 * const lk = new Client('/run/latchkeyd/latchkeyd.sock', { timeout: 10_000 });
 * const user = await lk.createUser({ email: 'ada@example.com', name: 'Ada', password: 'correct horse battery staple' });
 * try {
 *   await lk.verifyPassword('ada@example.com', 'a wrong guess', { clientIp: '203.0.113.7' });
 * } catch (e) {
 *   if (e instanceof LatchkeyError && e.code === 'InvalidCredentials') { ... }
 * }
 * lk.close();
 *
 * Results are plain objects with the protocol's JSON field names (`user.id`,
 * `user.credential_epoch`, ...). Every failure is a {@link LatchkeyError}; see its `code`.
 *
 * Calls made at once run concurrently on one connection; the daemon answers them in any order
 * and each answer is matched to its call by request id. The connection is opened by the
 * first call (or {@link Client#connect}) and reopened by the next call after it is lost. An
 * idle client does not keep the process alive.
 *
 * Integers: ids, sequence numbers and times arrive as JavaScript numbers. The daemon keeps
 * them below 2^53 (Number.MAX_SAFE_INTEGER), so they are exact.
 */

const net = require('node:net');

/** Milliseconds a call may take unless told otherwise; also sent as the call's deadline. */
const DEFAULT_TIMEOUT_MS = 10_000;
/** Milliseconds to wait for the socket to accept a connection. */
const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** The daemon's default `server.max_requests_per_connection`. */
const DEFAULT_MAX_IN_FLIGHT = 64;
/** Why a connection ended before the daemon sent anything on it. */
const CLOSED_UNANSWERED = "the daemon closed the connection without answering anything: this process's uid or "
  + "groups may have no role on the socket (see auth.app_uids and auth.app_gids in the daemon's configuration), "
  + 'or its connection limits are reached';
/** How many times a call that did not run (or a read that lost its connection) is sent again. */
const DEFAULT_RETRIES = 3;
/** Milliseconds before the first retry; each later one waits twice as long. */
const DEFAULT_RETRY_BACKOFF_MS = 100;
/**
 * The methods that change nothing: safe to send again after the connection was lost under
 * them, when nobody can know whether the daemon ran them.
 */
const READ_ONLY = new Set(['Health', 'GetUser', 'FindUser', 'ListUsers', 'CheckResetToken', 'Events',
  'CredentialChanges', 'OutboxList', 'Metrics', 'ExportUsers']);
/** The daemon's default `server.max_frame_bytes`; a larger frame closes the connection. */
const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;

// tarpc's numbering of std::io::ErrorKind in server errors (tarpc/src/util/serde.rs).
const IO_ERROR_KINDS = [
  'NotFound', 'PermissionDenied', 'ConnectionRefused', 'ConnectionReset', 'ConnectionAborted',
  'NotConnected', 'AddrInUse', 'AddrNotAvailable', 'BrokenPipe', 'AlreadyExists', 'WouldBlock',
  'InvalidInput', 'InvalidData', 'TimedOut', 'WriteZero', 'Interrupted', 'Other', 'UnexpectedEof',
];

// The daemon's messages for its typed errors, as the Rust client prints them.
const API_MESSAGES = {
  InvalidEmail: () => 'invalid email address',
  InvalidInput: (d) => `invalid ${d.field}: ${d.reason}`,
  WeakPassword: (d) => `password refused: ${d.reason}`,
  PasswordMismatch: () => 'the passwords do not match',
  EmailTaken: () => 'an account with that email exists already',
  InvalidCredentials: () => 'invalid credentials',
  InvalidToken: () => 'the reset token is invalid or expired',
  NotFound: () => 'not found',
  Forbidden: () => "forbidden: this connection's role may not call this method",
  RateLimited: (d) => `rate limited; retry after ${d.retry_after_secs} s`,
  Unavailable: () => 'service unavailable; retry later',
};

/**
 * Every error a call can fail with.
 *
 * `code` is either the daemon's typed error (`kind === 'api'`): one of `InvalidEmail`,
 * `InvalidInput`, `WeakPassword`, `PasswordMismatch`, `EmailTaken`, `InvalidCredentials`,
 * `InvalidToken`, `NotFound`, `Forbidden`, `RateLimited`, `Unavailable`, with the variant's
 * fields in `details` (for example `{ retry_after_secs: 60 }`); or a failure around it:
 *
 * - `Throttled`, `UnknownMethod`, `InvalidRequest`, `NoRole`, `ServerError` (`kind === 'server'`):
 *   the daemon did not run the call: too many calls in flight on the connection (safe to
 *   retry), a method it does not have (it is older than this client; `health().methods` lists
 *   what it has), a request it could not read, no role on the socket for this process's uid
 *   and groups (see the daemon's `auth.app_uids` and `auth.app_gids`), or another reason. `details` holds
 *   `{ kind, kind_name, detail }` as the daemon sent them.
 * - `Timeout` (`kind === 'transport'`): no answer within the timeout; the call may or may not
 *   have taken effect.
 * - `ConnectFailed`, `ConnectionLost`, `BadResponse`, `Closed` (`kind === 'transport'`): the
 *   socket cannot be reached, the connection was lost (a call in flight may or may not have
 *   taken effect), the daemon sent something unreadable, or the client was closed.
 */
class LatchkeyError extends Error {
  get name() {
    return 'LatchkeyError';
  }

  /**
   * @param {string} code the variant name or failure code
   * @param {string} message a readable message
   * @param {{kind?: 'api'|'server'|'transport', details?: object, method?: string, cause?: unknown}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    /** @type {string} */
    this.code = code;
    /** @type {'api'|'server'|'transport'} */
    this.kind = extra.kind || 'transport';
    /** @type {object} */
    this.details = extra.details || {};
    /** @type {string} the camelCase method that failed, if any */
    this.method = extra.method || '';
  }

  /** @returns {boolean} whether this is the daemon's typed error (`ApiError` on the wire) */
  get isApiError() {
    return this.kind === 'api';
  }
}

/** The daemon ran the call and refused it: `code` is the `ApiError` variant. */
class ApiError extends LatchkeyError {}
/** The daemon did not run the call (`kind === 'server'`). */
class ServerError extends LatchkeyError {}
/** The socket, the connection or the client failed around the call (`kind === 'transport'`). */
class TransportError extends LatchkeyError {}

for (const base of [ApiError, ServerError, TransportError]) {
  Object.defineProperty(base.prototype, 'name', { value: base.name });
}

// One class per code, so `instanceof InvalidCredentialsError` reads as well as `code ===`.
const API_CODES = ['InvalidEmail', 'InvalidInput', 'WeakPassword', 'PasswordMismatch', 'EmailTaken',
  'InvalidCredentials', 'InvalidToken', 'NotFound', 'Forbidden', 'RateLimited', 'Unavailable'];
const SERVER_CODES = ['Throttled', 'UnknownMethod', 'InvalidRequest', 'NoRole', 'ServerError'];
const TRANSPORT_CODES = ['Timeout', 'ConnectFailed', 'ConnectionLost', 'BadResponse', 'Closed'];
const ERROR_CLASSES = {};
for (const [base, codes] of [[ApiError, API_CODES], [ServerError, SERVER_CODES], [TransportError, TRANSPORT_CODES]]) {
  for (const code of codes) {
    if (code === 'ServerError') {
      ERROR_CLASSES[code] = ServerError; // a server error of a kind this client does not know
      continue;
    }
    // `Timeout` is CallTimeoutError, not to be confused with the DOM's TimeoutError.
    const name = code === 'Timeout' ? 'CallTimeoutError' : `${code}Error`;
    // A named class per code; its name is what stack traces and `e.name` show.
    ERROR_CLASSES[code] = { [name]: class extends base {} }[name];
    Object.defineProperty(ERROR_CLASSES[code].prototype, 'name', { value: name });
  }
}

/**
 * The error for `code`: an instance of its own class (`InvalidCredentialsError`, ...), of
 * its kind's class (`ApiError`, `ServerError`, `TransportError`) and of `LatchkeyError`.
 * An unknown code (a newer daemon's) gets the kind's class.
 */
function makeError(code, message, extra = {}) {
  const kind = extra.kind || 'transport';
  const Class = ERROR_CLASSES[code] || { api: ApiError, server: ServerError, transport: TransportError }[kind];
  return new Class(code, message, extra);
}

/** Reads an `ApiError` as sent: `"EmailTaken"` or `{"RateLimited": {"retry_after_secs": 60}}`. */
function apiError(value, method) {
  let code;
  let details = {};
  if (typeof value === 'string') {
    code = value;
  } else if (value && typeof value === 'object' && Object.keys(value).length === 1) {
    code = Object.keys(value)[0];
    const fields = value[code];
    details = fields && typeof fields === 'object' ? fields : { value: fields };
  } else {
    return makeError('BadResponse', `${method}: unreadable error ${JSON.stringify(value)}`, { method });
  }
  const text = API_MESSAGES[code] ? API_MESSAGES[code](details) : code;
  return makeError(code, `${method}: ${text} (${code})`, { kind: 'api', details, method });
}

/** `verifyPassword` -> `VerifyPassword`: the request variant's name on the wire. */
function variantName(method) {
  return method.charAt(0).toUpperCase() + method.slice(1).replace(/_([a-z])/g, (_, c) => c.toUpperCase());
}

// Argument checks. A daemon of protocol 2 answers a request it cannot read with an
// InvalidRequest error for that call alone (an older one closes the connection, failing
// every call in flight on it); refusing bad arguments here also gives a clearer message.
const U32_MAX = 4294967295;

function str(name, v) {
  if (typeof v !== 'string') throw new TypeError(`${name} must be a string, not ${typeof v}`);
  return v;
}
function optStr(name, v) {
  return v === undefined || v === null ? null : str(name, v);
}
function uint(name, v, max = Number.MAX_SAFE_INTEGER) {
  if (typeof v === 'bigint') {
    if (v < 0n || v > BigInt(max)) throw new RangeError(`${name} out of range: ${v}`);
    return Number(v);
  }
  if (!Number.isSafeInteger(v) || v < 0 || v > max) {
    throw new TypeError(`${name} must be an integer from 0 to ${max}, not ${v}`);
  }
  return v;
}
function optUint(name, v) {
  return v === undefined || v === null ? null : uint(name, v);
}
function userRef(user) {
  if (typeof user === 'string') return { email: user };
  if (typeof user === 'number' || typeof user === 'bigint') return { id: uint('user', user) };
  if (user && typeof user === 'object') {
    const keys = Object.keys(user);
    if (keys.length === 1 && keys[0] === 'id') return { id: uint('user.id', user.id) };
    if (keys.length === 1 && keys[0] === 'email') return { email: str('user.email', user.email) };
  }
  throw new TypeError('user must be an id, an email, {id} or {email}');
}

/**
 * A connection to latchkeyd.
 */
class Client {
  /**
   * @param {string} path the daemon's Unix socket
   * @param {object} [options]
   * @param {number} [options.timeout=10000] milliseconds each call may take; sent to the daemon
   *   as the call's deadline, past which it abandons the call without answering
   * @param {number} [options.connectTimeout=5000] milliseconds to wait for the socket
   * @param {number} [options.maxInFlight=64] calls sent at once; more wait (within their
   *   timeout) for a free slot. Keep it at or below the daemon's `max_requests_per_connection`.
   * @param {number} [options.maxFrameBytes=65536] the daemon's `server.max_frame_bytes`
   * @param {number} [options.retries=3] how many times to send a call again when it did not
   *   run (`Throttled`, `ConnectFailed`) or, for a read, when the connection was lost under it
   *   (`ConnectionLost`); never past the call's timeout. 0 turns retries off.
   * @param {number} [options.retryBackoff=100] milliseconds before the first retry, doubling
   */
  constructor(path, options = {}) {
    this.path = path;
    this.timeout = options.timeout ?? DEFAULT_TIMEOUT_MS;
    this.connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.maxInFlight = Math.max(1, options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.retries = Math.max(0, options.retries ?? DEFAULT_RETRIES);
    this.retryBackoff = Math.max(1, options.retryBackoff ?? DEFAULT_RETRY_BACKOFF_MS);
    /** @private */ this._socket = null;
    /** @private */ this._connecting = null;
    /** @private id -> {method, variant, resolve, reject, timer} */
    this._pending = new Map();
    /** @private calls waiting for a slot: {start, reject, timer} */
    this._queue = [];
    /** @private */ this._inFlight = 0;
    /** @private */ this._nextId = 1;
    /** @private received bytes not yet a whole frame */
    this._chunks = [];
    /** @private */ this._buffered = 0;
    /** @private bytes the frame being received needs in all, once its header is in */
    this._needed = 0;
    /** @private */ this._closed = false;
  }

  /**
   * Opens the connection now rather than at the first call.
   * @returns {Promise<void>}
   */
  async connect() {
    await this._connection();
  }

  /** Closes the connection; calls in flight or waiting fail with code `Closed`. */
  close() {
    this._closed = true;
    const closed = makeError('Closed', 'the client is closed');
    for (const waiting of this._queue.splice(0)) {
      clearTimeout(waiting.timer);
      waiting.reject(closed);
    }
    this._failAll(closed);
    if (this._socket) this._socket.destroy();
    this._socket = null;
  }

  /**
   * Calls any method by name: the escape hatch for methods without a wrapper here.
   *
   * @param {string} method `verifyPassword`, `verify_password` or `VerifyPassword`
   * @param {object} args the arguments by their protocol names (snake_case), JSON-ready
   * @param {{timeout?: number}} [options] milliseconds, instead of the client's timeout
   * @returns {Promise<any>} the method's result
   */
  async call(method, args, options = {}) {
    const timeout = options.timeout ?? this.timeout;
    const deadline = Date.now() + timeout;
    const readOnly = READ_ONLY.has(variantName(method));
    for (let attempt = 0; ; attempt += 1) {
      await this._slot(method, Math.max(0, deadline - Date.now()));
      try {
        return await this._send(method, args, Math.max(0, deadline - Date.now()));
      } catch (e) {
        const didNotRun = e.code === 'Throttled' || e.code === 'ConnectFailed';
        const wait = this.retryBackoff * 2 ** attempt;
        const again = e instanceof LatchkeyError && attempt < this.retries
          && (didNotRun || (readOnly && e.code === 'ConnectionLost'))
          && Date.now() + wait < deadline && !this._closed;
        if (!again) throw e;
        await new Promise((resolve) => setTimeout(resolve, wait));
      } finally {
        this._release();
      }
    }
  }

  // -- accounts ------------------------------------------------------------------------------

  /**
   * Liveness, version, uptime and this connection's role.
   * @returns {Promise<{status: string, version: string, uptime_secs: number, caller_role: 'app'|'admin', store: 'ok'|'unreachable'|'stalled'}>}
   */
  async health() {
    return this.call('health', {});
  }

  /**
   * Creates an account. Fails with `InvalidEmail`, `InvalidInput` (name, role, locale),
   * `WeakPassword` or `EmailTaken`.
   * @param {{email: string, password: string, name?: string, role?: string|null, locale?: string|null}} user
   * @param {{clientIp?: string}} [options] the end user's address, for the per-IP sign-up limit
   * @returns {Promise<object>} the new user
   */
  async createUser(user, options = {}) {
    if (!user || typeof user !== 'object') throw new TypeError('user must be an object');
    return this.call('createUser', {
      user: {
        email: str('email', user.email),
        name: user.name === undefined ? '' : str('name', user.name),
        password: str('password', user.password),
        role: optStr('role', user.role),
        locale: optStr('locale', user.locale),
      },
      client_ip: optStr('clientIp', options.clientIp),
    });
  }

  /**
   * Signs a person up from the application's form; what happens follows the daemon's
   * `[signup]` settings. Fails with `InvalidEmail`, `InvalidInput` (name, locale, client_ip),
   * `WeakPassword`, `RateLimited`, and `EmailTaken` only when the daemon does not conceal
   * taken addresses.
   * @param {{email: string, password: string, name?: string, locale?: string|null}} user
   * @param {{clientIp?: string}} [options] the end user's address, for the sign-up limits
   * @returns {Promise<{outcome: 'created', user: object}|{outcome: 'confirmation_sent'}>}
   *   `confirmation_sent` for every address when concealing: tell the person to check their mail
   */
  async signUp(user, options = {}) {
    if (!user || typeof user !== 'object') throw new TypeError('user must be an object');
    return this.call('signUp', {
      user: {
        email: str('email', user.email),
        name: user.name === undefined ? '' : str('name', user.name),
        password: str('password', user.password),
        locale: optStr('locale', user.locale),
      },
      client_ip: optStr('clientIp', options.clientIp),
    });
  }

  /**
   * Finishes a concealed sign-up with the token from the mailed link and the password chosen
   * at sign-up. Fails with `InvalidToken`, `InvalidCredentials` (not that password),
   * `EmailTaken` or `RateLimited`.
   * @param {string} token
   * @param {string} password
   * @param {{clientIp?: string}} [options]
   * @returns {Promise<object>} the new user
   */
  async confirmSignUp(token, password, options = {}) {
    return this.call('confirmSignUp', {
      token: str('token', token),
      password: str('password', password),
      client_ip: optStr('clientIp', options.clientIp),
    });
  }

  /**
   * The user with this id; `NotFound` if there is none.
   * @param {number} id
   * @returns {Promise<object>}
   */
  async getUser(id) {
    return this.call('getUser', { id: uint('id', id) });
  }

  /**
   * The user with this email (normalised first); `InvalidEmail` or `NotFound`.
   * @param {string} email
   * @returns {Promise<object>}
   */
  async findUser(email) {
    return this.call('findUser', { email: str('email', email) });
  }

  /**
   * Checks a login and returns the user. Every failure (wrong password, unknown email,
   * disabled account) is `InvalidCredentials`; too many are `RateLimited`.
   * @param {string} email
   * @param {string} password
   * @param {{clientIp?: string}} [options] the end user's IP, for the per-IP limit and the log
   * @returns {Promise<object>}
   */
  async verifyPassword(email, password, options = {}) {
    return this.call('verifyPassword', {
      email: str('email', email),
      password: str('password', password),
      client_ip: optStr('clientIp', options.clientIp),
    });
  }

  /**
   * Changes a password after checking the current one; revokes the user's reset tokens.
   * Fails with `NotFound`, `WeakPassword`, `InvalidCredentials` or `RateLimited`.
   * @param {number} id
   * @param {string} currentPassword
   * @param {string} newPassword
   * @returns {Promise<{user_id: number, credential_epoch: number}>}
   */
  async changePassword(id, currentPassword, newPassword) {
    return this.call('changePassword', {
      id: uint('id', id),
      current_password: str('currentPassword', currentPassword),
      new_password: str('newPassword', newPassword),
    });
  }

  /**
   * Enables or disables an account (admin).
   * @param {number} id
   * @param {'active'|'disabled'} status
   * @returns {Promise<object>} the user
   */
  async setStatus(id, status) {
    if (status !== 'active' && status !== 'disabled') {
      throw new TypeError(`status must be 'active' or 'disabled', not ${status}`);
    }
    return this.call('setStatus', { id: uint('id', id), status });
  }

  /**
   * Deletes an account and everything attached to it (admin).
   * @param {number} id
   * @returns {Promise<null>}
   */
  async deleteUser(id) {
    return this.call('deleteUser', { id: uint('id', id) });
  }

  /**
   * Users with ids above `after`, in id order (admin). Pass the last id as the next `after`.
   * @param {{after?: number, limit?: number}} [options] `limit` 1 to 1000, default 100
   * @returns {Promise<object[]>}
   */
  async listUsers(options = {}) {
    return this.call('listUsers', {
      after: uint('after', options.after ?? 0),
      limit: uint('limit', options.limit ?? 100, U32_MAX),
    });
  }

  /**
   * Sets a password without the current one (admin); revokes reset tokens, bumps the epoch.
   * @param {number} id
   * @param {string} newPassword
   * @returns {Promise<{user_id: number, credential_epoch: number}>}
   */
  async setPassword(id, newPassword) {
    return this.call('setPassword', { id: uint('id', id), new_password: str('newPassword', newPassword) });
  }

  /**
   * Imports accounts with existing bcrypt or argon2 hashes (admin), at most 1000 per call.
   * @param {Array<{email: string, password_hash: string, name?: string, role?: string, status?: 'active'|'disabled', locale?: string, created_at?: number}>} users
   * @returns {Promise<Array<{Ok: number}|{Err: string|object}>>} one outcome per user, in order
   */
  async importUsers(users) {
    if (!Array.isArray(users)) throw new TypeError('users must be an array');
    return this.call('importUsers', { users });
  }

  // -- password reset ------------------------------------------------------------------------

  /**
   * Starts a reset. Resolves to `null` for every valid address, with or without an account,
   * so always show the same message; an active account is mailed a link. Fails with
   * `InvalidEmail`, `RateLimited` or `InvalidInput` (client_ip, locale).
   * @param {string} email
   * @param {{clientIp?: string, locale?: string}} [options]
   * @returns {Promise<null>}
   */
  async requestPasswordReset(email, options = {}) {
    return this.call('requestPasswordReset', {
      email: str('email', email),
      client_ip: optStr('clientIp', options.clientIp),
      locale: optStr('locale', options.locale),
    });
  }

  /**
   * Says whether a token is usable, without using it.
   * @param {string} token
   * @param {{clientIp?: string}} [options]
   * @returns {Promise<{state: 'valid'|'expired'|'used'|'invalid', expires_at: number|null}>}
   */
  async checkResetToken(token, options = {}) {
    return this.call('checkResetToken', {
      token: str('token', token),
      client_ip: optStr('clientIp', options.clientIp),
    });
  }

  /**
   * Uses a token to set a new password; revokes the user's other tokens. Fails with
   * `InvalidToken`, `PasswordMismatch`, `WeakPassword`, `RateLimited` or `InvalidInput`.
   * @param {string} token
   * @param {string} newPassword
   * @param {{confirmPassword?: string, clientIp?: string}} [options]
   * @returns {Promise<{user_id: number, credential_epoch: number}>}
   */
  async completePasswordReset(token, newPassword, options = {}) {
    return this.call('completePasswordReset', {
      token: str('token', token),
      new_password: str('newPassword', newPassword),
      confirm_password: optStr('confirmPassword', options.confirmPassword),
      client_ip: optStr('clientIp', options.clientIp),
    });
  }

  /**
   * Makes a reset link for support staff (admin). The token is the link's `token` query
   * parameter: `new URL(link.link).searchParams.get('token')`.
   * @param {number|string|{id: number}|{email: string}} user an id or an email
   * @param {{lifetimeSecs?: number}} [options] 1 to 86400; the configured lifetime by default
   * @returns {Promise<{user_id: number, link: string, expires_at: number}>}
   */
  async adminResetLink(user, options = {}) {
    return this.call('adminResetLink', {
      user: userRef(user),
      lifetime_secs: optUint('lifetimeSecs', options.lifetimeSecs),
    });
  }

  // -- operations ----------------------------------------------------------------------------

  /**
   * Event log entries after the cursor `after`, oldest first (admin). Pass the last `seq`
   * seen as the next cursor.
   * @param {{after?: number, limit?: number}} [options]
   * @returns {Promise<Array<{seq: number, at: number, kind: string, user_id: number|null, client_ip: string|null}>>}
   */
  async events(options = {}) {
    return this.call('events', {
      after: uint('after', options.after ?? 0),
      limit: uint('limit', options.limit ?? 100, U32_MAX),
    });
  }

  /**
   * The credential changes after the cursor `after` (app role): password reset, changed or
   * set, account disabled or deleted; end the sessions of `user_id` issued before `at`. Call
   * again with `next` until `caught_up`.
   * @param {{after?: number, limit?: number}} [options]
   * @returns {Promise<{changes: Array<{seq: number, at: number, kind: string, user_id: number}>, next: number, caught_up: boolean}>}
   */
  async credentialChanges(options = {}) {
    return this.call('credential_changes', {
      after: uint('after', options.after ?? 0),
      limit: uint('limit', options.limit ?? 100, U32_MAX),
    });
  }

  /**
   * Queued and dead mail messages with ids above `after` (admin).
   * @param {{after?: number, limit?: number}} [options]
   * @returns {Promise<object[]>}
   */
  async outboxList(options = {}) {
    return this.call('outboxList', {
      after: uint('after', options.after ?? 0),
      limit: uint('limit', options.limit ?? 100, U32_MAX),
    });
  }

  /**
   * Puts a message back in the queue, due now (admin).
   * @param {number} id
   * @returns {Promise<null>}
   */
  async outboxRetry(id) {
    return this.call('outboxRetry', { id: uint('id', id) });
  }

  /**
   * Deletes a message unsent (admin).
   * @param {number} id
   * @returns {Promise<null>}
   */
  async outboxDrop(id) {
    return this.call('outboxDrop', { id: uint('id', id) });
  }

  /**
   * Metrics in the Prometheus text format (admin).
   * @returns {Promise<string>}
   */
  async metrics() {
    return this.call('metrics', {});
  }

  // -- machinery -----------------------------------------------------------------------------

  /** @private Waits for one of `maxInFlight` slots, at most `timeout` ms. */
  _slot(method, timeout) {
    if (this._closed) return Promise.reject(makeError('Closed', 'the client is closed', { method }));
    if (this._inFlight < this.maxInFlight) {
      this._inFlight += 1;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const waiting = {
        start: () => {
          clearTimeout(waiting.timer);
          this._inFlight += 1;
          resolve();
        },
        reject,
        timer: setTimeout(() => {
          this._queue.splice(this._queue.indexOf(waiting), 1);
          reject(makeError('Timeout', `${method}: ${timeout} ms passed waiting for a free call slot`, { method }));
        }, timeout),
      };
      this._queue.push(waiting);
    });
  }

  /** @private */
  _release() {
    this._inFlight -= 1;
    const next = this._queue.shift();
    if (next) next.start();
  }

  /** @private The open socket, connecting first if there is none. */
  _connection() {
    if (this._closed) return Promise.reject(makeError('Closed', 'the client is closed'));
    if (this._socket) return Promise.resolve(this._socket);
    if (this._connecting) return this._connecting;
    this._connecting = new Promise((resolve, reject) => {
      const socket = net.createConnection(this.path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(makeError('ConnectFailed', `cannot connect to ${this.path}: timed out`));
      }, this.connectTimeout);
      socket.once('error', (e) => {
        clearTimeout(timer);
        reject(makeError('ConnectFailed', `cannot connect to ${this.path}: ${e.message}`, { cause: e }));
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        if (this._closed) {
          socket.destroy();
          reject(makeError('Closed', 'the client is closed'));
          return;
        }
        this._attach(socket);
        resolve(socket);
      });
    }).finally(() => {
      this._connecting = null;
    });
    return this._connecting;
  }

  /** @private Wires up a connected socket. */
  _attach(socket) {
    this._socket = socket;
    this._chunks = [];
    this._buffered = 0;
    this._needed = 0;
    socket.unref(); // an idle client does not hold the process open; pending calls ref it
    socket.on('data', (chunk) => this._onData(socket, chunk));
    let heard = false;
    socket.on('data', () => {
      heard = true;
    });
    const lost = (why) => {
      if (this._socket !== socket) return;
      this._socket = null;
      // Closed before the daemon sent anything: most likely a refusal it could not explain.
      this._failAll(makeError('ConnectionLost', `connection lost: ${heard ? why : CLOSED_UNANSWERED}`));
    };
    socket.on('error', (e) => lost(e.message));
    socket.on('close', () => lost('the daemon closed the connection'));
  }

  /** @private Collects chunks and handles every whole frame among them. */
  _onData(socket, chunk) {
    this._chunks.push(chunk);
    this._buffered += chunk.length;
    // Joining chunks only once a whole frame is there keeps a frame that arrives in many
    // small chunks linear to reassemble.
    while (this._buffered >= Math.max(4, this._needed)) {
      let buf = this._chunks.length === 1 ? this._chunks[0] : Buffer.concat(this._chunks, this._buffered);
      const length = buf.readUInt32BE(0);
      if (length > this.maxFrameBytes) {
        this._socket = null;
        socket.destroy();
        this._failAll(makeError('BadResponse', `the daemon sent a ${length}-byte frame, above the limit`));
        return;
      }
      if (buf.length < 4 + length) {
        this._chunks = [buf];
        this._needed = 4 + length;
        return;
      }
      this._needed = 0;
      const body = buf.subarray(4, 4 + length);
      buf = buf.subarray(4 + length);
      this._chunks = buf.length ? [buf] : [];
      this._buffered = buf.length;
      this._onFrame(socket, body);
      if (this._socket !== socket) return; // the frame was unreadable; the socket is gone
    }
  }

  /** @private Settles the call a response frame answers. */
  _onFrame(socket, body) {
    let response;
    try {
      response = JSON.parse(body.toString('utf8'));
    } catch (e) {
      this._socket = null;
      socket.destroy();
      this._failAll(makeError('BadResponse', `unreadable frame from the daemon: ${e.message}`, { cause: e }));
      return;
    }
    const call = this._pending.get(response && response.request_id);
    if (!call) return; // the caller gave up already (timeout)
    this._forget(response.request_id, call);
    const message = response.message || {};
    if (message.Err) {
      const { kind, detail } = message.Err;
      const kindName = IO_ERROR_KINDS[kind] || 'Other';
      // Protocol 2: 0 (NotFound) is an unknown method (the daemon is older than this client),
      // 11 (InvalidInput) a request it could not read; 10 (WouldBlock) too many calls in flight.
      // 1 (PermissionDenied): this process's uid and groups have no role on the socket.
      const code = {
        WouldBlock: 'Throttled', NotFound: 'UnknownMethod', InvalidInput: 'InvalidRequest', PermissionDenied: 'NoRole',
      }[kindName] || 'ServerError';
      call.reject(makeError(code, `${call.method}: server error ${kindName}: ${detail}`, {
        kind: 'server', details: { kind, kind_name: kindName, detail }, method: call.method,
      }));
      return;
    }
    const reply = message.Ok && message.Ok[call.variant];
    if (reply && 'Ok' in reply) call.resolve(reply.Ok);
    else if (reply && 'Err' in reply) call.reject(apiError(reply.Err, call.method));
    else call.reject(makeError('BadResponse', `${call.method}: unexpected answer ${body.toString('utf8')}`, { method: call.method }));
  }

  /** @private Sends one request and waits for its answer, at most `timeout` ms. */
  async _send(method, args, timeout) {
    const name = method.includes('_') || /^[a-z]/.test(method) ? method : method.charAt(0).toLowerCase() + method.slice(1);
    const variant = variantName(method);
    const socket = await this._connection();
    const id = this._nextId++;
    const context = {
      deadline: { secs: Math.floor(timeout / 1000), nanos: Math.round((timeout % 1000) * 1e6) },
      // span_id stays 0: tarpc's own clients send random u64s, beyond a JS number's precision.
      trace_context: { trace_id: new Array(16).fill(0), span_id: 0, sampling_decision: 'Unsampled' },
    };
    const payload = Buffer.from(JSON.stringify({ Request: { context, id, message: { [variant]: args } } }), 'utf8');
    if (payload.length > this.maxFrameBytes) {
      throw new RangeError(`${name}: the request is ${payload.length} bytes, above the daemon's ${this.maxFrameBytes}-byte frame limit`);
    }
    const header = Buffer.alloc(4);
    header.writeUInt32BE(payload.length, 0);
    return new Promise((resolve, reject) => {
      const call = { method: name, variant, resolve, reject, timer: null };
      call.timer = setTimeout(() => {
        this._forget(id, call);
        // Tell the daemon to stop working on it; best effort.
        this._write(socket, { Cancel: { request_id: id } });
        reject(makeError('Timeout', `${name}: no answer within ${timeout} ms`, { method: name }));
      }, timeout);
      this._pending.set(id, call);
      socket.ref();
      socket.write(Buffer.concat([header, payload]));
    });
  }

  /** @private Writes one JSON message, ignoring a socket that is gone. */
  _write(socket, message) {
    if (socket.destroyed) return;
    const payload = Buffer.from(JSON.stringify(message), 'utf8');
    const header = Buffer.alloc(4);
    header.writeUInt32BE(payload.length, 0);
    socket.write(Buffer.concat([header, payload]));
  }

  /** @private Drops a settled call. */
  _forget(id, call) {
    clearTimeout(call.timer);
    this._pending.delete(id);
    if (this._pending.size === 0 && this._socket) this._socket.unref();
  }

  /** @private Fails every call in flight. */
  _failAll(error) {
    const calls = [...this._pending.values()];
    this._pending.clear();
    for (const call of calls) {
      clearTimeout(call.timer);
      call.reject(makeError(error.code, `${call.method}: ${error.message}`, { method: call.method, cause: error }));
    }
  }
}

module.exports = {
  Client,
  LatchkeyError,
  ApiError,
  ServerError,
  TransportError,
  ...Object.fromEntries(Object.values(ERROR_CLASSES).filter((c) => c !== ServerError).map((c) => [c.prototype.name, c])),
  DEFAULT_RETRIES,
  DEFAULT_RETRY_BACKOFF_MS,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_FRAME_BYTES,
};
