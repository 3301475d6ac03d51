"""The API reference (``make docs``) builds strict from the docstrings, and a docstring naming
an object that does not exist fails the build."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

sys.path.insert(0, str(ROOT / "scripts"))
import docs_pages  # noqa: E402  (the mkdocs hook that lists the modules)


def mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )


def test_the_reference_builds_and_documents_every_public_module(tmp_path: Path) -> None:
    done = mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")

    assert done.returncode == 0, done.stderr
    for name, _, modules in docs_pages.distributions():
        html = (tmp_path / "site" / name / "index.html").read_text()
        assert modules, name
        for module in modules:
            assert f'id="{module}"' in html, f"{module} is missing from {name}'s page"
    core = (tmp_path / "site" / "qmtl-core" / "index.html").read_text()
    assert 'href="#qmtl.summary.RunSummary"' in core  # a role became a checked link
    assert ":class:`" not in core


PACKAGE = '''
    """A package whose docstring names {target}."""


    class Present:
        """See :class:`{target}` and :meth:`Present.method`."""

        def method(self) -> None:
            """Nothing."""
'''


@pytest.mark.parametrize(
    ("target", "builds"), [("~qmtl_fake.Present", True), ("qmtl_fake.Missing", False)]
)
def test_a_role_naming_a_missing_object_fails_the_build(
    tmp_path: Path, target: str, builds: bool
) -> None:
    package = tmp_path / "src" / "qmtl_fake"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PACKAGE.format(target=target)))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Fake\n\n::: qmtl_fake\n")
    config = (ROOT / "mkdocs.yml").read_text()
    config = config.replace("docs_dir: docs/reference", "docs_dir: docs")
    config = config.replace("hooks:\n  - scripts/docs_pages.py\n", "")
    config = config.replace("scripts/docs_roles.py", str(ROOT / "scripts" / "docs_roles.py"))
    start = config.index("          paths:\n")
    end = config.index("          options:\n")
    config = config[:start] + "          paths: [src]\n" + config[end:]
    (tmp_path / "mkdocs.yml").write_text(config)
    shutil.rmtree(tmp_path / "site", ignore_errors=True)

    done = mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")

    if builds:
        assert done.returncode == 0, done.stderr
        html = (tmp_path / "site" / "index.html").read_text()
        assert 'href="#qmtl_fake.Present"' in html
        assert 'href="#qmtl_fake.Present.method"' in html
    else:
        assert done.returncode != 0
        assert "qmtl_fake.Missing" in done.stderr
