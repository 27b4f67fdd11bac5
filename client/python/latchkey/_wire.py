"""The codec both clients share: constants, errors, request frames, reply decoding and the
argument checks. Nothing here touches a socket."""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, Optional, Type

#: Seconds a call may take unless told otherwise; also sent to the daemon as the call's
#: deadline. Generous because password hashing queues when the daemon is busy.
DEFAULT_TIMEOUT = 10.0

#: Seconds to wait for the socket to accept a connection.
DEFAULT_CONNECT_TIMEOUT = 5.0

#: The daemon's default ``server.max_requests_per_connection``: calls in flight on one
#: connection past it are refused with a :class:`ServerError`.
DEFAULT_MAX_IN_FLIGHT = 64

#: The daemon's default ``server.max_frame_bytes``. A larger frame makes the daemon close the
#: connection (failing every call on it), so the client refuses to send one.
DEFAULT_MAX_FRAME_BYTES = 64 * 1024

# Largest values of the protocol's unsigned integer types.
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1

# tarpc's numbering of std::io::ErrorKind in server errors (tarpc/src/util/serde.rs).
_IO_ERROR_KINDS = [
    "NotFound", "PermissionDenied", "ConnectionRefused", "ConnectionReset",
    "ConnectionAborted", "NotConnected", "AddrInUse", "AddrNotAvailable", "BrokenPipe",
    "AlreadyExists", "WouldBlock", "InvalidInput", "InvalidData", "TimedOut", "WriteZero",
    "Interrupted", "Other", "UnexpectedEof",
]

# The daemon's messages for its typed errors, as the Rust client prints them.
_API_MESSAGES = {
    "InvalidEmail": "invalid email address",
    "InvalidInput": "invalid {field}: {reason}",
    "WeakPassword": "password refused: {reason}",
    "PasswordMismatch": "the passwords do not match",
    "EmailTaken": "an account with that email exists already",
    "InvalidCredentials": "invalid credentials",
    "InvalidToken": "the reset token is invalid or expired",
    "NotFound": "not found",
    "Forbidden": "forbidden: this connection's role may not call this method",
    "RateLimited": "rate limited; retry after {retry_after_secs} s",
    "Unavailable": "service unavailable; retry later",
}


#: Times a call is sent again when it did not run (throttled, refused connection) or, for
#: a method that changes nothing, when the connection was lost under it.
DEFAULT_RETRIES = 3

#: Seconds before the first retry; each later one waits twice as long.
DEFAULT_RETRY_BACKOFF = 0.1

#: The methods that change nothing: safe to send again after the connection was lost under
#: them, when nobody can know whether the daemon ran them.
READ_ONLY = frozenset({
    "Health", "GetUser", "FindUser", "ListUsers", "CheckResetToken", "Events",
    "CredentialChanges", "OutboxList", "Metrics", "ExportUsers",
})

class LatchkeyError(Exception):
    """Base class of every error this module raises."""


class ApiError(LatchkeyError):
    """The daemon's typed, stable error (``ApiError`` in the protocol).

    Attributes:
        code: the variant name, e.g. ``"InvalidCredentials"`` or ``"RateLimited"``.
        details: the variant's fields, e.g. ``{"retry_after_secs": 60}``; empty for variants
            without fields.
        method: the snake_case name of the method that failed.
    """

    def __init__(self, code: str, details: Optional[Dict[str, Any]] = None, method: str = ""):
        self.code = code
        self.details = dict(details or {})
        self.method = method
        template = _API_MESSAGES.get(code)
        try:
            message = template.format(**self.details) if template else code
        except (KeyError, IndexError, ValueError):
            message = code
        self.message = message
        super().__init__(f"{method}: {message} ({code})" if method else f"{message} ({code})")

    @classmethod
    def _from_wire(cls, value: Any, method: str) -> "ApiError":
        # Unit variants are bare strings ("EmailTaken"); variants with fields are one-key
        # objects ({"RateLimited": {"retry_after_secs": 60}}).
        if isinstance(value, str):
            return API_ERRORS.get(value, cls)(value, None, method)
        if isinstance(value, dict) and len(value) == 1:
            code, fields = next(iter(value.items()))
            details = fields if isinstance(fields, dict) else {"value": fields}
            return API_ERRORS.get(code, cls)(code, details, method)
        raise TransportError(f"{method}: unreadable error from the daemon: {value!r}")


