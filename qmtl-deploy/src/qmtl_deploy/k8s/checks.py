"""Values the Kubernetes API server would reject, refused when a manifest is generated.

The offline schema validation (``kubernetes-validate``) checks shapes, not values: ``cpu: lots``,
``memory: -1Gi``, a request above its limit or a negative ``backoffLimit`` pass it and fail at
``kubectl apply``. These checks give the same verdict up front, as one-line
:class:`~qmtl.errors.DeployError` messages naming the value and the fix.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from qmtl.errors import DeployError

#: ``resource.Quantity`` syntax: a signed decimal number and a binary-SI, decimal-SI or
#: exponent suffix (k8s.io/apimachinery/pkg/api/resource).
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_MULTIPLIER = {
    None: Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
#: Container resources Kubernetes knows without a domain prefix.
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_EXAMPLES = {"cpu": "'500m' or 2", "memory": "'512Mi' or '1Gi'"}


def quantity(resource: str, value: Any, where: str) -> Decimal:
    """The amount of a quantity (``'500m'`` → 0.5, ``'1Gi'`` → 1073741824); refuses what the
    API server would: other types, other syntax, negative amounts."""
    example = _EXAMPLES.get(resource, "'1', '500m' or '1Gi'")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DeployError(
            f"{where}: {resource}={value!r} is not a Kubernetes quantity; pass a string such as "
            f"{example} (a float is ambiguous: write '0.5' or '500m')"
        )
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise DeployError(
            f"{where}: {resource}={value!r} is not a Kubernetes quantity; write a number with "
            f"an optional unit (m, k, M, G, Ki, Mi, Gi, ...), such as {example}"
        )
    suffix = match["suffix"]
    if suffix and suffix[0] in "eE" and len(suffix) > 1:
        amount = Decimal(match["number"]) * Decimal(10) ** int(suffix[1:])
    else:
        amount = Decimal(match["number"]) * _MULTIPLIER[suffix]
    if amount < 0:
        raise DeployError(
            f"{where}: {resource}={value!r} is negative; Kubernetes needs an amount >= 0"
        )
    return amount


def _resource_name(resource: Any, where: str) -> None:
    if not isinstance(resource, str):
        raise DeployError(f"{where}: resource name {resource!r} must be a string such as 'cpu'")
    if resource in STANDARD_RESOURCES or resource.startswith("hugepages-") or "/" in resource:
        return
    close = difflib.get_close_matches(resource, STANDARD_RESOURCES, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise DeployError(
        f"{where}: unknown resource '{resource}'; {hint}Kubernetes takes "
        f"{', '.join(STANDARD_RESOURCES)}, hugepages-<size>, or a domain-qualified extended "
        "resource such as nvidia.com/gpu"
    )


def check_resources(requests: Mapping[str, Any] | None, limits: Mapping[str, Any] | None) -> None:
    """Names, quantities, whole numbers for extended resources, and requests <= limits."""
    amounts: dict[str, dict[str, tuple[Decimal, Any]]] = {}
    for kind, given in (("requests", requests), ("limits", limits)):
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise DeployError(
                f"resources {kind} must map resource names to quantities, such as "
                f"{{'cpu': '500m'}}, not {type(given).__name__}"
            )
        for resource, value in given.items():
            where = f"resource {kind}"
            _resource_name(resource, where)
            amount = quantity(resource, value, where)
            if "/" in resource and amount != amount.to_integral_value():
                raise DeployError(
                    f"{where}: {resource}={value!r} must be a whole number (an extended "
                    "resource is counted in units)"
                )
            amounts.setdefault(kind, {})[resource] = (amount, value)
    for resource, (request, asked) in amounts.get("requests", {}).items():
        limit, capped = amounts.get("limits", {}).get(resource, (None, None))
        if limit is not None and request > limit:
            raise DeployError(
                f"resource request {resource}={asked!r} exceeds its limit {resource}={capped!r}; "
                "raise the limit or lower the request"
            )


def count(name: str, value: Any, *, minimum: int = 0, optional: bool = False) -> None:
    """A whole-number manifest field (``backoffLimit``, ``terminationGracePeriodSeconds``...)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DeployError(
            f"{name}={value!r} is not usable: Kubernetes needs a whole number >= {minimum}"
        )


def words(value: Sequence[str] | str | None, what: str) -> list[str] | None:
    """A command or args: a list as given, or a string split like a shell would (no shell
    runs it); an unbalanced quote is an error naming the string."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as error:
            raise DeployError(
                f"{what} {value!r} cannot be split into words: {error}; balance its quotes, or "
                "pass a list of words"
            ) from error
    return [str(part) for part in value]
