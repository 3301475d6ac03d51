"""scripts/release.py: one distribution released alone, its tag, the version policy for its
siblings, and the check that changed code got a new version.

Every release runs in a temporary copy of this work tree turned into its own git repository
(never on the real one: no real tags are made); the copy's own ``scripts/release.py`` runs there,
``uv lock`` included.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIBLINGS = ("qmtl-engine-local", "qmtl-engine-kafka", "qmtl-state-redis", "qmtl-deploy")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


def uv_command() -> str:
    found = shutil.which("uv")
    if found:
        return found
    assert importlib.util.find_spec("uv") is not None, "uv is needed: pip install uv"
    return f"{sys.executable} -m uv"


def release(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo / "scripts" / "release.py"), *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "UV": uv_command()},
        check=False,
    )


def version(repo: Path, folder: str) -> str:
    text = (repo / folder / "pyproject.toml").read_text()
    return str(tomllib.loads(text)["project"]["version"])


def dependencies(repo: Path, folder: str) -> list[str]:
    text = (repo / folder / "pyproject.toml").read_text()
    return list(tomllib.loads(text)["project"]["dependencies"])


def locked_version(repo: Path, name: str) -> str:
    lock = tomllib.loads((repo / "uv.lock").read_text())
    return str(next(p["version"] for p in lock["package"] if p["name"] == name))


def edit(repo: Path, folder: str, entry: str) -> None:
    """A code change with its changelog entry, committed."""
    init = next((repo / folder / "src").glob("*/__init__.py"))
    init.write_text(init.read_text() + "\n# a change\n")
    changelog = repo / folder / "CHANGELOG.md"
    text = changelog.read_text()
    at = text.index("\n## ") + 1
    changelog.write_text(text[:at] + f"## Unreleased\n\n- {entry}\n\n" + text[at:])
    git(repo, "commit", "--quiet", "-am", f"change {folder}")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """This work tree (tracked and new files, as they are now) in a fresh git repository."""
    files = git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    copy = tmp_path / "qmtl"
    for name in filter(None, files.split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git(copy, "init", "--quiet", "--initial-branch", "main")
    git(copy, "config", "user.email", "release-test@example.invalid")
    git(copy, "config", "user.name", "release test")
    git(copy, "add", "--all")
    git(copy, "commit", "--quiet", "-m", "snapshot")
    return copy


@pytest.fixture
def released(repo: Path) -> Path:
    """The copy after every distribution's first release: each tagged at its version."""
    for folder in ("qmtl-core", *SIBLINGS):
        name, current = folder, version(repo, folder)
        git(repo, "tag", "--annotate", f"{name}-v{current}", "-m", f"{name} {current}")
    return repo


def test_before_any_tag_the_check_passes_and_says_so(repo: Path) -> None:
    edit(repo, "qmtl-state-redis", "Changed before the first release.")

    done = release(repo, "--check")

    assert done.returncode == 0, done.stderr
    assert "ok   qmtl-state-redis 0.1.0: not released yet (no tag)" in done.stdout


def test_this_repository_passes_the_check() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "release.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr


