"""The Python client's transport against a scripted fake daemon (no latchkeyd needed):
answers split into single bytes and several frames in one write, out of order; a throttled
server error; a timeout that sends a Cancel; a lost connection and the reconnect after it.

    python3 tests/polyglot/framing.py

Exits 1 with the reason at the first failed assertion. tests/polyglot.rs runs it.
"""

import json
import os
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import latchkey  # noqa: E402


def frame(message):
    body = json.dumps(message).encode("utf-8")
    return struct.pack(">I", len(body)) + body


def ok(request_id, variant, value):
    return frame({"request_id": request_id, "message": {"Ok": {variant: {"Ok": value}}}})


class FakeDaemon:
    """Accepts connections and hands every decoded frame to `self.behaviour`."""

    def __init__(self, path):
        self.requests, self.cancels = [], []
        self.behaviour = "batch"
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
                (n,) = struct.unpack(">I", buf[:4])
                self._handle(json.loads(buf[4:4 + n]), conn)
                buf = buf[4 + n:]

    def _handle(self, message, conn):
        if "Cancel" in message:
            self.cancels.append(message["Cancel"]["request_id"])
            return
        request = message["Request"]
        self.requests.append(request)
        variant = next(iter(request["message"]))
        if self.behaviour == "batch" and len(self.requests) == 3:
            answers = b"".join(
                ok(r["id"], next(iter(r["message"])), {"echo": r["message"]["FindUser"]["email"]})
                for r in reversed(self.requests)
            )
            for i in range(len(answers)):  # a byte at a time
                conn.sendall(answers[i:i + 1])
        elif self.behaviour == "throttle":
            conn.sendall(frame({"request_id": request["id"], "message": {
                "Err": {"kind": 10, "detail": "server throttled the request."}}}))
        elif self.behaviour == "api-error":
            conn.sendall(frame({"request_id": request["id"], "message": {"Ok": {variant: {
                "Err": {"InvalidInput": {"field": "client_ip", "reason": "bad"}}}}}}))
        elif self.behaviour == "hang-up":
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        elif self.behaviour == "answer":
            conn.sendall(ok(request["id"], variant, {"status": "ok"}))
        # "silent": no answer at all, as the daemon does past a deadline.


def expect_raises(cls, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except cls as e:
        return e
    raise AssertionError(f"{fn.__name__} should raise {cls.__name__}")


def main():
    with tempfile.TemporaryDirectory(prefix="lk-framing-") as d:
        fake = FakeDaemon(os.path.join(d, "fake.sock"))
        with latchkey.Client(os.path.join(d, "fake.sock"), timeout=2.0) as lk:
            results = {}
            threads = [threading.Thread(target=lambda e=e: results.__setitem__(e, lk.find_user(e)))
                       for e in ("a@example.com", "b@example.com", "c@example.com")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert all(results[e] == {"echo": e} for e in results) and len(results) == 3, results
            first = fake.requests[0]
            assert first["context"]["trace_context"]["span_id"] == 0, first
            assert 1 <= first["context"]["deadline"]["secs"] <= 2, first
            assert len({r["id"] for r in fake.requests}) == 3, fake.requests
            print("ok   three answers, reversed and dribbled a byte at a time, reach their callers")

            fake.behaviour = "throttle"
            e = expect_raises(latchkey.ServerError, lk.health)
            assert e.throttled and e.kind == 10, vars(e)
            print("ok   a throttled server error is a ServerError with .throttled")

            fake.behaviour = "api-error"
            e = expect_raises(latchkey.ApiError, lk.health)
            assert e.code == "InvalidInput" and e.details == {"field": "client_ip", "reason": "bad"}
            assert "invalid client_ip: bad" in str(e), str(e)
            print("ok   a typed error carries its code and details")

            fake.behaviour = "silent"
            silent_id = len(fake.requests) + 1  # ids count up from 1 on this connection
            expect_raises(latchkey.CallTimeout, lk.call, "health", {}, timeout=0.2)
            time.sleep(0.1)
            assert fake.cancels == [silent_id], fake.cancels
            print("ok   a timeout raises CallTimeout and sends a Cancel for the request")

            fake.behaviour = "hang-up"
            expect_raises(latchkey.TransportError, lk.health)
            print("ok   a dropped connection fails the call with TransportError")

            fake.behaviour = "answer"
            assert lk.health() == {"status": "ok"}
            print("ok   the next call reconnects")

            expect_raises(ValueError, lk.get_user, -1)
            expect_raises(TypeError, lk.get_user, True)
            expect_raises(ValueError, lk.find_user, "x" * 70000)
            print("ok   bad arguments and oversized requests are refused before sending")
        fake.server.close()
    print("python client: framing and transport behaviour passed")


if __name__ == "__main__":
    main()
