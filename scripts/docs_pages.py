"""mkdocs hook: one reference page per distribution, listing every public module it ships.

The pages are generated at build time from the workspace members and their ``src/`` trees, so
a module added later is documented without anyone remembering to list it: each public module
(no ``_`` in its dotted path) becomes a ``::: module`` block that mkdocstrings renders from the
docstrings. ``docs/reference/index.md`` is the hand-written landing page.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mkdocs is in the docs group; the tests import this module without it
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files

ROOT = Path(__file__).resolve().parent.parent


def public_modules(src: Path) -> list[str]:
    """Dotted names of the public modules under ``src`` (packages first, then their modules)."""
    names = []
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts and not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return sorted(names, key=lambda name: (name.count(".") > 0, name))


def distributions(root: Path = ROOT) -> list[tuple[str, str, list[str]]]:
    """(name, summary, public modules) of each workspace member."""
    members = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    found = []
    for folder in members["members"]:
        project = tomllib.loads((root / folder / "pyproject.toml").read_text())["project"]
        found.append(
            (project["name"], project["description"], public_modules(root / folder / "src"))
        )
    return found


def page(name: str, summary: str, modules: list[str]) -> str:
    blocks = "\n\n".join(f"::: {module}" for module in modules)
    return f"# {name}\n\n{summary}.\n\n{blocks}\n"


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    from mkdocs.structure.files import File

    for name, summary, modules in distributions():
        files.append(File.generated(config, f"{name}.md", content=page(name, summary, modules)))
    return files
