"""Fixtures of the qmtl-deploy tests: a stand-in ``docker`` executable and manifest validation.

The stand-in is a real executable placed first on PATH; it records each invocation's arguments
as one JSON line and behaves like docker according to ``FAKE_DOCKER_MODE``. The real docker
client (and any engine) is never reached, because PATH is replaced for every test that uses it.
"""

from __future__ import annotations

import json
import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

FAKE_DOCKER = """\
#!{python}
import json, os, sys, time
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")
mode = os.environ.get("FAKE_DOCKER_MODE", "ok")
if args[:1] == ["version"]:
    if mode == "daemon-down":
        print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
              "Is the docker daemon running?", file=sys.stderr)
        sys.exit(1)
    print("27.3.1")
    sys.exit(0)
if mode == "fail" and args[:1] == ["build"]:
    print("#5 [2/6] RUN pip install --no-cache-dir -r requirements.txt")
    print("ERROR: No matching distribution found for qmtl-nonexistent", file=sys.stderr)
    sys.exit(1)
if mode == "daemon-lost":
    print("error during connect: Post http://docker/v1.47/build: EOF", file=sys.stderr)
    sys.exit(1)
print(f"step 1/2 {{args[0]}}", flush=True)
go = os.environ.get("FAKE_DOCKER_GO")
if go:  # wait until the test has seen the first line: proves output is streamed
    deadline = time.monotonic() + 10
    while not Path(go).exists():
        if time.monotonic() > deadline:
            print("first line was not delivered while docker was still running")
            sys.exit(3)
        time.sleep(0.01)
print(f"step 2/2 {{args[0]}} done", file=sys.stderr, flush=True)
"""


class FakeDocker:
    """Handle on the stand-in docker: its mode and the argument lists it was called with."""

    def __init__(self, bin_dir: Path, log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bin_dir = bin_dir
        self.log = log
        self._monkeypatch = monkeypatch

    def set_mode(self, mode: str) -> None:
        self._monkeypatch.setenv("FAKE_DOCKER_MODE", mode)

    @property
    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def calls_without_version(self) -> list[list[str]]:
        return [call for call in self.calls if call[:1] != ["version"]]


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    """Put a recording stand-in ``docker`` first on PATH (and nothing else that is docker)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable), encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log = tmp_path / "docker-calls.jsonl"
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_DOCKER_MODE", "ok")
    monkeypatch.delenv("FAKE_DOCKER_GO", raising=False)
    # Only the stand-in: the real docker client in /usr/local/bin must never be found.
    monkeypatch.setenv("PATH", str(bin_dir))
    return FakeDocker(bin_dir, log, monkeypatch)


@pytest.fixture
def no_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH on which no docker executable exists."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


#: Kubernetes versions every generated manifest must validate against (schemas ship offline).
K8S_VERSIONS = ("1.31", "1.37")


def _assert_valid_manifest(manifest: Any) -> dict[str, Any]:
    from kubernetes_validate import utils

    data = manifest.to_dict() if hasattr(manifest, "to_dict") else manifest
    for version in (*K8S_VERSIONS, utils.latest_version()):
        utils.validate(data, version, strict=True)
    return data


@pytest.fixture
def assert_valid_manifest() -> Any:
    """Validate a manifest (model or dict) strictly against the bundled Kubernetes schemas."""
    return _assert_valid_manifest


@pytest.fixture
def make_project(tmp_path: Path) -> Any:
    """``make_project({"requirements.txt": "...", ...})`` creates files in a new project folder."""

    def make(files: dict[str, str], name: str = "project") -> Path:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        for relative, text in files.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return directory

    return make
