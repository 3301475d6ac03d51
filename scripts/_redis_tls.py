"""A throwaway ``redis-server`` that speaks only TLS and admits only an ACL user.

``start(workdir)`` runs the ``redis-server`` of ``_redis.py`` with its plain port off
(``--port 0``), a ``--tls-port`` on a free 127.0.0.1 port serving the server certificate of
``_tls.py`` (signed by the throwaway test CA; clients are not asked for certificates), the
``default`` user disabled, and one ACL user ``qmtl`` with a fresh random password and the
least privilege QMTL needs (:data:`QMTL_ACL`: its own keys, read/write/scripting commands and
``INFO``, which the state backend's write script reads the server's run id from).

Readiness: a TLS connection verified against the test CA answers ``PING`` (``-NOAUTH`` counts:
the server is up and refuses the anonymous client, as it should).

``env`` exports ``QMTL_TEST_REDIS_TLS_URL`` (``rediss://127.0.0.1:PORT/0``, no credentials in
it), ``QMTL_TEST_REDIS_TLS_USERNAME``, ``QMTL_TEST_REDIS_TLS_PASSWORD`` and
``QMTL_TEST_REDIS_TLS_CA``. Debian's and Homebrew's ``redis-server`` are built with TLS; a build
without it fails to start, and the error says so.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _redis  # siblings: same folder, on sys.path above
import _tls

__all__ = ["ENV", "QMTL_ACL", "USER", "TlsRedisServer", "start"]

USER = "qmtl"
#: The ACL rules of the application user (after ``on >password``): keys under ``qmtl`` only
#: (``qmtl:`` state, ``qmtl-kafka:`` pending state), no pub/sub channels, and the command
#: categories QMTL uses. Documented in qmtl-state-redis's README.
QMTL_ACL = (
    "~qmtl*",
    "resetchannels",
    "-@all",
    "+@read",
    "+@write",
    "+@scripting",
    "+@connection",
    "+info",
)
ENV = {
    "url": "QMTL_TEST_REDIS_TLS_URL",
    "username": "QMTL_TEST_REDIS_TLS_USERNAME",
    "password": "QMTL_TEST_REDIS_TLS_PASSWORD",
    "ca": "QMTL_TEST_REDIS_TLS_CA",
}


class TlsRedisServer(_redis.RedisServer):
    """A :class:`_redis.RedisServer` on a TLS-only port with the ``qmtl`` ACL user."""

    def __init__(self, workdir: Path, tls: _tls.Material) -> None:
        self.tls = tls
        self.password = secrets.token_hex(16)
        port = _redis.free_port()
        super().__init__(
            workdir,
            port,
            [
                "--port",
                "0",
                "--tls-port",
                str(port),
                "--tls-cert-file",
                str(tls.server_cert),
                "--tls-key-file",
                str(tls.server_key),
                "--tls-ca-cert-file",
                str(tls.ca),
                "--tls-auth-clients",
                "no",
                "--user",
                "default",
                "off",
                "--user",
                USER,
                "on",
                f">{self.password}",
                *QMTL_ACL,
            ],
        )

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    @property
    def env(self) -> dict[str, str]:
        return {
            ENV["url"]: self.url,
            ENV["username"]: USER,
            ENV["password"]: self.password,
            ENV["ca"]: str(self.tls.ca),
        }

    def answers(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
            ):
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:  # ssl.SSLError included: not listening yet
            return False


def start(workdir: Path) -> TlsRedisServer:
    """Start the TLS redis-server under ``workdir``; it dies with this process."""
    try:
        tls = _tls.material()
    except _tls.TlsError as error:
        raise _redis.ServiceError(str(error)) from error
    last_error: _redis.ServiceError | None = None
    for _ in range(3):  # a port race: another process took the free port first
        server = TlsRedisServer(Path(workdir), tls)
        try:
            server.start(die_with_parent=True)
            return server
        except _redis.ServiceError as error:
            last_error = error
    assert last_error is not None
    raise _redis.ServiceError(
        f"{last_error}\nA redis-server built without TLS (BUILD_TLS=yes) cannot serve "
        "--redis-tls: install a TLS build (Debian's redis-server is one) or set "
        f"{ENV['url']}, {ENV['username']}, {ENV['password']} and {ENV['ca']} to a running one."
    ) from last_error
