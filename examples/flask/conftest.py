"""The daemon fixture of the Python package's tests (client/python/tests/conftest.py), for
the example's, and the package itself on the path."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "client" / "python"))
_spec = importlib.util.spec_from_file_location(
    "latchkey_daemon_fixture", ROOT / "client" / "python" / "tests" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixture)

Daemon = _fixture.Daemon
daemon = _fixture.daemon
