"""Security tested for real: a pipeline through a SASL_SSL Kafka broker and a TLS Redis with an
ACL user, and every wrong credential refused quickly, clearly and without showing a secret.

The servers are the project's own secure services (``scripts/_kafka_sasl.py``: KRaft, SASL_SSL
only, SCRAM-SHA-512 users created at format time; ``scripts/_redis_tls.py``: TLS only, the
``default`` user off, a least-privilege ACL user; certificates from ``scripts/_tls.py``). They are
reused from ``scripts/services.py --kafka-sasl-ssl --redis-tls`` when its variables are set, else
started here, once per module, only when these tests run. Missing Java, jars, a TLS-capable
``redis-server`` or ``cryptography`` skip them, except under ``CI=true`` where that fails.

Everything goes through the public path (``pipeline.run(engine="kafka", state="redis", ...)``,
``QMTL_KAFKA__*`` / ``QMTL_REDIS__*`` settings, ``qmtl worker``), so the tests keep guarding
whatever engine internals change. The oracle of results is the local engine
(``qmtl.testing.engine_contract``). Secrets are random per server start, and the wrong ones
random per test, so none can appear anywhere by accident.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import structlog

from qmtl.errors import QmtlError, StateBackendError
from qmtl.testing.engine_contract import collect, counts, history, oracle
from qmtl.testing.pipelines import CASES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
KAFKA_VARS = {
    "bootstrap": "QMTL_TEST_KAFKA_SASL_SSL_BOOTSTRAP",
    "username": "QMTL_TEST_KAFKA_SASL_USERNAME",
    "password": "QMTL_TEST_KAFKA_SASL_PASSWORD",
    "ca": "QMTL_TEST_KAFKA_SSL_CA",
}
REDIS_VARS = {
    "url": "QMTL_TEST_REDIS_TLS_URL",
    "username": "QMTL_TEST_REDIS_TLS_USERNAME",
    "password": "QMTL_TEST_REDIS_TLS_PASSWORD",
    "ca": "QMTL_TEST_REDIS_TLS_CA",
}
#: How long a refused credential may take to surface (measured on an idle machine: 0.3-0.6 s
#: for Kafka; 1-5 s for Redis, which the run reaches after creating its topics and whose client
#: retries a dropped connection), with room for a loaded CI machine.
REFUSED_WITHIN_S = 15.0


def _script(name: str) -> ModuleType:
    sys.path.insert(0, str(SCRIPTS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(SCRIPTS))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: integration tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


def _service(variables: dict[str, str], module: str, workdir: Path) -> Iterator[dict[str, str]]:
    """The running service named by ``variables``, or one started from ``scripts/module``."""
    if all(os.environ.get(v) for v in variables.values()):
        yield {key: os.environ[v] for key, v in variables.items()}
        return
    try:
        service = _script(module).start(workdir)
    except Exception as error:  # no java, jars, TLS-capable redis-server or cryptography
        _unavailable(f"cannot start the {module} test service: {type(error).__name__}: {error}")
        return
    try:
        yield {key: service.env[v] for key, v in variables.items()}
    finally:
        service.stop()


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """bootstrap, username, password and CA file of the SASL_SSL/SCRAM-SHA-512 broker."""
    yield from _service(KAFKA_VARS, "_kafka_sasl", tmp_path_factory.mktemp("kafka-sasl"))


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """rediss:// URL, ACL user, password and CA file of the TLS-only redis-server."""
    yield from _service(REDIS_VARS, "_redis_tls", tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture(scope="module")
def untrusted_ca() -> str:
    """A CA certificate that signed neither server's certificate."""
    try:
        return str(_script("_tls").material().untrusted_ca)
    except Exception as error:
        _unavailable(f"cannot make TLS test material: {error}")
        raise


def kafka_options(kafka: dict[str, str], **changes: Any) -> dict[str, Any]:
    return {
        "bootstrap_servers": kafka["bootstrap"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": kafka["username"],
        "sasl_password": kafka["password"],
        "ssl_ca_location": kafka["ca"],
        "connect_timeout_s": 10,
        **changes,
    }


def redis_options(redis: dict[str, str], **changes: Any) -> dict[str, Any]:
    return {
        "url": redis["url"],
        "username": redis["username"],
        "password": redis["password"],
        "ssl_ca_certs": redis["ca"],
        **changes,
    }


@contextmanager
def watched_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Every structlog event and stdlib log record (librdkafka's included) of the block, as
    text, in the list yielded (filled when the block ends)."""
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    with structlog.testing.capture_logs() as events:
        try:
            yield lines
        finally:
            lines.extend(str(event) for event in events)
            lines.extend(f"{r.name} {r.getMessage()}" for r in caplog.records)


def assert_secret_free(secrets_: list[str], *texts: Any) -> None:
    for text in texts:
        shown = str(text)
        for secret in secrets_:
            assert secret not in shown, f"a secret is shown in: {shown[:500]}"


def exception_text(error: BaseException) -> str:
    """The whole report a user could see: messages and reprs of the error and its chain."""
    return "".join(traceback.format_exception(error)) + repr(error)


# ------------------------------------------------------------------------ the services


def test_the_secure_services_refuse_what_they_should(
    secure_kafka: dict[str, str], secure_redis: dict[str, str], untrusted_ca: str
) -> None:
    """The fixtures really are secured (so the refusals below are the servers', not a
    misconfiguration): the broker authenticates the SCRAM user over verified TLS with the
    project's own probe and refuses a wrong password or an untrusted CA; Redis refuses the
    anonymous client and serves no plain port."""
    import ssl

    import redis

    probe = _script("_kafka_sasl").probe
    host, port = secure_kafka["bootstrap"].rsplit(":", 1)
    ca = Path(secure_kafka["ca"])
    assert probe(host, int(port), ca, secure_kafka["username"], secure_kafka["password"])
    with pytest.raises(ValueError, match="SCRAM authentication failed"):
        probe(host, int(port), ca, secure_kafka["username"], "wrong-" + secrets.token_hex(4))
    with pytest.raises(ssl.SSLCertVerificationError):
        probe(host, int(port), Path(untrusted_ca), "qmtl", secure_kafka["password"])

    anonymous = redis.Redis.from_url(secure_redis["url"], ssl_ca_certs=secure_redis["ca"])
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    user = redis.Redis.from_url(
        secure_redis["url"],
        ssl_ca_certs=secure_redis["ca"],
        username=secure_redis["username"],
        password=secure_redis["password"],
    )
    assert user.ping() is True
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.set("not-qmtl-key", 1)  # the ACL keeps the user to its own keys
    user.close()


# ----------------------------------------------------------------- a pipeline through both


def test_a_pipeline_runs_through_sasl_ssl_kafka_and_tls_redis_as_on_the_local_engine(
    secure_kafka: dict[str, str], secure_redis: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    from qmtl_state_redis import RedisStateBackend

    pipeline = CASES["diamond"].build()
    state = RedisStateBackend(**redis_options(secure_redis))
    state.delete(pipeline.name)
    events: list[Any] = []
    with watched_logs(caplog) as logs:
        summary = pipeline.run(
            events.append,
            engine="kafka",
            state=state,
            engine_options=kafka_options(secure_kafka),
            timeout=150,
        )
    expected = oracle("diamond")
    assert collect(events) == expected.outputs
    assert counts(summary) == counts(expected.summary)
    assert history(pipeline, state) == expected.history
    assert logs, "no log line was captured: the secret check below would prove nothing"
    assert_secret_free([secure_kafka["password"], secure_redis["password"]], *logs)
    state.delete(pipeline.name)
    state.close()


WRONG = {
    # case: (which server, option changes, error type, what the message must name)
    "kafka-wrong-scram-password": ("kafka", {"sasl_password": "WRONG"}, "BrokerRefusedError",
                                   "sasl_password"),
    "kafka-unknown-scram-user": ("kafka", {"sasl_username": "nobody"}, "BrokerRefusedError",
                                 "sasl_username"),
    "kafka-untrusted-ca": ("kafka", {"ssl_ca_location": "UNTRUSTED"}, "BrokerRefusedError",
                           "ssl_ca_location"),
    "kafka-host-not-in-the-certificate": (
        "kafka",
        {"bootstrap_servers": "OTHER-HOST"},
        "BrokerRefusedError",
        "name the host",
    ),
    "kafka-no-tls-to-the-tls-listener": (
        "kafka",
        {"security_protocol": "SASL_PLAINTEXT", "connect_timeout_s": 3},
        "BrokerUnavailableError",
        "security_protocol",
    ),
    "redis-wrong-acl-password": ("redis", {"password": "WRONG"}, "StateBackendError",
                                 "QMTL_REDIS__PASSWORD"),
    "redis-no-credentials": ("redis", {"username": None, "password": None},
                             "StateBackendError", "QMTL_REDIS__USERNAME"),
    "redis-untrusted-ca": ("redis", {"ssl_ca_certs": "UNTRUSTED"}, "StateBackendError",
                           "ssl_ca_certs"),
    "redis-host-not-in-the-certificate": (
        "redis",
        {"url": "OTHER-HOST"},
        "StateBackendError",
        "does not name the host",
    ),
    "redis-plain-to-the-tls-port": ("redis", {"url": "PLAIN"}, "StateBackendError",
                                    "rediss://"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(WRONG))
def test_a_wrong_credential_fails_fast_with_a_clear_error_and_no_secret(
    case: str,
    secure_kafka: dict[str, str],
    secure_redis: dict[str, str],
    untrusted_ca: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, changes, error_name, named = WRONG[case]
    wrong = "wrong-" + secrets.token_hex(8)
    substitutes = {
        "WRONG": wrong,
        "UNTRUSTED": untrusted_ca,
        "nobody": "nobody-" + secrets.token_hex(4),
        "PLAIN": secure_redis["url"].replace("rediss://", "redis://"),
    }
    # 127.1 is 127.0.0.1 to the resolver, but a name neither certificate lists.
    other_host = {
        "kafka": secure_kafka["bootstrap"].replace("127.0.0.1", "127.1"),
        "redis": secure_redis["url"].replace("127.0.0.1", "127.1"),
    }
    substitutes["OTHER-HOST"] = other_host[server]
    changes = {k: substitutes.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    engine_options = kafka_options(secure_kafka, **(changes if server == "kafka" else {}))
    state_options = redis_options(secure_redis, **(changes if server == "redis" else {}))
    state_options = {k: v for k, v in state_options.items() if v is not None}
    pipeline = CASES["chain"].build()
    began = time.monotonic()
    with watched_logs(caplog) as logs, pytest.raises(QmtlError) as caught:
        pipeline.run(
            engine="kafka",
            state="redis",
            engine_options=engine_options,
            state_options=state_options,
            timeout=60,
        )
    elapsed = time.monotonic() - began
    error = caught.value
    print(f"\n[{case}] refused in {elapsed:.2f}s: {type(error).__name__}: {error}")
    assert error_name in [cls.__name__ for cls in type(error).__mro__], exception_text(error)
    assert named in str(error), str(error)
    assert "\n" not in str(error)
    limit = REFUSED_WITHIN_S
    assert elapsed < limit, f"{case}: refused only after {elapsed:.1f}s"
    if server == "redis":
        assert isinstance(error, StateBackendError)
        assert state_options["url"].split("://")[1] in str(error)  # names the server
    assert_secret_free(
        [wrong, secure_kafka["password"], secure_redis["password"]],
        exception_text(error),
        *logs,
    )


# ------------------------------------------------------------------------- qmtl worker


def _worker_env(kafka: dict[str, str], redis: dict[str, str], **changes: str) -> dict[str, str]:
    """The settings a deployment gives ``qmtl worker``: QMTL_* variables, nothing in argv."""
    env = {
        "QMTL_KAFKA__BOOTSTRAP_SERVERS": kafka["bootstrap"],
        "QMTL_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "QMTL_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "QMTL_KAFKA__SASL_USERNAME": kafka["username"],
        "QMTL_KAFKA__SASL_PASSWORD": kafka["password"],
        "QMTL_KAFKA__SSL_CA_LOCATION": kafka["ca"],
        "QMTL_KAFKA__CONNECT_TIMEOUT_S": "10",
        "QMTL_REDIS__URL": redis["url"],
        "QMTL_REDIS__USERNAME": redis["username"],
        "QMTL_REDIS__PASSWORD": redis["password"],
        "QMTL_REDIS__SSL_CA_CERTS": redis["ca"],
    }
    env.update(changes)
    return env


def _qmtl_worker(target: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    qmtl = str(Path(sys.executable).with_name("qmtl"))
    with log.open("ab") as handle:
        return subprocess.Popen(
            [qmtl, "worker", target, "--log-level", "debug", "--log-every", "1"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )


def test_qmtl_worker_takes_its_security_settings_from_the_environment(
    secure_kafka: dict[str, str],
    secure_redis: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``qmtl worker`` configured only by QMTL_* variables serves a finite run (workers=0)
    whose own options also come from the environment; the results equal the local engine's and
    the worker's debug log shows no secret."""
    from qmtl_state_redis import RedisStateBackend

    env = _worker_env(secure_kafka, secure_redis)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    case = CASES["chain"]
    log = tmp_path / "worker.log"
    worker = _qmtl_worker(case.target, env, log)
    pipeline = case.build()
    state = RedisStateBackend(**redis_options(secure_redis))
    state.delete(pipeline.name)
    events: list[Any] = []
    try:
        pipeline.run(events.append, engine="kafka", state="redis", workers=0, timeout=150)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = worker.wait()
    text = log.read_text(errors="replace")
    expected = oracle("chain")
    assert collect(events) == expected.outputs, text[-3000:]
    assert history(pipeline, state) == expected.history
    assert code == 0, text[-3000:]
    assert "qmtl.kafka.worker_started" in text  # the log really was captured
    assert_secret_free([secure_kafka["password"], secure_redis["password"]], text)
    state.delete(pipeline.name)
    state.close()


@pytest.mark.parametrize(
    ("variable", "named"),
    [
        ("QMTL_KAFKA__SASL_PASSWORD", "sasl_password"),
        ("QMTL_REDIS__PASSWORD", "QMTL_REDIS__PASSWORD"),
    ],
)
def test_qmtl_worker_with_a_wrong_password_exits_non_zero_with_one_line_error(
    variable: str,
    named: str,
    secure_kafka: dict[str, str],
    secure_redis: dict[str, str],
    tmp_path: Path,
) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    env = _worker_env(secure_kafka, secure_redis, **{variable: wrong})
    log = tmp_path / "worker.log"
    began = time.monotonic()
    worker = _qmtl_worker(CASES["chain"].target, env, log)
    try:
        code = worker.wait(60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        pytest.fail(f"qmtl worker kept running with a wrong {variable}:\n{log.read_text()}")
    elapsed = time.monotonic() - began
    text = log.read_text(errors="replace")
    print(f"\n[worker {variable}] exit {code} after {elapsed:.1f}s")
    # Its log is JSON (stderr is not a terminal), and so is the one line saying why it ended.
    errors = [line for line in text.splitlines() if '"qmtl.kafka.worker_failed"' in line]
    assert code != 0
    assert len(errors) == 1 and named in json.loads(errors[0])["error"], text[-3000:]
    assert "Traceback" not in text
    assert elapsed < 20, f"the worker took {elapsed:.1f}s to give up"
    assert_secret_free([wrong, secure_kafka["password"], secure_redis["password"]], text)


# ------------------------------------------------------------------------- the documents

ROOT = SCRIPTS.parent
OPERATIONS = ROOT / "docs" / "operations.md"


def test_the_operations_guide_security_example_runs(
    secure_kafka: dict[str, str], secure_redis: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md's Python example, with its placeholders pointed at the test servers."""
    from readme_blocks import block_containing

    code = block_containing(OPERATIONS, "secure_demo")
    for placeholder, value in {
        '"broker1:9093"': repr(secure_kafka["bootstrap"]),
        '"sasl_username": "qmtl"': f'"sasl_username": {secure_kafka["username"]!r}',
        '"ssl_ca_location": "/etc/qmtl/ca.pem"': f'"ssl_ca_location": {secure_kafka["ca"]!r}',
        '"rediss://redis.internal:6380/0"': repr(secure_redis["url"]),
        '"username": "qmtl"': f'"username": {secure_redis["username"]!r}',
        '"ssl_ca_certs": "/etc/qmtl/ca.pem"': f'"ssl_ca_certs": {secure_redis["ca"]!r}',
    }.items():
        assert placeholder in code, placeholder
        code = code.replace(placeholder, value)
    monkeypatch.setenv("KAFKA_PASSWORD", secure_kafka["password"])
    monkeypatch.setenv("REDIS_PASSWORD", secure_redis["password"])
    exec(compile(code, str(OPERATIONS), "exec"), {"__name__": "operations_md"})


def test_the_documented_redis_acl_is_the_one_the_tests_run_with() -> None:
    acl = " ".join(_script("_redis_tls").QMTL_ACL)
    rule = f"ACL SETUSER qmtl on >PASSWORD {acl}"
    for document in (OPERATIONS, ROOT / "qmtl-state-redis" / "README.md"):
        assert rule in document.read_text(encoding="utf-8"), document


def test_services_py_redis_tls_exports_a_tls_only_server_with_an_acl_user(tmp_path: Path) -> None:
    """`scripts/services.py --redis-tls -- CMD`: CMD gets the four variables, the server takes
    TLS with the ACL user and nothing else, and is gone when CMD ends."""
    check = (
        "import os, redis\n"
        "url = os.environ['QMTL_TEST_REDIS_TLS_URL']\n"
        "ca = os.environ['QMTL_TEST_REDIS_TLS_CA']\n"
        "user = redis.Redis.from_url(url, ssl_ca_certs=ca,\n"
        "    username=os.environ['QMTL_TEST_REDIS_TLS_USERNAME'],\n"
        "    password=os.environ['QMTL_TEST_REDIS_TLS_PASSWORD'])\n"
        "assert user.ping()\n"
        "try:\n"
        "    redis.Redis.from_url(url, ssl_ca_certs=ca).ping()\n"
        "    raise SystemExit('anonymous client admitted')\n"
        "except redis.AuthenticationError:\n"
        "    pass\n"
        "print(url)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in REDIS_VARS.values()}
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "services.py"), "--redis-tls", "--", sys.executable, "-c",
         check],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )  # fmt: skip
    if done.returncode != 0 and "redis-tls: ready" not in done.stderr:
        _unavailable(f"services.py --redis-tls could not start: {done.stderr[-2000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    url = done.stdout.strip()
    assert url.startswith("rediss://127.0.0.1:")
    assert "redis-tls: stopped" in done.stderr
    import redis

    with pytest.raises(redis.ConnectionError):  # stopped with CMD
        redis.Redis.from_url(url, ssl_cert_reqs="none", socket_connect_timeout=1).ping()
