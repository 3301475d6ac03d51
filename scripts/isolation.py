"""Run each distribution's own tests in an environment holding only that distribution.

    python scripts/isolation.py [PROJECT ...] [--drop-dependency PROJECT:REQUIREMENT] [--keep]

A shared workspace environment hides undeclared dependencies: package A imports B, B happens to
be installed for package C, and A's tests pass anyway. Here every project (the workspace members
and ``examples/plugins/qmtl-engine-threads``; PROJECT selects some by name) gets:

1. its wheel, built from its folder, installed into a new virtual environment outside the
   workspace with only what it declares (sibling ``qmtl-*`` wheels from the same build, the rest
   from the package index);
2. an import check: every module of its packages is imported there (``qmtl.testing``, which is
   test support needing pytest, is left to step 3), and ``qmtl plugins --json`` must load. A
   package named only by an extra (numpy for ``[columnar]``) is optional: a module that needs
   it may fail to import for want of it, and importing it needs no base declaration;
3. its own ``tests/`` run there, with its extras installed, pytest tooling (pytest,
   pytest-timeout, hypothesis) and the test-only packages its test files import (from the root
   ``dev`` dependency group, or a sibling wheel), never with the workspace on ``sys.path``.

``--drop-dependency qmtl-state-redis:orjson`` builds that project with the requirement removed
from its ``pyproject.toml`` (in a temporary copy), to show that a missing declaration fails.
Service variables (``QMTL_TEST_REDIS_URL``, ``QMTL_TEST_KAFKA_BOOTSTRAP``) pass through, so
``make isolation`` runs integration tests against the services ``scripts/services.py`` starts.
Exits 1 when any project fails. Standard library only; ``UV`` names the uv command.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGINS = [ROOT / "examples" / "plugins" / "qmtl-engine-threads"]
TOOLING = ("pytest", "pytest-timeout", "hypothesis")
#: Test-only dependencies that no import shows: core's tests run pipelines on the local engine
#: (``engine="local"``, the default and the contract suites' oracle), selected by name.
TEST_REQUIRES = {"qmtl-core": ["qmtl-engine-local"]}
UV = shlex.split(os.environ.get("UV", "uv"))
SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|skipped|errors?|xfailed|deselected).*?)\s*=*$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(requirement: str) -> str:
    return _norm(re.split(r"[\s\[<>=!~;(@]", requirement.strip(), maxsplit=1)[0])


@dataclass
class Project:
    folder: Path
    name: str
    dependencies: list[str]
    packages: list[str]
    #: optional-dependencies: extra name -> requirements
    extras: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> Project:
        data = tomllib.loads((folder / "pyproject.toml").read_text())
        wheel = data.get("tool", {}).get("hatch", {}).get("build", {}).get("targets", {})
        packages = [Path(p).name for p in wheel.get("wheel", {}).get("packages", [])]
        project = data["project"]
        return cls(
            folder,
            project["name"],
            project.get("dependencies", []),
            packages,
            dict(project.get("optional-dependencies", {})),
        )


@dataclass
class Outcome:
    project: str
    steps: dict[str, str] = field(default_factory=dict)
    failed: bool = False
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)


def projects(root: Path = ROOT) -> list[Project]:
    members = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    return [Project.read(root / m) for m in members["members"]] + [
        Project.read(folder) for folder in EXAMPLE_PLUGINS
    ]


def dev_group(root: Path = ROOT) -> dict[str, str]:
    """Normalized name -> requirement of the root ``dev`` dependency group."""
    data = tomllib.loads((root / "pyproject.toml").read_text())
    return {_req_name(r): r for r in data.get("dependency-groups", {}).get("dev", [])}


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(
    cmd: list[str], cwd: Path, outcome: Outcome | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, check=False
    )
    if outcome is not None:
        outcome.log.append(f"$ {shlex.join(cmd)}\n{result.stdout}{result.stderr}")
    return result


def build(project: Project, out: Path, drop: str | None, work: Path) -> Path:
    """Build ``project``'s wheel into ``out``; with ``drop``, from a copy without that
    requirement."""
    source = project.folder
    if drop is not None:
        source = work / "patched" / project.folder.name
        shutil.copytree(project.folder, source, ignore=shutil.ignore_patterns("__pycache__"))
        pyproject = source / "pyproject.toml"
        wanted = [r for r in project.dependencies if _req_name(r) == _norm(drop)]
        if not wanted:
            raise SystemExit(f"{project.name} does not declare '{drop}': {project.dependencies}")
        text = re.sub(
            r'\s*"' + re.escape(wanted[0]) + r'"\s*,?', "", pyproject.read_text(), count=1
        )
        pyproject.write_text(text)
        assert wanted[0] not in Project.read(source).dependencies
    result = run([*UV, "build", "--wheel", "--quiet", "--out-dir", str(out), str(source)], work)
    if result.returncode != 0:
        raise SystemExit(f"building {project.name} failed:\n{result.stderr}")
    stem = project.name.replace("-", "_")
    return next(out.glob(f"{stem}-*.whl"))


IMPORT_CHECK = """
import ast, importlib, json, pkgutil, re, sys
from importlib import metadata
from pathlib import Path