class ServerError(LatchkeyError):
    """The daemon refused the call before running it; nothing happened, so it is safe to retry.

    Attributes:
        kind: tarpc's number for the ``std::io::ErrorKind`` (10 is ``WouldBlock``).
        kind_name: that kind's name.
        detail: the daemon's text, e.g. ``"server throttled the request."``.
        throttled: ``True`` when too many calls were in flight on this connection.
        unknown_method: ``True`` when the daemon does not have the method: it is older than
            this client (``health()["methods"]`` lists what it has).
        invalid_request: ``True`` when the daemon could not read the request.
        no_role: ``True`` when this process's uid and groups have no role on the socket
            (see the daemon's ``auth.app_uids`` and ``auth.app_gids``); ``detail`` says which.
    """

    def __init__(self, kind: int, detail: str, method: str = ""):
        self.kind = kind
        self.kind_name = (
            _IO_ERROR_KINDS[kind] if isinstance(kind, int) and 0 <= kind < len(_IO_ERROR_KINDS)
            else "Other"
        )
        self.detail = detail
        self.method = method
        self.throttled = self.kind_name == "WouldBlock"
        self.unknown_method = self.kind_name == "NotFound"
        self.invalid_request = self.kind_name == "InvalidInput"
        self.no_role = self.kind_name == "PermissionDenied"
        super().__init__(f"{method}: server error {self.kind_name}: {detail}")


class TransportError(LatchkeyError, ConnectionError):
    """The socket cannot be reached, the connection was lost, or the daemon sent something
    this client cannot read. A call in flight may or may not have taken effect."""


class CallTimeout(LatchkeyError, TimeoutError):
    """No answer within the timeout. The daemon abandons a call at its deadline without
    answering; the call may or may not have taken effect."""


