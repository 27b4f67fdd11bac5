"""The real latchkeyd for the package's tests: LATCHKEYD names the binary (cargo's
tests/polyglot.rs passes it). Each test gets its own daemon in a temporary directory, which
it may restart on the same socket."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

import latchkey

PASSWORD = "correct horse battery staple"


class Daemon:
    def __init__(self, directory: Path):
        binary = os.environ.get("LATCHKEYD")
        if not binary:
            pytest.fail("set LATCHKEYD to the latchkeyd binary (cargo test -p latchkeyd "
                        "--test polyglot does)")
        self.binary = binary
        self.dir = directory
        self.socket = str(directory / "latchkey.sock")
        self.config = directory / "config.toml"
        self.config.write_text(
            f'[server]\nsocket = "{self.socket}"\nallow_root = true\n'
            f'[store]\ndata_dir = "{directory / "data"}"\n'
        )
        self.log = open(directory / "daemon.log", "ab")
        self.process: Optional["subprocess.Popen[bytes]"] = None

    def start(self) -> None:
        # In its directory: mail from the file transport lands there, not in the caller's.
        self.process = subprocess.Popen([self.binary, "--config", str(self.config)],
                                        stdout=self.log, stderr=self.log, cwd=self.dir)
        probe = latchkey.Client(self.socket, timeout=1.0, retries=0)
        deadline = time.monotonic() + 20
        while True:
            try:
                probe.health()
                probe.close()
                return
            except latchkey.LatchkeyError:
                if time.monotonic() > deadline:
                    pytest.fail("the daemon did not answer within 20 s:\n"
                                + (self.dir / "daemon.log").read_text())
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    d.start()
    try:
        yield d
    finally:
        d.stop()
