"""Release one QMTL distribution, and check that changed code got a new version.

    python scripts/release.py PACKAGE VERSION [--date YYYY-MM-DD] [--dry-run]
    python scripts/release.py --check

``PACKAGE VERSION`` (from a clean work tree) prepares and tags one release, as RELEASING.md
describes:

1. ``VERSION`` must be a final or pre-release (``0.1.1``, ``0.2.0rc1``; no ``.dev``), higher
   than the package's last tag and not lower than its ``pyproject.toml`` version;
2. its ``pyproject.toml`` gets the version;
3. its ``CHANGELOG.md``: the entries under ``## Unreleased`` move under ``## VERSION (DATE)``
   and an empty ``## Unreleased`` stays on top (the first release of a package may instead have
   its ``## VERSION`` section written by hand: the heading gets the date). Nothing to say is an
   error;
4. the version policy: every sibling (and example plugin) whose pin on the package excludes the
   new version gets the pin ``>=VERSION,<NEXT`` (``NEXT`` = the next minor while the major is 0,
   else the next major) and an ``## Unreleased`` line; those siblings must be released next;
5. ``uv lock``; one commit ``Release PACKAGE VERSION``; the annotated tag ``PACKAGE-vVERSION``.

Nothing is pushed or published: that is the maintainer's next step (RELEASING.md).

``--check`` fails when a distribution's shipped code (``src/``, ``pyproject.toml``, ``LICENSE``)
changed since its last tag while its version still equals the tagged one, and when a version is
lower than its last tag. A distribution with no tag yet has never been released: it passes, and
its current version is what its first release will be. A shallow clone is checked against the
tags it has, with a note. ``make test`` runs the check.

Standard library only, plus ``packaging`` (in the workspace environment). ``UV`` names uv.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
#: What a user installs from a distribution's folder: a change here needs a new version.
SHIPPED = ("src", "pyproject.toml", "LICENSE")
EXAMPLE_PLUGINS = ("examples/plugins/qmtl-engine-threads",)
UV = shlex.split(os.environ.get("UV", "uv"))
UNRELEASED = re.compile(r"^## Unreleased[ \t]*\n", re.M | re.I)
HEADING = re.compile(r"^## ", re.M)


class ReleaseError(Exception):
    """A release or check cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class Member:
    folder: Path
    name: str
    version: Version

    @property
    def pyproject(self) -> Path:
        return self.folder / "pyproject.toml"

    @property
    def changelog(self) -> Path:
        return self.folder / "CHANGELOG.md"

    def tag(self, version: Version) -> str:
        return f"{self.name}-v{version}"


def members(root: Path) -> list[Member]:
    """The workspace's distributions, in declaration order."""
    names = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    return [read(root / folder) for folder in names["members"]]


def read(folder: Path) -> Member:
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    return Member(folder, project["name"], Version(project["version"]))


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def last_tag(root: Path, member: Member) -> Version | None:
    """The highest version tagged ``NAME-vVERSION``, or None before the first release."""
    versions = []
    for tag in git(root, "tag", "--list", f"{member.name}-v*").split():
        try:
            versions.append(Version(tag.removeprefix(f"{member.name}-v")))
        except InvalidVersion:
            continue
    return max(versions, default=None)


# -- the check --------------------------------------------------------------------------------
def check(root: Path) -> list[str]:
    """One line per distribution; lines starting with ``FAIL`` are problems."""
    report = []
    if git(root, "rev-parse", "--is-shallow-repository").strip() == "true":
        report.append("note the clone is shallow: tags it lacks are not checked (git fetch --tags)")
    for member in members(root):
        tagged = last_tag(root, member)
        if tagged is None:
            report.append(f"ok   {member.name} {member.version}: not released yet (no tag)")
            continue
        tag = member.tag(tagged)
        if member.version < tagged:
            report.append(f"FAIL {member.name} {member.version} is lower than its tag {tag}")
            continue
        if member.version > tagged:
            report.append(f"ok   {member.name} {member.version}: next release after {tag}")
            continue
        paths = [str((member.folder / p).relative_to(root)) for p in SHIPPED]
        changed = git(root, "diff", "--name-only", tag, "--", *paths).split()
        if changed:
            shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
            report.append(
                f"FAIL {member.name} changed since {tag} ({shown}) but its version is still "
                f"{member.version}: set the next version in {member.pyproject.relative_to(root)} "
                f"(a development version such as {_next_dev(member.version)} until the release) "
                f"and say what changed under '## Unreleased' in its CHANGELOG.md"
            )
        else:
            report.append(f"ok   {member.name} {member.version}: unchanged since {tag}")
    return report


