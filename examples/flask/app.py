"""A Flask app that signs people up, logs them in and runs forgot-password through latchkey.

The app keeps no passwords and no tokens: latchkeyd does. It keeps a signed session cookie
holding the user's id and the credential epoch the user logged in under, and ends the session
as soon as the account's epoch moves on (a reset, a password change elsewhere, the account
disabled): every password change bumps the epoch in the same transaction.

Run it behind your reverse proxy:  LATCHKEY_SOCKET=/run/latchkeyd/latchkeyd.sock \\
    TRUSTED_PROXIES=127.0.0.1/32 flask --app app run
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Dict, Iterable, Optional, Tuple

from flask import Flask, Response, jsonify, request, session

import latchkey

# The one message for every "forgot password" request, known address or not.
FORGOT_REPLY = "If that address has an account, we have sent it a link to reset the password."


def client_ip(remote_addr: Optional[str], forwarded_for: Optional[str],
              trusted: Iterable[ipaddress._BaseNetwork]) -> Optional[str]:
    """The end user's address: the peer, unless the peer is a trusted proxy; then, walking
    X-Forwarded-For from the right, the first address that is not a trusted proxy. Addresses a
    client wrote into the header itself are to the left of what the proxies appended, so a
    spoofed header changes nothing."""
    nets = list(trusted)

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in nets)

    if remote_addr is None or not is_trusted(remote_addr):
        return remote_addr
    hop = remote_addr
    for addr in reversed([a.strip() for a in (forwarded_for or "").split(",") if a.strip()]):
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            return hop  # garbage from the client: the last proxy's view is all we know
        if not is_trusted(addr):
            return addr
        hop = addr
    return hop


def create_app(socket_path: str, trusted_proxies: Iterable[str] = ("127.0.0.1/32", "::1/128"),
               secret_key: Optional[bytes] = None) -> Flask:
    app = Flask(__name__)
    app.secret_key = secret_key or os.urandom(32)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    trusted = [ipaddress.ip_network(n) for n in trusted_proxies]
    # Lazy and fork-safe: fine to make at import under gunicorn --preload.
    lk = latchkey.Client(socket_path)

    def ip() -> Optional[str]:
        return client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"), trusted)

    def form() -> Dict[str, Any]:
        return request.get_json(silent=True) or {}

    def refused(e: latchkey.ApiError, status: int = 400) -> Tuple[Response, int]:
        body = jsonify(error=e.code, message=e.message)
        if isinstance(e, latchkey.RateLimitedError):
            body.headers["Retry-After"] = str(e.retry_after)
            status = 429
        return body, status

    def log_in(user: latchkey.User) -> None:
        session.clear()
        session["uid"] = user["id"]
        session["epoch"] = user["credential_epoch"]

    @app.post("/signup")
    def signup() -> Any:
        f = form()
        try:
            outcome = lk.sign_up(f.get("email", ""), f.get("password", ""),
                                 name=f.get("name", ""), client_ip=ip())
        except latchkey.ApiError as e:
            return refused(e)
        if outcome["outcome"] == "created" and "user" in outcome:
            log_in(outcome["user"])
            return jsonify(email=outcome["user"]["email"]), 201
        return jsonify(message="Check your mail to finish signing up."), 202

    @app.post("/login")
    def login() -> Any:
        f = form()
        try:
            user = lk.verify_password(f.get("email", ""), f.get("password", ""), client_ip=ip())
        except latchkey.InvalidCredentialsError:
            return jsonify(error="InvalidCredentials", message="Wrong email or password."), 401
        except latchkey.ApiError as e:
            return refused(e)
        log_in(user)
        return jsonify(email=user["email"])

    def current_user() -> Optional[latchkey.User]:
        """The session's user, or None once the account's credentials changed since login."""
        uid, epoch = session.get("uid"), session.get("epoch")
        if uid is None:
            return None
        try:
            user = lk.get_user(uid)
        except latchkey.NotFoundError:
            user = None
        if user is None or user["credential_epoch"] != epoch or user["status"] != "active":
            session.clear()
            return None
        return user

    @app.get("/me")
    def me() -> Any:
        user = current_user()
        if user is None:
            return jsonify(error="NotLoggedIn"), 401
        return jsonify(email=user["email"])

    @app.post("/password")
    def change_password() -> Any:
        user = current_user()
        if user is None:
            return jsonify(error="NotLoggedIn"), 401
        f = form()
        try:
            done = lk.change_password(user["id"], f.get("current", ""), f.get("new", ""))
        except latchkey.ApiError as e:
            return refused(e)
        session["epoch"] = done["credential_epoch"]  # this session lives on; others end
        return jsonify(ok=True)

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return jsonify(ok=True)

    @app.post("/forgot")
    def forgot() -> Any:
        try:
            lk.request_password_reset(form().get("email", ""), client_ip=ip())
        except latchkey.InvalidEmailError as e:
            return refused(e)
        except latchkey.RateLimitedError as e:
            return refused(e)
        return jsonify(message=FORGOT_REPLY)

    @app.get("/reset")
    def check_reset() -> Any:
        try:
            check = lk.check_reset_token(request.args.get("token", ""), client_ip=ip())
        except latchkey.ApiError as e:
            return refused(e)
        return jsonify(state=check["state"])

    @app.post("/reset")
    def reset() -> Any:
        f = form()
        try:
            lk.complete_password_reset(f.get("token", ""), f.get("password", ""),
                                       confirm_password=f.get("confirm"), client_ip=ip())
        except latchkey.ApiError as e:
            return refused(e)
        session.clear()
        return jsonify(message="Your password was changed. Log in with the new one.")

    return app


if __name__ == "__main__":  # pragma: no cover - for trying it by hand
    create_app(os.environ.get("LATCHKEY_SOCKET", "latchkey.sock"),
               os.environ.get("TRUSTED_PROXIES", "127.0.0.1/32").split(",")).run()
