"""A connection the daemon closes while idle is replaced by the next call (issue 19, item 1).

    python3 tests/polyglot/idle.py SOCKET

The daemon under test closes idle connections after 1 s. tests/polyglot.rs runs it.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import latchkey  # noqa: E402

client = latchkey.Client(sys.argv[1])
assert client.health()["status"] == "ok"
time.sleep(2.5)
assert client.health()["status"] == "ok", "the call after the idle close failed"
print("the call after the idle close went on a new connection")
