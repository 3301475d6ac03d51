"""Run the unit tests with every dependency at the lowest version the distributions declare.

    python scripts/floors.py [PROJECT ...] [--python VERSION] [--keep] [-v]

A declared floor (``pydantic-settings>=2.3``) is a promise nothing else tests: the lock file
always holds recent versions. Here every project (the workspace members and
``examples/plugins/qmtl-engine-threads``; PROJECT selects some by name) gets a fresh virtual
environment on the oldest supported Python (the root ``requires-python``) holding:

- its wheel with all its extras, and the sibling ``qmtl-*`` wheels it needs, from this checkout;
- every requirement it declares (dependencies and all extras), passed as *direct* requirements
  to ``uv pip install --resolution lowest-direct`` so each resolves to its floor (a wheel's own
  requirements would count as transitive and resolve to the newest);
- pytest tooling from the root ``dev`` group, also at its floors, and the test-only packages its
  tests import (sibling wheels, or the ``dev`` group's requirement, as ``scripts/isolation.py``
  finds them);

with ``UV_NO_BUILD=1``: a floor without a wheel for that Python fails rather than compiling.
Then its own ``tests/`` run there without the integration tests; a last environment holds every
project at once (each requirement at the highest of the floors declared for it) for the root
``tests/``. It fails when a test fails, when a requirement declares no lower bound, or when a
floor cannot be installed next to the siblings (the lowest installable version is higher: the
floor is a lie). New dependencies and extras are picked up from the ``pyproject.toml`` files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import isolation  # noqa: E402  (a sibling script: same folder, on sys.path above)

#: Tests of this selection need no service and build no wheels.
MARKERS = "not integration and not slow"


@dataclass
class Floors:
    """One environment: what goes in and what the run found."""

    name: str
    wheels: list[str]
    requirements: list[str]
    tests: list[Path]
    problems: list[str] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    seconds: float = 0.0


def declared(folder: Path) -> tuple[list[str], list[str]]:
    """(requirements from dependencies and every extra, extra names) of a project."""
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    requirements = list(project.get("dependencies", []))
    for values in extras.values():
        requirements += values
    return requirements, sorted(extras)


def oldest_python(root: Path = ROOT) -> str:
    """The lowest ``X.Y`` of the root ``requires-python`` (``>=3.11`` -> ``3.11``)."""
    spec = tomllib.loads((root / "pyproject.toml").read_text())["project"]["requires-python"]
    found = re.search(r">=\s*(\d+\.\d+)", spec)
    if not found:
        raise SystemExit(f"root requires-python {spec!r} has no '>=X.Y' lower bound")
    return found.group(1)


def lower_bound(requirement: Requirement) -> Version | None:
    """The version a ``>=``, ``==`` or ``~=`` clause of the requirement starts at."""
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return max(bounds) if bounds else None


def plan(wheels: Path, only: list[str]) -> list[Floors]:
    """The environments to build: one per selected project, then one for the root tests."""
    projects = isolation.projects()
    dev = isolation.dev_group()
    tooling = [dev.get(name, name) for name in isolation.TOOLING]
    envs: list[Floors] = []
    everything: list[str] = []
    all_wheels: list[str] = []
    for project in projects:
        requirements, extras = declared(project.folder)
        wheel = wheel_requirement(wheels, project.name, extras)
        foreign = [r for r in requirements if not _is_sibling(r, projects)]
        if project.folder.parent == ROOT:
            everything += foreign
            all_wheels.append(wheel)
        if only and project.name not in only:
            continue
        tests = project.folder / "tests"
        if not any(tests.rglob("test_*.py")):
            continue
        needs = test_needs(project.folder, wheels, projects, dev, skip=project.name)
        needs += [
            wheel_requirement(wheels, name, [])
            for name in isolation.TEST_REQUIRES.get(project.name, [])
        ]
        envs.append(Floors(project.name, [wheel, *needs], _unique(foreign + tooling), [tests]))
    if not only or "tests" in only:
        needs = test_needs(ROOT, wheels, projects, dev, skip="")
        root_wheels = [w for w in needs if w not in all_wheels]
        envs.append(
            Floors(
                "tests (all)",
                all_wheels + root_wheels,
                _unique(everything + tooling),
                [ROOT / "tests"],
            )
        )
    return envs


def _unique(requirements: list[str]) -> list[str]:
    return list(dict.fromkeys(requirements))


def _is_sibling(requirement: str, projects: list[isolation.Project]) -> bool:
    return isolation._req_name(requirement) in {p.name for p in projects}


def test_needs(
    folder: Path,
    wheels: Path,
    projects: list[isolation.Project],
    dev: dict[str, str],
    skip: str,
) -> list[str]:
    """Sibling wheels and dev-group packages that the tests under ``folder`` import."""
    names = {p.name for p in projects}
    needs: list[str] = []
    for module in sorted(isolation.test_imports(folder)):
        norm = isolation._norm(module)
        sibling = "qmtl-core" if module == "qmtl" else norm
        if sibling in names and sibling != skip:
            needs.append(wheel_requirement(wheels, sibling, []))
        elif norm in dev and norm not in isolation.TOOLING:
            needs.append(dev[norm])
    return needs


def wheel_requirement(wheels: Path, name: str, extras: list[str]) -> str:
    path = next(wheels.glob(f"{name.replace('-', '_')}-*.whl"))
    return f"{name}[{','.join(extras)}] @ {path.as_uri()}" if extras else str(path)


def build_wheels(out: Path) -> None:
    built = isolation.run(
        [*isolation.UV, "build", "--all-packages", "--wheel", "--quiet", "--out-dir", str(out)],
        ROOT,
    )
    for folder in isolation.EXAMPLE_PLUGINS:
        if built.returncode == 0:
            built = isolation.run(
                [*isolation.UV, "build", "--wheel", "--quiet", "--out-dir", str(out), str(folder)],
                ROOT,
            )
    if built.returncode != 0:
        raise SystemExit(f"building the wheels failed:\n{built.stderr}")


def _uv(args: list[str], work: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*isolation.UV, *args],
        cwd=work,
        env={**isolation.clean_env(), **env},
        capture_output=True,
        text=True,
        check=False,
    )


def check_env(env: Floors, wheels: Path, python: str, work: Path, verbose: bool) -> None:
    started = time.perf_counter()
    venv = work / "venv"
    made = _uv(["venv", "--quiet", "--python", python, str(venv)], work)
    if made.returncode != 0:
        env.problems.append(f"uv venv --python {python} failed: {made.stderr.strip()}")
        return
    interpreter = venv / "bin" / "python"
    install = [
        "pip",
        "install",
        "--quiet",
        "--python",
        str(interpreter),
        "--resolution",
        "lowest-direct",
        "--find-links",
        str(wheels),
        *env.wheels,
        *env.requirements,
    ]
    installed = _uv(install, work, UV_NO_BUILD="1")
    if installed.returncode != 0:
        env.problems.append(f"installing at the floors failed:\n{installed.stderr.strip()}")
        return
    listed = _uv(["pip", "list", "--format", "json", "--python", str(interpreter)], work)
    versions = {isolation._norm(d["name"]): d["version"] for d in json.loads(listed.stdout)}
    for line in env.requirements:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = isolation._norm(requirement.name)
        floor = lower_bound(requirement)
        have = versions.get(name)
        if floor is None:
            env.problems.append(f"'{line}' declares no lower bound: give it the oldest tested one")
        elif have is None:
            env.problems.append(f"'{line}' was not installed")
        elif not _at_floor(Version(have), floor, line, work) and not _raised_by_another(
            name, env.requirements, have
        ):
            env.problems.append(
                f"'{line}': the lowest version installable here is {have}, not {floor}; "
                f"raise the floor to {have} (or find what holds it up)"
            )
        if have is not None:
            env.resolved[name] = have
    command = [
        str(interpreter),
        "-m",
        "pytest",
        *map(str, env.tests),
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        MARKERS,
        "--rootdir",
        str(ROOT),
        "-c",
        str(ROOT / "pyproject.toml"),
    ]
    tests = subprocess.run(
        command, cwd=ROOT, env=isolation.clean_env(), capture_output=True, text=True, check=False
    )
    lines = [
        m.group(1)
        for line in tests.stdout.splitlines()
        if (m := isolation.SUMMARY.match(line.strip()))
    ]
    env.summary = lines[-1] if lines else f"exit {tests.returncode}"
    if tests.returncode != 0:
        env.problems.append(f"tests failed ({env.summary}):\n{_tail(tests.stdout + tests.stderr)}")
    elif verbose:
        print(tests.stdout, file=sys.stderr)
    env.seconds = time.perf_counter() - started


def _at_floor(have: Version, floor: Version, requirement: str, work: Path) -> bool:
    """True when ``have`` is the oldest release the requirement allows. ``>=2.3`` may start at
    2.3.1 when no 2.3 was ever released: then the requirement alone is resolved to its lowest
    release (a second, single-requirement resolution) and compared."""
    if have == floor or have.release[: len(floor.release)] == floor.release:
        return True
    alone = subprocess.run(
        [
            *isolation.UV,
            "pip",
            "compile",
            "-",
            "--quiet",
            "--no-header",
            "--no-annotate",
            "--resolution",
            "lowest-direct",
        ],
        input=requirement,
        cwd=work,
        env={**isolation.clean_env(), "UV_NO_BUILD": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    name = isolation._req_name(requirement)
    for line in alone.stdout.splitlines():
        pinned, _, version = line.partition("==")
        if isolation._norm(pinned.strip()) == name:
            return Version(version.strip()) == have
    return False


def _raised_by_another(name: str, requirements: list[str], have: str) -> bool:
    """True when another declared requirement of the same name asks for ``have`` or more (the
    combined environment: each package's floor of a shared dependency differs)."""
    floors = [
        lower_bound(r) for r in map(Requirement, requirements) if isolation._norm(r.name) == name
    ]
    return Version(have) in {f for f in floors if f is not None}


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="project names, or 'tests' (default: all)")
    parser.add_argument("--python", default=oldest_python(), help="Python X.Y or a path")
    parser.add_argument("--keep", action="store_true", help="keep the environments")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the test output")
    parser.add_argument(
        "-j", "--jobs", type=int, default=os.cpu_count() or 1, help="environments at once"
    )
    args = parser.parse_args(argv)
    known = {p.name for p in isolation.projects()} | {"tests"}
    if set(args.only) - known:
        parser.error(f"unknown {sorted(set(args.only) - known)}; known: {sorted(known)}")
    work = Path(tempfile.mkdtemp(prefix="qmtl-floors-"))
    failed: list[str] = []
    try:
        started = time.perf_counter()
        build_wheels(work / "wheels")
        print(f"built the wheels in {time.perf_counter() - started:.1f}s; Python {args.python}")
        envs = plan(work / "wheels", args.only)
        for index in range(len(envs)):
            (work / f"env{index}").mkdir()

        def one(index: int) -> Floors:
            check_env(envs[index], work / "wheels", args.python, work / f"env{index}", args.verbose)
            return envs[index]

        # Each environment's pytest is one process on one core: they run side by side, the
        # longest (the root tests, last in the plan) started first.
        order = sorted(range(len(envs)), key=lambda i: envs[i].name != "tests (all)")
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            done = dict(zip(order, pool.map(one, order), strict=True))
        for index in range(len(envs)):
            env = done[index]
            mark = "FAIL" if env.problems else "ok"
            floors = " ".join(f"{k}=={v}" for k, v in sorted(env.resolved.items()))
            print(f"{mark:<4} {env.name:<22} {env.seconds:5.1f}s  {env.summary}", flush=True)
            print(f"     at: {floors}", flush=True)
            for problem in env.problems:
                print(f"     - {problem}", file=sys.stderr, flush=True)
            if env.problems:
                failed.append(env.name)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        print(f"floors fail for {failed}", file=sys.stderr)
        return 1
    print("every declared floor installs and passes the unit tests")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
