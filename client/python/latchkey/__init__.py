"""Python client for latchkeyd, the password-reset and credential daemon.

Standard library only, Python 3.9 or later: a thread-safe, fork-safe :class:`Client` and an
asyncio :class:`AsyncClient`, sharing one codec. It speaks the daemon's wire protocol 2
(``docs/PROTOCOL.md`` of the latchkey repository).

    import latchkey

    lk = latchkey.Client("/run/latchkeyd/latchkeyd.sock")   # connects at the first call
    user = lk.create_user("ada@example.com", "correct horse battery staple", name="Ada")
    try:
        lk.verify_password("ada@example.com", "a wrong guess", client_ip="203.0.113.7")
    except latchkey.InvalidCredentialsError:
        ...

Results are plain dicts with the protocol's field names, typed as TypedDicts
(:class:`User`, :class:`Health`, ...).

Errors, all :class:`LatchkeyError`:

* :class:`ApiError` and one subclass per code (:class:`InvalidCredentialsError`,
  :class:`RateLimitedError` with ``retry_after``, ...): the daemon ran the call and refused.
* :class:`ServerError` (:class:`ThrottledError`, :class:`UnknownMethodError`,
  :class:`InvalidRequestError`, :class:`NoRoleError`): the daemon did not run the call.
* :class:`CallTimeout` (a ``TimeoutError``): no answer in time; it may have run.
* :class:`TransportError` (a ``ConnectionError``; :class:`ConnectRefused` when nothing was
  sent): the socket cannot be reached or the connection was lost; a call in flight may have
  run. The next call reconnects.

Retries: a call that certainly did not run (throttled, refused connection) is sent again, and
so is a call that changes nothing (``health``, ``get_user``, ``check_reset_token``, ...) whose
connection was lost; a change lost mid-flight never is. ``retries`` and ``retry_backoff`` set
how often and how soon, never past the call's timeout.
"""

from ._types import (
    BackupChunk, CredentialChange, CredentialChanges, Event, ExportedUser, Health,
    ImportOutcome, OutboxMessage, PasswordChanged, ResetLink, SignUpOutcome, TokenCheck, User,
)
from ._wire import (
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_IN_FLIGHT, DEFAULT_RETRIES,
    DEFAULT_RETRY_BACKOFF, DEFAULT_TIMEOUT, ApiError, CallTimeout, ConnectRefused,
    EmailTakenError, ForbiddenError, InvalidCredentialsError, InvalidEmailError,
    InvalidInputError, InvalidRequestError, InvalidTokenError, LatchkeyError, NoRoleError,
    NotFoundError, PasswordMismatchError, RateLimitedError, ServerError, ThrottledError,
    TransportError, UnavailableError, UnknownMethodError, WeakPasswordError,
)
from .aio import AsyncClient
from .client import Client

__version__ = "0.1.0"

#: The protocol version this client speaks.
PROTOCOL = 2

__all__ = [
    "Client", "AsyncClient", "PROTOCOL",
    "LatchkeyError", "ApiError", "ServerError", "TransportError", "CallTimeout",
    "ConnectRefused", "EmailTakenError", "ForbiddenError", "InvalidCredentialsError",
    "InvalidEmailError", "InvalidInputError", "InvalidRequestError", "InvalidTokenError",
    "NoRoleError", "NotFoundError", "PasswordMismatchError", "RateLimitedError",
    "ThrottledError", "UnavailableError", "UnknownMethodError", "WeakPasswordError",
    "User", "Health", "SignUpOutcome", "PasswordChanged", "TokenCheck", "ResetLink", "Event",
    "CredentialChange", "CredentialChanges", "OutboxMessage", "ExportedUser", "BackupChunk",
    "ImportOutcome",
    "DEFAULT_TIMEOUT", "DEFAULT_CONNECT_TIMEOUT", "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_FRAME_BYTES", "DEFAULT_RETRIES", "DEFAULT_RETRY_BACKOFF",
]
