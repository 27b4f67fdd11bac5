"""The whole password-reset flow through the Python client (the package in client/python).

    python3 tests/polyglot/flow.py SOCKET DATADIR [MAILDIR...]

Runs against a fresh latchkeyd whose connection role is admin, started with a generous
`limits.reset_per_email` and `signup.conceal_taken_addresses`. The reset token comes from `admin_reset_link`; when the daemon's
file transport writes the reset mail (into DATADIR/mail, or one of the MAILDIRs given), the
mailed token is checked and used too. The sign-up link comes only by mail. Prints one line per step; exits 1 with the reason at
the first mismatch. tests/polyglot.rs runs it.
"""

import email
import email.policy
import os
import re
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import latchkey  # noqa: E402

IP = "203.0.113.7"
EMAIL = "ada.python@example.com"
UNKNOWN = "nobody.python@example.com"
NEWCOMER = "grace.python@example.com"
SIGN_UP_PASSWORD = "a sign-up password for python"
OLD_PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new python password"
TOKEN_RE = re.compile(r"[?&]token=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")
MAIL_WAIT_SECS = 10.0


class Mismatch(Exception):
    pass


def check(condition, what, got=None):
    if not condition:
        raise Mismatch(what if got is None else f"{what}\n  got: {got!r}")


def expect_api_error(code, fn, *args, **kwargs):
    try:
        result = fn(*args, **kwargs)
    except latchkey.ApiError as e:
        check(e.code == code, f"{fn.__name__} should fail with {code}", f"{e.code}: {e}")
        return e
    raise Mismatch(f"{fn.__name__} should fail with {code}\n  got the result: {result!r}")


def step(name):
    print(f"ok   {name}", flush=True)


def token_of(link):
    return urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]


