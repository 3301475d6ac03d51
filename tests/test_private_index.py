"""Publishing one distribution to a real package index and installing it from there.

A pypiserver on a free loopback port stands in for a private index. ``make dist PACKAGE=...``
builds qmtl-core and qmtl-state-redis one at a time (each leaves exactly its sdist and wheel),
``twine upload`` sends one package's files at a time, and plain pip (``python -m venv``, no uv)
installs qmtl-state-redis from that index into a fresh environment; the third-party
dependencies come through the index's fallback to the public index. The installed package then
runs a pipeline with its state in the test Redis.

The dependency-confusion risk of RELEASING.md is shown on a second pypiserver standing in for
the public index, where a stranger published ``qmtl-state-redis 99.0.0``: pip with
``--extra-index-url`` takes the stranger's higher version; the safe forms (the private index
alone, or uv's first-index rule) take ours.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("qmtl-core", "qmtl-state-redis")

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def run(cmd: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=500)
    if ok:
        assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
    return done


def version_of(name: str) -> str:
    text = (ROOT / name / "pyproject.toml").read_text()
    return str(tomllib.loads(text)["project"]["version"])


def uv_command() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Index:
    """A pypiserver serving ``folder`` on loopback; uploads need no password here."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.simple = f"{self.url}/simple/"
        command = [sys.executable, "-m", "pypiserver", "run", "-p", str(self.port)]
        command += ["-i", "127.0.0.1", "-a", ".", "-P", ".", "--log-stream", "none"]
        self.process = subprocess.Popen(
            [*command, str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"pypiserver did not start on port {self.port}")
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``make dist PACKAGE=<name> DIST=<folder>`` for each package, one folder each."""
    found = {}
    for name in PACKAGES:
        out = tmp_path_factory.mktemp(name)
        run(["make", "--no-print-directory", "dist", f"PACKAGE={name}", f"DIST={out}"], ROOT)
        found[name] = out
    return found


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, dists: dict[str, Path]) -> Iterator[Index]:
    """The private index, with qmtl-core and then qmtl-state-redis uploaded by twine."""
    index = Index(tmp_path_factory.mktemp("private"))
    try:
        for name in PACKAGES:
            files = sorted(str(p) for p in dists[name].iterdir())
            run([sys.executable, "-m", "twine", "upload", *twine_args(index), *files], ROOT)
        yield index
    finally:
        index.stop()


def twine_args(index: Index) -> list[str]:
    return ["--repository-url", index.url, "--non-interactive", "-u", "ci", "-p", "unused"]


def fresh_venv(folder: Path) -> Path:
    """A new environment made by the standard library's venv: plain pip, no uv."""
    run([sys.executable, "-m", "venv", str(folder)], folder.parent)
    return folder / "bin" / "python"


def installed(python: Path, name: str) -> str:
    out = run([str(python), "-m", "pip", "show", name], python.parent)
    return next(
        line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("Version")
    )


def test_make_dist_for_one_package_leaves_exactly_its_two_files(dists: dict[str, Path]) -> None:
    for name, folder in dists.items():
        stem = f"{name.replace('-', '_')}-{version_of(name)}"
        assert sorted(p.name for p in folder.iterdir()) == [
            f"{stem}-py3-none-any.whl",
            f"{stem}.tar.gz",
        ]


def test_the_index_refuses_a_second_upload_of_the_same_version(
    private: Index, dists: dict[str, Path]
) -> None:
    files = sorted(str(p) for p in dists["qmtl-core"].iterdir())

    again = run(
        [sys.executable, "-m", "twine", "upload", *twine_args(private), *files], ROOT, False
    )

    assert again.returncode != 0
    # As on the public index: a published file is immutable (400 "already exists").
    assert "400 Bad Request" in " ".join((again.stdout + again.stderr).split())
    assert sorted(p.name for p in private.folder.iterdir()) == sorted(
        p.name for name in PACKAGES for p in dists[name].iterdir()
    )


def test_plain_pip_installs_from_the_private_index_and_the_package_works(
    private: Index, tmp_path: Path, redis_url: str
) -> None:
    python = fresh_venv(tmp_path / "venv")

    run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--index-url",
            private.simple,
            "qmtl-state-redis",
        ],
        tmp_path,
    )

    assert installed(python, "qmtl-state-redis") == version_of("qmtl-state-redis")
    assert installed(python, "qmtl-core") == version_of("qmtl-core")
    code = textwrap.dedent(f"""
        import json, uuid
        from qmtl import Node, Pipeline
        import qmtl_state_redis

        pipeline = Pipeline("private_index_" + uuid.uuid4().hex[:8])
        pipeline.add_node(Node(name="price", fn=lambda: 101.5))
        options = {{"url": {redis_url!r}}}
        pipeline.execute(engine="mock", state="redis", state_options=options, ts=1_767_571_200)
        history = pipeline.get_history("price", count=1)
        pipeline.clear_history()
        print(json.dumps({{"file": qmtl_state_redis.__file__, "history": history}}))
    """)
    out = run([str(python), "-c", code], tmp_path)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(tmp_path / "venv"))
    assert [item["value"] for item in report["history"]] == [101.5]


def planted_wheel(folder: Path, name: str, version: str) -> Path:
    """A stranger's ``name`` at ``version``: a valid wheel whose module says who made it."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"PLANTED = True\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name_in_wheel, data in files.items():
            wheel.writestr(name_in_wheel, data)
    return path


def test_extra_index_url_lets_a_strangers_higher_version_win(
    private: Index, tmp_path: Path
) -> None:
    public = Index(tmp_path / "public")
    try:
        planted_wheel(public.folder, "qmtl-state-redis", "99.0.0")
        pip = fresh_venv(tmp_path / "pip")
        uv = fresh_venv(tmp_path / "uv")

        # The risky form: pip merges every index and takes the highest version anywhere.
        run(
            [
                str(pip),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--index-url",
                public.simple,
                "--extra-index-url",
                private.simple,
                "qmtl-state-redis",
            ],
            tmp_path,
        )
        # uv's default (first-index): a name found on one index is taken from that index only,
        # and --extra-index-url comes before --index-url.
        run(
            [
                *uv_command(),
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--python",
                str(uv),
                "--index-url",
                public.simple,
                "--extra-index-url",
                private.simple,
                "qmtl-state-redis",
            ],
            tmp_path,
        )

        assert installed(pip, "qmtl-state-redis") == "99.0.0"
        assert (
            run(
                [str(pip), "-c", "import qmtl_state_redis as m; print(m.PLANTED)"], tmp_path
            ).stdout.strip()
            == "True"
        )
        assert installed(uv, "qmtl-state-redis") == version_of("qmtl-state-redis")
    finally:
        public.stop()
