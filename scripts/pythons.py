"""Run the unit tests on every Python version QMTL declares, not only the workspace's.

    python scripts/pythons.py [VERSION ...] [--all] [-- PYTEST ARGS]

``TESTED`` is the list of Python versions the distributions declare as classifiers
(``scripts/dist_check.py`` fails a build whose classifiers differ from it, or whose
``requires-python`` has an upper cap). ``make test`` runs everything on the workspace's own
Python (the oldest, 3.11); this script runs the unit tests (no services, no wheel builds: the
``integration`` and ``slow`` markers are left out) on the others, each in its own environment
``.venvs/py<X.Y>`` synced from ``uv.lock`` (``uv sync --all-packages --locked``), so the same
locked versions are tested everywhere. ``--all`` includes the workspace's version.

An interpreter is found, in order, through ``QMTL_PYTHON_<X>_<Y>`` (a path), pyenv's
``$PYENV_ROOT/versions/<X.Y.*>`` (the machine image has them there; pyenv's shims do not
answer for a version that is not selected, so uv alone does not find them), ``uv python find``
and ``python<X.Y>`` on ``PATH``. A version that cannot be found fails with how to install it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The Python versions QMTL is tested on and declares; the first is ``requires-python``'s floor.
TESTED = ("3.11", "3.12", "3.13")
MARKERS = "not integration and not slow"
UV = shlex.split(os.environ.get("UV", "uv"))


def _answers(python: str, version: str) -> bool:
    """True when ``python`` runs and is CPython ``version``."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def _pyenv_candidates(version: str) -> list[Path]:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = [p for p in root.glob(f"{version}.*") if re.fullmatch(rf"{version}\.\d+", p.name)]
    found.sort(key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True)
    return [p / "bin" / f"python{version}" for p in found]


def find_python(version: str) -> str:
    """Path of a working CPython ``version`` interpreter, or SystemExit naming how to get one."""
    candidates: list[str] = []
    variable = f"QMTL_PYTHON_{version.replace('.', '_')}"
    if os.environ.get(variable):
        candidates.append(os.environ[variable])
    candidates += [str(p) for p in _pyenv_candidates(version)]
    found = subprocess.run(
        [*UV, "python", "find", "--no-project", version],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode == 0 and found.stdout.strip():
        candidates.append(found.stdout.strip())
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if _answers(candidate, version):
            return candidate
    raise SystemExit(
        f"no Python {version} found (tried {variable}, pyenv's versions folder, `uv python "
        f"find {version}` and python{version} on PATH): install it (`pyenv install {version}` "
        f"or `uv python install {version}`) or set {variable} to its path"
    )


def run_unit_tests(version: str, pytest_args: list[str]) -> tuple[bool, str]:
    """Sync ``.venvs/py<version>`` from the lock with that interpreter and run the unit tests."""
    python = find_python(version)
    venv = ROOT / ".venvs" / f"py{version}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT"}
    }
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    synced = subprocess.run(
        [*UV, "sync", "--all-packages", "--locked", "--quiet", "--python", python],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if synced.returncode != 0:
        return False, f"uv sync with {python} failed:\n{synced.stderr.strip()}"
    command = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    tests = subprocess.run(
        [*command, "-m", MARKERS, *pytest_args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = (tests.stdout + tests.stderr).strip().splitlines()
    summary = output[-1] if output else f"exit {tests.returncode}"
    if tests.returncode != 0:
        return False, f"{python}: {summary}\n" + "\n".join(output[-60:])
    return True, f"{python}: {summary}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pytest_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, pytest_args = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="*", help=f"versions to run (default: {TESTED[1:]})")
    parser.add_argument("--all", action="store_true", help="include the workspace's own version")
    parser.add_argument(
        "-j", "--jobs", type=int, default=os.cpu_count() or 1, help="versions run at once"
    )
    args = parser.parse_args(argv)
    unknown = set(args.versions) - set(TESTED)
    if unknown:
        parser.error(f"{sorted(unknown)} are not declared; TESTED = {TESTED}")
    versions = args.versions or list(TESTED if args.all else TESTED[1:])
    for version in versions:
        find_python(version)  # fail fast, before any environment is built

    def one(version: str) -> tuple[str, bool, str]:
        started = time.perf_counter()
        ok, report = run_unit_tests(version, pytest_args)
        return version, ok, f"{time.perf_counter() - started:5.1f}s  {report}"

    failed = []
    # Each pytest is one process on one core: the versions run side by side.
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for version, ok, report in pool.map(one, versions):
            print(f"{'ok' if ok else 'FAIL':<4} Python {version}  {report}", flush=True)
            if not ok:
                failed.append(version)
    if failed:
        print(f"unit tests fail on Python {failed}", file=sys.stderr)
        return 1
    print(f"unit tests pass on Python {', '.join(versions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
