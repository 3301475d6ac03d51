"""One shard of a one-shot run (``execute`` over Kafka, SPEC §5.1) in a worker.

The caller evaluates the sources once, at ``ts``, and sends each partition a ``1`` message:
the values of its shards' sources and of the nodes ``inputs`` replaces. A :class:`OnceShard`
computes its nodes once, in plan order, as soon as every upstream it reads from another shard
has delivered its value (``1V`` messages), with the local engine's rules: an input replaces a
node's value; a windowed node reads its upstreams' history from the state backend (this run's
value last) and is skipped while its windows are not full, and so are the nodes reading it; a
node that raises is reported and the nodes reading it are skipped. Its values go to the caller
(``1O``), which records them in plan order, so a failure records exactly what the local engine
would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qmtl import codec
from qmtl.errors import ValueEncodeError
from qmtl.plan import PlanNode
from qmtl.state import StateBackend
from qmtl_engine_kafka._layout import Layout

if TYPE_CHECKING:
    from qmtl_engine_kafka._shard import Produced

__all__ = ["OnceShard"]

_MISSING: Any = object()


class OnceShard:
    """Shard ``shard`` of one-shot run ``run`` (history read under ``namespace``)."""

    def __init__(
        self, layout: Layout, shard: int, run: str, namespace: str, state: StateBackend
    ) -> None:
        self.layout = layout
        self.shard = layout.plan.shards[shard]
        self.run = run
        self.namespace = namespace
        self.state = state
        self.partition = layout.shard_partition[shard]
        self.sub = layout.shard_plan(namespace, shard)
        self.ts: float | None = None
        self.inputs: set[str] = set()
        self.values: dict[str, Any] = {}  #: node -> value (local and heard from afar)
        self.skipped: set[str] = set()
        self.failed: dict[str, str] = {}  #: node -> error message
        self.refused: dict[str, dict[str, Any]] = {}  #: node -> its ValueEncodeError's fields
        self.errors: list[tuple[str, BaseException]] = []
        self.reported = False
        self.ended = False

    def start(
        self, ts: float, values: dict[str, Any], inputs: list[str], fail: dict[str, str]
    ) -> None:
        self.ts = ts
        self.inputs.update(inputs)
        for name, value in values.items():
            self.values[name] = value
        self.failed.update(fail)

    def heard(self, values: dict[str, Any], skip: list[str], fail: dict[str, str]) -> None:
        for name, value in values.items():
            self.values[name] = value
        self.skipped.update(skip)
        self.failed.update(fail)

    def _known(self, name: str) -> bool:
        return name in self.values or name in self.skipped or name in self.failed

    def _ready(self) -> bool:
        if self.ts is None:
            return False
        plan = self.sub.plan
        return all(self._known(plan.nodes[i].name) for i in self.sub.remote)

    def _compute(self) -> None:
        assert self.ts is not None
        for node in self.sub.plan.nodes:
            if node.index in self.sub.remote or self._known(node.name):
                continue  # a remote upstream, a source the caller evaluated, or an input
            ups = [self.sub.plan.nodes[i].name for i in node.upstream_index]
            if any(u in self.failed for u in ups):
                self.failed[node.name] = "upstream failed"
                continue
            if any(u in self.skipped for u in ups):
                self.skipped.add(node.name)
                continue
            args = [self.values[u] for u in ups]
            if node.window is not None:
                windows = self._windows(node, args)
                if windows is None:
                    self.skipped.add(node.name)  # warm-up: not run, absent from the results
                    continue
                args = windows
            try:
                value = node.invoke(args)
            except Exception as error:  # the user's function failed
                self.failed[node.name] = f"{type(error).__name__}: {error}"
                self.errors.append((node.name, error))
                continue
            try:  # a value no process could receive fails its node, as on every engine
                codec.check(value)
            except ValueEncodeError as refused:
                named = refused.at(node.name, ", ".join(s.interval.value for s in node.series))
                self.failed[node.name] = str(named)
                self.refused[node.name] = named.fields()
                self.errors.append((node.name, named))
                continue
            self.values[node.name] = value

    def _windows(self, node: PlanNode, args: list[Any]) -> list[Any] | None:
        """Each upstream's last N values at the node's smallest interval, oldest first: its
        history before this run's bucket, then this run's value (as the local engine sees it
        after recording the upstream)."""
        assert self.ts is not None
        spec = min(node.series, key=lambda s: s.seconds)
        size = node.window_size(spec)
        assert size is not None
        end = spec.bucket_end(self.ts)
        windows = []
        for index, current in zip(node.upstream_index, args, strict=True):
            key = self.sub.plan.nodes[index].spec(spec.interval).key
            items = [
                i for i in self.state.read(key, count=size, end_ts=end) if i["timestamp"] != end
            ]
            values = [i["value"] for i in reversed(items[: size - 1])] + [current]
            if len(values) < size:
                return None
            windows.append(values)
        return windows

    def collect(self, produced: Produced, outputs: bool = True) -> None:
        if self.reported or not self._ready():
            return
        self._compute()
        self.reported = self.ended = True
        key = (self.partition, self.run, self.namespace)
        mine = [self.layout.plan.nodes[i].name for i in self.shard.nodes]
        report: dict[str, Any] = {
            "vals": {n: self.values[n] for n in mine if n in self.values},
            "skip": [n for n in mine if n in self.skipped],
            "fail": {n: self.failed[n] for n in mine if n in self.failed},
            "refused": {n: self.refused[n] for n in mine if n in self.refused},
        }
        produced.once_out[key] = report
        for name in mine:
            for partition in self.layout.destinations.get(self.layout.index[name], ()):
                target = produced.once_cross.setdefault(
                    (partition, self.run, self.namespace), {"vals": {}, "skip": [], "fail": {}}
                )
                if name in report["vals"]:
                    target["vals"][name] = report["vals"][name]
                elif name in self.failed:
                    target["fail"][name] = self.failed[name]
                else:
                    target["skip"].append(name)
        ends = produced.ends[key]
        for name in mine:
            end: dict[str, Any] = {"buckets": {}}
            if name in self.failed:
                end["error"] = self.failed[name]
                if self.failed[name] == "upstream failed":
                    end["upstream_failed"] = True
            ends[name] = end
        produced.failures.extend(self.errors)

    def snapshot(self) -> bytes:
        return codec.encode(
            {
                "ts": self.ts,
                "inputs": sorted(self.inputs),
                "values": dict(self.values),
                "skipped": sorted(self.skipped),
                "failed": self.failed,
                "reported": self.reported,
            }
        )

    def restore(self, blob: bytes) -> None:
        data = codec.decode(blob)
        self.ts = data["ts"]
        self.inputs = set(data["inputs"])
        self.values = {n: v for n, v in data["values"].items()}
        self.skipped = set(data["skipped"])
        self.failed = data["failed"]
        self.reported = self.ended = data["reported"]