def mailed_token(mail_dirs, address):
    """The reset token from the first .eml to `address` holding one, waiting for the sender
    to write it; None if no mail directory shows one in time."""
    deadline = time.monotonic() + MAIL_WAIT_SECS
    while True:
        for d in mail_dirs:
            if not os.path.isdir(d):
                continue
            for name in sorted(os.listdir(d)):
                if not name.endswith(".eml"):
                    continue
                with open(os.path.join(d, name), "rb") as f:
                    msg = email.message_from_binary_file(f, policy=email.policy.default)
                if address not in str(msg.get("To", "")).lower():
                    continue
                part = msg.get_body(preferencelist=("plain",))
                # get_content() undoes the transfer encoding (quoted-printable or base64).
                found = TOKEN_RE.search(part.get_content() if part is not None else "")
                if found:
                    return found.group(1), os.path.join(d, name)
        if time.monotonic() > deadline:
            return None, None
        time.sleep(0.1)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    socket_path, data_dir = sys.argv[1], sys.argv[2]
    mail_dirs = [os.path.join(data_dir, "mail")] + sys.argv[3:]

    with latchkey.Client(socket_path, timeout=60.0) as lk:
        health = lk.health()
        check(health["status"] == "ok" and health["caller_role"] == "admin",
              "health should be ok with the admin role", health)
        step(f"health: {health['version']}, role {health['caller_role']}")
        check(health["protocol"] >= 2 and "RequestPasswordReset" in health["methods"],
              "health should give protocol 2 and the method list", health)
        # A method this daemon lacks is refused for that call only (issue 17).
        try:
            lk.call("TeleportUser", {"id": 1})
            check(False, "an unknown method should be refused")
        except latchkey.ServerError as e:
            check(e.unknown_method and "TeleportUser" in e.detail,
                  "an unknown method should be refused as such", (e.kind, e.detail))
        check(lk.health()["status"] == "ok", "the connection should serve on after it")
        step("an unknown method is refused and the connection serves on")

        user = lk.create_user(EMAIL.upper(), OLD_PASSWORD, name="Ada Python", locale="en")
        check(isinstance(user["id"], int) and user["email"] == EMAIL
              and user["status"] == "active" and user["credential_epoch"] == 0
              and user["locale"] == "en" and user["role"] == "user",
              "create_user should return the normalised new user", user)
        step(f"create_user: id {user['id']}")

        same = lk.verify_password(EMAIL, OLD_PASSWORD, client_ip=IP)
        check(same["id"] == user["id"], "verify_password should return the user", same)
        step("verify_password with the password")

        known = lk.request_password_reset(EMAIL, client_ip=IP, locale="en")
        unknown = lk.request_password_reset(UNKNOWN, client_ip=IP)
        check(known is None and unknown is None,
              "request_password_reset should answer None for known and unknown addresses alike",
              (known, unknown))
        step("request_password_reset: the same reply for a known and an unknown address")

        link = lk.admin_reset_link({"email": EMAIL})
        check(link["user_id"] == user["id"] and isinstance(link["expires_at"], int),
              "admin_reset_link should name the user and an expiry", link)
        admin_token = token_of(link["link"])
        state = lk.check_reset_token(admin_token, client_ip=IP)
        check(state == {"state": "valid", "expires_at": link["expires_at"]},
              "the admin link's token should be valid until the link's expiry", state)
        step("admin_reset_link: its token checks valid")

        mail_token, mail_file = mailed_token(mail_dirs, EMAIL)
        if mail_token is not None:
            state = lk.check_reset_token(mail_token, client_ip=IP)
            check(state["state"] == "valid", f"the token mailed in {mail_file} should be valid",
                  state)
            step(f"mailed token ({os.path.basename(mail_file)}) checks valid")
        else:
            step(f"no reset mail in {mail_dirs} within {MAIL_WAIT_SECS:g} s; "
                 "using the admin token only")
        token, other = (mail_token, admin_token) if mail_token else (admin_token, None)

        expect_api_error("PasswordMismatch", lk.complete_password_reset, token, NEW_PASSWORD,
                         confirm_password=NEW_PASSWORD + "!", client_ip=IP)
        weak = expect_api_error("WeakPassword", lk.complete_password_reset, token, "short",
                                confirm_password="short", client_ip=IP)
        check(weak.details.get("reason"), "WeakPassword should carry a reason", weak.details)
        step("complete_password_reset refuses a mismatch and a weak password")

        done = lk.complete_password_reset(token, NEW_PASSWORD, confirm_password=NEW_PASSWORD,
                                          client_ip=IP)
        check(done == {"user_id": user["id"], "credential_epoch": 1},
              "complete_password_reset should bump the epoch to 1", done)
        step("complete_password_reset with confirmation")
        changes = lk.credential_changes(after=0, limit=100)
        check(changes["caught_up"] and any(
            c["kind"] == "reset_completed" and c["user_id"] == user["id"]
            for c in changes["changes"]), "credential_changes should list the reset", changes)
        step("credential_changes lists the completed reset")

        relogin = lk.verify_password(EMAIL, NEW_PASSWORD, client_ip=IP)
        check(relogin["credential_epoch"] == 1, "the new password should log in at epoch 1",
              relogin)
        expect_api_error("InvalidCredentials", lk.verify_password, EMAIL, OLD_PASSWORD,
                         client_ip=IP)
        step("the new password logs in; the old one fails with InvalidCredentials")

        state = lk.check_reset_token(token, client_ip=IP)
        check(state == {"state": "used", "expires_at": None}, "the used token should be used",
              state)
        expect_api_error("InvalidToken", lk.complete_password_reset, token, NEW_PASSWORD)
        if other is not None:
            state = lk.check_reset_token(other, client_ip=IP)
            check(state["state"] == "invalid", "the user's other token should be revoked", state)
        step("the token now checks used and cannot be used again")

        taken = expect_api_error("EmailTaken", lk.create_user, " " + EMAIL.title(),
                                 "another good password")
        check(taken.details == {}, "EmailTaken has no details", taken.details)
        step("create_user with a taken address fails with EmailTaken")

        fresh = lk.sign_up(NEWCOMER, SIGN_UP_PASSWORD, name="Grace", client_ip=IP)
        again = lk.sign_up(EMAIL, SIGN_UP_PASSWORD, name="Not Ada", client_ip=IP)
        check(fresh == again == {"outcome": "confirmation_sent"},
              "sign_up should answer confirmation_sent for a new and a taken address alike",
              (fresh, again))
        expect_api_error("InvalidCredentials", lk.verify_password, NEWCOMER, SIGN_UP_PASSWORD,
                         client_ip=IP)
        step("sign_up: the same reply for a new and a taken address; no account yet")

        sign_up_token, sign_up_file = mailed_token(mail_dirs, NEWCOMER)
        check(sign_up_token is not None,
              f"a sign-up mail to {NEWCOMER} should appear in {mail_dirs}")
        expect_api_error("InvalidCredentials", lk.confirm_sign_up, sign_up_token,
                         OLD_PASSWORD, client_ip=IP)
        grace = lk.confirm_sign_up(sign_up_token, SIGN_UP_PASSWORD, client_ip=IP)
        check(grace["email"] == NEWCOMER and grace["name"] == "Grace"
              and grace["role"] == "user",
              "confirm_sign_up should return the new account", grace)
        check(lk.verify_password(NEWCOMER, SIGN_UP_PASSWORD, client_ip=IP)["id"] == grace["id"],
              "the sign-up password should log in")
        expect_api_error("InvalidToken", lk.confirm_sign_up, sign_up_token, SIGN_UP_PASSWORD)
        step(f"confirm_sign_up with the mailed link ({os.path.basename(sign_up_file)}) "
             "and the sign-up password; the link is then used up")

        # One client, many threads: answers come back out of order and must reach the right
        # caller.
        results, errors = {}, []

        def worker(i):
            try:
                results[i] = lk.get_user(user["id"]) if i % 2 else lk.health()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(not errors and len(results) == 16
              and all(r["id"] == user["id"] for i, r in results.items() if i % 2)
              and all(r["status"] == "ok" for i, r in results.items() if not i % 2),
              "concurrent calls from 16 threads should each get their own answer",
              (errors, results))
        step("16 concurrent calls from threads on one connection")

        events = lk.events(after=0, limit=1000)
        seqs = [e["seq"] for e in events]
        check(seqs == sorted(set(seqs)), "events should come oldest first", seqs)
        kinds = [e["kind"] for e in events if e["user_id"] == user["id"]]
        for kind in ("user_created", "reset_requested", "reset_completed", "login_failed"):
            check(kind in kinds, f"the event log should hold {kind} for the user", kinds)
        later = lk.events(after=seqs[-1], limit=10)
        check(later == [], "no events after the last cursor", later)
        step(f"events: {', '.join(kinds)}")

    print("python client: the whole reset flow passed", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Mismatch as e:
        print(f"FAIL {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except latchkey.LatchkeyError as e:
        print(f"FAIL unexpected {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
