"""griffe extension for the API reference: Sphinx roles in docstrings become cross-references.

QMTL's docstrings name other objects the reStructuredText way
(``:class:`~qmtl.streaming.RunSummary```, ``:meth:`build```). Each role whose target is a
public QMTL object becomes an autorefs link ``[RunSummary][qmtl.streaming.RunSummary]``, with a
short target resolved in the scope of the documented object (its module, class and imports); a
``~`` shows only the last name. The build is strict, so a role naming something that does not
exist fails ``make docs``: that is the broken-reference check. A private target (``_task``) is
not in the reference: it becomes inline code once it is found to exist (else it stays a link,
and fails). Roles naming other libraries (``click.Group``) become inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(class|meth|func|mod|attr|exc|data|obj|const):`(~?)([^`]+)`")
OWN = re.compile(r"^qmtl(_[a-z_]+)?(\.|$)")


class SphinxRoles(griffe.Extension):
    """Rewrite roles when an object's docstring is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(lambda m: _link(obj, m), obj.docstring.value)


def _link(obj: griffe.Object, match: re.Match[str]) -> str:
    _, short, target = match.groups()
    target = target.strip().removesuffix("()")
    shown = target.rsplit(".", 1)[-1] if short else target
    full = target if OWN.match(target) else _resolve(obj, target)
    if full is None or not OWN.match(full):
        return f"`{shown}`"
    if any(part.startswith("_") for part in full.split(".")) and _exists(obj, full):
        return f"`{shown}`"
    return f"[`{shown}`][{full}]"


def _exists(obj: griffe.Object, path: str) -> bool:
    try:
        obj.modules_collection[path]
    except (KeyError, ValueError, griffe.AliasResolutionError):
        return False
    return True


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path of ``target`` (``Pipeline.build``) seen from ``obj``, or None."""
    head, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            resolved = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError):
            scope = scope.parent
            continue
        return f"{resolved}.{rest}" if rest else resolved
    return None
