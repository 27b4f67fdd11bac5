#!/usr/bin/env python3
"""The SMTP server the mail tests deliver to (aiosmtpd), and the MIME parser they read with.

Serve:  smtp_sink.py --port PORT --dir DIR [--reject REGEX] [--auth USER:PASSWORD]
                    [--tls starttls|implicit --cert CERT.pem --key KEY.pem]
    Listens on 127.0.0.1:PORT and prints "ready" once it accepts connections. Every message
    accepted is written to DIR as one JSON file (see parse() for the fields, plus mail_from
    and rcpt_tos from the envelope), whole or not at all, named so that they sort in arrival
    order. Recipients matching REGEX are refused with a permanent 550. With --auth, AUTH
    (without TLS) is required and only USER:PASSWORD accepted; others get 535. With --tls,
    STARTTLS is required before MAIL, or the whole connection is TLS (implicit), with the
    given certificate. Runs until its standard input closes or it is killed.

Parse:  smtp_sink.py --parse FILE.eml
    Prints the same JSON for a message file (what the file transport writes).

Exit status 3 means aiosmtpd is not installed (./scripts/test installs it).
"""

import argparse
import email
import email.policy
import itertools
import json
import os
import re
import ssl
import sys
import time


def parse(raw: bytes) -> dict:
    """A message as the tests want it: headers decoded, text and HTML bodies decoded."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    return {
        "headers": [[name, str(value)] for name, value in msg.items()],
        "content_type": msg.get_content_type(),
        "parts": [part.get_content_type() for part in msg.walk()],
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
    }


def write_whole(path: str, data: dict) -> None:
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.rename(tmp, path)


def serve(
    port: int,
    out_dir: str,
    reject: "re.Pattern | None",
    auth: "str | None",
    tls: "tuple[str, str, str] | None",
) -> None:
    try:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword
    except ImportError:
        print(
            "smtp_sink: the Python package aiosmtpd is missing; install it with "
            "`python3 -m pip install aiosmtpd` (./scripts/test does this)",
            file=sys.stderr,
        )
        sys.exit(3)

    counter = itertools.count(1)

    class Sink:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if reject is not None and reject.search(address):
                return f"550 5.1.1 <{address}>: recipient rejected by the test sink"
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK"

        async def handle_DATA(self, server, session, envelope):
            n = next(counter)
            raw = envelope.original_content or envelope.content
            record = parse(raw)
            record["mail_from"] = envelope.mail_from
            record["rcpt_tos"] = list(envelope.rcpt_tos)
            write_whole(os.path.join(out_dir, f"{time.time_ns():020d}-{n:06d}.json"), record)
            return f"250 2.0.0 OK queued as {n}"

    options = {}
    if auth is not None:
        user, _, password = auth.partition(":")

        def text(value: "bytes | str") -> str:
            return value.decode() if isinstance(value, bytes) else value

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and text(auth_data.login) == user
                and text(auth_data.password) == password
            )
            # handled=False: aiosmtpd sends the 235 or 535 reply itself.
            return AuthResult(success=ok, handled=False)

        options = {
            "auth_required": True,
            "auth_require_tls": False,
            "authenticator": authenticator,
        }
    if tls is not None:
        mode, cert, key = tls
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        if mode == "implicit":
            options["ssl_context"] = context
        else:
            options["tls_context"] = context
            options["require_starttls"] = True
    controller = Controller(Sink(), hostname="127.0.0.1", port=port, **options)
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--dir")
    parser.add_argument("--reject")
    parser.add_argument("--auth")
    parser.add_argument("--tls", choices=["starttls", "implicit"])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--parse")
    args = parser.parse_args()
    if args.parse:
        with open(args.parse, "rb") as f:
            print(json.dumps(parse(f.read())))
        return
    if args.port is None or args.dir is None:
        parser.error("--port and --dir are needed to serve")
    reject = re.compile(args.reject) if args.reject else None
    tls = (args.tls, args.cert, args.key) if args.tls else None
    serve(args.port, args.dir, reject, args.auth, tls)


if __name__ == "__main__":
    main()
