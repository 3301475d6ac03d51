"""A stranger's install: the built wheels in new virtual environments outside the workspace.

The wheels are built once per module from this checkout (``uv build``); every environment is a
fresh ``uv venv`` in a temporary folder, gets only the wheels a user would ``pip install``
(siblings from the same build, everything else from the package index) and runs with the
workspace off ``sys.path``, no ``PYTHONPATH`` and no ``QMTL_*`` settings from the caller.

1. ``qmtl-core qmtl-engine-kafka`` (the headline install): ``qmtl plugins`` lists the Kafka
   engine and the local engine and Redis state it brought in; every example of the README runs
   there on the default engine, and so does ``make run``'s example, printing what it prints in
   the workspace; a small pipeline runs on the mock engine (and on Kafka with Redis state when
   the test services are up).
2. ``qmtl-core`` alone: the default local engine is missing and the error names its package.
3. ``+ qmtl-engine-threads`` (examples/plugins, a third-party distribution): ``qmtl plugins``
   lists it, ``pipeline.execute(engine="threads")`` uses it, its own tests and qmtl.testing's
   engine contract pass there, and a release built for another qmtl-core is warned about.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from readme_blocks import python_blocks

pytestmark = [pytest.mark.fresh_install, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
THREADS = ROOT / "examples" / "plugins" / "qmtl-engine-threads"
EXAMPLE = ROOT / "examples" / "moving_average.py"


def uv() -> list[str]:
    found = shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    pytest.fail("uv is needed to build and install wheels: pip install uv (make test does)")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would leak the workspace or settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}
        and not (key.startswith("QMTL_") and not key.startswith("QMTL_TEST_"))
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def check(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


class Env:
    """A virtual environment outside the workspace and a scratch folder to run things in."""

    def __init__(self, folder: Path, wheels: Path) -> None:
        self.folder = folder
        self.wheels = wheels
        self.work = folder / "work"
        self.work.mkdir(parents=True)
        check(
            [
                *uv(),
                "venv",
                "--quiet",
                "--python",
                f"{sys.version_info.major}.{sys.version_info.minor}",
                str(folder / "venv"),
            ],
            folder,
        )
        self.python = folder / "venv" / "bin" / "python"

    def install(self, *requirements: str) -> None:
        """``pip install`` from the built wheels (siblings) and the index (the rest)."""
        wheels = [self.wheel(r) if r.startswith("qmtl-") else r for r in requirements]
        check(
            [
                *uv(),
                "pip",
                "install",
                "--quiet",
                "--python",
                str(self.python),
                *wheels,
                "--find-links",
                str(self.wheels),
            ],
            self.work,
        )

    def wheel(self, requirement: str) -> str:
        """``qmtl-core[testing]`` -> ``qmtl-core[testing] @ file:///.../qmtl_core-0.1.0-...whl``."""
        name, _, extras = requirement.partition("[")
        path = next(self.wheels.glob(f"{name.replace('-', '_')}-*.whl"))
        return f"{name}[{extras} @ {path.as_uri()}" if extras else str(path)

    def python_code(self, code: str, **env: str) -> subprocess.CompletedProcess[str]:
        return check([str(self.python), "-c", textwrap.dedent(code)], self.work, **env)

    def qmtl(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return check([str(self.python.parent / "qmtl"), *args], self.work, **env)

    def distributions(self) -> dict[str, str]:
        out = self.python_code("""
            import json
            from importlib import metadata
            print(json.dumps({d.metadata["Name"]: d.version for d in metadata.distributions()}))
        """)
        return last_json(out)

    def plugin_rows(self) -> list[dict[str, str]]:
        return json.loads(self.qmtl("plugins", "--json").stdout)


def last_json(out: subprocess.CompletedProcess[str]) -> Any:
    """The JSON document a script printed last (libraries may log to stdout before it)."""
    return json.loads(out.stdout.strip().splitlines()[-1])


def kinds(rows: list[dict[str, str]]) -> set[tuple[str, str, str]]:
    return {(row["category"], row["kind"], row["distribution"]) for row in rows}


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of the five workspace distributions and of the threads example, built once."""
    out = tmp_path_factory.mktemp("wheels")
    check([*uv(), "build", "--all-packages", "--wheel", "--quiet", "--out-dir", str(out)], ROOT)
    check([*uv(), "build", "--wheel", "--quiet", "--out-dir", str(out), str(THREADS)], ROOT)
    assert len(list(out.glob("*.whl"))) == 6
    return out


@pytest.fixture(scope="module")
def kafka_env(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> Env:
    """``pip install qmtl-core qmtl-engine-kafka``."""
    env = Env(tmp_path_factory.mktemp("core-kafka"), wheels)
    env.install("qmtl-core", "qmtl-engine-kafka")
    return env


@pytest.fixture(scope="module")
def core_env(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> Env:
    """``pip install qmtl-core`` and nothing else."""
    env = Env(tmp_path_factory.mktemp("core-only"), wheels)
    env.install("qmtl-core")
    return env


@pytest.fixture(scope="module")
def threads_env(kafka_env: Env) -> Env:
    """Then ``pip install qmtl-engine-threads``, and ``qmtl-core[testing]`` to run its tests."""
    kafka_env.install("qmtl-engine-threads", "qmtl-core[testing]")
    return kafka_env


@pytest.fixture(scope="module")
def workspace_example_output() -> str:
    """What ``make run`` prints in the workspace."""
    result = check([sys.executable, str(EXAMPLE)], ROOT)
    return result.stdout


SMALL_PIPELINE = """
    import json
    from qmtl import Node, Pipeline, QueryNode

    pipeline = Pipeline("fresh_install")
    pipeline.add_node(Node(name="price", fn=lambda: 101.5, tags=["PX"]))
    pipeline.add_node(Node(name="volume", fn=lambda: 2_000, tags=["PX"]))
    pipeline.add_node(Node(name="notional", fn=lambda price, volume: price * volume,
                           upstreams=["price", "volume"]))
    pipeline.add_query_node(QueryNode(name="quotes", tags=["PX"]))
"""


# -- 1. qmtl-core + qmtl-engine-kafka ----------------------------------------------------------
def test_core_and_kafka_bring_local_engine_redis_state_and_nothing_from_the_workspace(
    kafka_env: Env,
) -> None:
    installed = kafka_env.distributions()
    qmtl = {name for name in installed if name.startswith("qmtl")}
    assert qmtl == {"qmtl-core", "qmtl-engine-kafka", "qmtl-engine-local", "qmtl-state-redis"}
    versions = {
        folder: tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]["version"]
        for folder in qmtl
    }
    assert {name: installed[name] for name in qmtl} == versions
    assert {"confluent-kafka", "redis", "pydantic", "pluggy"} <= set(installed)

    where = kafka_env.python_code("""
        import json, sys
        import qmtl, qmtl_engine_kafka, qmtl_state_redis
        print(json.dumps({"files": [qmtl.__file__, qmtl_engine_kafka.__file__,
                                    qmtl_state_redis.__file__], "path": sys.path}))
    """)
    report = last_json(where)
    venv = str(kafka_env.folder)
    assert all(path.startswith(venv) for path in report["files"]), report["files"]
    assert not [p for p in report["path"] if p.startswith(str(ROOT))], report["path"]


def test_qmtl_plugins_lists_the_kafka_engine_and_the_redis_state(kafka_env: Env) -> None:
    rows = kafka_env.plugin_rows()
    found = kinds(rows)

    assert ("state", "redis", "qmtl-state-redis") in found
    assert {("engine", "mock", "qmtl-core"), ("state", "memory", "qmtl-core")} <= found
    assert ("engine", "local", "qmtl-engine-local") in found
    entry_points = kafka_env.python_code("""
        from importlib import metadata
        for ep in metadata.entry_points(group="qmtl"):
            print(ep.name, ep.dist.name)
    """).stdout.split("\n")
    assert "kafka qmtl-engine-kafka" in entry_points and "redis qmtl-state-redis" in entry_points
    assert ("engine", "kafka", "qmtl-engine-kafka") in found
    table = kafka_env.qmtl("plugins").stdout
    assert "kafka" in table and "qmtl-engine-kafka" in table
    assert "redis" in table and "qmtl-state-redis" in table


def test_a_small_pipeline_runs_on_the_mock_engine(kafka_env: Env) -> None:
    out = kafka_env.python_code(
        SMALL_PIPELINE
        + """
    from qmtl.mock import MockExecutionEngine

    engine = MockExecutionEngine(mocks={"price": 100.0})
    results = pipeline.execute(engine=engine, ts=1_767_571_200)
    by_kind = pipeline.execute(engine="mock", ts=1_767_571_200)
    print(json.dumps({"mocked": results, "by_kind": by_kind,
                      "calls": engine.calls["notional"],
                      "history": pipeline.get_history("notional", count=5)}))
    """
    )
    report = last_json(out)

    assert report["mocked"] == {
        "price": 100.0,
        "volume": 2000,
        "notional": 200_000.0,
        "quotes": {"price": 100.0, "volume": 2000},
    }
    assert report["calls"] == [{"price": 100.0, "volume": 2000}]
    assert report["by_kind"]["notional"] == 203_000.0
    assert [item["value"] for item in report["history"]] == [203_000.0]


def _needs_only_qmtl(block: str) -> bool:
    """True when a code block imports nothing but qmtl and the standard library (blocks that
    show an optional extra, such as pandas, are not part of the headline install)."""
    tops: set[str] = set()
    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            tops.add(node.module.split(".")[0])
    return all(top in sys.stdlib_module_names or top.startswith("qmtl") for top in tops)


def test_every_readme_example_runs_on_the_default_engine(kafka_env: Env) -> None:
    """The quickstart after the headline install: the README's blocks, in order, as a user
    pastes them into one script (no engine or state named, so ``local`` and ``memory``)."""
    blocks = [block for block in python_blocks(ROOT / "README.md") if _needs_only_qmtl(block)]
    assert any("pipeline.execute(ts=" in block for block in blocks)  # the quickstart
    script = kafka_env.work / "readme_examples.py"
    script.write_text("\n\n".join(blocks) + '\nprint("readme examples ok")\n')

    out = check([str(kafka_env.python), script.name], kafka_env.work)

    assert out.stdout.strip().splitlines()[-1] == "readme examples ok"


def test_make_runs_example_prints_the_same_as_in_the_workspace(
    kafka_env: Env, workspace_example_output: str
) -> None:
    shutil.copy(EXAMPLE, kafka_env.work / EXAMPLE.name)
    out = check([str(kafka_env.python), EXAMPLE.name], kafka_env.work)

    assert out.stdout == workspace_example_output
    assert "QMTL example: ma_crossover" in out.stdout
    assert "portfolio (query node over tag SIGNAL):" in out.stdout


@pytest.mark.integration
def test_a_small_pipeline_runs_on_kafka_with_redis_state(
    kafka_env: Env, kafka_bootstrap: str, redis_url: str
) -> None:
    code = SMALL_PIPELINE.replace('Pipeline("fresh_install")', 'Pipeline("fresh_install_kafka")')
    out = kafka_env.python_code(
        code
        + f"""
    results = pipeline.execute(parallel=True, brokers={kafka_bootstrap!r},
                               redis_uri={redis_url!r}, ts=1_767_571_200)
    history = pipeline.get_history("notional", count=5, redis_uri={redis_url!r})
    pipeline.clear_history()
    print(json.dumps({{"results": results, "history": history}}))
    """
    )
    report = last_json(out)

    assert report["results"] == {
        "price": 101.5,
        "volume": 2000,
        "notional": 203_000.0,
        "quotes": {"price": 101.5, "volume": 2000},
    }
    assert [item["value"] for item in report["history"]] == [203_000.0]


# -- 2. qmtl-core alone --------------------------------------------------------------------------
def test_without_the_local_engine_the_default_run_names_the_package(core_env: Env) -> None:
    assert {n for n in core_env.distributions() if n.startswith("qmtl")} == {"qmtl-core"}
    out = core_env.python_code(
        SMALL_PIPELINE
        + """
    from qmtl.errors import UnknownBackendError
    try:
        pipeline.execute()
    except UnknownBackendError as error:
        print(error)
    """
    )

    assert "engine 'local' is not installed: pip install qmtl-engine-local" in out.stdout


# -- 3. + the third-party threads engine ---------------------------------------------------------
def test_the_threads_plugin_is_listed_and_used_by_execute(threads_env: Env) -> None:
    rows = threads_env.plugin_rows()
    assert ("engine", "threads", "qmtl-engine-threads") in kinds(rows)

    out = threads_env.python_code(
        SMALL_PIPELINE
        + """
    import threading

    pipeline.add_node(Node(name="worker", fn=lambda: threading.current_thread().name))
    threads = pipeline.execute(engine="threads", ts=1_767_571_200)
    local = pipeline.execute(engine="local", ts=1_767_571_200)
    print(json.dumps({"threads": threads, "local": local}))
    """
    )
    report = last_json(out)

    assert report["threads"]["worker"].startswith("qmtl-fresh_install_")  # a pool thread
    assert report["local"]["worker"] == "MainThread"
    del report["threads"]["worker"], report["local"]["worker"]
    assert report["threads"] == report["local"]


def test_the_example_on_threads_prints_what_it_prints_on_local(
    threads_env: Env, workspace_example_output: str
) -> None:
    shutil.copy(EXAMPLE, threads_env.work / EXAMPLE.name)
    out = check([str(threads_env.python), EXAMPLE.name], threads_env.work, QMTL_ENGINE="threads")

    assert out.stdout == workspace_example_output


def test_the_threads_distribution_passes_its_tests_and_the_engine_contract(
    threads_env: Env,
) -> None:
    project = threads_env.work / "qmtl-engine-threads"
    shutil.copytree(THREADS / "tests", project / "tests")
    shutil.copy(THREADS / "pyproject.toml", project / "pyproject.toml")  # its pytest settings
    out = check(
        [str(threads_env.python), "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"], project
    )

    summary = out.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary
    listing = check(
        [str(threads_env.python), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        project,
    ).stdout
    assert listing.count("test_contract.py::TestThreadsEngine::") >= 20


def test_a_plugin_built_for_another_core_is_warned_about(
    tmp_path_factory: pytest.TempPathFactory, wheels: Path
) -> None:
    source = tmp_path_factory.mktemp("future") / "qmtl-engine-threads"
    shutil.copytree(THREADS, source, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"')
    pyproject.write_text(text.replace('"qmtl-core>=0.1.0,<0.2"', '"qmtl-core>=0.2.0,<0.3"'))
    future = tmp_path_factory.mktemp("future-wheel")
    check([*uv(), "build", "--wheel", "--quiet", "--out-dir", str(future), str(source)], ROOT)
    env = Env(tmp_path_factory.mktemp("core-future-plugin"), wheels)
    env.install("qmtl-core", "qmtl-engine-local")
    check(
        [
            *uv(),
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--python",
            str(env.python),
            str(next(future.glob("*.whl"))),
        ],
        env.work,
    )

    out = env.qmtl("plugins", "--json")

    assert "PluginCompatibilityWarning" in out.stderr
    assert (
        "Plugin 'threads' from qmtl-engine-threads 0.2.0 requires qmtl-core<0.3,>=0.2.0, "
        "but qmtl-core 0.1.0 is installed"
    ) in out.stderr
    assert ("engine", "threads", "qmtl-engine-threads") in kinds(json.loads(out.stdout))
