"""Security: no unsafe deserialisation or evaluation, secrets never shown, and the security
options of Kafka (SASL/SSL) and Redis (AUTH/ACL/TLS) reach the clients.

- A source scan (AST) of every shipped package: no pickle/marshal/shelve, no eval/exec/compile,
  no unsafe YAML loading, no ``shell=True`` or command strings for subprocesses, no
  ``os.system``/``os.popen``. The scanner proves it works on a snippet holding every pattern.
- Secrets (passwords in Redis URLs, the Redis ``password`` option, SASL and key passwords) are
  absent from reprs, ``str()``, validation errors, backend errors, structlog and stdlib log
  records, ``qmtl plugins`` (table and JSON) and every ``--help`` page.
- Option passing: the Kafka settings map to the librdkafka keys and librdkafka itself receives
  them (a missing CA file is reported by librdkafka by its property name); Redis ACL users and
  passwords log in to a real Redis; a real TLS Redis (self-signed CA made with ``openssl``)
  is reached only through ``rediss://`` with the CA given, and certificate checking is on by
  default.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from qmtl.errors import ConfigurationError, QmtlError, StateBackendError
from qmtl.node import Node
from qmtl.pipeline import Pipeline
from qmtl.state import SeriesKey

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(ROOT.glob("qmtl-*/src"))
SECRET = "Sup3r-S3cret-Pw"  # never legitimately appears anywhere


# ------------------------------------------------------------------------------ source scan

_BANNED_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "marshal",
    "shelve",
    "dill",
    "cloudpickle",
    "jsonpickle",
}
_BANNED_BUILTINS = {"eval", "exec", "compile", "__import__"}
_SUBPROCESS_CALLS = {
    "run",
    "Popen",
    "call",
    "check_call",
    "check_output",
    "getoutput",
    "getstatusoutput",
}
_SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def scan_source(source: str, filename: str) -> list[str]:
    """Unsafe patterns in ``source``, as ``file:line: what`` strings."""
    problems: list[str] = []
    tree = ast.parse(source, filename)

    def flag(node: ast.AST, what: str) -> None:
        problems.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in _BANNED_MODULES:
                    flag(node, f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in _BANNED_MODULES:
                flag(node, f"imports from {node.module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            if isinstance(node.func, ast.Name) and name in _BANNED_BUILTINS:
                flag(node, f"calls {name}()")
            if (
                name in {"os.system", "os.popen", "system", "popen"}
                or name.startswith("os.exec")
                or name.startswith("os.spawn")
            ):
                flag(node, f"calls {name}() (a shell)")
            if last in {"unsafe_load", "full_load", "unsafe_load_all", "full_load_all"}:
                flag(node, f"calls {name}() (unsafe YAML)")
            if name.endswith("yaml.load") or name.endswith("yaml.load_all"):
                loader = _dotted(keywords.get("Loader", ast.Constant(None)))
                if loader.rsplit(".", 1)[-1] not in _SAFE_YAML_LOADERS:
                    flag(node, f"calls {name}() without a safe Loader")
            if last in {"read_pickle", "to_pickle"}:
                flag(node, f"calls {name}() (pickle)")
            if last == "load" and "allow_pickle" in keywords:
                value = keywords["allow_pickle"]
                if not (isinstance(value, ast.Constant) and value.value is False):
                    flag(node, f"calls {name}(allow_pickle=...)")
            if (name.startswith("subprocess.") and last in _SUBPROCESS_CALLS) or name in {
                "Popen",
                "check_output",
                "check_call",
            }:
                shell = keywords.get("shell")
                if shell is not None and not (
                    isinstance(shell, ast.Constant) and shell.value is False
                ):
                    flag(node, f"calls {name}(shell=...)")
                if last in {"getoutput", "getstatusoutput"}:
                    flag(node, f"calls {name}() (a shell)")
                command = node.args[0] if node.args else keywords.get("args")
                if isinstance(command, ast.Constant | ast.JoinedStr | ast.BinOp):
                    flag(node, f"calls {name}() with a command string, not an argument list")
    return problems


def _shipped_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in package.rglob("*.py"))


def test_the_scanner_finds_every_unsafe_pattern() -> None:
    snippet = textwrap.dedent("""
        import pickle
        from marshal import loads
        import os, subprocess, yaml
        eval("1")
        exec("x = 1")
        compile("1", "f", "eval")
        os.system("ls")
        os.popen("ls")
        subprocess.run("ls -l", shell=True)
        subprocess.Popen(f"ls {x}")
        subprocess.check_output(["ls"], shell=flag)
        yaml.load(text)
        yaml.load(text, Loader=yaml.Loader)
        yaml.unsafe_load(text)
        numpy.load(path, allow_pickle=True)
        pandas.read_pickle(path)
    """)
    found = scan_source(snippet, "snippet.py")
    assert len(found) == 16, "\n".join(found)
    safe = textwrap.dedent("""
        import json, subprocess, tomllib, yaml
        subprocess.run(["docker", "build", "."], check=True)
        yaml.safe_load(text)
        yaml.load(text, Loader=yaml.SafeLoader)
        re.compile("x")
        json.loads(text)
    """)
    assert scan_source(safe, "safe.py") == []


def test_no_shipped_package_deserialises_or_evaluates_unsafely() -> None:
    files = _shipped_files()
    assert len(PACKAGES) >= 5 and len(files) >= 40, (PACKAGES, len(files))
    problems = [
        p
        for path in files
        for p in scan_source(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert problems == [], "\n".join(problems)


def test_settings_files_are_read_with_tomllib_only() -> None:
    """TOML is parsed by tomllib (data only, no code); no YAML is ever loaded."""
    sources = "\n".join(path.read_text(encoding="utf-8") for path in _shipped_files())
    assert "yaml.load(" not in sources and "yaml.unsafe_load" not in sources
    assert "yaml.dump(" not in sources  # YAML is written with safe_dump only
    settings = (ROOT / "qmtl-core/src/qmtl/settings.py").read_text(encoding="utf-8")
    assert "tomllib.load(" in settings  # config files are read with tomllib, nothing else
    assert "yaml" not in settings and "eval(" not in settings


# -------------------------------------------------------------------------------- masking


def _secret_free(*texts: Any) -> None:
    for text in texts:
        assert SECRET not in str(text), f"secret shown in: {text}"


def test_redis_settings_and_backend_never_show_passwords() -> None:
    from qmtl_state_redis.backend import RedisStateBackend
    from qmtl_state_redis.settings import RedisStateSettings

    settings = RedisStateSettings(url=f"redis://alice:{SECRET}@cache:6379/0", password=SECRET)
    backend = RedisStateBackend(settings)
    _secret_free(repr(settings), str(settings), repr(backend), backend.url)
    assert "alice:***@cache:6379" in repr(settings)


@pytest.mark.parametrize(
    "options",
    [
        {"url": f"redis://:{SECRET}@cache:6379/0", "max_connections": "many"},
        {"url": f"http://:{SECRET}@cache:6379/0"},
        {"url": "redis://cache:6379/0", "password": SECRET, "socket_timeout": -1},
        {"url": "redis://cache:6379/0", "password": [SECRET]},
    ],
    ids=["bad-option", "bad-scheme", "bad-timeout", "password-wrong-type"],
)
def test_invalid_redis_options_never_echo_the_password(options: dict[str, Any]) -> None:
    pipeline = Pipeline("sec")
    pipeline.add_node(Node("a", lambda: 1))
    with pytest.raises(ConfigurationError) as caught:
        pipeline.execute(engine="local", state="redis", state_options=options)
    _secret_free(caught.value, repr(caught.value), caught.value.__cause__)


def test_plugin_option_errors_never_echo_the_rejected_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QMTL_LOCAL__API_PASSWORD", SECRET)
    pipeline = Pipeline("sec")
    pipeline.add_node(Node("a", lambda: 1))
    with pytest.raises(ConfigurationError, match="api_password") as caught:
        pipeline.execute(engine="local", state="memory")
    _secret_free(caught.value)


def test_a_redis_connection_failure_masks_the_password_in_errors_and_logs() -> None:
    from qmtl_state_redis.backend import RedisStateBackend

    url = f"redis://alice:{SECRET}@127.0.0.1:{_closed_port()}/0"
    backend = RedisStateBackend(url, connect_timeout=0.5, retries=0, password=SECRET)
    with structlog.testing.capture_logs() as logs, pytest.raises(StateBackendError) as caught:
        backend.read(SeriesKey("sec", "n", "1m"))
    assert "alice:***@127.0.0.1" in str(caught.value)
    _secret_free(caught.value, logs, caught.value.__cause__)


def test_kafka_settings_never_show_sasl_or_key_passwords() -> None:
    from qmtl_engine_kafka import KafkaEngineSettings, client_config, redacted

    settings = KafkaEngineSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password=SECRET,
        ssl_key_password=SECRET,
    )
    _secret_free(
        repr(settings),
        str(settings),
        settings.model_dump(),
        settings.model_dump_json(),
        redacted(client_config(settings)),
    )
    with pytest.raises(QmtlError) as caught:
        KafkaEngineSettings(
            security_protocol="PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="alice",
            sasl_password=SECRET,
        )
    _secret_free(caught.value)


def test_a_kafka_broker_failure_masks_the_sasl_password_in_errors_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from qmtl_engine_kafka import KafkaEngineSettings, StreamProcessor
    from qmtl_engine_kafka.errors import BrokerUnavailableError

    settings = KafkaEngineSettings(
        bootstrap_servers=f"127.0.0.1:{_closed_port()}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password=SECRET,
        connect_timeout_s=1.0,
    )
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs, pytest.raises(BrokerUnavailableError) as e:
        StreamProcessor(settings)
    _secret_free(e.value, logs, [r.getMessage() for r in caplog.records])


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("qmtl")), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **env},
    )


SECRET_ENV = {
    "QMTL_REDIS__URL": f"redis://alice:{SECRET}@127.0.0.1:1/0",
    "QMTL_REDIS__PASSWORD": SECRET,
    "QMTL_KAFKA__SASL_PASSWORD": SECRET,
    "QMTL_KAFKA__SSL_KEY_PASSWORD": SECRET,
    "QMTL_STATE": "redis",
}


def test_cli_listings_and_help_pages_never_show_secrets(tmp_path: Path) -> None:
    outputs = [
        _cli("plugins", cwd=tmp_path, env=SECRET_ENV),
        _cli("plugins", "--json", cwd=tmp_path, env=SECRET_ENV),
        _cli("--help", cwd=tmp_path, env=SECRET_ENV),
    ]
    assert outputs[0].returncode == 0, outputs[0].stderr
    assert "redis" in outputs[0].stdout
    commands = [
        row.split()[0]
        for row in outputs[2].stdout.split("Commands:")[1].splitlines()
        if row.strip()
    ]
    assert {"plugins", "run", "history"} <= set(commands)
    for command in commands:
        page = _cli(command, "--help", cwd=tmp_path, env=SECRET_ENV)
        assert page.returncode == 0, (command, page.stderr)
        outputs.append(page)
    for done in outputs:
        _secret_free(done.stdout, done.stderr)


def test_cli_errors_and_debug_logs_never_show_secrets(tmp_path: Path) -> None:
    (tmp_path / "strategy.py").write_text(
        textwrap.dedent("""
        from qmtl import Node, Pipeline
        pipeline = Pipeline("sec")
        pipeline.add_node(Node("a", lambda: 1))
    """)
    )
    env = {**SECRET_ENV, "QMTL_REDIS__CONNECT_TIMEOUT": "0.5", "QMTL_REDIS__RETRIES": "0"}
    ran = _cli("--log-level", "debug", "run", "strategy:pipeline", cwd=tmp_path, env=env)
    assert ran.returncode == 1
    assert "alice:***@127.0.0.1:1" in ran.stderr
    history = _cli(
        "history",
        "strategy:pipeline",
        "a",
        "--redis-url",
        f"redis://:{SECRET}@127.0.0.1:{_closed_port()}/0",
        cwd=tmp_path,
        env=env,
    )
    assert history.returncode == 1 and "error:" in history.stderr
    for done in (ran, history):
        _secret_free(done.stdout, done.stderr)
        assert "Traceback" not in done.stderr


# --------------------------------------------------------------------- Kafka option passing


def _make_ca(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 (openssl), or skip without openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        _unavailable("openssl is not installed")
    paths = {
        name: directory / name
        for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "ext.cnf")
    }
    paths["ext.cnf"].write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            paths["ca.key"],
            "-out",
            paths["ca.crt"],
            "-days",
            "2",
            "-subj",
            "/CN=qmtl-test-ca",
        ],
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            paths["server.key"],
            "-out",
            paths["server.csr"],
            "-subj",
            "/CN=127.0.0.1",
        ],
        [
            "x509",
            "-req",
            "-in",
            paths["server.csr"],
            "-CA",
            paths["ca.crt"],
            "-CAkey",
            paths["ca.key"],
            "-CAcreateserial",
            "-out",
            paths["server.crt"],
            "-days",
            "2",
            "-extfile",
            paths["ext.cnf"],
        ],
    ):
        subprocess.run([openssl, *map(str, command)], check=True, capture_output=True, timeout=60)
    return paths


def test_kafka_security_settings_map_to_librdkafka_properties() -> None:
    from qmtl_engine_kafka import KafkaEngineSettings, client_config

    settings = KafkaEngineSettings(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="alice",
        sasl_password=SECRET,
        ssl_ca_location="/etc/ca.pem",
        ssl_certificate_location="/etc/client.pem",
        ssl_key_location="/etc/client.key",
        ssl_key_password="keypw",
    )
    config = client_config(settings)
    assert {
        key: config[key] for key in config if key.startswith(("sasl.", "ssl.", "security"))
    } == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": SECRET,
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.certificate.location": "/etc/client.pem",
        "ssl.key.location": "/etc/client.key",
        "ssl.key.password": "keypw",
    }
    assert config["bootstrap.servers"] == "b1:9093,b2:9093"


def test_kafka_security_options_from_the_environment_reach_the_client_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qmtl.settings import BackendSelection, load_settings
    from qmtl_engine_kafka import KafkaEngineSettings, client_config

    for name, value in {
        "QMTL_KAFKA__BOOTSTRAP_SERVERS": "broker:9093",
        "QMTL_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "QMTL_KAFKA__SASL_MECHANISM": "PLAIN",
        "QMTL_KAFKA__SASL_USERNAME": "bob",
        "QMTL_KAFKA__SASL_PASSWORD": SECRET,
        "QMTL_KAFKA__SSL_CA_LOCATION": "/ca.pem",
    }.items():
        monkeypatch.setenv(name, value)
    options = load_settings().options_for(BackendSelection(kind="kafka"))
    config = client_config(KafkaEngineSettings.model_validate(options))
    assert (
        config["sasl.username"],
        config["sasl.password"],
        config["ssl.ca.location"],
        config["security.protocol"],
    ) == ("bob", SECRET, "/ca.pem", "SASL_SSL")


def test_librdkafka_receives_the_ssl_and_sasl_options(tmp_path: Path) -> None:
    """librdkafka checks the CA file when a client is created: a missing one is reported under
    its property name, and a real CA with SASL over SSL is accepted."""
    from confluent_kafka import KafkaException, Producer

    from qmtl_engine_kafka import KafkaEngineSettings, StreamProcessor
    from qmtl_engine_kafka._client import base_config

    missing = KafkaEngineSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password=SECRET,
        ssl_ca_location=str(tmp_path / "missing-ca.pem"),
    )
    with pytest.raises(KafkaException, match=r"ssl\.ca\.location"):
        Producer(base_config(missing))
    with pytest.raises(Exception, match=r"ssl\.ca\.location") as caught:
        StreamProcessor(missing, check_connection=False)
    _secret_free(caught.value)
    ca = _make_ca(tmp_path)["ca.crt"]
    working = missing.model_copy(update={"ssl_ca_location": str(ca)})
    Producer(base_config(working)).flush(0)
    broken_cert = missing.model_copy(
        update={
            "ssl_ca_location": str(ca),
            "ssl_certificate_location": str(tmp_path / "none.pem"),
            "ssl_key_location": str(tmp_path / "none.key"),
        }
    )
    with pytest.raises(KafkaException, match=r"ssl\.(certificate|key)\.location"):
        Producer(base_config(broken_cert))


# --------------------------------------------------------------------- Redis option passing


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: integration tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


@pytest.mark.integration
def test_redis_acl_user_and_password_options_log_in(redis_url: str) -> None:
    import redis

    from qmtl_state_redis.backend import RedisStateBackend

    user = f"qmtl-sec-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{SECRET}"], keys=["qmtl:*"], commands=["+@all"]
    )
    key = SeriesKey(f"sec-{user}", "n", "1m")
    try:
        good = RedisStateBackend(redis_url, username=user, password=SECRET)
        good.write(key, 60.0, 1.5, max_items=5, ttl=60)
        assert good.read(key) == [{"timestamp": 60.0, "value": 1.5}]
        good.close()
        host = redis_url.split("://", 1)[1]
        in_url = RedisStateBackend(f"redis://{user}:{SECRET}@{host}")
        assert in_url.read(key)[0]["value"] == 1.5
        in_url.close()
        wrong = RedisStateBackend(redis_url, username=user, password="not-it", retries=0)
        with pytest.raises(StateBackendError, match="check the user and password") as caught:
            wrong.read(key)
        _secret_free(caught.value)
    finally:
        admin.delete(*admin.keys(f"qmtl:sec-{user}:*") or ["-"])
        admin.acl_deluser(user)
        admin.close()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real redis-server speaking only TLS, with a password, certificates from openssl."""
    binary = os.environ.get("QMTL_REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not installed")
    directory = tmp_path_factory.mktemp("tls-redis")
    paths = _make_ca(directory)
    port = _closed_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(paths["server.crt"]),
            "--tls-key-file",
            str(paths["server.key"]),
            "--tls-ca-cert-file",
            str(paths["ca.crt"]),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            SECRET,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if process.poll() is not None:
                _unavailable("this redis-server was built without TLS support")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield {"port": port, "ca": str(paths["ca.crt"])}
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.integration
def test_redis_tls_and_auth_options_reach_the_client(tls_redis: dict[str, Any]) -> None:
    from qmtl_state_redis.backend import RedisStateBackend

    port, ca = tls_redis["port"], tls_redis["ca"]
    pipeline = Pipeline(f"tls-{uuid.uuid4().hex[:6]}")
    pipeline.add_node(Node("a", lambda: 7))
    options = {"url": f"rediss://127.0.0.1:{port}/0", "ssl_ca_certs": ca, "password": SECRET}
    assert pipeline.execute(engine="local", state="redis", state_options=options, ts=90) == {"a": 7}
    assert pipeline.get_interval_data("a", "1d", state=pipeline._last_state) == [7]
    in_url = RedisStateBackend(f"rediss://:{SECRET}@127.0.0.1:{port}/0", ssl_ca_certs=ca)
    in_url.ping()
    in_url.close()
    unverified = RedisStateBackend(
        f"rediss://127.0.0.1:{port}/0", password=SECRET, ssl_cert_reqs="none"
    )
    unverified.ping()
    unverified.close()
    failures = {
        "no CA: the self-signed chain is refused (checking is on by default)": RedisStateBackend(
            f"rediss://127.0.0.1:{port}/0", password=SECRET, retries=0
        ),
        "plain redis:// to a TLS port": RedisStateBackend(
            f"redis://:{SECRET}@127.0.0.1:{port}/0", retries=0, connect_timeout=1, socket_timeout=1
        ),
        "no password": RedisStateBackend(
            f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=ca, retries=0
        ),
    }
    for what, backend in failures.items():
        with pytest.raises(StateBackendError) as caught:
            backend.ping()
        _secret_free(caught.value)
        assert "rediss://" in str(caught.value) or "redis://" in str(caught.value), what
    pipeline._last_state.delete(pipeline.name)


def test_cli_plugins_json_lists_no_options_at_all(tmp_path: Path) -> None:
    """`qmtl plugins --json` describes kinds, never configured option values."""
    done = _cli("plugins", "--json", cwd=tmp_path, env=SECRET_ENV)
    rows = json.loads(done.stdout)
    assert rows and all(
        set(row) == {"plugin", "distribution", "version", "category", "kind", "description"}
        for row in rows
    )
