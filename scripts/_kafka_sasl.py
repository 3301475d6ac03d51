"""A single-node Apache Kafka (KRaft) broker that speaks only SASL_SSL with SCRAM-SHA-512.

``start(workdir)`` is the secure sibling of ``_kafka.start``: same jars (``_kafka.fetch_jars``),
same JVM, but its one client listener is ``SASL_SSL`` on a free 127.0.0.1 port, with

- a server certificate signed by the throwaway test CA of ``_tls.py`` (PKCS#12 keystore; the
  broker checks clients' host names as usual, the certificate names 127.0.0.1 and localhost);
- SCRAM-SHA-512 credentials written into the KRaft metadata **at format time**
  (``kafka-storage format --add-scram``, KIP-900): the broker's own inter-broker user ``admin``
  and the application user ``qmtl``, each with a fresh random password per start;
- inter-broker traffic over the same SASL_SSL listener (as ``admin``), so the broker registers
  only if TLS and SCRAM work end to end; the controller listener stays on loopback.

Readiness is proven from outside the JVM and outside librdkafka: :func:`probe` opens a TLS
connection that must verify against the test CA, authenticates as ``qmtl`` with a SCRAM-SHA-512
exchange written here (RFC 5802, standard library only, the server's signature checked), then
sends a Metadata request that must list the broker.

``env`` exports ``QMTL_TEST_KAFKA_SASL_SSL_BOOTSTRAP``, ``QMTL_TEST_KAFKA_SASL_USERNAME``,
``QMTL_TEST_KAFKA_SASL_PASSWORD`` and ``QMTL_TEST_KAFKA_SSL_CA`` (the CA file to trust).
Knobs: ``QMTL_KAFKA_VERSION``, ``QMTL_KAFKA_START_TIMEOUT`` as for the plain broker, and
``QMTL_KAFKA_SASL_HEAP`` (default ``256m``: this broker serves a few tests only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _kafka  # siblings: same folder, on sys.path above
import _tls

__all__ = ["ENV", "MECHANISM", "USER", "probe", "start"]

MECHANISM = "SCRAM-SHA-512"
USER = "qmtl"
_ADMIN = "admin"
ENV = {
    "bootstrap": "QMTL_TEST_KAFKA_SASL_SSL_BOOTSTRAP",
    "username": "QMTL_TEST_KAFKA_SASL_USERNAME",
    "password": "QMTL_TEST_KAFKA_SASL_PASSWORD",
    "ca": "QMTL_TEST_KAFKA_SSL_CA",
}
_API_SASL_HANDSHAKE = 17
_API_SASL_AUTHENTICATE = 36


def _server_properties(
    data_dir: Path, port: int, controller_port: int, tls: _tls.Material, admin_password: str
) -> str:
    # The plain broker's tuning (heap-friendly thread counts, replication factor 1, ...) with
    # its listeners replaced.
    base = _kafka._server_properties(data_dir, port, controller_port)
    settings = dict(line.split("=", 1) for line in base.splitlines() if line)
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{_ADMIN}" password="{admin_password}";'
    )
    settings.update(
        {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(tls.keystore),
            "ssl.keystore.password": _tls.KEYSTORE_PASSWORD,
            "ssl.key.password": _tls.KEYSTORE_PASSWORD,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca),
            "ssl.client.auth": "none",
        }
    )
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def start(
    workdir: Path, *, version: str | None = None, timeout: float | None = None
) -> _kafka.Service:
    """Format (with SCRAM users) and start the SASL_SSL broker; return it once ``qmtl`` can
    authenticate over TLS and read metadata."""
    began = time.monotonic()
    version = version or os.environ.get("QMTL_KAFKA_VERSION") or _kafka.DEFAULT_VERSION
    timeout = timeout or float(os.environ.get("QMTL_KAFKA_START_TIMEOUT", "90"))
    heap = os.environ.get("QMTL_KAFKA_SASL_HEAP", "256m")
    libs = _kafka.fetch_jars(version)
    try:
        tls = _tls.material()
    except _tls.TlsError as error:
        raise _kafka.KafkaStartError(str(error)) from error

    home = Path(workdir) / "kafka-sasl-ssl"
    shutil.rmtree(home, ignore_errors=True)
    data_dir = home / "data"
    data_dir.mkdir(parents=True)
    port, controller_port = _kafka._free_port(), _kafka._free_port()
    while controller_port == port:
        controller_port = _kafka._free_port()
    admin_password, password = secrets.token_hex(16), secrets.token_hex(16)
    properties = home / "server.properties"
    properties.write_text(
        _server_properties(data_dir, port, controller_port, tls, admin_password),
        encoding="utf-8",
    )
    properties.chmod(0o600)
    log_path = home / "broker.log"
    jvm = _kafka._jvm_command(libs, heap)
    formatter = [jvm[0], "-XX:TieredStopAtLevel=1", *jvm[1:], "kafka.tools.StorageTool"]
    scram = [
        arg
        for user, secret in ((_ADMIN, admin_password), (USER, password))
        for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={secret}]")
    ]
    formatted = subprocess.run(
        [*formatter, "format", "-t", _kafka._cluster_id(), "-c", str(properties), *scram],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if formatted.returncode != 0:
        output = (formatted.stdout + formatted.stderr)[-4000:]
        for secret in (admin_password, password):
            output = output.replace(secret, "***")
        raise _kafka.KafkaStartError(
            f"Formatting the KRaft log directory {data_dir} with SCRAM users failed (exit "
            f"{formatted.returncode}):\n{output}"
        )

    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(properties)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_kafka._die_with_parent,
        )
    bootstrap = f"127.0.0.1:{port}"
    service = _kafka.Service(
        name="kafka-sasl-ssl",
        env={
            ENV["bootstrap"]: bootstrap,
            ENV["username"]: USER,
            ENV["password"]: password,
            ENV["ca"]: str(tls.ca),
        },
        process=process,
        log_path=log_path,
    )
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        if process.poll() is not None:
            raise _kafka.KafkaStartError(
                f"The SASL_SSL Kafka broker exited with code {process.returncode} before "
                f"answering on {bootstrap}. Last lines of {log_path}:\n"
                f"{_kafka._tail(log_path, 60)}"
            )
        try:
            if probe("127.0.0.1", port, tls.ca, USER, password):
                break
            last_error = "metadata lists no broker yet"
        except (OSError, ValueError) as e:
            last_error = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            tail = _kafka._tail(log_path, 60)
            service.stop()
            raise _kafka.KafkaStartError(
                f"The SASL_SSL Kafka broker on {bootstrap} did not authenticate {USER!r} and "
                f"answer a metadata request within {timeout:.0f}s ({last_error}); raise "
                f"QMTL_KAFKA_START_TIMEOUT on a slow machine. Last lines of {log_path}:\n{tail}"
            )
        time.sleep(0.25)
    service.started_in = time.monotonic() - began
    return service


# --------------------------------------------------------------------------------------------
# The probe: TLS, then SaslHandshake v1 + SaslAuthenticate v1 (SCRAM-SHA-512), then Metadata.


def probe(
    host: str, port: int, ca: Path, user: str, password: str, timeout: float = 3.0
) -> list[tuple[int, str, int]]:
    """Authenticate ``user`` over TLS (verified against ``ca``) and return the brokers that a
    Metadata request lists; ValueError when the broker refuses the mechanism or credentials."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        sock.settimeout(timeout)
        _scram_login(sock, user, password)
        return _kafka.metadata_brokers(sock, correlation=5)