def test_a_patch_release_of_one_distribution(released: Path) -> None:
    repo = released
    edit(repo, "qmtl-state-redis", "A fix in the Redis backend.")

    before = release(repo, "--check")
    assert before.returncode == 1
    assert "FAIL qmtl-state-redis changed since qmtl-state-redis-v0.1.0" in before.stderr
    assert "0.1.1.dev0" in before.stderr
    assert before.stderr.count("FAIL") == 1  # only the changed distribution

    done = release(repo, "qmtl-state-redis", "0.1.1", "--date", "2026-12-01")

    assert done.returncode == 0, done.stderr
    assert version(repo, "qmtl-state-redis") == "0.1.1"
    assert locked_version(repo, "qmtl-state-redis") == "0.1.1"
    changelog = (repo / "qmtl-state-redis" / "CHANGELOG.md").read_text()
    assert "## Unreleased\n\n## 0.1.1 (2026-12-01)\n\n- A fix in the Redis backend.\n" in changelog
    assert changelog.count("- A fix in the Redis backend.") == 1
    head = git(repo, "rev-parse", "HEAD").strip()
    assert git(repo, "rev-list", "-n", "1", "qmtl-state-redis-v0.1.1").strip() == head
    assert git(repo, "log", "-1", "--format=%s") == "Release qmtl-state-redis 0.1.1\n"
    changed = git(repo, "diff", "--name-only", "HEAD~1").split()
    assert sorted(changed) == [
        "qmtl-state-redis/CHANGELOG.md",
        "qmtl-state-redis/pyproject.toml",
        "uv.lock",
    ]  # a patch inside every sibling's range moves no pin
    assert git(repo, "status", "--porcelain") == ""
    message = git(repo, "tag", "-n20", "--list", "qmtl-state-redis-v0.1.1")
    assert "A fix in the Redis backend." in message
    after = release(repo, "--check")
    assert after.returncode == 0, after.stderr
    assert "ok   qmtl-state-redis 0.1.1: unchanged since qmtl-state-redis-v0.1.1" in after.stdout


def test_a_minor_core_release_repins_the_siblings_which_must_then_release(released: Path) -> None:
    repo = released
    edit(repo, "qmtl-core", "A change to the plugin API.")

    done = release(repo, "qmtl-core", "0.2.0", "--date", "2026-12-02")

    assert done.returncode == 0, done.stderr
    assert "release them next" in done.stdout
    for folder in (*SIBLINGS, "examples/plugins/qmtl-engine-threads"):
        assert "qmtl-core>=0.2.0,<0.3" in dependencies(repo, folder), folder
        assert "- Requires `qmtl-core>=0.2.0,<0.3`" in (repo / folder / "CHANGELOG.md").read_text()
    check = release(repo, "--check")
    assert check.returncode == 1
    for folder in SIBLINGS:
        assert f"FAIL {folder} changed since {folder}-v0.1.0" in check.stderr
    assert "ok   qmtl-core 0.2.0: unchanged since qmtl-core-v0.2.0" in check.stdout

    for folder in SIBLINGS:
        sibling = release(repo, folder, "0.2.0", "--date", "2026-12-02")
        assert sibling.returncode == 0, sibling.stderr
    # The Kafka engine pins qmtl-engine-local and qmtl-state-redis as well: their 0.2.0 moved it.
    assert "qmtl-engine-local>=0.2.0,<0.3" in dependencies(repo, "qmtl-engine-kafka")
    final = release(repo, "--check")
    assert final.returncode == 1  # the Kafka engine's pins moved after its own release
    assert "FAIL qmtl-engine-kafka" in final.stderr
    assert release(repo, "qmtl-engine-kafka", "0.2.1").returncode == 0
    assert release(repo, "--check").returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("qmtl-state-redis", "0.1.0"), "is not higher than its last release 0.1.0"),
        (("qmtl-state-redis", "0.1.1.dev1"), "is not a release version"),
        (("qmtl-state-redis", "banana"), "is not a PEP 440 version"),
        (("qmtl-redis", "0.1.1"), "unknown package 'qmtl-redis'"),
        (("qmtl-state-redis", "0.1.1"), "nothing to release"),
    ],
)
def test_what_the_release_refuses(released: Path, args: tuple[str, str], message: str) -> None:
    tags, head = git(released, "tag", "--list"), git(released, "rev-parse", "HEAD")

    done = release(released, *args)

    assert done.returncode == 1
    assert message in done.stderr
    assert git(released, "tag", "--list") == tags
    assert git(released, "rev-parse", "HEAD") == head
    assert git(released, "status", "--porcelain") == ""


def test_a_dirty_work_tree_is_refused(released: Path) -> None:
    edit(released, "qmtl-state-redis", "A fix.")
    (released / "qmtl-state-redis" / "README.md").write_text("edited\n")

    done = release(released, "qmtl-state-redis", "0.1.1")

    assert done.returncode == 1
    assert "uncommitted changes" in done.stderr
