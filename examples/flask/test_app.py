"""The Flask example over real HTTP, against the real daemon: sign-up, login, sessions ended
by the credential epoch, forgot password with the mailed link, and the client IP taken from
X-Forwarded-For only when a trusted proxy sent it."""

from __future__ import annotations

import email
import email.policy
import http.cookiejar
import json
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest
from werkzeug.serving import make_server

import latchkey
from app import FORGOT_REPLY, client_ip, create_app
from conftest import Daemon  # the fixture module of this directory

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase 8"
TOKEN = re.compile(r"[?&]token=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")


class Browser:
    """One visitor: a cookie jar, requests through the app's HTTP server."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def send(self, method: str, path: str, body: Optional[Dict[str, Any]] = None,
             forwarded_for: Optional[str] = None) -> Tuple[int, Dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if forwarded_for is not None:
            req.add_header("X-Forwarded-For", forwarded_for)
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


def serve(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture
def site(daemon: Daemon) -> Iterator[str]:
    yield from serve(create_app(daemon.socket, trusted_proxies=["127.0.0.1/32"]))


def mailed_token(daemon: Daemon, to: str, seen: set) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for path in sorted(daemon.dir.glob("**/mail/*.eml")):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if to not in str(msg.get("To", "")).lower():
                continue
            part = msg.get_body(preferencelist=("plain",))
            found = TOKEN.search(part.get_content() if part is not None else "")
            if found and found.group(1) not in seen:
                seen.add(found.group(1))
                return found.group(1)
        time.sleep(0.1)
    pytest.fail(f"no reset mail to {to} within 20 s")


def test_sign_up_log_in_and_a_password_change_ends_the_other_sessions(site: str) -> None:
    laptop, phone = Browser(site), Browser(site)
    assert laptop.send("POST", "/signup", {"email": "ada@example.com", "password": PASSWORD}) == \
        (201, {"email": "ada@example.com"})
    status, body = laptop.send("POST", "/signup", {"email": "ada@example.com", "password": PASSWORD})
    assert status == 400 and body["error"] == "EmailTaken"
    assert phone.send("POST", "/login", {"email": "ada@example.com", "password": "wrong guess"})[0] == 401
    assert phone.send("POST", "/login", {"email": "ada@example.com", "password": PASSWORD})[0] == 200
    assert laptop.send("GET", "/me")[0] == 200 and phone.send("GET", "/me")[0] == 200
    assert laptop.send("POST", "/password", {"current": PASSWORD, "new": NEW_PASSWORD})[0] == 200
    assert laptop.send("GET", "/me") == (200, {"email": "ada@example.com"})
    assert phone.send("GET", "/me")[0] == 401, "the other session outlived the password change"


def test_forgot_password_answers_alike_and_the_mailed_link_resets_and_ends_every_session(
        site: str, daemon: Daemon) -> None:
    ada, stranger = Browser(site), Browser(site)
    ada.send("POST", "/signup", {"email": "reset@example.com", "password": PASSWORD})
    assert ada.send("GET", "/me")[0] == 200
    known = stranger.send("POST", "/forgot", {"email": "reset@example.com"})
    unknown = stranger.send("POST", "/forgot", {"email": "nobody@example.com"})
    assert known == unknown == (200, {"message": FORGOT_REPLY})
    token = mailed_token(daemon, "reset@example.com", set())
    assert stranger.send("GET", f"/reset?token={token}") == (200, {"state": "valid"})
    status, body = stranger.send("POST", "/reset", {"token": token, "password": NEW_PASSWORD,
                                                    "confirm": NEW_PASSWORD + "!"})
    assert status == 400 and body["error"] == "PasswordMismatch"
    assert stranger.send("POST", "/reset", {"token": token, "password": NEW_PASSWORD,
                                            "confirm": NEW_PASSWORD})[0] == 200
    assert stranger.send("GET", f"/reset?token={token}") == (200, {"state": "used"})
    assert ada.send("GET", "/me")[0] == 401, "the session outlived the reset"
    assert ada.send("POST", "/login", {"email": "reset@example.com", "password": PASSWORD})[0] == 401
    assert ada.send("POST", "/login", {"email": "reset@example.com", "password": NEW_PASSWORD})[0] == 200


def test_the_client_ip_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(
        daemon: Daemon) -> None:
    admin = latchkey.Client(daemon.socket)
    admin.create_user("ip@example.com", PASSWORD)

    def failed_login_ip(app: Any, forwarded_for: str) -> Optional[str]:
        for base in serve(app):
            Browser(base).send("POST", "/login", {"email": "ip@example.com", "password": "nope"},
                               forwarded_for=forwarded_for)
        failures = [e for e in admin.events(0, 1000) if e["kind"] == "login_failed"]
        return failures[-1]["client_ip"]

    behind_proxy = create_app(daemon.socket, trusted_proxies=["127.0.0.1/32"])
    assert failed_login_ip(behind_proxy, "198.51.100.7") == "198.51.100.7"
    # A client that writes its own header: the proxy appends the real address on the right.
    assert failed_login_ip(behind_proxy, "203.0.113.66, 198.51.100.8") == "198.51.100.8"
    exposed = create_app(daemon.socket, trusted_proxies=[])
    assert failed_login_ip(exposed, "198.51.100.9") == "127.0.0.1"
    admin.close()


def test_client_ip_walks_the_forwarded_chain_from_the_right() -> None:
    import ipaddress
    proxies = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]
    assert client_ip("127.0.0.1", "198.51.100.1, 10.1.1.1", proxies) == "198.51.100.1"
    assert client_ip("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.1.1", proxies) == "198.51.100.1"
    assert client_ip("192.0.2.5", "198.51.100.1", proxies) == "192.0.2.5"
    assert client_ip("127.0.0.1", "not-an-ip", proxies) == "127.0.0.1"
    assert client_ip("127.0.0.1", None, proxies) == "127.0.0.1"
