"""Check the built sdists and wheels of the QMTL distributions before a release.

    python scripts/dist_check.py DIST_DIR [--package NAME ...] [--project DIR ...]

DIST_DIR holds what ``uv build --all-packages --out-dir DIST_DIR`` produced. By default the
projects are the workspace members of the root ``pyproject.toml``; ``--package`` selects members
by distribution name (``make dist PACKAGE=...``), ``--project`` checks other folders (e.g.
``examples/plugins/qmtl-engine-threads``). For every project it checks that DIST_DIR holds
exactly one sdist and one wheel of the version in its ``pyproject.toml`` (and nothing else), and
in both:

- core metadata: summary, README as a markdown long description, ``License-Expression`` with
  its license files inside the archive and no deprecated ``License ::`` classifiers,
  classifiers, ``Requires-Python``, Homepage/Source/Changelog URLs;
- the ``Programming Language :: Python :: 3.X`` classifiers are exactly the versions the unit
  tests run on (``TESTED`` in ``scripts/pythons.py``) and ``Requires-Python`` is a floor with
  no upper cap (a cap breaks resolvers for every user of a newer Python);
- every dependency on a sibling ``qmtl-*`` distribution is a bounded range (``>=x,<y``) that
  holds the sibling's current version;
- ``CHANGELOG.md`` has an entry for the version (a development version, ``0.1.2.dev0``, which
  is never published, an ``## Unreleased`` section instead) and ships in the sdist;
- the wheel holds the package and ``py.typed`` (the ``Typing :: Typed`` classifier), no tests,
  and its ``qmtl`` entry points name modules inside the wheel.

Standard library only (``packaging`` when available, for version ranges). Exits 1 listing every
problem. ``twine check --strict`` runs separately (``make dist``).
"""

from __future__ import annotations

import argparse
import email.parser
import re
import sys
import tarfile
import tomllib
import zipfile
from configparser import ConfigParser
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_URLS = ("Homepage", "Source", "Changelog")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pythons import TESTED  # noqa: E402  (a sibling script: same folder, on sys.path above)

PYTHON_CLASSIFIER = re.compile(r"^Programming Language :: Python :: (3\.\d+)$")


@dataclass(frozen=True)
class Project:
    folder: Path
    name: str
    version: str
    packages: tuple[str, ...]

    @property
    def stem(self) -> str:
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}"


def workspace_projects(root: Path = ROOT) -> list[Path]:
    """The member folders of the uv workspace, in declaration order."""
    data = tomllib.loads((root / "pyproject.toml").read_text())
    return [root / member for member in data["tool"]["uv"]["workspace"]["members"]]


def read_project(folder: Path) -> Project:
    data = tomllib.loads((folder / "pyproject.toml").read_text())
    project = data["project"]
    hatch = data.get("tool", {}).get("hatch", {})
    wheel = hatch.get("build", {}).get("targets", {}).get("wheel", {})
    packages = tuple(Path(p).name for p in wheel.get("packages", ()))
    return Project(folder, project["name"], project["version"], packages)


def _metadata(text: str) -> Message:
    return email.parser.Parser().parsestr(text)


