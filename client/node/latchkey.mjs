// The ES module entry point: the same client as latchkey.js (CommonJS), re-exported by name.
import latchkey from './latchkey.js';

export const {
  Client, LatchkeyError, ApiError, ServerError, TransportError,
  InvalidEmailError, InvalidInputError, WeakPasswordError, PasswordMismatchError, EmailTakenError,
  InvalidCredentialsError, InvalidTokenError, NotFoundError, ForbiddenError, RateLimitedError,
  UnavailableError, ThrottledError, UnknownMethodError, InvalidRequestError, NoRoleError,
  CallTimeoutError, ConnectFailedError, ConnectionLostError, BadResponseError, ClosedError,
  DEFAULT_RETRIES, DEFAULT_RETRY_BACKOFF_MS, DEFAULT_TIMEOUT_MS, DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_FRAME_BYTES,
} = latchkey;
export default latchkey;
