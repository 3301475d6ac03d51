"""The worker's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

A :class:`http.server.ThreadingHTTPServer` in a daemon thread (standard library; the metrics
themselves are rendered by prometheus-client). Health answers are JSON with status 200 when
healthy and 503 when not, which is what Kubernetes' HTTP probes read; anything else is 404.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from qmtl.errors import ConfigurationError
from qmtl.logs import get_logger
from qmtl_engine_kafka.operations.health import HealthState
from qmtl_engine_kafka.operations.metrics import WorkerMetrics

__all__ = ["OperationsServer"]

log = get_logger(__name__)


class OperationsServer:
    """Serves ``metrics`` and ``health`` on ``host:port`` until :meth:`close`.

    ``port=0`` takes a free port (read :attr:`port` after :meth:`start`).
    """

    def __init__(
        self, health: HealthState, metrics: WorkerMetrics, *, port: int, host: str = "0.0.0.0"
    ) -> None:
        self.health = health
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> OperationsServer:
        """Bind and serve; a port that cannot be bound is a :class:`ConfigurationError`."""
        handler = _handler(self.health, self.metrics)
        try:
            server = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as error:
            raise ConfigurationError(
                f"The worker's metrics port {self.host}:{self.port} cannot be opened: "
                f"{error.strerror or error}; choose a free port with --metrics-port (or "
                "QMTL_KAFKA__METRICS_PORT)"
            ) from error
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="qmtl-metrics"
        )
        self._thread.daemon = True
        self._thread.start()
        log.info("qmtl.kafka.metrics_serving", host=self.host, port=self.port)
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _handler(health: HealthState, metrics: WorkerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = metrics.exposition(self.headers.get("Accept"))
                self._send(200, body, content_type)
            elif path in ("/healthz", "/readyz"):
                ok, report = health.live() if path == "/healthz" else health.ready()
                self._send(200 if ok else 503, json.dumps(report).encode(), "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes every few seconds would flood the worker's log: requests are not logged."""

    return Handler
