"""Finding and reading a project's dependency file.

:func:`extract_dependencies` keeps the seed behaviour (it returns the path of the file an image
should install from); :func:`parse_dependencies` reads that file into PEP 508
:class:`~packaging.requirements.Requirement` objects, following ``-r`` includes.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from qmtl.errors import DeployError

REQUIREMENTS_FILE = "requirements.txt"
PYPROJECT_FILE = "pyproject.toml"

# pip treats "#" as a comment when it starts the line or follows whitespace.
_COMMENT = re.compile(r"(^|\s+)#.*$")
# Per-requirement options pip allows after a requirement ("pkg==1.0 --hash=sha256:...").
_TRAILING_OPTIONS = re.compile(r"\s+--?[A-Za-z][\w-]*(?:[=\s]\S+)?")
_INCLUDE = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s*=?\s*)(\S+)$")


def extract_dependencies(project_dir: str | os.PathLike[str] = ".") -> Path:
    """Return the dependency file of ``project_dir``: ``requirements.txt``, else ``pyproject.toml``.

    Raises :class:`DeployError` when the directory has neither.
    """
    directory = Path(project_dir)
    if not directory.is_dir():
        raise DeployError(
            f"Project directory '{directory}' does not exist; pass an existing folder"
        )
    for name in (REQUIREMENTS_FILE, PYPROJECT_FILE):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise DeployError(
        f"No {REQUIREMENTS_FILE} or {PYPROJECT_FILE} in '{directory}'; create one that lists "
        "your pipeline's dependencies (at least qmtl-core and the engine you run on)"
    )


def parse_dependencies(source: str | os.PathLike[str] = ".") -> list[Requirement]:
    """Return the PEP 508 requirements of a dependency file or of a project directory.

    ``source`` is a requirements file, a ``pyproject.toml`` (its ``[project] dependencies``), or
    a directory (resolved with :func:`extract_dependencies`). Requirements files may use
    comments, line continuations, ``-r`` includes and option lines (``--index-url``, ``-c``,
    ``--hash`` ...), which are skipped. A line that is not a PEP 508 requirement (an editable
    install, a bare path or URL) raises :class:`DeployError` naming the file and line.
    """
    path = Path(source)
    if path.is_dir():
        path = extract_dependencies(path)
    if not path.is_file():
        raise DeployError(f"Dependency file '{path}' does not exist")
    if path.name == PYPROJECT_FILE:
        return _parse_pyproject(path)
    return [requirement for _, _, requirement in _walk_requirements(path, ())]


def referenced_files(requirements_file: str | os.PathLike[str]) -> list[Path]:
    """Return ``requirements_file`` and every file it includes with ``-r``/``-c``, in order.

    A Dockerfile copies all of them into the dependency layer. A missing file yields only
    ``requirements_file`` itself.
    """
    path = Path(requirements_file)
    if not path.is_file():
        return [path]
    found = [path]
    for line in _logical_lines(path):
        match = _INCLUDE.match(line)
        if match:
            for included in referenced_files(path.parent / match.group(2)):
                if included not in found:
                    found.append(included)
    return found


def _parse_pyproject(path: Path) -> list[Requirement]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise DeployError(f"Cannot read '{path}': {error}") from error
    project = data.get("project")
    if not isinstance(project, dict):
        raise DeployError(f"'{path}' has no [project] table; add one with a dependencies list")
    if "dependencies" in project.get("dynamic", []):
        raise DeployError(
            f"'{path}' declares its dependencies as dynamic, so they cannot be read without "
            "building the project; list them in [project] dependencies or use a requirements.txt"
        )
    result = []
    for text in project.get("dependencies", []):
        try:
            result.append(Requirement(text))
        except InvalidRequirement as error:
            raise DeployError(f"Invalid dependency {text!r} in '{path}': {error}") from error
    return result


def _walk_requirements(
    path: Path, seen: tuple[Path, ...]
) -> Iterator[tuple[Path, int, Requirement]]:
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise DeployError(f"Requirements files include each other in a loop: {chain}")
    if not path.is_file():
        included_from = f" (included from '{seen[-1]}')" if seen else ""
        raise DeployError(f"Requirements file '{path}' does not exist{included_from}")
    for number, line in _numbered_logical_lines(path):
        if line.startswith("-"):
            match = _INCLUDE.match(line)
            if match and match.group(1) in ("-r", "--requirement"):
                yield from _walk_requirements(path.parent / match.group(2), (*seen, resolved))
            elif line.startswith(("-e", "--editable")):
                raise DeployError(
                    f"{path}:{number}: editable install {line!r} cannot go into a dependency "
                    "layer; install the project from pyproject.toml instead"
                )
            continue  # -c constraints, --index-url and other options are not requirements
        text = _TRAILING_OPTIONS.sub("", line).strip()
        try:
            yield path, number, Requirement(text)
        except InvalidRequirement as error:
            raise DeployError(
                f"{path}:{number}: {line!r} is not a PEP 508 requirement ({error}); write it as "
                "'name[extras] specifier ; marker' or 'name @ url'"
            ) from error


def _numbered_logical_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(first line number, text)`` with continuations joined and comments removed."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not pending:
            start = number
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        line = _COMMENT.sub("", " ".join([*pending, stripped])).strip()
        pending = []
        if line:
            yield start, line
    line = _COMMENT.sub("", " ".join(pending)).strip()
    if line:
        yield start, line


def _logical_lines(path: Path) -> Iterator[str]:
    for _, line in _numbered_logical_lines(path):
        yield line