root, dist, packages = sys.argv[1], sys.argv[2], sys.argv[3:]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
requirement = lambda r: norm(re.split(r"[\\s\\[<>=!~;(@]", r, maxsplit=1)[0])
declared = {requirement(r) for r in metadata.requires(dist) or [] if "extra ==" not in r}
# an extra's packages (numpy for [columnar]) are optional: the modules that import them may
# fail to import without them, and their imports need no base declaration
optional = {requirement(r) for r in metadata.requires(dist) or [] if "extra ==" in r}
providers = metadata.packages_distributions()
failures, count = [], 0
for package in packages:
    module = importlib.import_module(package)
    if module.__file__.startswith(root):
        failures.append(f"{package} imported from the workspace: {module.__file__}")
    names = [package] + [i.name for i in pkgutil.walk_packages(module.__path__, package + ".")]
    for name in names:
        if ".testing" in name:  # test support: needs pytest, hypothesis (the tests' tooling)
            continue
        try:
            loaded = importlib.import_module(name)
            count += 1
        except ModuleNotFoundError as error:
            if not (error.name and norm(error.name.split(".")[0]) in optional):
                failures.append(f"{name}: {type(error).__name__}: {error}")
            continue
        except Exception as error:
            failures.append(f"{name}: {type(error).__name__}: {error}")
            continue
        # Every import in the source, lazy ones inside functions included, must come from a
        # distribution this one declares directly (not one that happens to come along).
        tree = ast.parse(Path(loaded.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top in packages or top == "__future__":
                    continue
                if norm(top) in optional:
                    continue
                owners = {norm(d) for d in providers.get(top, [])}
                if not owners:
                    failures.append(f"{name} imports {top}, which is not installed")
                elif not owners & (declared | {norm(dist)}):
                    failures.append(f"{name} imports {top} from {sorted(owners)[0]}, "
                                    f"which {dist} does not declare")
leaks = [p for p in sys.path if p.startswith(root)]
if leaks:
    failures.append(f"workspace on sys.path: {leaks}")
print(json.dumps({"modules": count, "failures": sorted(set(failures))}))
"""


def test_imports(folder: Path) -> set[str]:
    """Top-level module names the project's test files import."""
    names: set[str] = set()
    for path in (folder / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "tests", "conftest"}


def isolate(
    project: Project, wheels: Path, dev: dict[str, str], drop: str | None, keep: bool
) -> Outcome:
    outcome = Outcome(project.name)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"qmtl-isolation-{project.name}-"))
    try:
        wheel = (
            build(project, work / "wheel", drop, work)
            if drop
            else next(wheels.glob(f"{project.name.replace('-', '_')}-*.whl"))
        )
        venv = work / "venv"
        python = venv / "bin" / "python"
        run(
            [
                *UV,
                "venv",
                "--quiet",
                "--python",
                f"{sys.version_info[0]}.{sys.version_info[1]}",
                str(venv),
            ],
            work,
            outcome,
        )
        installed = run(
            [
                *UV,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(python),
                str(wheel),
                "--find-links",
                str(wheels),
            ],
            work,
            outcome,
        )
        if installed.returncode != 0:
            outcome.steps["install"] = "FAILED"
            outcome.failed = True
            return outcome
        freeze = run([*UV, "pip", "freeze", "--python", str(python)], work).stdout.split()
        outcome.steps["install"] = f"{len(freeze)} packages"

        check = run(
            [str(python), "-c", IMPORT_CHECK, str(ROOT), project.name, *project.packages],
            work,
            outcome,
        )
        plugins = run([str(venv / "bin" / "qmtl"), "plugins", "--json"], work, outcome)
        if check.returncode != 0 or plugins.returncode != 0:
            outcome.steps["imports"] = "FAILED"
            outcome.failed = True
        else:
            import json

            report = json.loads(check.stdout.strip().splitlines()[-1])
            outcome.steps["imports"] = (
                f"{report['modules']} modules ok"
                if not report["failures"]
                else "FAILED: " + "; ".join(report["failures"])
            )
            outcome.failed |= bool(report["failures"])

        if not (project.folder / "tests").is_dir() or not any(
            (project.folder / "tests").rglob("test_*.py")
        ):
            outcome.steps["tests"] = "no tests"
            return outcome
        extra = [dev.get(name, name) for name in TOOLING] + TEST_REQUIRES.get(project.name, [])
        if project.extras:  # the tests exercise the optional features too
            extra.append(f"{project.name}[{','.join(sorted(project.extras))}]")
        from_extras = {_req_name(r) for reqs in project.extras.values() for r in reqs}
        siblings = {p.name.replace("-", "_"): p.name for p in projects()}
        siblings["qmtl"] = "qmtl-core"
        missing = []
        for name in sorted(test_imports(project.folder)):
            probe = run(
                [
                    str(python),
                    "-c",
                    f"import importlib.util as u; raise SystemExit(u.find_spec({name!r}) is None)",
                ],
                work,
            )
            if probe.returncode == 0 or _norm(name) in TOOLING or _norm(name) in from_extras:
                continue
            if name in siblings:
                extra.append(siblings[name])
            elif _norm(name) in dev:
                extra.append(dev[_norm(name)])
            else:
                missing.append(name)
        if missing:
            outcome.log.append(f"tests import {missing}, which nothing declares")
        run(
            [
                *UV,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(python),
                *extra,
                "--find-links",
                str(wheels),
            ],
            work,
            outcome,
        )
        tests = run(
            [
                str(python),
                "-m",
                "pytest",
                str(project.folder / "tests"),
                "-q",
                "-p",
                "no:cacheprovider",
                "--rootdir",
                str(
                    project.folder
                    if (project.folder / "pyproject.toml")
                    .read_text()
                    .count("[tool.pytest.ini_options]")
                    else ROOT
                ),
            ],
            work,
            outcome,
        )
        lines = [
            m.group(1) for line in tests.stdout.splitlines() if (m := SUMMARY.match(line.strip()))
        ]
        summary = lines[-1] if lines else f"exit {tests.returncode}"
        if tests.returncode == 5:
            outcome.steps["tests"] = "no tests collected"
        elif tests.returncode != 0:
            outcome.steps["tests"] = f"FAILED ({summary})"
            outcome.failed = True
        else:
            outcome.steps["tests"] = summary
        return outcome
    finally:
        outcome.seconds = time.perf_counter() - started
        if keep:
            outcome.log.append(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="project names (default: all)")
    parser.add_argument(
        "--drop-dependency",
        metavar="PROJECT:REQUIREMENT",
        help="build PROJECT without REQUIREMENT, to show the run catches it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the environments")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every command's output")
    args = parser.parse_args(argv)
    selected = [p for p in projects() if not args.only or p.name in args.only]
    unknown = set(args.only) - {p.name for p in selected}
    if unknown:
        parser.error(f"unknown projects {sorted(unknown)}; known: {[p.name for p in projects()]}")
    drop_project, _, drop = (args.drop_dependency or "").partition(":")

    with tempfile.TemporaryDirectory(prefix="qmtl-isolation-wheels-") as tmp:
        wheels = Path(tmp)
        started = time.perf_counter()
        built = run(
            [*UV, "build", "--all-packages", "--wheel", "--quiet", "--out-dir", str(wheels)], ROOT
        )
        for folder in EXAMPLE_PLUGINS:
            built = (
                built
                if built.returncode
                else run(
                    [*UV, "build", "--wheel", "--quiet", "--out-dir", str(wheels), str(folder)],
                    ROOT,
                )
            )
        if built.returncode != 0:
            print(built.stderr, file=sys.stderr)
            return 1
        print(
            f"built {len(list(wheels.glob('*.whl')))} wheels in "
            f"{time.perf_counter() - started:.1f}s"
        )
        outcomes = []
        for project in selected:
            outcome = isolate(
                project,
                wheels,
                dev_group(),
                drop if project.name == drop_project else None,
                args.keep,
            )
            outcomes.append(outcome)
            mark = "FAIL" if outcome.failed else "ok"
            print(
                f"{mark:<4} {project.name:<22} {outcome.seconds:5.1f}s  "
                + "  |  ".join(f"{k}: {v}" for k, v in outcome.steps.items()),
                flush=True,
            )
            if outcome.failed or args.verbose:
                for entry in outcome.log:
                    print("    " + entry.replace("\n", "\n    ").rstrip(), file=sys.stderr)
    failed = [o.project for o in outcomes if o.failed]
    if failed:
        print(f"isolation failed for {failed}", file=sys.stderr)
        return 1
    print(f"{len(outcomes)} distributions pass on their own")
    return 0


if __name__ == "__main__":
    sys.exit(main())
