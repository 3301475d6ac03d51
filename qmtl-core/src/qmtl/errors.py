"""The one exception hierarchy of QMTL.

Every user-facing failure raises a :class:`QmtlError` subclass whose message says what happened,
to which object, and how to fix it. Some classes also derive from the built-in exception the
earlier SDK raised (``ValueError``, ``RuntimeError``, ``TimeoutError``) so seed-era code that
catches those keeps working.
"""

from __future__ import annotations


class QmtlError(Exception):
    """Base class of every error QMTL raises on purpose."""


class ConfigurationError(QmtlError, ValueError):
    """Settings, environment variables or options that cannot be used."""


class PipelineValidationError(QmtlError, ValueError):
    """A pipeline or node definition is invalid; raised when the pipeline is built."""


class ModelValidationError(PipelineValidationError):
    """A QMTL model (settings, definitions, selectors) was given invalid data.

    ``problems`` lists ``(field path, message)`` pairs, nested models' fields included.
    """

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class DuplicateNodeError(PipelineValidationError):
    """Two nodes share a name in one pipeline."""


class UnknownUpstreamError(PipelineValidationError):
    """A node names an upstream that is not in the pipeline."""


class CycleError(PipelineValidationError):
    """The node graph has a cycle; the message lists its path."""


class ShardCycleError(PipelineValidationError):
    """Explicit ``shard=`` names make shards read each other in a cycle; the message names the
    nodes on it."""


class IntervalError(PipelineValidationError):
    """An unknown interval, a bad period, or an interval an upstream does not provide."""


class MissingPeriodError(IntervalError):
    """An interval of a node has no period after merging the pipeline defaults."""


class UnbindableFunctionError(PipelineValidationError):
    """A node's function cannot be called with its upstreams and params."""


class UnknownNodeError(QmtlError, ValueError):
    """A node name that the pipeline does not have."""


class MissingInputError(QmtlError, ValueError):
    """An engine was asked to run a node whose upstream value is missing."""


class NodeExecutionError(QmtlError, RuntimeError):
    """A node's function raised; ``node`` names it and ``__cause__`` holds the original error."""

    def __init__(self, node: str, cause: BaseException, *, inputs: str | None = None) -> None:
        self.node = node
        self.inputs = inputs
        shown = f" (inputs: {inputs})" if inputs is not None else ""
        super().__init__(
            f"An error occurred while executing node '{node}'{shown}: "
            f"{type(cause).__name__}: {cause}"
        )


class SourceExecutionError(NodeExecutionError):
    """A source's own code (its generator, callable or processor) raised while producing
    events; ``node`` names the source and ``__cause__`` holds the original error."""

    def __init__(self, node: str, cause: BaseException) -> None:
        QmtlError.__init__(
            self,
            f"Source '{node}' failed while producing events: {type(cause).__name__}: {cause}; "
            "fix the source (the original traceback is chained below)",
        )
        self.node = node
        self.inputs = None


class VectorizedOutputError(QmtlError, ValueError):
    """A vectorized node's function did not return one row per input row."""


class PipelineTimeoutError(QmtlError, TimeoutError):
    """A run exceeded its ``timeout``; ``node`` names the node that was running."""

    def __init__(self, pipeline: str, node: str | None, timeout: float, detail: str = "") -> None:
        self.pipeline = pipeline
        self.node = node
        self.timeout = timeout
        running = f" while node '{node}' was running" if node else ""
        super().__init__(
            f"Pipeline '{pipeline}' exceeded its timeout of {timeout:g}s{running}"
            f"{'; ' + detail if detail else ''}; raise timeout= or make the node faster"
        )


class PluginError(QmtlError):
    """Base class of plugin failures."""


class PluginLoadError(PluginError):
    """An entry point of group ``qmtl`` failed to import or register."""


class UnknownBackendError(PluginError, ValueError):
    """An engine, state backend or deploy target kind that no installed plugin provides."""


class StateBackendError(QmtlError):
    """A state backend failed to read or write; the message names the backend (password masked)."""


class EngineError(QmtlError):
    """An engine failed for a reason other than a node's own error (broker down, bad topic, ...)."""


class SourceError(QmtlError, ValueError):
    """A source produced data QMTL cannot use (bad CSV row, bad timestamp, ...)."""


class DeployError(QmtlError):
    """Building, pushing or generating deployment artefacts failed."""


class ValueEncodeError(QmtlError, TypeError):
    """A value the codec of :mod:`qmtl.codec` cannot carry between processes (SPEC §5.4).

    Raised by every engine at the node that returned the value, local engine included, and by
    state backends on write. ``type_name`` is the refused type, ``path`` where it sits inside
    the value (``value['px'][3]``), ``node`` and ``interval`` the series it was meant for (set by
    :meth:`at`), ``fix`` what to return instead. On Kafka a value too large for the broker is
    this error too; then ``reason`` gives the size and ``fix`` the setting that raises the limit.
    """

    SUPPORTED = (
        "None, bool, int, float, str, bytes, list, tuple, dict with str keys, datetime, date, "
        "Decimal, numpy arrays and scalars"
    )

    def __init__(
        self,
        type_name: str,
        *,
        path: str | None = "value",
        reason: str | None = None,
        fix: str | None = None,
        node: str | None = None,
        interval: str | None = None,
    ) -> None:
        self.type_name = type_name
        self.path = path = path or "value"
        self.reason = reason
        self.fix = fix
        self.node = node
        self.interval = interval
        what = f"{path}: {type_name}" if reason is None else f"{path} is {reason}"
        where = f"Node '{node}' returned a value" if node is not None else "A value"
        if interval is not None:
            where += f" at interval {interval}"
        super().__init__(
            f"{where} that QMTL cannot carry between processes: {what}; "
            f"{fix or 'return its data as the supported types'} "
            f"(values may be {self.SUPPORTED}: see qmtl.codec)"
        )

    def fields(self) -> dict[str, str | None]:
        """The error as plain data: ``ValueEncodeError(**error.fields())`` rebuilds it (an
        engine sends it across processes this way)."""
        return {
            "type_name": self.type_name,
            "path": self.path,
            "reason": self.reason,
            "fix": self.fix,
            "node": self.node,
            "interval": self.interval,
        }

    def at(self, node: str, interval: str | None = None) -> ValueEncodeError:
        """The same error, naming the node that returned the value and the interval."""
        return ValueEncodeError(
            self.type_name,
            path=self.path,
            reason=self.reason,
            fix=self.fix,
            node=node,
            interval=interval,
        )


class ValueDecodeError(QmtlError, ValueError):
    """Bytes that :func:`qmtl.codec.decode` cannot turn back into a value (corrupt, cut short,
    written by something else, or holding numpy data where numpy is not installed)."""
