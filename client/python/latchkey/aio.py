"""The asyncio client: the same codec, methods and retries as :class:`latchkey.Client`, for
``async def`` code (FastAPI, aiohttp, Starlette), without blocking the event loop.

    async with latchkey.AsyncClient("/run/latchkeyd/latchkeyd.sock") as lk:
        user = await lk.verify_password(email, password, client_ip=ip)

One connection per client, made at the first call and again when it is lost; calls from many
tasks run concurrently on it, a reader task handing each answer to its caller. A client
belongs to the event loop it first connected on.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
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

__all__ = ["AsyncClient"]


class _AsyncConnection:
    """One socket, its reader task and its calls in flight."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_frame_bytes: int):
        self.reader = reader
        self.writer = writer
        self.max_frame_bytes = max_frame_bytes
        self.pending: Dict[int, "asyncio.Future[Any]"] = {}
        self.next_id = 1
        self.dead: Optional[BaseException] = None
        self.pid = os.getpid()
        self.heard = False
        self.task = asyncio.get_running_loop().create_task(self._read_loop())

    def register(self, method: str) -> "tuple[int, asyncio.Future[Any]]":
        if self.dead is not None:
            raise TransportError(f"{method}: connection lost: {self.dead}")
        request_id = self.next_id
        self.next_id += 1
        future: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        return request_id, future

    async def send(self, frame: bytes) -> None:
        try:
            self.writer.write(frame)
            await self.writer.drain()
        except OSError as e:
            error = lost(self.heard, f"connection lost while sending: {e.strerror or e}")
            self.fail(error)
            raise error from e

    def fail(self, error: BaseException) -> None:
        if self.dead is None:
            self.dead = error
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(TransportError(f"connection lost: {error}"))
        self.writer.close()

    async def _read_loop(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(4)
                (length,) = struct.unpack(">I", header)
                if length > self.max_frame_bytes:
                    raise TransportError(f"the daemon sent a {length}-byte frame, above the limit")
                request_id, response = decode_frame(await self.reader.readexactly(length))
                self.heard = True
                future = self.pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(response)
        except asyncio.IncompleteReadError:
            self.fail(lost(self.heard, "the daemon closed the connection"))
        except TransportError as e:
            self.fail(e)
        except OSError as e:
            self.fail(lost(self.heard, e.strerror or str(e)))


class AsyncClient(_Settings):
    """An asyncio connection to latchkeyd. The arguments are :class:`latchkey.Client`'s."""

    def _start(self) -> None:
        self._slots: Optional[asyncio.Semaphore] = None
        self._connect_lock: Optional[asyncio.Lock] = None
        self._conn: Optional[_AsyncConnection] = None
        self._closed = False

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection; calls in flight fail with :class:`TransportError`."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None and conn.pid == os.getpid():
            conn.fail(TransportError("client closed"))
            conn.task.cancel()

    async def connect(self) -> None:
        """Connects now rather than at the first call."""
        await self._connection()

    async def _connection(self) -> _AsyncConnection:
        if self._closed:
            raise TransportError("the client is closed")
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and conn.pid != os.getpid():
                conn = None  # forked: the parent's socket is not ours
            if conn is None or conn.dead is not None:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_unix_connection(self.path), self.connect_timeout)
                except asyncio.TimeoutError as e:
                    raise ConnectRefused(f"cannot connect to {self.path}: timed out") from e
                except OSError as e:
                    raise ConnectRefused(
                        f"cannot connect to {self.path}: {e.strerror or e}") from e
                conn = _AsyncConnection(reader, writer, self.max_frame_bytes)
                self._conn = conn
            return conn

    async def call(self, method: str, args: Dict[str, Any],
                   timeout: Optional[float] = None) -> Any:
        """Calls any method by name and returns its result (see :meth:`latchkey.Client.call`)."""
        timeout = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            try:
                return await self._call_once(method, args, deadline)
            except LatchkeyError as e:
                wait = self.retry_backoff * 2 ** attempt
                if (attempt >= self.retries or self._closed or not worth_retrying(e, method)
                        or time.monotonic() + wait >= deadline):
                    raise
            await asyncio.sleep(wait)
            attempt += 1

    async def _call_once(self, method: str, args: Dict[str, Any], deadline: float) -> Any:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_in_flight)
        try:
            await asyncio.wait_for(self._slots.acquire(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError as e:
            raise CallTimeout(f"{method}: the timeout passed waiting for a free call slot") from e
        try:
            return await self._send(method, args, max(0.0, deadline - time.monotonic()))
        finally:
            self._slots.release()

    async def _send(self, method: str, args: Dict[str, Any], timeout: float) -> Any:
        conn = await self._connection()
        request_id, future = conn.register(method)
        sent = False
        try:
            await conn.send(encode_request(request_id, method, args, timeout,
                                           conn.max_frame_bytes))
            sent = True
            response = await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError as e:
            self._abandon(conn, request_id, future, sent)
            raise CallTimeout(f"{method}: no answer within {timeout:g} s") from e
        except BaseException:
            # Cancelled (the caller's task) or never sent: the daemon may stop working on it.
            self._abandon(conn, request_id, future, sent)
            raise
        return _result(response, _variant_name(method), method)

    @staticmethod
    def _abandon(conn: _AsyncConnection, request_id: int, future: "asyncio.Future[Any]",
                 sent: bool) -> None:
        conn.pending.pop(request_id, None)
        if future.done():
            if not future.cancelled():
                future.exception()  # retrieved: the caller has the error already
        else:
            future.cancel()
        if sent and conn.dead is None:
            try:
                conn.writer.write(encode_cancel(request_id))
            except OSError:
                pass

    # -- the methods, one per RPC (arguments checked in _requests.py) ------------------------

    async def health(self) -> Health:
        """Liveness, version, protocol, methods and this connection's role (any role)."""
        return cast('Health', await self.call(*rq.health()))

    async def metrics(self) -> str:
        """Metrics in the Prometheus text format (any role)."""
        return cast('str', await self.call(*rq.metrics()))

    async def create_user(self, email: str, password: str, *, name: str = "", role: Optional[str] = None, locale: Optional[str] = None, client_ip: Optional[str] = None) -> User:
        """Creates an account; ``client_ip`` counts against the per-IP sign-up limit.
        Raises ``InvalidEmailError``, ``InvalidInputError``, ``WeakPasswordError``,
        ``EmailTakenError``, ``RateLimitedError``."""
        return cast('User', await self.call(*rq.create_user(email, password, name, role, locale, client_ip)))

    async def sign_up(self, email: str, password: str, *, name: str = "", locale: Optional[str] = None, client_ip: Optional[str] = None) -> SignUpOutcome:
        """Signs a person up from a form: ``{"outcome": "created", "user": ...}`` or, when
        the daemon conceals taken addresses, ``{"outcome": "confirmation_sent"}`` for
        every address."""
        return cast('SignUpOutcome', await self.call(*rq.sign_up(email, password, name, locale, client_ip)))

    async def confirm_sign_up(self, token: str, password: str, client_ip: Optional[str] = None) -> User:
        """Finishes a concealed sign-up with the mailed token and the sign-up password."""
        return cast('User', await self.call(*rq.confirm_sign_up(token, password, client_ip)))

    async def get_user(self, id: int) -> User:
        """The user with this id; ``NotFoundError`` otherwise."""
        return cast('User', await self.call(*rq.get_user(id)))

    async def find_user(self, email: str) -> User:
        """The user with this email; ``NotFoundError`` otherwise."""
        return cast('User', await self.call(*rq.find_user(email)))

    async def verify_password(self, email: str, password: str, client_ip: Optional[str] = None) -> User:
        """Checks a login: the user, or ``InvalidCredentialsError`` for a wrong password,
        an unknown email and a disabled account alike (or ``RateLimitedError``)."""
        return cast('User', await self.call(*rq.verify_password(email, password, client_ip)))

    async def change_password(self, id: int, current_password: str, new_password: str) -> PasswordChanged:
        """Changes a password after checking the current one; end sessions from older
        epochs."""
        return cast('PasswordChanged', await self.call(*rq.change_password(id, current_password, new_password)))

    async def set_status(self, id: int, status: str) -> User:
        """Enables (``"active"``) or disables (``"disabled"``) an account (admin)."""
        return cast('User', await self.call(*rq.set_status(id, status)))

    async def delete_user(self, id: int) -> None:
        """Deletes an account and everything attached to it (admin)."""
        await self.call(*rq.delete_user(id))

    async def list_users(self, after: int = 0, limit: int = 100) -> List[User]:
        """Accounts in id order after ``after`` (admin); page on with the last id."""
        return cast('List[User]', await self.call(*rq.page("list_users", after, limit)))

    async def set_password(self, id: int, new_password: str) -> PasswordChanged:
        """Sets a password without the current one (admin)."""
        return cast('PasswordChanged', await self.call(*rq.set_password(id, new_password)))

    async def import_users(self, users: List[Dict[str, Any]]) -> List[ImportOutcome]:
        """Imports accounts with their bcrypt or argon2 hashes (admin): ``{"Ok": id}`` or
        ``{"Err": ...}`` per account."""
        return cast('List[ImportOutcome]', await self.call(*rq.import_users(users)))

    async def export_users(self, after: int = 0, limit: int = 100) -> List[ExportedUser]:
        """Accounts with their hashes after ``after``, as import_users takes them (admin)."""
        return cast('List[ExportedUser]', await self.call(*rq.page("export_users", after, limit)))

    async def request_password_reset(self, email: str, client_ip: Optional[str] = None, locale: Optional[str] = None) -> None:
        """Starts a reset: ``None`` for every valid address, known or not; an active
        account is mailed a link."""
        await self.call(*rq.request_password_reset(email, client_ip, locale))

    async def check_reset_token(self, token: str, client_ip: Optional[str] = None) -> TokenCheck:
        """Whether a token is usable, without using it: ``state`` is valid, expired, used
        or invalid."""
        return cast('TokenCheck', await self.call(*rq.check_reset_token(token, client_ip)))

    async def complete_password_reset(self, token: str, new_password: str, confirm_password: Optional[str] = None, client_ip: Optional[str] = None) -> PasswordChanged:
        """Uses a token to set a new password; every other token of the user is revoked."""
        return cast('PasswordChanged', await self.call(*rq.complete_password_reset(token, new_password, confirm_password, client_ip)))

    async def admin_reset_link(self, user: Union[int, str, Dict[str, Any]], lifetime_secs: Optional[int] = None) -> ResetLink:
        """A reset link for support staff (admin); the token is its ``token`` parameter."""
        return cast('ResetLink', await self.call(*rq.admin_reset_link(user, lifetime_secs)))

    async def events(self, after: int = 0, limit: int = 100) -> List[Event]:
        """The event log after the cursor ``after`` (admin)."""
        return cast('List[Event]', await self.call(*rq.page("events", after, limit)))

    async def credential_changes(self, after: int = 0, limit: int = 100) -> CredentialChanges:
        """The changes that end sessions after the cursor ``after`` (app role); call again
        with ``next`` until ``caught_up``."""
        return cast('CredentialChanges', await self.call(*rq.page("credential_changes", after, limit)))

    async def outbox_list(self, after: int = 0, limit: int = 100) -> List[OutboxMessage]:
        """Queued and dead mail with ids above ``after`` (admin)."""
        return cast('List[OutboxMessage]', await self.call(*rq.page("outbox_list", after, limit)))

    async def outbox_retry(self, id: int) -> None:
        """Puts a message back in the queue, due now (admin)."""
        await self.call(*rq.by_id("outbox_retry", id))

    async def outbox_drop(self, id: int) -> None:
        """Deletes a message unsent (admin)."""
        await self.call(*rq.by_id("outbox_drop", id))

    async def backup_read(self, session: Optional[int] = None) -> BackupChunk:
        """The next piece of an online backup (admin); ``None`` starts one."""
        return cast('BackupChunk', await self.call(*rq.backup_read(session)))

    async def backup_cancel(self, session: int) -> None:
        """Abandons a backup before its last piece (admin)."""
        await self.call(*rq.backup_cancel(session))

