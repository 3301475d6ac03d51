"""Settings: the order of their sources (SPEC §3) and misspelt keys and variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qmtl import Node, Pipeline
from qmtl.errors import ConfigurationError, UnknownBackendError
from qmtl.settings import BackendSelection, QmtlSettings, load_settings


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No QMTL_* variable and no config file but the test's own."""
    for name in list(os.environ):
        if name.startswith("QMTL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


KAFKA_TOML = '[engine]\nkind = "kafka"\n[engine.options]\nbootstrap_servers = "toml:9092"\n'


def test_environment_options_beat_qmtl_toml_options(
    monkeypatch: pytest.MonkeyPatch, clean: Path
) -> None:
    write(clean / "qmtl.toml", KAFKA_TOML)
    assert load_settings().options_for(load_settings().engine) == {"bootstrap_servers": "toml:9092"}
    monkeypatch.setenv("QMTL_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    settings = load_settings()
    assert settings.engine.kind == "kafka"  # the file still selects the kind
    assert settings.options_for(settings.engine) == {"bootstrap_servers": "env:9092"}
    # QmtlSettings() reads the same sources in the same order
    assert QmtlSettings().options_for(QmtlSettings().engine) == {"bootstrap_servers": "env:9092"}
    # arguments beat both
    assert settings.options_for(settings.engine, {"bootstrap_servers": "arg:9092"}) == {
        "bootstrap_servers": "arg:9092"
    }
    argued = load_settings(engine={"kind": "kafka", "options": {"bootstrap_servers": "arg:1"}})
    assert argued.options_for(argued.engine) == {"bootstrap_servers": "arg:1"}


def test_options_follow_their_kind(monkeypatch: pytest.MonkeyPatch, clean: Path) -> None:
    """The file's kafka options stay kafka's when the environment selects another engine, and
    come back when a run asks for kafka by name; they never reach the local engine."""
    write(clean / "qmtl.toml", KAFKA_TOML)
    monkeypatch.setenv("QMTL_ENGINE", "local")
    settings = load_settings()
    assert settings.engine == BackendSelection(kind="local")
    assert settings.options_for(BackendSelection(kind="kafka")) == {
        "bootstrap_servers": "toml:9092"
    }
    monkeypatch.setenv("QMTL_ENGINE", "kafka")  # same kind as the file: its options still apply
    assert load_settings().engine.options == {"bootstrap_servers": "toml:9092"}


def test_qmtl_toml_beats_pyproject_and_the_environment_beats_both(
    monkeypatch: pytest.MonkeyPatch, clean: Path
) -> None:
    write(clean / "pyproject.toml", '[tool.qmtl]\nengine = "mock"\nstate = "memory"\n')
    assert load_settings().engine.kind == "mock"
    write(clean / "qmtl.toml", 'engine = "local"\n')
    assert load_settings().engine.kind == "local"
    monkeypatch.setenv("QMTL_ENGINE__KIND", "mock")
    assert load_settings().engine.kind == "mock"
    assert load_settings(engine="local").engine.kind == "local"


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ('engin = "kafka"\n', ["qmtl.toml", "'engin'", "did you mean 'engine'"]),
        ("[kafka]\nbootstrap_servers = 'x'\n", ["'kafka'", '[engine] kind = "kafka"']),
        ("[redis]\nurl = 'redis://x'\n", ["'redis'", '[state] kind = "redis"']),
        (
            '[engine]\nkind = "kafka"\nbootstrap_servers = "x"\n',
            ["'bootstrap_servers'", "[engine.options]"],
        ),
        ('[state]\nknd = "redis"\n', ["'knd'", "did you mean 'kind'"]),
        ("plugin_autolaod = false\n", ["'plugin_autolaod'", "did you mean 'plugin_autoload'"]),
    ],
)
def test_a_misspelt_key_in_a_config_file_is_an_error_naming_it(
    clean: Path, toml: str, fragments: list[str]
) -> None:
    write(clean / "qmtl.toml", toml)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_a_misspelt_key_in_pyproject_names_the_tool_table(clean: Path) -> None:
    write(clean / "pyproject.toml", '[tool.qmtl]\nstat = "memory"\n')
    with pytest.raises(ConfigurationError, match=r"\[tool\.qmtl\].*'stat'.*did you mean 'state'"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("QMTL_ENGIN", "QMTL_ENGINE"),
        ("QMTL_STATES", "QMTL_STATE"),
        ("QMTL_ENGINE_KIND", "QMTL_ENGINE__KIND"),
        ("QMTL_STATE_OPTIONS", "QMTL_STATE__OPTIONS"),
        ("QMTL_PLUGINS_AUTOLOAD", "QMTL_PLUGIN_AUTOLOAD"),
        ("QMTL_ENGINE__KIN", "QMTL_ENGINE__KIND"),
        ("QMTL_ENGINE__OPTION__X", "QMTL_ENGINE__OPTIONS"),
    ],
)
def test_a_misspelt_settings_variable_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, suggestion: str
) -> None:
    monkeypatch.setenv(name, "kafka")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert name in message and f"did you mean {suggestion}" in message
    assert "kafka" not in message.replace(name, "")  # the value is never echoed


def test_other_tools_variables_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QMTL_REDIS_SERVER", "QMTL_WORKER_HEARTBEAT_FILE", "QMTL_TEST_REDIS_URL"):
        monkeypatch.setenv(name, "x")
    settings = load_settings()
    assert settings.engine.kind == "local"
    assert set(settings.other_variables) >= {"QMTL_REDIS_SERVER", "QMTL_WORKER_HEARTBEAT_FILE"}


def _pipeline() -> Pipeline:
    pipeline = Pipeline("settings")
    pipeline.add_node(Node("a", lambda: 1))
    return pipeline


def test_a_variable_naming_a_misspelt_kind_is_an_error_once_plugins_are_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QMTL_MOKC__MOCKS", "{}")
    with pytest.raises(
        ConfigurationError, match=r"QMTL_MOKC__MOCKS.*did you mean QMTL_MOCK__MOCKS"
    ):
        _pipeline().execute(engine="mock")


def test_a_kind_option_with_one_underscore_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMTL_MOCK_MOCKS", "{}")
    with pytest.raises(ConfigurationError, match=r"QMTL_MOCK_MOCKS.*QMTL_MOCK__MOCKS"):
        _pipeline().execute(engine="mock")


def test_unknown_kinds_and_options_suggest_the_close_one() -> None:
    with pytest.raises(UnknownBackendError, match="did you mean 'mock'"):
        _pipeline().execute(engine="mokc")
    with pytest.raises(ConfigurationError, match=r"mockz.*did you mean 'mocks'"):
        _pipeline().execute(engine="mock", engine_options={"mockz": {}})


def test_load_settings_refuses_an_unknown_argument() -> None:
    with pytest.raises(ConfigurationError, match=r"'engin'.*did you mean 'engine'"):
        load_settings(engin="mock")
