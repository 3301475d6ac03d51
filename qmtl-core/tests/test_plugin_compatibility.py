"""Core warns when a plugin's distribution was built for another qmtl-core version."""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path

import pytest

from qmtl.plugins import (
    PluginCompatibilityWarning,
    QmtlWarning,
    create_plugin_manager,
    load_plugins,
)

PLUGIN_MODULE = """
from qmtl import hookimpl


@hookimpl
def qmtl_register_engines(registry):
    registry.add("{kind}", lambda options: None, description="test plugin")
"""


def install_fake_plugin(
    root: Path, monkeypatch: pytest.MonkeyPatch, *, name: str, requires: list[str]
) -> str:
    """Put a distribution ``name`` 2.0 with a ``qmtl`` entry point on ``sys.path``."""
    module = name.replace("-", "_")
    (root / f"{module}.py").write_text(PLUGIN_MODULE.format(kind=module))
    info = root / f"{module}-2.0.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 2.0"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "entry_points.txt").write_text(f"[qmtl]\n{module} = {module}\n")
    monkeypatch.syspath_prepend(str(root))
    return module


def others_than(entry_point: str) -> list[str]:
    """Entry points of the workspace's other plugins, disabled to keep the test about one."""
    return [ep.name for ep in metadata.entry_points(group="qmtl") if ep.name != entry_point]


def test_a_plugin_built_for_another_core_warns_naming_plugin_distribution_and_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = install_fake_plugin(
        tmp_path, monkeypatch, name="qmtl-engine-future", requires=["qmtl-core>=9.0,<10"]
    )
    core = metadata.version("qmtl-core")

    with pytest.warns(PluginCompatibilityWarning) as caught:
        plugins = load_plugins(disabled=others_than(entry))

    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"Plugin '{entry}' from qmtl-engine-future 2.0 requires qmtl-core<10,>=9.0" in message
    assert f"qmtl-core {core} is installed" in message
    assert issubclass(caught[0].category, QmtlWarning)
    assert issubclass(caught[0].category, UserWarning)
    assert "qmtl_engine_future" in plugins.engines  # a warning, not a refusal


def test_a_plugin_in_the_installed_cores_range_loads_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = install_fake_plugin(
        tmp_path,
        monkeypatch,
        name="qmtl-engine-current",
        requires=[
            "qmtl-core>=0.1.0,<0.2",
            'qmtl-core<0.0.1; extra == "legacy"',  # only for an extra nobody asked for
            "pydantic>=2",
        ],
    )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = create_plugin_manager(disabled=others_than(entry))

    assert [w for w in caught if issubclass(w.category, QmtlWarning)] == []
    assert pm.has_plugin(entry)
