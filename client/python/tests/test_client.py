"""The sync and asyncio clients against the real daemon: typed errors, lazy connecting,
forks, gunicorn --preload and a daemon restart mid-traffic."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import List

import pytest

import latchkey
from conftest import PASSWORD, Daemon

NEW_PASSWORD = "a brand new passphrase 5"


def test_every_refusal_is_its_own_exception_class_and_the_connection_serves_on(
        daemon: Daemon) -> None:
    with latchkey.Client(daemon.socket) as lk:
        health = lk.health()
        assert health["protocol"] == latchkey.PROTOCOL
        assert "CredentialChanges" in health["methods"]
        user = lk.create_user("py.pkg@example.com", PASSWORD, name="Ada")
        with pytest.raises(latchkey.EmailTakenError) as taken:
            lk.create_user("py.pkg@example.com", PASSWORD)
        assert isinstance(taken.value, latchkey.ApiError) and taken.value.code == "EmailTaken"
        with pytest.raises(latchkey.InvalidCredentialsError):
            lk.verify_password("py.pkg@example.com", "a wrong guess")
        with pytest.raises(latchkey.WeakPasswordError) as weak:
            lk.create_user("weak@example.com", "short")
        assert weak.value.details["reason"]
        with pytest.raises(latchkey.NotFoundError):
            lk.get_user(user["id"] + 1000)
        with pytest.raises(latchkey.UnknownMethodError) as unknown:
            lk.call("teleport_user", {"id": user["id"]})
        assert isinstance(unknown.value, latchkey.ServerError) and "TeleportUser" in unknown.value.detail
        with pytest.raises(latchkey.InvalidRequestError):
            lk.call("get_user", {"id": "one"})
        assert lk.get_user(user["id"])["email"] == "py.pkg@example.com"


def test_the_client_connects_at_its_first_call_so_an_app_starts_while_the_daemon_is_down(
        tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    lk = latchkey.Client(daemon.socket, retries=0)  # nothing there yet, and no error
    with pytest.raises(latchkey.ConnectRefused):
        lk.health()
    daemon.start()
    try:
        assert lk.health()["status"] == "ok"
    finally:
        lk.close()
        daemon.stop()


def test_a_connection_closed_before_any_answer_says_the_uid_may_have_no_role(
        tmp_path: Path) -> None:
    path = str(tmp_path / "closes.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    def close_every_connection() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=close_every_connection, daemon=True).start()
    with pytest.raises(latchkey.TransportError, match="auth.app_gids"):
        latchkey.Client(path, retries=0).health()

    async def main() -> None:
        with pytest.raises(latchkey.TransportError, match="auth.app_gids"):
            await latchkey.AsyncClient(path, retries=0).health()

    asyncio.run(main())
    server.close()


def test_the_async_client_runs_calls_concurrently_without_blocking_the_loop(
        daemon: Daemon) -> None:
    async def main() -> None:
        async with latchkey.AsyncClient(daemon.socket) as lk:
            user = await lk.create_user("async@example.com", PASSWORD)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.001)
                    ticks += 1

            tick = asyncio.get_running_loop().create_task(ticker())
            # Logins hash for milliseconds each: the loop must keep running meanwhile.
            results = await asyncio.gather(
                *[lk.verify_password("async@example.com", PASSWORD) for _ in range(8)],
                *[lk.get_user(user["id"]) for _ in range(8)],
            )
            tick.cancel()
            assert all(r["id"] == user["id"] for r in results)
            assert ticks > 5, f"the event loop was blocked: {ticks} ticks"
            with pytest.raises(latchkey.InvalidCredentialsError):
                await lk.verify_password("async@example.com", "a wrong guess")
            with pytest.raises(latchkey.UnknownMethodError):
                await lk.call("teleport_user", {})
            # A task cancelled mid-call leaves the connection serving the next call.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(lk.verify_password("async@example.com", PASSWORD), 0.001)
            assert (await lk.health())["status"] == "ok"
            done = await lk.change_password(user["id"], PASSWORD, NEW_PASSWORD)
            assert done["credential_epoch"] == 1
            changes = await lk.credential_changes()
            assert changes["caught_up"] and changes["changes"][-1]["user_id"] == user["id"]

    asyncio.run(main())


def test_a_forked_child_never_uses_its_parents_connection(daemon: Daemon) -> None:
    lk = latchkey.Client(daemon.socket, timeout=5.0)
    user = lk.create_user("fork@example.com", PASSWORD)  # the parent is connected now
    pid = os.fork()
    if pid == 0:  # the child: its calls must work, on a connection of its own
        code = 1
        try:
            code = 0 if all(lk.get_user(user["id"])["id"] == user["id"] for _ in range(5)) else 2
        finally:
            os._exit(code)
    assert all(lk.get_user(user["id"])["id"] == user["id"] for _ in range(5))
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert lk.health()["status"] == "ok"  # and the parent's connection is unharmed
    lk.close()


APP = '''
import json, os, sys
sys.path.insert(0, {package!r})
import latchkey
lk = latchkey.Client({socket!r}, timeout=5.0)
# Preloaded: the master connects before it forks the workers.
USER = lk.create_user("gunicorn@example.com", {password!r})

def app(environ, start_response):
    user = lk.get_user(USER["id"])
    body = json.dumps({{"pid": os.getpid(), "email": user["email"]}}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
'''


def test_gunicorn_preload_workers_each_use_their_own_connection(
        daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "preloaded.py").write_text(APP.format(
        package=str(Path(latchkey.__file__).parent.parent), socket=daemon.socket,
        password=PASSWORD))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "--workers", "3",
         "--bind", f"127.0.0.1:{port}", "--chdir", str(tmp_path), "preloaded:app"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "gunicorn.log", "wb"))
    try:
        deadline = time.monotonic() + 30
        pids = set()
        answers = 0
        while answers < 30:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                    reply = json.loads(r.read())
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
                time.sleep(0.1)
                continue
            assert reply["email"] == "gunicorn@example.com"
            pids.add(reply["pid"])
            answers += 1
        assert answers == 30 and pids, pids
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_reads_ride_out_a_daemon_restart_and_changes_are_never_sent_twice(
        daemon: Daemon) -> None:
    lk = latchkey.Client(daemon.socket, timeout=30.0, retries=8, retry_backoff=0.05)
    user = lk.create_user("restart.py@example.com", PASSWORD)
    stop = threading.Event()
    reads: List[int] = []
    failures: List[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                reads.append(lk.get_user(user["id"])["id"])
            except BaseException as e:  # noqa: BLE001 - collected, asserted below
                failures.append(e)
                return

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    before = len(reads)
    daemon.restart()
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not failures, failures
    assert before > 0 and len(reads) > before
    assert lk.change_password(user["id"], PASSWORD, NEW_PASSWORD)["credential_epoch"] == 1
    lk.close()