def _next_dev(version: Version) -> str:
    major, minor, patch = [*version.release, 0, 0][:3]
    return f"{major}.{minor}.{patch + 1}.dev0"


# -- the release ------------------------------------------------------------------------------
def upper_bound(version: Version) -> str:
    """The first version a compatible range excludes: next minor under 1.0, else next major."""
    major, minor = [*version.release, 0][:2]
    return f"0.{minor + 1}" if major == 0 else f"{major + 1}"


def move_unreleased(text: str, version: Version, date: str, name: str) -> str:
    """The changelog with ``## Unreleased`` entries under ``## VERSION (DATE)``."""
    found = UNRELEASED.search(text)
    entries = ""
    if found:
        following = HEADING.search(text, found.end())
        end = following.start() if following else len(text)
        entries = text[found.end() : end].strip()
        text = text[: found.start()] + text[end:]
    existing = re.compile(rf"^## \[?{re.escape(str(version))}\]?(?=[ \t(]|$).*$", re.M)
    heading = f"## {version} ({date})"
    match = existing.search(text)
    if match:  # a first release written by hand: keep its section, date its heading
        following = HEADING.search(text, match.end())
        end = following.start() if following else len(text)
        body = text[match.end() : end].strip()
        merged = "\n\n".join(part for part in (entries, body) if part)
        if not merged:
            raise ReleaseError(f"{name}: its '## {version}' section in CHANGELOG.md is empty")
        section = f"{heading}\n\n{merged}\n\n"
        text = text[: match.start()] + section + text[end:]
        start = match.start()
    else:
        if not entries:
            raise ReleaseError(
                f"{name}: nothing to release, CHANGELOG.md has no entries under '## Unreleased'; "
                "say what changed there first"
            )
        first = HEADING.search(text)
        start = first.start() if first else len(text)
        text = text[:start] + f"{heading}\n\n{entries}\n\n" + text[start:]
    return text[:start] + "## Unreleased\n\n" + text[start:]


def add_unreleased_line(text: str, line: str) -> str:
    """Append ``line`` to the ``## Unreleased`` section, creating the section when missing."""
    found = UNRELEASED.search(text)
    if not found:
        first = HEADING.search(text)
        start = first.start() if first else len(text)
        return text[:start] + f"## Unreleased\n\n{line}\n\n" + text[start:]
    following = HEADING.search(text, found.end())
    end = following.start() if following else len(text)
    body = text[found.end() : end].strip()
    merged = f"{body}\n{line}" if body else line
    return text[: found.end()] + f"\n{merged}\n\n" + text[end:]


def set_version(pyproject: str, version: Version) -> str:
    updated, count = re.subn(
        r'^(version\s*=\s*)"[^"]*"', rf'\g<1>"{version}"', pyproject, count=1, flags=re.M
    )
    if count != 1:
        raise ReleaseError('no `version = "..."` line in pyproject.toml')
    return updated


def repin(root: Path, package: Member, version: Version, date: str) -> dict[Path, str]:
    """New texts of the siblings' pyproject.toml and CHANGELOG.md files whose pin on
    ``package`` excludes ``version`` (the version policy in RELEASING.md)."""
    folders = [m.folder for m in members(root) if m.name != package.name]
    folders += [root / p for p in EXAMPLE_PLUGINS if (root / p / "pyproject.toml").exists()]
    changes: dict[Path, str] = {}
    pin = f"{package.name}>={version},<{upper_bound(version)}"
    for folder in folders:
        pyproject = (folder / "pyproject.toml").read_text()
        project = tomllib.loads(pyproject)["project"]
        dependent = project["name"]
        for line in project.get("dependencies", []):
            requirement = Requirement(line)
            if requirement.name != package.name or requirement.specifier.contains(
                version, prereleases=True
            ):
                continue
            if f'"{line}"' not in pyproject:
                raise ReleaseError(f"{dependent}: cannot find '{line}' in its pyproject.toml")
            changes[folder / "pyproject.toml"] = pyproject.replace(f'"{line}"', f'"{pin}"')
            changelog = folder / "CHANGELOG.md"
            if changelog.exists():
                note = f"- Requires `{pin}` ({package.name} {version}, released {date})."
                changes[changelog] = add_unreleased_line(changelog.read_text(), note)
    return changes


