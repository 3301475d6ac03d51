"""What the tests that start ``qmtl worker`` processes share: the console script and a port."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def qmtl_script() -> str:
    """The path of the installed ``qmtl`` console script (of this environment)."""
    found = shutil.which("qmtl") or str(Path(sys.executable).parent / "qmtl")
    assert Path(found).exists(), "the qmtl console script is not installed"
    return found
