"""Failures surface as StateBackendError naming the URL with its password masked; nothing hides
behind an empty result. Passwords and TLS work through the URL and the settings."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qmtl.errors import ConfigurationError, ModelValidationError, StateBackendError
from qmtl.plugins import load_plugins
from qmtl.state import BucketWrite, SeriesKey
from qmtl_state_redis import RedisStateBackend, RedisStateSettings, StateManager, mask_url

KEY = SeriesKey("errors", "node", "1d")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@db:6379/0", "redis://:***@db:6379/0"),
        (
            "rediss://user:hunter2@db.example:6380/1?ssl_cert_reqs=none",
            "rediss://user:***@db.example:6380/1?ssl_cert_reqs=none",
        ),
        ("redis://db:6379/0", "redis://db:6379/0"),
        ("redis://user:hunter2@[::1]:6379", "redis://user:***@[::1]:6379"),
    ],
)
def test_mask_url_hides_only_the_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_bad_url_is_an_error_that_hides_the_password() -> None:
    with pytest.raises(ModelValidationError, match="redis://, rediss://") as caught:
        RedisStateSettings(url="http://:hunter2@localhost:6379")
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in str(caught.value.__cause__)
    registration = load_plugins().states.get("redis")
    with pytest.raises(ConfigurationError, match="redis://") as caught_options:
        registration.validate_options({"url": "http://:hunter2@localhost:6379"})
    assert "hunter2" not in str(caught_options.value)


def test_settings_repr_never_shows_a_password() -> None:
    settings = RedisStateSettings(url="redis://:in-url@db:6379/0", password="hunter2")  # type: ignore[arg-type]
    assert "hunter2" not in repr(settings)
    assert "in-url" not in repr(settings)
    assert "redis://:***@db:6379/0" in repr(settings)


def test_unreachable_server_raises_quickly_with_the_password_masked() -> None:
    url = f"redis://:hunter2@127.0.0.1:{_closed_port()}/0"
    manager = StateManager(redis_uri=url)  # lazy: constructing never connects
    started = time.monotonic()
    with pytest.raises(StateBackendError) as caught:
        manager.get_history("node", "1d")
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "hunter2" not in message
    assert f"redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "reachable" in message
    assert elapsed < 5
    for call in (
        lambda: manager.save_history("node", "1d", 1, ts=0),
        lambda: manager.get_history_metadata("node", "1d"),
        lambda: manager.update_ttl("node", "1d", 60),
        lambda: manager.clear_all(),
    ):
        with pytest.raises(StateBackendError, match=r"\*\*\*"):
            call()


@pytest.mark.integration
def test_a_server_that_dies_makes_every_call_raise(own_redis: Callable[..., Any]) -> None:
    server = own_redis()
    backend = RedisStateBackend(server.url, retries=1)
    try:
        backend.write(KEY, 86400.0, 1, max_items=10, ttl=None)
        assert len(backend.read(KEY)) == 1
        server.kill()
        for call in (
            lambda: backend.read(KEY),
            lambda: backend.read(KEY, count=0),
            lambda: backend.metadata(KEY),
            lambda: backend.write(KEY, 2 * 86400.0, 2, max_items=10, ttl=None),
            lambda: backend.delete("errors"),
            lambda: backend.update_ttl(KEY, 10),
        ):
            with pytest.raises(StateBackendError, match=server.url):
                call()
    finally:
        backend.close()


@pytest.mark.integration
def test_password_through_url_and_settings(own_redis: Callable[..., Any]) -> None:
    server = own_redis("--requirepass", "s3cret-pw")
    host = f"127.0.0.1:{server.port}"
    with_url = RedisStateBackend(f"redis://:s3cret-pw@{host}/0")
    with_setting = RedisStateBackend(f"redis://{host}/0", password="s3cret-pw")
    wrong = RedisStateBackend(f"redis://:wrong-pw@{host}/0")
    missing = RedisStateBackend(f"redis://{host}/0")
    try:
        with_url.write(KEY, 86400.0, "via url", max_items=10, ttl=None)
        assert with_setting.read(KEY)[0]["value"] == "via url"
        with pytest.raises(StateBackendError) as caught:
            wrong.read(KEY)
        assert "wrong-pw" not in str(caught.value)
        assert "password" in str(caught.value)
        with pytest.raises(StateBackendError, match=r"NOAUTH|Authentication|password"):
            missing.read(KEY)
    finally:
        for backend in (with_url, with_setting, wrong, missing):
            backend.close()


def _make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    paths = {name: directory / f"{name}.pem" for name in ("ca", "ca-key", "server", "server-key")}
    ext = directory / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=qmtl-test-ca",
        "-keyout",
        str(paths["ca-key"]),
        "-out",
        str(paths["ca"]),
    )
    csr = directory / "server.csr"
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(paths["server-key"]),
        "-out",
        str(csr),
    )
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(paths["ca"]),
        "-CAkey",
        str(paths["ca-key"]),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(ext),
        "-out",
        str(paths["server"]),
    )
    return paths


@pytest.mark.integration
def test_tls_with_rediss_url(own_redis: Callable[..., Any], launcher: Any, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found; it makes the test certificates")
    certs = _make_certificates(tmp_path)
    tls_port = launcher.free_port()
    try:
        server = own_redis(
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(certs["server"]),
            "--tls-key-file",
            str(certs["server-key"]),
            "--tls-ca-cert-file",
            str(certs["ca"]),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "tls-pw",
        )
    except launcher.ServiceError as error:
        if "tls" in str(error).lower():
            pytest.skip(f"this redis-server was built without TLS: {error}")
        raise
    assert server.port != tls_port
    url = f"rediss://:tls-pw@127.0.0.1:{tls_port}/0"
    trusted = RedisStateBackend(url, ssl_ca_certs=str(certs["ca"]))
    untrusted = RedisStateBackend(url)  # the system CAs do not know our throwaway CA
    try:
        trusted.write(KEY, 86400.0, {"secure": True}, max_items=10, ttl=None)
        assert trusted.read(KEY) == [{"timestamp": 86400.0, "value": {"secure": True}}]
        with pytest.raises(StateBackendError) as caught:
            untrusted.read(KEY)
        assert "tls-pw" not in str(caught.value)
        assert "rediss://:***@" in str(caught.value)
    finally:
        trusted.close()
        untrusted.close()


@pytest.mark.integration
def test_a_server_that_forgot_the_script_gets_it_again(own_redis: Callable[..., Any]) -> None:
    server = own_redis()
    backend = RedisStateBackend(server.url, write_batch=10)
    raw = backend._redis()
    try:
        writes = [(SeriesKey("scripts", f"n{i % 3}", "1m"), 60.0 * (i + 1), i) for i in range(35)]
        for flushed_before in ("single call", "pipelined calls"):
            raw.script_flush()
            if flushed_before == "single call":
                backend.write(*writes[0], max_items=100, ttl=None)
            else:
                backend.write_many(BucketWrite(k, ts, v, 100, None) for k, ts, v in writes)
        assert sum(len(backend.read(SeriesKey("scripts", f"n{i}", "1m"))) for i in range(3)) == 35
        raw.script_flush()
        assert backend.update_ttl(SeriesKey("scripts", "n0", "1m"), 60) is True
    finally:
        backend.close()