def release(root: Path, name: str, version_text: str, date: str, dry_run: bool) -> list[str]:
    """Prepare, commit and tag one release; return what was done (or would be)."""
    by_name = {m.name: m for m in members(root)}
    if name not in by_name:
        raise ReleaseError(f"unknown package {name!r}; the workspace has {sorted(by_name)}")
    package = by_name[name]
    try:
        version = Version(version_text)
    except InvalidVersion as error:
        raise ReleaseError(f"{version_text!r} is not a PEP 440 version") from error
    if version.is_devrelease or version.local or version.is_postrelease:
        raise ReleaseError(f"{version} is not a release version (no .dev, .post or +local)")
    tagged = last_tag(root, package)
    if tagged is not None and version <= tagged:
        raise ReleaseError(f"{name} {version} is not higher than its last release {tagged}")
    if version < package.version:
        raise ReleaseError(f"{name} {version} is lower than its pyproject.toml's {package.version}")
    if git(root, "tag", "--list", package.tag(version)).strip():
        raise ReleaseError(f"the tag {package.tag(version)} already exists")
    if git(root, "status", "--porcelain").strip() and not dry_run:
        raise ReleaseError("the work tree has uncommitted changes: commit or stash them first")

    changes = {
        package.pyproject: set_version(package.pyproject.read_text(), version),
        package.changelog: move_unreleased(package.changelog.read_text(), version, date, name),
    }
    changes.update(repin(root, package, version, date))
    done = [f"{path.relative_to(root)}: updated" for path in changes]
    repinned = sorted({p.parent.name for p in changes if p.parent != package.folder})
    if repinned:
        done.append(f"the pins of {repinned} now require {name}>={version}: release them next")
    if dry_run:
        return [f"(dry run) {line}" for line in done]
    for path, text in changes.items():
        path.write_text(text)
    locked = subprocess.run([*UV, "lock", "--quiet"], cwd=root, capture_output=True, text=True)
    if locked.returncode != 0:
        raise ReleaseError(f"uv lock failed: {locked.stderr.strip()}")
    git(root, "add", "uv.lock", *(str(p.relative_to(root)) for p in changes))
    git(root, "commit", "--quiet", "-m", f"Release {name} {version}")
    notes = _section(package.changelog.read_text(), version)
    git(root, "tag", "--annotate", package.tag(version), "-m", f"{name} {version}\n\n{notes}")
    return [*done, "uv.lock: updated", f"committed and tagged {package.tag(version)}"]


def _section(changelog: str, version: Version) -> str:
    match = re.search(rf"^## {re.escape(str(version))}\b.*$", changelog, re.M)
    if not match:
        return ""
    following = HEADING.search(changelog, match.end())
    return changelog[match.end() : following.start() if following else None].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", nargs="?", help="distribution name, e.g. qmtl-state-redis")
    parser.add_argument("version", nargs="?", help="the release's version, e.g. 0.1.1")
    parser.add_argument("--check", action="store_true", help="check versions against tags")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="YYYY-MM-DD")
    parser.add_argument("--dry-run", action="store_true", help="say what would change")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.check:
            report = check(args.root)
            for line in report:
                print(line, file=sys.stderr if line.startswith("FAIL") else sys.stdout)
            return 1 if any(line.startswith("FAIL") for line in report) else 0
        if not (args.package and args.version):
            parser.error("give PACKAGE and VERSION, or --check")
        for line in release(args.root, args.package, args.version, args.date, args.dry_run):
            print(line)
    except ReleaseError as error:
        print(f"release.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
