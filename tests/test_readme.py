"""Every ```python block of the README runs, in order, in one namespace."""

from __future__ import annotations

import pytest
from readme_blocks import ROOT, python_blocks

BLOCKS = python_blocks(ROOT / "README.md")


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})


def test_readme_qmtl_toml_is_what_load_settings_reads(tmp_path, monkeypatch) -> None:
    """The README's qmtl.toml example is valid and means what the text says."""
    import os
    import re

    from qmtl.settings import BackendSelection, load_settings

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    (toml,) = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    for name in list(os.environ):
        if name.startswith("QMTL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qmtl.toml").write_text(toml, encoding="utf-8")
    settings = load_settings()
    assert settings.engine.kind == "kafka" and settings.state.kind == "redis"
    assert settings.options_for(settings.state) == {"url": "redis://127.0.0.1:6379/0"}
    monkeypatch.setenv("QMTL_KAFKA__BOOTSTRAP_SERVERS", "broker:9092")
    settings = load_settings()
    assert settings.options_for(settings.engine) == {
        "bootstrap_servers": "broker:9092",
        "workers": 2,
    }
    monkeypatch.setenv("QMTL_ENGINE", "local")
    assert load_settings().engine == BackendSelection(kind="local")
