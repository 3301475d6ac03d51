"""Plugin loading, registries and settings (SPEC §2, §3)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from qmtl import Node, Pipeline
from qmtl.errors import ConfigurationError, PluginLoadError, UnknownBackendError
from qmtl.plugins import load_plugins
from qmtl.settings import load_settings


def make_distribution(root: Path, name: str, module: str, source: str) -> None:
    """A minimal installed distribution on ``root`` with one ``qmtl`` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text(f"[qmtl]\n{module} = {module}\n")


ECHO = """
from qmtl import hookimpl
from qmtl.engine import EngineBase, execute_plan

class EchoEngine(EngineBase):
    name = "echo"
    def execute(self, plan, *, state, inputs=None, ts=None, timeout=None):
        return {k: ("echo", v) for k, v in execute_plan(plan, state, inputs=inputs, ts=ts).items()}

@hookimpl
def qmtl_register_engines(registry):
    registry.add("echo", lambda options: EchoEngine(), description="echoes")
"""


def test_builtins_and_local_engine_are_registered() -> None:
    plugins = load_plugins()
    assert {"local", "mock"} <= set(plugins.engines.kinds())
    assert "memory" in plugins.states
    local = plugins.engines.get("local")
    assert (local.distribution, local.plugin) == ("qmtl-engine-local", "local")
    assert plugins.engines.get("mock").distribution == "qmtl-core"
    assert local.version


def test_unknown_engine_names_installed_kinds_and_the_package() -> None:
    with pytest.raises(UnknownBackendError) as caught:
        load_plugins(autoload=False).engines.get("kafka")
    message = str(caught.value)
    assert "engine 'kafka' is not installed: pip install qmtl-engine-kafka" in message
    assert "mock" in message
    pipeline = Pipeline(name="p")
    pipeline.add_node(Node(name="a", fn=lambda: 1))
    with pytest.raises(
        UnknownBackendError, match=r"engine 'nope' is not installed.*installed: .*local"
    ):
        pipeline.execute(engine="nope")


def test_third_party_engine_works_through_its_entry_point(tmp_path, monkeypatch) -> None:
    make_distribution(tmp_path, "qmtl-engine-echo", "qmtl_echo_plugin", ECHO)
    monkeypatch.syspath_prepend(str(tmp_path))
    registration = load_plugins().engines.get("echo")
    assert (registration.distribution, registration.version) == ("qmtl-engine-echo", "0.3.0")
    pipeline = Pipeline(name="p")
    pipeline.add_node(Node(name="a", fn=lambda: 1))
    assert pipeline.execute(engine="echo") == {"a": ("echo", 1)}


def test_broken_plugin_names_entry_point_and_distribution(tmp_path, monkeypatch) -> None:
    make_distribution(tmp_path, "qmtl-broken", "qmtl_broken_plugin", "import no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError) as caught:
        load_plugins()
    message = str(caught.value)
    assert "qmtl_broken_plugin" in message and "qmtl-broken" in message
    assert "QMTL_DISABLE_PLUGINS=qmtl_broken_plugin" in message
    assert "mock" in load_plugins(disabled=["qmtl_broken_plugin"]).engines
    assert load_plugins(autoload=False).engines.kinds() == ["mock"]


def test_disable_and_autoload_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("QMTL_PLUGIN_AUTOLOAD", "0")
    assert load_settings().plugin_autoload is False
    monkeypatch.setenv("QMTL_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("QMTL_DISABLE_PLUGINS", "local, other")
    settings = load_settings()
    assert settings.disable_plugins == ["local", "other"]
    assert "local" not in load_plugins(disabled=settings.disable_plugins).engines


def test_settings_select_kinds_and_plugin_options(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMTL_ENGINE", "mock")
    monkeypatch.setenv("QMTL_MOCK__MOCKS", '{"a": 5}')
    settings = load_settings()
    assert settings.engine.kind == "mock"
    assert settings.options_for(settings.engine) == {"mocks": '{"a": 5}'}
    pipeline = Pipeline(name="p")
    pipeline.add_node(Node(name="a", fn=lambda: 1))
    with pytest.raises(ConfigurationError, match="engine 'mock'"):
        pipeline.execute()  # the mock plugin's own model rejects a string for mocks


def test_settings_from_qmtl_toml_and_arguments_win(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qmtl.toml").write_text('[engine]\nkind = "mock"\n[state]\nkind = "memory"\n')
    assert load_settings().engine.kind == "mock"
    monkeypatch.setenv("QMTL_ENGINE", "local")
    assert load_settings().engine.kind == "local"
    assert load_settings(engine="mock").engine.kind == "mock"


def test_pyproject_tool_table(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.qmtl]\nstate = "memory"\n[tool.qmtl.engine]\nkind = "mock"\n'
    )
    assert load_settings().engine.kind == "mock"


def test_importing_qmtl_has_no_side_effects() -> None:
    import subprocess
    import sys

    code = (
        "import sys, logging\n"
        "import qmtl, qmtl.sdk, qmtl.sdk.execution, qmtl.pipeline, qmtl.cli, qmtl_engine_local\n"
        "plugins = [m for m in sys.modules if m.startswith('qmtl_') and m.endswith('.plugin')]\n"
        "assert not plugins, plugins\n"
        "assert 'redis' not in sys.modules and 'confluent_kafka' not in sys.modules\n"
        "assert not logging.getLogger().handlers\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": ""}
    )
    assert result.returncode == 0, result.stderr