def _wheel_files(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _sdist_files(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            if member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                files[member.name.split("/", 1)[1]] = extracted.read()
    return files


def _check_metadata(
    where: str, meta: Message, project: Project, readme: str, versions: dict[str, str]
) -> list[str]:
    problems = []
    if meta["Name"] != project.name or meta["Version"] != project.version:
        problems.append(f"{where}: Name/Version {meta['Name']} {meta['Version']} != pyproject")
    if not (meta["Summary"] or "").strip():
        problems.append(f"{where}: no Summary (description)")
    body = meta.get_payload()
    if not isinstance(body, str) or body.strip() != readme.strip():
        problems.append(f"{where}: long description is not README.md")
    if not (meta["Description-Content-Type"] or "").startswith("text/markdown"):
        problems.append(f"{where}: Description-Content-Type is not text/markdown")
    if not meta["License-Expression"]:
        problems.append(f"{where}: no License-Expression")
    if not meta.get_all("License-File"):
        problems.append(f"{where}: no License-File")
    classifiers = meta.get_all("Classifier") or []
    if any(c.startswith("License ::") for c in classifiers):
        problems.append(f"{where}: deprecated 'License ::' classifier next to License-Expression")
    for wanted in ("Development Status ::", "Programming Language :: Python :: 3"):
        if not any(c.startswith(wanted) for c in classifiers):
            problems.append(f"{where}: no '{wanted}' classifier")
    problems += _check_pythons(where, meta["Requires-Python"], classifiers)
    urls = {u.split(",", 1)[0].strip() for u in meta.get_all("Project-URL") or []}
    problems += [f"{where}: no Project-URL {label}" for label in REQUIRED_URLS if label not in urls]
    for line in meta.get_all("Requires-Dist") or []:
        problems += _check_sibling_pin(where, line, versions)
    return problems


def _check_pythons(where: str, requires: str | None, classifiers: list[str]) -> list[str]:
    if not requires:
        return [f"{where}: no Requires-Python"]
    problems = []
    if re.search(r"<|~=|==|!=", requires):
        problems.append(
            f"{where}: Requires-Python '{requires}' caps or pins the version; declare only the "
            f"floor ('>={TESTED[0]}') and list tested versions as classifiers"
        )
    elif requires.replace(" ", "") != f">={TESTED[0]}":
        problems.append(f"{where}: Requires-Python '{requires}' is not '>={TESTED[0]}' (TESTED)")
    declared = sorted(m.group(1) for c in classifiers if (m := PYTHON_CLASSIFIER.match(c)))
    if declared != sorted(TESTED):
        problems.append(
            f"{where}: Python classifiers {declared} differ from the tested versions "
            f"{list(TESTED)} (scripts/pythons.py)"
        )
    return problems


def _check_sibling_pin(where: str, line: str, versions: dict[str, str]) -> list[str]:
    name = re.split(r"[\s\[<>=!~;(]", line, maxsplit=1)[0].lower().replace("_", "-")
    if name not in versions:
        return []
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:  # pragma: no cover - the workspace environment has packaging
        return [] if "<" in line else [f"{where}: '{line}' has no upper bound"]
    specifier = Requirement(line).specifier
    problems = []
    if not any(s.operator in ("<", "<=", "~=", "==") for s in specifier):
        problems.append(f"{where}: '{line}' has no upper bound; pin a compatible range")
    if not specifier.contains(Version(versions[name]), prereleases=True):
        problems.append(f"{where}: '{line}' excludes {name} {versions[name]} built alongside")
    return problems


def _is_dev(version: str) -> bool:
    return bool(re.search(r"\.dev\d*$", version))


def check_project(dist: Path, project: Project, versions: dict[str, str]) -> list[str]:
    problems: list[str] = []
    sdists = sorted(dist.glob(f"{project.stem}.tar.gz"))
    wheels = sorted(dist.glob(f"{project.stem}-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        return [
            f"{project.name}: expected one sdist and one wheel of {project.version} in {dist}, "
            f"found {[p.name for p in sdists + wheels]}"
        ]
    readme = (project.folder / "README.md").read_text()
    changelog = project.folder / "CHANGELOG.md"
    if not changelog.exists():
        problems.append(f"{project.name}: no CHANGELOG.md")
    else:
        heading = "Unreleased" if _is_dev(project.version) else project.version
        if not re.search(rf"^##\s+\[?{re.escape(heading)}\]?(\s|$)", changelog.read_text(), re.M):
            problems.append(f"{project.name}: CHANGELOG.md has no '## {heading}' entry")

    sdist = _sdist_files(sdists[0])
    problems += _check_metadata(
        sdists[0].name, _metadata(sdist["PKG-INFO"].decode()), project, readme, versions
    )
    for required in ("pyproject.toml", "README.md", "CHANGELOG.md"):
        if required not in sdist:
            problems.append(f"{sdists[0].name}: {required} missing")

    wheel = _wheel_files(wheels[0])
    info = f"{project.stem}.dist-info"
    meta = _metadata(wheel[f"{info}/METADATA"].decode())
    problems += _check_metadata(wheels[0].name, meta, project, readme, versions)
    for license_file in meta.get_all("License-File") or []:
        if f"{info}/licenses/{license_file}" not in wheel:
            problems.append(f"{wheels[0].name}: license file {license_file} not in the wheel")
        if license_file not in sdist:
            problems.append(f"{sdists[0].name}: license file {license_file} not in the sdist")
    for package in project.packages:
        if f"{package}/__init__.py" not in wheel:
            problems.append(f"{wheels[0].name}: package {package} missing")
        typed = "Typing :: Typed" in (meta.get_all("Classifier") or [])
        if typed and f"{package}/py.typed" not in wheel:
            problems.append(f"{wheels[0].name}: 'Typing :: Typed' but no {package}/py.typed")
    strays = [n for n in wheel if n.startswith(("tests/", "test/")) or "/tests/" in n]
    if strays:
        problems.append(f"{wheels[0].name}: ships test files {strays[:3]}")
    if f"{info}/entry_points.txt" in wheel:
        entry_points = ConfigParser()
        entry_points.read_string(wheel[f"{info}/entry_points.txt"].decode())
        if entry_points.has_section("qmtl"):
            for key, target in entry_points.items("qmtl"):
                module = target.split(":", 1)[0].strip().replace(".", "/")
                if f"{module}.py" not in wheel and f"{module}/__init__.py" not in wheel:
                    problems.append(f"{wheels[0].name}: entry point {key} = {target} not in wheel")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dist", type=Path, help="folder with the built sdists and wheels")
    parser.add_argument(
        "--package",
        action="append",
        default=[],
        help="workspace member to check, by distribution name (default: all of them)",
    )
    parser.add_argument(
        "--project",
        type=Path,
        action="append",
        default=[],
        help="project folder to check instead of the workspace members",
    )
    args = parser.parse_args(argv)
    members = {read_project(f).name: f for f in workspace_projects()}
    unknown = sorted(set(args.package) - set(members))
    if unknown:
        parser.error(f"unknown package {unknown}; the workspace has {sorted(members)}")
    folders = [p.resolve() for p in args.project] + [members[name] for name in args.package]
    projects = [read_project(folder) for folder in folders or workspace_projects()]
    versions = {read_project(f).name: read_project(f).version for f in workspace_projects()}
    versions.update({p.name: p.version for p in projects})
    problems: list[str] = []
    for project in projects:
        found = check_project(args.dist, project, versions)
        status = "ok" if not found else f"{len(found)} problem(s)"
        print(f"{project.name:<22} {project.version:<8} sdist+wheel metadata: {status}")
        problems += found
    matched = {
        path.name
        for p in projects
        for path in [*args.dist.glob(f"{p.stem}.tar.gz"), *args.dist.glob(f"{p.stem}-*.whl")]
    }
    extra = sorted(
        p.name
        for p in args.dist.glob("*")
        if p.name.endswith((".tar.gz", ".whl")) and p.name not in matched
    )
    if extra:
        problems.append(f"{args.dist}: artifacts of no checked project: {extra}")
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{len(projects)} sdists and {len(projects)} wheels pass the metadata check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
