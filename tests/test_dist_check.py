"""scripts/dist_check.py (run by ``make dist``) flags the release problems it claims to."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dist_check", ROOT / "scripts" / "dist_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dist_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


GOOD = """\
Metadata-Version: 2.4
Name: qmtl-engine-local
Version: 0.1.0
Summary: The local QMTL engine
Project-URL: Homepage, https://github.com/qmtl/qmtl
Project-URL: Source, https://github.com/qmtl/qmtl
Project-URL: Changelog, https://github.com/qmtl/qmtl/blob/main/CHANGELOG.md
License-Expression: Apache-2.0
License-File: LICENSE
Classifier: Development Status :: 3 - Alpha
Classifier: Programming Language :: Python :: 3
Classifier: Programming Language :: Python :: 3.11
Classifier: Programming Language :: Python :: 3.12
Classifier: Programming Language :: Python :: 3.13
Requires-Python: >=3.11
Requires-Dist: qmtl-core<0.2,>=0.1.0
Description-Content-Type: text/markdown

# qmtl-engine-local
"""
VERSIONS = {"qmtl-core": "0.1.0", "qmtl-engine-local": "0.1.0"}


def problems(dist_check: ModuleType, text: str) -> list[str]:
    project = dist_check.Project(ROOT, "qmtl-engine-local", "0.1.0", ("qmtl_engine_local",))
    meta = dist_check._metadata(text)
    return dist_check._check_metadata("x.whl", meta, project, "# qmtl-engine-local\n", VERSIONS)


def test_complete_metadata_passes(dist_check: ModuleType) -> None:
    assert problems(dist_check, GOOD) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("Requires-Dist: qmtl-core<0.2,>=0.1.0", "Requires-Dist: qmtl-core>=0.1.0"),
            "has no upper bound",
        ),
        (
            ("Requires-Dist: qmtl-core<0.2,>=0.1.0", "Requires-Dist: qmtl-core<0.4,>=0.3"),
            "excludes qmtl-core 0.1.0",
        ),
        (("License-Expression: Apache-2.0\n", ""), "no License-Expression"),
        (
            (
                "Classifier: Development Status :: 3 - Alpha",
                "Classifier: License :: OSI Approved :: Apache Software License",
            ),
            "deprecated 'License ::' classifier",
        ),
        (("Requires-Python: >=3.11\n", ""), "no Requires-Python"),
        (("Requires-Python: >=3.11", "Requires-Python: >=3.11,<3.14"), "caps or pins the version"),
        (("Requires-Python: >=3.11", "Requires-Python: >=3.10"), "is not '>=3.11'"),
        (
            ("Classifier: Programming Language :: Python :: 3.13\n", ""),
            "Python classifiers ['3.11', '3.12'] differ from the tested versions",
        ),
        (
            ("Project-URL: Changelog, https://github.com/qmtl/qmtl/blob/main/CHANGELOG.md\n", ""),
            "no Project-URL Changelog",
        ),
        (("# qmtl-engine-local", "Part of QMTL"), "long description is not README.md"),
        (("Summary: The local QMTL engine", "Summary: "), "no Summary"),
    ],
)
def test_each_missing_piece_is_named(
    dist_check: ModuleType, change: tuple[str, str], expected: str
) -> None:
    assert change[0] in GOOD
    found = problems(dist_check, GOOD.replace(*change))

    assert any(expected in problem for problem in found), found


def test_the_workspace_projects_are_the_five_distributions(dist_check: ModuleType) -> None:
    names = [dist_check.read_project(f).name for f in dist_check.workspace_projects()]

    assert names == [
        "qmtl-core",
        "qmtl-engine-local",
        "qmtl-engine-kafka",
        "qmtl-state-redis",
        "qmtl-deploy",
    ]