def _scram_login(sock: socket.socket, user: str, password: str) -> None:
    body = _kafka._request(sock, _API_SASL_HANDSHAKE, 1, 1, _string(MECHANISM))
    (error,) = struct.unpack(">h", body[:2])
    if error != 0:
        raise ValueError(f"the broker refused SASL mechanism {MECHANISM} (error code {error})")
    nonce = base64.b64encode(secrets.token_bytes(18)).decode("ascii")
    name = user.replace("=", "=3D").replace(",", "=2C")
    client_first_bare = f"n={name},r={nonce}"
    server_first = _authenticate(sock, 2, f"n,,{client_first_bare}".encode()).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    if not fields.get("r", "").startswith(nonce):
        raise ValueError("the broker's SCRAM nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha512")
    stored_key = hashlib.sha512(client_key).digest()
    final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{client_first_bare},{server_first},{final_bare}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha512")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    server_final = _authenticate(sock, 3, f"{final_bare},p={proof.decode()}".encode()).decode()
    server_key = hmac.digest(salted, b"Server Key", "sha512")
    expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha512")).decode()
    if server_final != f"v={expected}":
        raise ValueError("the broker's SCRAM signature is wrong: it does not know the password")


def _authenticate(sock: socket.socket, correlation: int, data: bytes) -> bytes:
    body = _kafka._request(
        sock, _API_SASL_AUTHENTICATE, 1, correlation, struct.pack(">i", len(data)) + data
    )
    error, message_len = struct.unpack(">hh", body[:4])
    offset = 4 + max(message_len, 0)
    message = body[4:offset].decode("utf-8", "replace") if message_len >= 0 else ""
    if error != 0:
        raise ValueError(f"SCRAM authentication failed (error code {error}): {message}")
    (size,) = struct.unpack(">i", body[offset : offset + 4])
    return body[offset + 4 : offset + 4 + max(size, 0)]


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">h", len(data)) + data


if __name__ == "__main__":  # manual check: python scripts/_kafka_sasl.py [CMD ...]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qmtl-kafka-sasl-") as tmp:
        broker = start(Path(tmp))
        print(
            f"SASL_SSL Kafka ready on {broker.env[ENV['bootstrap']]} in {broker.started_in:.1f}s",
            file=sys.stderr,
        )
        try:
            command = sys.argv[1:]
            code = (
                subprocess.run(command, env={**os.environ, **broker.env}).returncode
                if command
                else 0
            )
        finally:
            broker.stop()
        raise SystemExit(code)
