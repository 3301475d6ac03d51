"""DNS-1123 names and label values for the generated Kubernetes objects."""

from __future__ import annotations

import hashlib
import re

from qmtl.errors import DeployError

__all__ = ["LABEL_MAX", "check_dns1123_label", "dns1123_name", "label_value"]

LABEL_MAX = 63
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns1123_name(text: str, max_length: int = LABEL_MAX) -> str:
    """Turn ``text`` into a DNS-1123 label: ``"My_Pipeline v2"`` -> ``"my-pipeline-v2"``.

    Runs of other characters become one ``-``. A name longer than ``max_length`` is cut and
    given an 8-character hash of ``text`` so distinct long names stay distinct.
    """
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    if not name:
        name = f"pipeline-{digest}"
    if len(name) > max_length:
        name = f"{name[: max_length - 9].rstrip('-')}-{digest}"
    return name


def label_value(text: str) -> str:
    """Turn ``text`` into a valid label value (at most 63 characters, ``[A-Za-z0-9_.-]``)."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    if len(value) > LABEL_MAX:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        value = f"{value[: LABEL_MAX - 9].rstrip('-_.')}-{digest}"
    return value


def check_dns1123_label(name: str, what: str) -> str:
    """Return ``name`` if it is a DNS-1123 label, else raise DeployError with a suggestion."""
    if len(name) > LABEL_MAX or not _DNS1123_LABEL.match(name):
        raise DeployError(
            f"{what} {name!r} is not a valid Kubernetes name (lower-case letters, digits and "
            f"'-', at most 63 characters, starting and ending alphanumeric); "
            f"use e.g. {dns1123_name(name)!r}"
        )
    return name
