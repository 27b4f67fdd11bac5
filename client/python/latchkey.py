"""Python client for latchkeyd, the password-reset and credential daemon.

One module, standard library only, Python 3.9 or later. It speaks the daemon's wire protocol
(tarpc's JSON messages on length-delimited frames over a Unix socket), described in full in
``docs/PROTOCOL.md``; copy this file into your project.

    import latchkey

    with latchkey.Client("/run/latchkeyd/latchkeyd.sock") as lk:
        user = lk.create_user("ada@example.com", "correct horse battery staple", name="Ada")
        try:
            lk.verify_password("ada@example.com", "a wrong guess", client_ip="203.0.113.7")
        except latchkey.ApiError as e:
            assert e.code == "InvalidCredentials"

Results are plain ``dict``/``list``/``str``/``None`` values with the JSON field names of the
protocol (``user["id"]``, ``user["credential_epoch"]``, ...).

Errors are :class:`LatchkeyError` subclasses:

* :class:`ApiError`: the daemon's typed answer; ``.code`` is the variant name
  (``"InvalidCredentials"``, ``"RateLimited"``, ...), ``.details`` its fields.
* :class:`ServerError`: the daemon refused the call before running it (``.throttled`` when
  too many calls were in flight on the connection); safe to retry.
* :class:`CallTimeout` (also a built-in ``TimeoutError``): no answer within the timeout; the
  call may or may not have taken effect.
* :class:`TransportError` (also a built-in ``ConnectionError``): the socket cannot be reached
  or the connection was lost; a call in flight may or may not have taken effect. The next
  call reconnects.

Thread safety: one :class:`Client` may be shared by any number of threads. Calls from
different threads run concurrently on the one connection (the daemon answers them in any
order; a reader thread hands each answer to its caller by request id).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Union

__all__ = [
    "Client",
    "LatchkeyError",
    "ApiError",
    "ServerError",
    "CallTimeout",
    "TransportError",
    "DEFAULT_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_FRAME_BYTES",
]

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
            return cls(value, None, method)
        if isinstance(value, dict) and len(value) == 1:
            code, fields = next(iter(value.items()))
            return cls(code, fields if isinstance(fields, dict) else {"value": fields}, method)
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


class _Pending:
    """One call waiting for its answer."""

    __slots__ = ("method", "event", "response", "error")

    def __init__(self, method: str):
        self.method = method
        self.event = threading.Event()
        self.response: Any = None
        self.error: Optional[BaseException] = None


class _Connection:
    """One socket, its reader thread and its calls in flight. Dead once the socket closes."""

    def __init__(self, path: str, connect_timeout: float, max_frame_bytes: int):
        self.max_frame_bytes = max_frame_bytes
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(path)
            sock.settimeout(None)
        except socket.timeout as e:
            sock.close()
            raise TransportError(f"cannot connect to {path}: timed out") from e
        except OSError as e:
            sock.close()
            raise TransportError(f"cannot connect to {path}: {e.strerror or e}") from e
        self.sock = sock
        self.write_lock = threading.Lock()
        self.lock = threading.Lock()  # guards pending, next_id and dead
        self.pending: Dict[int, _Pending] = {}
        self.next_id = 1
        self.dead: Optional[BaseException] = None
        self.reader = threading.Thread(target=self._read_loop, name="latchkey-reader", daemon=True)
        self.reader.start()

    def register(self, method: str) -> "tuple[int, _Pending]":
        with self.lock:
            if self.dead is not None:
                raise TransportError(f"{method}: connection lost: {self.dead}")
            request_id = self.next_id
            self.next_id += 1
            pending = _Pending(method)
            self.pending[request_id] = pending
            return request_id, pending

    def forget(self, request_id: int) -> None:
        with self.lock:
            self.pending.pop(request_id, None)

    def send(self, payload: bytes) -> None:
        frame = struct.pack(">I", len(payload)) + payload
        with self.write_lock:
            try:
                self.sock.sendall(frame)
            except OSError as e:
                self.fail(TransportError(f"connection lost while sending: {e.strerror or e}"))
                raise TransportError(f"connection lost while sending: {e.strerror or e}") from e

    def fail(self, error: BaseException) -> None:
        """Marks the connection dead and fails every call in flight."""
        with self.lock:
            if self.dead is None:
                self.dead = error
            pending, self.pending = self.pending, {}
        for p in pending.values():
            p.error = TransportError(f"{p.method}: connection lost: {error}")
            p.event.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.fail(TransportError("client closed"))
        if threading.current_thread() is not self.reader:
            self.reader.join(timeout=5)
        self.sock.close()

    def _recv_exact(self, n: int) -> Optional[bytes]:
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 16))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _read_loop(self) -> None:
        try:
            while True:
                header = self._recv_exact(4)
                if header is None:
                    raise TransportError("the daemon closed the connection")
                (length,) = struct.unpack(">I", header)
                if length > self.max_frame_bytes:
                    raise TransportError(f"the daemon sent a {length}-byte frame, above the limit")
                body = self._recv_exact(length)
                if body is None:
                    raise TransportError("the daemon closed the connection mid-frame")
                try:
                    response = json.loads(body.decode("utf-8"))
                    request_id = response["request_id"]
                except (ValueError, KeyError, TypeError) as e:
                    raise TransportError(f"unreadable frame from the daemon: {e}") from e
                with self.lock:
                    pending = self.pending.pop(request_id, None)
                if pending is not None:  # None: the caller gave up (timeout) already
                    pending.response = response
                    pending.event.set()
        except TransportError as e:
            self.fail(e)
        except OSError as e:
            self.fail(TransportError(e.strerror or str(e)))


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
    if value not in ("active", "disabled"):
        raise ValueError(f'status must be "active" or "disabled", not {value!r}')
    return value


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


class Client:
    """A connection to latchkeyd.

    Args:
        path: the daemon's Unix socket.
        timeout: seconds each call may take; sent to the daemon as the call's deadline, past
            which it abandons the call without answering.
        connect_timeout: seconds to wait for the socket to accept.
        max_frame_bytes: the daemon's ``server.max_frame_bytes``.
        max_in_flight: calls sent at once on the connection; more wait (within their
            timeout) for one to finish. Keep it at or below the daemon's
            ``server.max_requests_per_connection``.

    Raises:
        TransportError: the socket cannot be reached (the connection is made at once, so a
            wrong path fails here rather than at the first call).

    The client is thread-safe; see the module documentation. Use it as a context manager, or
    call :meth:`close`. If the connection is lost, the next call opens a new one.
    """

    def __init__(
        self,
        path: str,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ):
        self.path = str(path)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_frame_bytes = int(max_frame_bytes)
        self._lock = threading.Lock()
        # Calls past the daemon's per-connection limit would be refused with a ServerError;
        # waiting here for a free slot instead is kinder to callers with big thread pools.
        self._slots = threading.BoundedSemaphore(max(1, int(max_in_flight)))
        self._closed = False
        self._conn: Optional[_Connection] = _Connection(
            self.path, self.connect_timeout, self.max_frame_bytes
        )

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; calls in flight fail with :class:`TransportError`."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> _Connection:
        with self._lock:
            if self._closed:
                raise TransportError("the client is closed")
            if self._conn is None or self._conn.dead is not None:
                if self._conn is not None:
                    self._conn.sock.close()
                self._conn = _Connection(self.path, self.connect_timeout, self.max_frame_bytes)
            return self._conn

    def call(self, method: str, args: Dict[str, Any], timeout: Optional[float] = None) -> Any:
        """Calls any method by name and returns its result: the escape hatch for methods this
        client has no wrapper for.

        Args:
            method: ``"verify_password"`` or its wire name ``"VerifyPassword"``.
            args: the arguments by name, JSON-ready.
            timeout: seconds, instead of the client's timeout.

        Raises:
            ApiError, ServerError, CallTimeout, TransportError: see the module documentation.
        """
        timeout = self.timeout if timeout is None else float(timeout)
        started = time.monotonic()
        if not self._slots.acquire(timeout=max(0.0, timeout)):
            raise CallTimeout(f"{method}: {timeout:g} s passed waiting for a free call slot")
        try:
            remaining = timeout - (time.monotonic() - started)
            return self._call(method, args, max(0.0, remaining))
        finally:
            self._slots.release()

    def _call(self, method: str, args: Dict[str, Any], timeout: float) -> Any:
        variant = _variant_name(method)
        conn = self._connection()
        request_id, pending = conn.register(method)
        sent = False
        try:
            request = {
                "Request": {
                    "context": _context(timeout),
                    "id": request_id,
                    "message": {variant: args},
                }
            }
            payload = json.dumps(request, ensure_ascii=False, separators=(",", ":"),
                                 allow_nan=False).encode("utf-8")
            if len(payload) > conn.max_frame_bytes:
                raise ValueError(
                    f"{method}: the request is {len(payload)} bytes, above the daemon's "
                    f"{conn.max_frame_bytes}-byte frame limit"
                )
            conn.send(payload)
            sent = True
            if not pending.event.wait(timeout):
                raise CallTimeout(f"{method}: no answer within {timeout:g} s")
        except BaseException:
            # Timed out, interrupted (KeyboardInterrupt) or never sent: nobody will wait for
            # the answer, so the daemon may as well stop working on it.
            conn.forget(request_id)
            if sent and not pending.event.is_set() and conn.dead is None:
                self._cancel(conn, request_id)
            raise
        if pending.error is not None:
            raise pending.error
        return _result(pending.response, variant, method)

    @staticmethod
    def _cancel(conn: _Connection, request_id: int) -> None:
        # Tells the daemon to stop working on a call nobody waits for; best effort.
        cancel = {"Cancel": {"request_id": request_id}}
        try:
            conn.send(json.dumps(cancel, separators=(",", ":")).encode("utf-8"))
        except LatchkeyError:
            pass

    # -- accounts ---------------------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """Liveness, version, uptime and this connection's role.

        Returns:
            ``{"status": "ok", "version": str, "uptime_secs": int, "caller_role": "app"|"admin",
            "store": "ok"|"unreachable"|"stalled"}``
        """
        return self.call("health", {})

    def create_user(
        self,
        email: str,
        password: str,
        *,
        name: str = "",
        role: Optional[str] = None,
        locale: Optional[str] = None,
        client_ip: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Creates an account (sent as the ``user`` argument, a ``NewUser``); pass the end
        user's ``client_ip`` for the per-IP sign-up limit.

        Returns:
            The new user.

        Raises:
            ApiError: ``InvalidEmail``, ``InvalidInput`` (name, role, locale, client_ip),
                ``WeakPassword``, ``EmailTaken``, ``RateLimited``, ``Unavailable``.
        """
        user = {
            "email": _str("email", email),
            "name": _str("name", name),
            "password": _str("password", password),
            "role": _opt_str("role", role),
            "locale": _opt_str("locale", locale),
        }
        return self.call(
            "create_user", {"user": user, "client_ip": _opt_str("client_ip", client_ip)}
        )

    def sign_up(
        self,
        email: str,
        password: str,
        *,
        name: str = "",
        locale: Optional[str] = None,
        client_ip: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Signs a person up from the application's form (sent as the ``user`` argument, a
        ``SignUp``). What happens follows the daemon's ``[signup]`` settings.

        Returns:
            ``{"outcome": "created", "user": {...}}`` when the daemon creates accounts at once
            (the default), or ``{"outcome": "confirmation_sent"}`` for every address when it
            conceals taken addresses: tell the person to check their mail.

        Raises:
            ApiError: ``InvalidEmail``, ``InvalidInput`` (name, locale, client_ip),
                ``WeakPassword``, ``RateLimited``, ``EmailTaken`` (only when not concealing),
                ``Unavailable``.
        """
        user = {
            "email": _str("email", email),
            "name": _str("name", name),
            "password": _str("password", password),
            "locale": _opt_str("locale", locale),
        }
        return self.call(
            "sign_up", {"user": user, "client_ip": _opt_str("client_ip", client_ip)}
        )

    def confirm_sign_up(
        self, token: str, password: str, client_ip: Optional[str] = None
    ) -> Dict[str, Any]:
        """Finishes a concealed sign-up with the token from the mailed link and the password
        chosen at sign-up.

        Returns:
            The new user.

        Raises:
            ApiError: ``InvalidToken`` (unknown, expired or used link), ``InvalidCredentials``
                (not the sign-up password), ``EmailTaken``, ``RateLimited``, ``InvalidInput``
                (client_ip).
        """
        return self.call("confirm_sign_up", {
            "token": _str("token", token),
            "password": _str("password", password),
            "client_ip": _opt_str("client_ip", client_ip),
        })

    def get_user(self, id: int) -> Dict[str, Any]:
        """The user with this id. Raises :class:`ApiError` ``NotFound``."""
        return self.call("get_user", {"id": _uint("id", id)})

    def find_user(self, email: str) -> Dict[str, Any]:
        """The user with this email (normalised first). Raises :class:`ApiError`
        ``InvalidEmail`` or ``NotFound``."""
        return self.call("find_user", {"email": _str("email", email)})

    def verify_password(
        self, email: str, password: str, client_ip: Optional[str] = None
    ) -> Dict[str, Any]:
        """Checks a login and returns the user.

        Raises:
            ApiError: ``InvalidCredentials`` for a wrong password, an unknown email and a
                disabled account alike; ``RateLimited``; ``InvalidInput`` (client_ip).
        """
        return self.call("verify_password", {
            "email": _str("email", email),
            "password": _str("password", password),
            "client_ip": _opt_str("client_ip", client_ip),
        })

    def change_password(
        self, id: int, current_password: str, new_password: str
    ) -> Dict[str, Any]:
        """Changes a password after checking the current one; revokes the user's reset tokens.

        Returns:
            ``{"user_id": int, "credential_epoch": int}``: drop sessions from older epochs.

        Raises:
            ApiError: ``NotFound``, ``WeakPassword``, ``InvalidCredentials``, ``RateLimited``.
        """
        return self.call("change_password", {
            "id": _uint("id", id),
            "current_password": _str("current_password", current_password),
            "new_password": _str("new_password", new_password),
        })

    def set_status(self, id: int, status: str) -> Dict[str, Any]:
        """Enables (``"active"``) or disables (``"disabled"``) an account (admin). Returns the
        user."""
        return self.call("set_status", {"id": _uint("id", id), "status": _status(status)})

    def delete_user(self, id: int) -> None:
        """Deletes an account and everything attached to it (admin)."""
        return self.call("delete_user", {"id": _uint("id", id)})

    def list_users(self, after: int = 0, limit: int = 100) -> List[Dict[str, Any]]:
        """Users with ids above ``after``, in id order, at most ``limit`` (1 to 1000) (admin).
        Pass the last id seen as ``after`` for the next page."""
        return self.call("list_users", {
            "after": _uint("after", after), "limit": _uint("limit", limit, _U32_MAX),
        })

    def set_password(self, id: int, new_password: str) -> Dict[str, Any]:
        """Sets a password without the current one (admin); revokes reset tokens and bumps the
        credential epoch. Returns ``{"user_id", "credential_epoch"}``."""
        return self.call("set_password", {
            "id": _uint("id", id), "new_password": _str("new_password", new_password),
        })

    def import_users(self, users: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Imports accounts with existing bcrypt or argon2 hashes (admin), at most 1000 a call.

        Args:
            users: ``ImportUser`` objects: ``email`` and ``password_hash`` required; ``name``,
                ``role``, ``status``, ``locale``, ``created_at`` optional.

        Returns:
            One outcome per user, in order: ``{"Ok": id}`` or ``{"Err": <ApiError JSON>}``
            (turn the latter into an exception with :meth:`ApiError._from_wire` if wanted).
        """
        if not isinstance(users, list):
            raise TypeError("users must be a list of dicts")
        return self.call("import_users", {"users": users})

    # -- password reset ---------------------------------------------------------------------

    def request_password_reset(
        self, email: str, client_ip: Optional[str] = None, locale: Optional[str] = None
    ) -> None:
        """Starts a reset. Returns ``None`` for every valid address, with or without an
        account, so always show the same message; an active account is mailed a link.

        Raises:
            ApiError: ``InvalidEmail``, ``RateLimited``, ``InvalidInput`` (client_ip, locale).
        """
        return self.call("request_password_reset", {
            "email": _str("email", email),
            "client_ip": _opt_str("client_ip", client_ip),
            "locale": _opt_str("locale", locale),
        })

    def check_reset_token(self, token: str, client_ip: Optional[str] = None) -> Dict[str, Any]:
        """Says whether a token is usable, without using it.

        Returns:
            ``{"state": "valid"|"expired"|"used"|"invalid", "expires_at": int|None}``
        """
        return self.call("check_reset_token", {
            "token": _str("token", token), "client_ip": _opt_str("client_ip", client_ip),
        })

    def complete_password_reset(
        self,
        token: str,
        new_password: str,
        confirm_password: Optional[str] = None,
        client_ip: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Uses a token to set a new password; revokes the user's other tokens.

        Returns:
            ``{"user_id": int, "credential_epoch": int}``

        Raises:
            ApiError: ``InvalidToken``, ``PasswordMismatch``, ``WeakPassword``,
                ``RateLimited``, ``InvalidInput`` (client_ip).
        """
        return self.call("complete_password_reset", {
            "token": _str("token", token),
            "new_password": _str("new_password", new_password),
            "confirm_password": _opt_str("confirm_password", confirm_password),
            "client_ip": _opt_str("client_ip", client_ip),
        })

    def admin_reset_link(
        self, user: Union[int, str, Dict[str, Any]], lifetime_secs: Optional[int] = None
    ) -> Dict[str, Any]:
        """Makes a reset link for support staff (admin).

        Args:
            user: an id (int), an email (str), or ``{"id": ...}`` / ``{"email": ...}``.
            lifetime_secs: 1 to 86400; the configured token lifetime when ``None``.

        Returns:
            ``{"user_id": int, "link": str, "expires_at": int}``; the token is the link's
            ``token`` query parameter.
        """
        return self.call("admin_reset_link", {
            "user": _user_ref(user), "lifetime_secs": _opt_uint("lifetime_secs", lifetime_secs),
        })

    # -- operations -------------------------------------------------------------------------

    def events(self, after: int = 0, limit: int = 100) -> List[Dict[str, Any]]:
        """Event log entries after the cursor ``after``, oldest first, at most ``limit``
        (admin). Pass the last ``seq`` seen as the next cursor."""
        return self.call("events", {
            "after": _uint("after", after), "limit": _uint("limit", limit, _U32_MAX),
        })

    def credential_changes(self, after: int = 0, limit: int = 100) -> Dict[str, Any]:
        """The credential changes after the cursor ``after`` (app role): password reset,
        changed or set, account disabled or deleted. Returns ``{"changes": [{"seq", "at",
        "kind", "user_id"}], "next": cursor, "caught_up": bool}``; end the sessions of each
        ``user_id`` issued before ``at``, and call again with ``next`` until ``caught_up``."""
        return self.call("credential_changes", {
            "after": _uint("after", after), "limit": _uint("limit", limit, _U32_MAX),
        })

    def outbox_list(self, after: int = 0, limit: int = 100) -> List[Dict[str, Any]]:
        """Queued and dead mail messages with ids above ``after`` (admin)."""
        return self.call("outbox_list", {
            "after": _uint("after", after), "limit": _uint("limit", limit, _U32_MAX),
        })

    def outbox_retry(self, id: int) -> None:
        """Puts a message back in the queue, due now (admin)."""
        return self.call("outbox_retry", {"id": _uint("id", id)})

    def outbox_drop(self, id: int) -> None:
        """Deletes a message unsent (admin)."""
        return self.call("outbox_drop", {"id": _uint("id", id)})

    def metrics(self) -> str:
        """Metrics in the Prometheus text format (admin)."""
        return self.call("metrics", {})


def _result(response: Any, variant: str, method: str) -> Any:
    """Unwraps ``{"request_id", "message": {"Ok": {Variant: {"Ok"|"Err": ...}}}}``."""
    try:
        message = response["message"]
        if "Err" in message:
            err = message["Err"]
            raise ServerError(err.get("kind"), err.get("detail", ""), method)
        reply = message["Ok"][variant]
        if "Err" in reply:
            raise ApiError._from_wire(reply["Err"], method)
        return reply["Ok"]
    except (KeyError, TypeError, AttributeError) as e:
        raise TransportError(f"{method}: unexpected answer from the daemon: {response!r}") from e

