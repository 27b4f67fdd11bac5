// TypeScript declarations for latchkey.js (and latchkey.mjs). Checked in CI with
// `tsc --strict` against test/types.ts. Field names are the protocol's (docs/PROTOCOL.md).

/** Unix seconds. */
export type UnixTime = number;

export interface User {
  id: number;
  email: string;
  name: string;
  role: string;
  status: 'active' | 'disabled';
  locale: string | null;
  created_at: UnixTime;
  updated_at: UnixTime;
  password_changed_at: UnixTime;
  /** Bumped on every password change and when disabled: end sessions from older epochs. */
  credential_epoch: number;
}

export interface NewUser {
  email: string;
  password: string;
  name?: string;
  role?: string | null;
  locale?: string | null;
}

export interface SignUpForm {
  email: string;
  password: string;
  name?: string;
  locale?: string | null;
}

export type SignUpOutcome = { outcome: 'created'; user: User } | { outcome: 'confirmation_sent' };

export interface PasswordChanged {
  user_id: number;
  credential_epoch: number;
}

export interface Health {
  status: 'ok';
  version: string;
  uptime_secs: number;
  caller_role: 'app' | 'admin' | 'monitor';
  store: 'ok' | 'unreachable' | 'stalled' | '';
  /** Absent from daemons older than protocol 2. */
  protocol?: number;
  /** Every method the daemon has, by wire name; absent before protocol 2. */
  methods?: string[];
}

/** A later daemon may add states: treat an unknown one like 'invalid'. */
export interface TokenCheck {
  state: 'valid' | 'expired' | 'used' | 'invalid' | (string & {});
  expires_at: UnixTime | null;
}

export interface ResetLink {
  user_id: number;
  link: string;
  expires_at: UnixTime;
}

export type UserRef = number | string | { id: number } | { email: string };

export interface Event {
  seq: number;
  at: UnixTime;
  kind: string;
  user_id: number | null;
  client_ip: string | null;
}

export interface CredentialChange {
  seq: number;
  at: UnixTime;
  kind: 'reset_completed' | 'password_changed' | 'password_set' | 'user_disabled' | 'user_deleted' | (string & {});
  user_id: number;
}

export interface CredentialChanges {
  changes: CredentialChange[];
  /** The cursor for the next call. */
  next: number;
  /** The end of the log was reached: poll again later from `next`. */
  caught_up: boolean;
}

export interface OutboxMessage {
  id: number;
  kind: string;
  to: string;
  state: 'queued' | 'dead';
  attempts: number;
  created_at: UnixTime;
  next_attempt_at: UnixTime | null;
  last_error: string | null;
}

export interface ImportUser {
  email: string;
  password_hash: string;
  name?: string;
  role?: string | null;
  status?: 'active' | 'disabled' | null;
  locale?: string | null;
  created_at?: UnixTime | null;
}

export type ImportOutcome = { Ok: number } | { Err: string | Record<string, unknown> };

export interface ClientOptions {
  /** Milliseconds each call may take; sent as its deadline. Default 10000. */
  timeout?: number;
  /** Milliseconds to wait for the socket. Default 5000. */
  connectTimeout?: number;
  /** Calls sent at once; more wait for a slot. Default 64. */
  maxInFlight?: number;
  /** The daemon's server.max_frame_bytes. Default 65536. */
  maxFrameBytes?: number;
  /** Times a call that did not run, or a read whose connection was lost, is sent again. Default 3. */
  retries?: number;
  /** Milliseconds before the first retry, doubling. Default 100. */
  retryBackoff?: number;
}

export interface ClientIp {
  clientIp?: string;
}

export interface Page {
  after?: number;
  limit?: number;
}

export class Client {
  constructor(path: string, options?: ClientOptions);
  readonly path: string;
  timeout: number;
  connect(): Promise<void>;
  close(): void;
  /** Any method by name (`verifyPassword`, `verify_password` or `VerifyPassword`). */
  call(method: string, args: Record<string, unknown>, options?: { timeout?: number }): Promise<unknown>;