def _context(timeout: float) -> Dict[str, Any]:
    """A tarpc context: the deadline as a duration from now, and an empty trace context."""
    nanos = max(0, int(round(timeout * 1e9)))
    return {
        "deadline": {"secs": nanos // 1_000_000_000, "nanos": nanos % 1_000_000_000},
        # span_id stays 0: tarpc's own clients send random u64s, which are not safe for
        # every JSON implementation, and the daemon only uses it for its traces.
        "trace_context": {"trace_id": [0] * 16, "span_id": 0, "sampling_decision": "Unsampled"},
    }


def _variant_name(method: str) -> str:
    """``verify_password`` -> ``VerifyPassword``: the request variant's name on the wire."""
    if "_" not in method and method[:1].isupper():
        return method
    return "".join(part.capitalize() for part in method.split("_"))


# Argument checks. A daemon of protocol 2 answers a request it cannot read with an
# invalid-request ServerError for that call alone (an older one closes the connection,
# failing every call in flight on it); refusing bad arguments here also reads better.

def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _opt_str(name: str, value: Any) -> Optional[str]:
    return None if value is None else _str(name, value)


def _uint(name: str, value: Any, maximum: int = _U64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be between 0 and {maximum}, not {value}")
    return value


def _opt_uint(name: str, value: Any) -> Optional[int]:
    return None if value is None else _uint(name, value)


def _status(value: Any) -> str:
    if value == "active" or value == "disabled":
        return str(value)
    raise ValueError(f'status must be "active" or "disabled", not {value!r}')


def _user_ref(user: Any) -> Dict[str, Any]:
    # An int is an id, a str an email; {"id": ...} and {"email": ...} pass through.
    if isinstance(user, dict):
        if set(user) == {"id"}:
            return {"id": _uint("user id", user["id"])}
        if set(user) == {"email"}:
            return {"email": _str("user email", user["email"])}
        raise ValueError('user must be {"id": int} or {"email": str}')
    if isinstance(user, str):
        return {"email": user}
    return {"id": _uint("user", user)}


def _result(response: Any, variant: str, method: str) -> Any:
    """Unwraps ``{"request_id", "message": {"Ok": {Variant: {"Ok"|"Err": ...}}}}``."""
    try:
        message = response["message"]
        if "Err" in message:
            err = message["Err"]
            kind, detail = err.get("kind"), err.get("detail", "")
            raise SERVER_ERRORS.get(kind, ServerError)(kind, detail, method)
        reply = message["Ok"][variant]
        if "Err" in reply:
            raise ApiError._from_wire(reply["Err"], method)
        return reply["Ok"]
    except (KeyError, TypeError, AttributeError) as e:
        raise TransportError(f"{method}: unexpected answer from the daemon: {response!r}") from e



# One class per ApiError code, so ``except latchkey.InvalidCredentialsError`` reads as well
# as checking ``e.code``. A code a newer daemon adds arrives as a plain ApiError.
class InvalidEmailError(ApiError):
    """Not a plausible email address."""


class InvalidInputError(ApiError):
    """Another argument is malformed; ``details["field"]`` names it."""


class WeakPasswordError(ApiError):
    """The new password breaks the policy; ``details["reason"]`` is fit to show."""


class PasswordMismatchError(ApiError):
    """The password and its confirmation differ."""


class EmailTakenError(ApiError):
    """An account with that email exists."""


class InvalidCredentialsError(ApiError):
    """Wrong password, unknown email or disabled account: deliberately one error."""


class InvalidTokenError(ApiError):
    """The token is unknown, malformed, expired, used or revoked."""


class NotFoundError(ApiError):
    """No such user or message (id-based and admin methods only)."""


class ForbiddenError(ApiError):
    """This connection's role may not call the method."""


class RateLimitedError(ApiError):
    """Too many attempts; ``retry_after`` seconds until a retry can succeed."""

    @property
    def retry_after(self) -> int:
        value = self.details.get("retry_after_secs", 0)
        return int(value) if isinstance(value, int) else 0


class UnavailableError(ApiError):
    """The daemon could not complete the call; safe to retry."""


API_ERRORS: Dict[str, Type[ApiError]] = {
    cls.__name__[: -len("Error")]: cls
    for cls in (
        InvalidEmailError, InvalidInputError, WeakPasswordError, PasswordMismatchError,
        EmailTakenError, InvalidCredentialsError, InvalidTokenError, NotFoundError,
        ForbiddenError, RateLimitedError, UnavailableError,
    )
}


class UnknownMethodError(ServerError):
    """The daemon does not have the method: it is older than this client."""


class NoRoleError(ServerError):
    """This process's uid and groups have no role on the socket (see the daemon's
    ``auth.app_uids`` and ``auth.app_gids``); the detail names them."""


class ThrottledError(ServerError):
    """Too many calls in flight on the connection, or the daemon's connection limits."""


class InvalidRequestError(ServerError):
    """The daemon could not read the request."""


SERVER_ERRORS: Dict[Any, Type[ServerError]] = {
    0: UnknownMethodError, 1: NoRoleError, 10: ThrottledError, 11: InvalidRequestError,
}


def encode_request(request_id: int, method: str, args: Dict[str, Any], timeout: float,
                   max_frame_bytes: int) -> bytes:
    """One request frame, length header included."""
    request = {"Request": {
        "context": _context(timeout), "id": request_id,
        "message": {_variant_name(method): args},
    }}
    payload = json.dumps(request, ensure_ascii=False, separators=(",", ":"),
                         allow_nan=False).encode("utf-8")
    if len(payload) > max_frame_bytes:
        raise ValueError(
            f"{method}: the request is {len(payload)} bytes, above the daemon's "
            f"{max_frame_bytes}-byte frame limit"
        )
    return struct.pack(">I", len(payload)) + payload


def encode_cancel(request_id: int) -> bytes:
    """A Cancel frame for a call nobody waits for any more."""
    payload = json.dumps({"Cancel": {"request_id": request_id}}).encode("utf-8")
    return struct.pack(">I", len(payload)) + payload


def decode_frame(body: bytes) -> "tuple[int, Any]":
    """A reply frame's request id and the whole reply."""
    try:
        response = json.loads(body.decode("utf-8"))
        request_id = response["request_id"]
    except (ValueError, KeyError, TypeError) as e:
        raise TransportError(f"unreadable frame from the daemon: {e}") from e
    if not isinstance(request_id, int):
        raise TransportError(f"unreadable frame from the daemon: request_id {request_id!r}")
    return request_id, response


def worth_retrying(error: BaseException, method: str) -> bool:
    """Whether a failed call may be sent again: it certainly did not run (throttled, the
    socket refused), or it changes nothing and its connection was lost under it."""
    if isinstance(error, (ThrottledError, ConnectRefused)):
        return True
    return isinstance(error, TransportError) and _variant_name(method) in READ_ONLY


class ConnectRefused(TransportError):
    """The socket could not be reached: nothing was sent."""


class _Settings:
    """The options both clients take, read once; see :class:`latchkey.Client`."""

    def __init__(
        self,
        path: str,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        retries: int = DEFAULT_RETRIES,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
    ):
        self.path = str(path)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_frame_bytes = int(max_frame_bytes)
        self.retries = max(0, int(retries))
        self.retry_backoff = max(0.001, float(retry_backoff))
        self._max_in_flight = max(1, int(max_in_flight))
        self._start()

    def _start(self) -> None:
        """Each client's own state, made after the options are read."""


def lost(heard: bool, why: str) -> TransportError:
    """The error for a connection that ended: `why`, unless the daemon never sent anything on
    it, which is most likely a refusal it could not explain (see CLOSED_UNANSWERED)."""
    return TransportError(why if heard else CLOSED_UNANSWERED)


#: Why a connection ended before the daemon sent anything on it: what a daemon does to a peer
#: with no role when it cannot say so with a NoRoleError.
CLOSED_UNANSWERED = (
    "the daemon closed the connection without answering anything: this process's uid or groups may have no role on the socket (see auth.app_uids and auth.app_gids in the daemon's configuration), or its connection limits are reached"
)
