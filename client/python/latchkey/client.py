"""The synchronous client: one connection shared by every thread, a reader thread handing
each answer to its caller by request id."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import weakref
from typing import Any, Dict, List, Optional, Union, cast

from . import _requests as rq
from ._types import (
    BackupChunk, CredentialChanges, Event, ExportedUser, Health, ImportOutcome, OutboxMessage,
    PasswordChanged, ResetLink, SignUpOutcome, TokenCheck, User,
)
from ._wire import (
    CallTimeout, ConnectRefused,
    LatchkeyError, TransportError, _result, _variant_name, decode_frame, encode_cancel,
    lost,
    _Settings, encode_request, worth_retrying,
)

__all__ = ["Client"]

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
            raise ConnectRefused(f"cannot connect to {path}: timed out") from e
        except OSError as e:
            sock.close()
            raise ConnectRefused(f"cannot connect to {path}: {e.strerror or e}") from e
        self.sock = sock
        self.write_lock = threading.Lock()
        self.lock = threading.Lock()  # guards pending, next_id and dead
        self.pending: Dict[int, _Pending] = {}
        # The process that made it: a forked child must not read or write the parent's
        # socket (their frames would interleave), so it makes its own.
        self.pid = os.getpid()
        # Whether the daemon has sent anything: a close before that is most likely a refusal.
        self.heard = False
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

    def send(self, frame: bytes) -> None:
        with self.write_lock:
            try:
                self.sock.sendall(frame)
            except OSError as e:
                error = lost(self.heard, f"connection lost while sending: {e.strerror or e}")
                self.fail(error)
                raise error from e

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
                    raise lost(self.heard, "the daemon closed the connection")
                (length,) = struct.unpack(">I", header)
                if length > self.max_frame_bytes:
                    raise TransportError(f"the daemon sent a {length}-byte frame, above the limit")
                body = self._recv_exact(length)
                if body is None:
                    raise TransportError("the daemon closed the connection mid-frame")
                request_id, response = decode_frame(body)
                self.heard = True
                with self.lock:
                    pending = self.pending.pop(request_id, None)
                if pending is not None:  # None: the caller gave up (timeout) already
                    pending.response = response
                    pending.event.set()
        except TransportError as e:
            self.fail(e)
        except OSError as e:
            self.fail(lost(self.heard, e.strerror or str(e)))



# Every live client, so a fork can drop the parent's connections in the child at once.
_CLIENTS: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._forget_connection()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Client(_Settings):
    """A connection to latchkeyd, made at the first call (not at construction, so an
    application imports and starts while the daemon is down) and again whenever it is lost.

    Args:
        path: the daemon's Unix socket.
        timeout: seconds each call may take; sent to the daemon as the call's deadline.
        connect_timeout: seconds to wait for the socket to accept.
        max_frame_bytes: the daemon's ``server.max_frame_bytes``.
        max_in_flight: calls sent at once; more wait (within their timeout) for a slot.
        retries: times a call is sent again when it did not run (``ThrottledError``, a
            refused connection) or, for a method that changes nothing, when its connection
            was lost; never past the call's timeout. 0 turns retries off.
        retry_backoff: seconds before the first retry, doubling each time.

    Thread-safe. Fork-safe: a child process (gunicorn ``--preload``, Celery prefork,
    ``multiprocessing``) never uses its parent's socket; its first call connects anew.
    """

    def _start(self) -> None:
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self._max_in_flight)
        self._closed = False
        self._conn: Optional[_Connection] = None
        _CLIENTS.add(self)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; calls in flight fail with :class:`TransportError`."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None and conn.pid == os.getpid():
            conn.close()

    def connect(self) -> None:
        """Connects now rather than at the first call."""
        self._connection()

    def _forget_connection(self) -> None:
        # In a forked child: the parent's socket, reader thread and locks are not ours. The
        # locks may have been held by a thread that does not exist here: make new ones.
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self._max_in_flight)
        self._conn = None

    def _connection(self) -> _Connection:
        with self._lock:
            if self._closed:
                raise TransportError("the client is closed")
            conn = self._conn
            if conn is not None and conn.pid != os.getpid():
                conn = None  # a fork without register_at_fork: never touch the parent's
            if conn is None or conn.dead is not None:
                if conn is not None:
                    conn.sock.close()
                conn = _Connection(self.path, self.connect_timeout, self.max_frame_bytes)
                self._conn = conn
            return conn

    def call(self, method: str, args: Dict[str, Any], timeout: Optional[float] = None) -> Any:
        """Calls any method by name and returns its result: the escape hatch for methods this
        client has no wrapper for.

        Args:
            method: ``"verify_password"`` or its wire name ``"VerifyPassword"``.
            args: the arguments by name, JSON-ready.
            timeout: seconds, instead of the client's timeout.
        """
        timeout = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            try:
                return self._call_once(method, args, deadline)
            except LatchkeyError as e:
                wait = self.retry_backoff * 2 ** attempt
                if (attempt >= self.retries or self._closed or not worth_retrying(e, method)
                        or time.monotonic() + wait >= deadline):
                    raise
            time.sleep(wait)
            attempt += 1

    def _call_once(self, method: str, args: Dict[str, Any], deadline: float) -> Any:
        left = deadline - time.monotonic()
        if not self._slots.acquire(timeout=max(0.0, left)):
            raise CallTimeout(f"{method}: the timeout passed waiting for a free call slot")
        try:
            return self._send(method, args, max(0.0, deadline - time.monotonic()))
        finally:
            self._slots.release()

    def _send(self, method: str, args: Dict[str, Any], timeout: float) -> Any:
        conn = self._connection()
        request_id, pending = conn.register(method)
        sent = False
        try:
            conn.send(encode_request(request_id, method, args, timeout, conn.max_frame_bytes))
            sent = True
            if not pending.event.wait(timeout):
                raise CallTimeout(f"{method}: no answer within {timeout:g} s")
        except BaseException:
            # Timed out, interrupted (KeyboardInterrupt) or never sent: nobody will wait for
            # the answer, so the daemon may as well stop working on it.
            conn.forget(request_id)
            if sent and not pending.event.is_set() and conn.dead is None:
                try:
                    conn.send(encode_cancel(request_id))
                except LatchkeyError:
                    pass
            raise
        if pending.error is not None:
            raise pending.error
        return _result(pending.response, _variant_name(method), method)

    # -- the methods, one per RPC (arguments checked in _requests.py) ------------------------

    def health(self) -> Health:
        """Liveness, version, protocol, methods and this connection's role (any role)."""
        return cast('Health', self.call(*rq.health()))

    def metrics(self) -> str:
        """Metrics in the Prometheus text format (any role)."""
        return cast('str', self.call(*rq.metrics()))

    def create_user(self, email: str, password: str, *, name: str = "", role: Optional[str] = None, locale: Optional[str] = None, client_ip: Optional[str] = None) -> User:
        """Creates an account; ``client_ip`` counts against the per-IP sign-up limit.
        Raises ``InvalidEmailError``, ``InvalidInputError``, ``WeakPasswordError``,
        ``EmailTakenError``, ``RateLimitedError``."""
        return cast('User', self.call(*rq.create_user(email, password, name, role, locale, client_ip)))

    def sign_up(self, email: str, password: str, *, name: str = "", locale: Optional[str] = None, client_ip: Optional[str] = None) -> SignUpOutcome:
        """Signs a person up from a form: ``{"outcome": "created", "user": ...}`` or, when
        the daemon conceals taken addresses, ``{"outcome": "confirmation_sent"}`` for
        every address."""
        return cast('SignUpOutcome', self.call(*rq.sign_up(email, password, name, locale, client_ip)))

    def confirm_sign_up(self, token: str, password: str, client_ip: Optional[str] = None) -> User:
        """Finishes a concealed sign-up with the mailed token and the sign-up password."""
        return cast('User', self.call(*rq.confirm_sign_up(token, password, client_ip)))

    def get_user(self, id: int) -> User:
        """The user with this id; ``NotFoundError`` otherwise."""
        return cast('User', self.call(*rq.get_user(id)))

    def find_user(self, email: str) -> User:
        """The user with this email; ``NotFoundError`` otherwise."""
        return cast('User', self.call(*rq.find_user(email)))

    def verify_password(self, email: str, password: str, client_ip: Optional[str] = None) -> User:
        """Checks a login: the user, or ``InvalidCredentialsError`` for a wrong password,
        an unknown email and a disabled account alike (or ``RateLimitedError``)."""
        return cast('User', self.call(*rq.verify_password(email, password, client_ip)))

    def change_password(self, id: int, current_password: str, new_password: str) -> PasswordChanged:
        """Changes a password after checking the current one; end sessions from older
        epochs."""
        return cast('PasswordChanged', self.call(*rq.change_password(id, current_password, new_password)))

    def set_status(self, id: int, status: str) -> User:
        """Enables (``"active"``) or disables (``"disabled"``) an account (admin)."""
        return cast('User', self.call(*rq.set_status(id, status)))

    def delete_user(self, id: int) -> None:
        """Deletes an account and everything attached to it (admin)."""
        self.call(*rq.delete_user(id))

    def list_users(self, after: int = 0, limit: int = 100) -> List[User]:
        """Accounts in id order after ``after`` (admin); page on with the last id."""
        return cast('List[User]', self.call(*rq.page("list_users", after, limit)))

    def set_password(self, id: int, new_password: str) -> PasswordChanged:
        """Sets a password without the current one (admin)."""
        return cast('PasswordChanged', self.call(*rq.set_password(id, new_password)))

    def import_users(self, users: List[Dict[str, Any]]) -> List[ImportOutcome]:
        """Imports accounts with their bcrypt or argon2 hashes (admin): ``{"Ok": id}`` or
        ``{"Err": ...}`` per account."""
        return cast('List[ImportOutcome]', self.call(*rq.import_users(users)))

    def export_users(self, after: int = 0, limit: int = 100) -> List[ExportedUser]:
        """Accounts with their hashes after ``after``, as import_users takes them (admin)."""
        return cast('List[ExportedUser]', self.call(*rq.page("export_users", after, limit)))

    def request_password_reset(self, email: str, client_ip: Optional[str] = None, locale: Optional[str] = None) -> None:
        """Starts a reset: ``None`` for every valid address, known or not; an active
        account is mailed a link."""
        self.call(*rq.request_password_reset(email, client_ip, locale))

    def check_reset_token(self, token: str, client_ip: Optional[str] = None) -> TokenCheck:
        """Whether a token is usable, without using it: ``state`` is valid, expired, used
        or invalid."""
        return cast('TokenCheck', self.call(*rq.check_reset_token(token, client_ip)))

    def complete_password_reset(self, token: str, new_password: str, confirm_password: Optional[str] = None, client_ip: Optional[str] = None) -> PasswordChanged:
        """Uses a token to set a new password; every other token of the user is revoked."""
        return cast('PasswordChanged', self.call(*rq.complete_password_reset(token, new_password, confirm_password, client_ip)))

    def admin_reset_link(self, user: Union[int, str, Dict[str, Any]], lifetime_secs: Optional[int] = None) -> ResetLink:
        """A reset link for support staff (admin); the token is its ``token`` parameter."""
        return cast('ResetLink', self.call(*rq.admin_reset_link(user, lifetime_secs)))

    def events(self, after: int = 0, limit: int = 100) -> List[Event]:
        """The event log after the cursor ``after`` (admin)."""
        return cast('List[Event]', self.call(*rq.page("events", after, limit)))

    def credential_changes(self, after: int = 0, limit: int = 100) -> CredentialChanges:
        """The changes that end sessions after the cursor ``after`` (app role); call again
        with ``next`` until ``caught_up``."""
        return cast('CredentialChanges', self.call(*rq.page("credential_changes", after, limit)))

    def outbox_list(self, after: int = 0, limit: int = 100) -> List[OutboxMessage]:
        """Queued and dead mail with ids above ``after`` (admin)."""
        return cast('List[OutboxMessage]', self.call(*rq.page("outbox_list", after, limit)))

    def outbox_retry(self, id: int) -> None:
        """Puts a message back in the queue, due now (admin)."""
        self.call(*rq.by_id("outbox_retry", id))

    def outbox_drop(self, id: int) -> None:
        """Deletes a message unsent (admin)."""
        self.call(*rq.by_id("outbox_drop", id))

    def backup_read(self, session: Optional[int] = None) -> BackupChunk:
        """The next piece of an online backup (admin); ``None`` starts one."""
        return cast('BackupChunk', self.call(*rq.backup_read(session)))

    def backup_cancel(self, session: int) -> None:
        """Abandons a backup before its last piece (admin)."""
        self.call(*rq.backup_cancel(session))