  health(): Promise<Health>;
  metrics(): Promise<string>;
  createUser(user: NewUser, options?: ClientIp): Promise<User>;
  signUp(user: SignUpForm, options?: ClientIp): Promise<SignUpOutcome>;
  confirmSignUp(token: string, password: string, options?: ClientIp): Promise<User>;
  getUser(id: number): Promise<User>;
  findUser(email: string): Promise<User>;
  verifyPassword(email: string, password: string, options?: ClientIp): Promise<User>;
  changePassword(id: number, currentPassword: string, newPassword: string): Promise<PasswordChanged>;
  setStatus(id: number, status: 'active' | 'disabled'): Promise<User>;
  deleteUser(id: number): Promise<null>;
  listUsers(options?: Page): Promise<User[]>;
  setPassword(id: number, newPassword: string): Promise<PasswordChanged>;
  importUsers(users: ImportUser[]): Promise<ImportOutcome[]>;
  requestPasswordReset(email: string, options?: ClientIp & { locale?: string }): Promise<null>;
  checkResetToken(token: string, options?: ClientIp): Promise<TokenCheck>;
  completePasswordReset(
    token: string,
    newPassword: string,
    options?: ClientIp & { confirmPassword?: string },
  ): Promise<PasswordChanged>;
  adminResetLink(user: UserRef, options?: { lifetimeSecs?: number }): Promise<ResetLink>;
  events(options?: Page): Promise<Event[]>;
  credentialChanges(options?: Page): Promise<CredentialChanges>;
  outboxList(options?: Page): Promise<OutboxMessage[]>;
  outboxRetry(id: number): Promise<null>;
  outboxDrop(id: number): Promise<null>;
}

export type ErrorKind = 'api' | 'server' | 'transport';

/** Every failure: `code` names it, `kind` says who failed. */
export class LatchkeyError extends Error {
  constructor(code: string, message: string, extra?: { kind?: ErrorKind; details?: object; method?: string; cause?: unknown });
  readonly code: string;
  readonly kind: ErrorKind;
  /** The variant's fields (`retry_after_secs`, `field` and `reason`, ...) or the server error. */
  readonly details: Record<string, any>;
  /** The method that failed, camelCase. */
  readonly method: string;
  readonly isApiError: boolean;
}
/** The daemon ran the call and refused it. */
export class ApiError extends LatchkeyError {}
/** The daemon did not run the call. */
export class ServerError extends LatchkeyError {}
/** The socket, the connection or the client failed around the call. */
export class TransportError extends LatchkeyError {}

export class InvalidEmailError extends ApiError {}
export class InvalidInputError extends ApiError {}
export class WeakPasswordError extends ApiError {}
export class PasswordMismatchError extends ApiError {}
export class EmailTakenError extends ApiError {}
export class InvalidCredentialsError extends ApiError {}
export class InvalidTokenError extends ApiError {}
export class NotFoundError extends ApiError {}
export class ForbiddenError extends ApiError {}
export class RateLimitedError extends ApiError {}
export class UnavailableError extends ApiError {}
export class ThrottledError extends ServerError {}
export class UnknownMethodError extends ServerError {}
export class InvalidRequestError extends ServerError {}
export class NoRoleError extends ServerError {}
export class CallTimeoutError extends TransportError {}
export class ConnectFailedError extends TransportError {}
export class ConnectionLostError extends TransportError {}
export class BadResponseError extends TransportError {}
export class ClosedError extends TransportError {}

export const DEFAULT_RETRIES: number;
export const DEFAULT_RETRY_BACKOFF_MS: number;
export const DEFAULT_TIMEOUT_MS: number;
export const DEFAULT_CONNECT_TIMEOUT_MS: number;
export const DEFAULT_MAX_IN_FLIGHT: number;
export const DEFAULT_MAX_FRAME_BYTES: number;
