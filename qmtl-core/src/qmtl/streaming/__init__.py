"""Event-time streaming semantics (SPEC §5.2) as pure objects every engine reuses.

Vocabulary. For an interval of ``seconds``, bucket ``b`` holds event times
``[b * seconds, (b + 1) * seconds)``; ``b = floor(ts / seconds)`` and the bucket's timestamp
everywhere (state, outputs) is its end ``(b + 1) * seconds``. That is the rule of every interval
up to ``1d``; ``1w`` buckets start on Monday 00:00 UTC, and a pipeline's ``bucket_offset`` moves
``1d``/``1w`` boundaries (a duration, or a time zone and session close with daylight saving):
those intervals have a :class:`~qmtl.buckets.Calendar` (``index(ts)``, ``end(b)``,
``through(wm)``; :mod:`qmtl.buckets` states the rule), which the objects below take per
interval; epoch multiples are computed inline. A series is *final through* ``f`` when no bucket
``<= f`` can change any more; a watermark ``wm`` (epoch seconds) makes every bucket whose end is
``<= wm`` final (:func:`final_through`, :meth:`~qmtl.buckets.Calendar.through`).

The objects:

- :class:`SourceBucketer` turns one source's events into final buckets: a bucket's value is the
  last event in it (by ts, ties by arrival); the source's watermark is the highest ts seen minus
  ``allowed_lateness``; an event before the end of a bucket that is already final (at any of
  the source's intervals; with aligned calendars, the finest decides) is *late*: counted and
  dropped, never merged. :meth:`SourceBucketer.flush` ends the stream.
- :class:`MergedSource` is one source fed by several ordered streams at once (*origins*: the
  partitions of a Kafka input topic). The **merge rule**: each origin is bucketed on its own
  (a :class:`SourceBucketer`, its own watermark and lateness: an origin is ordered, the
  origins are not ordered with one another); bucket ``b`` of the source is final once it is
  final in every origin that matters, so the source's watermark is their minimum and no bucket
  is computed from part of its data; its value is the bucket's last event by ts across origins,
  a tie going to the later origin in the known list (the higher partition). The origins that
  matter: all of them when the source's events are spread over the partitions; for a *keyed*
  topic (each key on one partition), those that delivered an event to this source, or all
  before any did — and every origin's watermark also moves with its partition's clock
  (:meth:`MergedSource.on_watermark`), so the sources routed from one input partition share
  that partition's watermark and an illiquid symbol's buckets close with it. An event arriving
  after its bucket is final is late (counted, dropped). Each origin's last applied offset is
  kept, so a message delivered twice (a forward repeated after a crash) is applied once.
- :class:`NodeAligner` is one node at one interval: it receives its upstreams' final buckets
  and watermarks and returns the buckets that became computable, with their arguments (as-of
  join; ``window=N`` buffers with warm-up gating). Buckets come out in increasing order.
- :class:`OutputEvent` (a final bucket: ``node``, ``interval``, ``ts`` = bucket end, ``value``,
  ``bucket``) and :class:`RunSummary` (what a run did, from :mod:`qmtl.summary`), shared by
  every engine.

:mod:`qmtl.stream_runner` wires these objects over a whole :class:`~qmtl.plan.ExecutionPlan` in
one process (the local and mock engines, and the oracle of :mod:`qmtl.testing`).

The state objects are bounded (pending buckets wait only for slower upstreams; windows keep
``N`` values; the as-of join keeps one) and turn into plain data with ``to_dict`` /
``from_dict`` (lists, dicts, numbers and the node values as they are; ``-inf`` is ``None``, an
ended stream ``"end"``), which :func:`qmtl.codec.encode` carries, so a distributed engine can
persist them between batches with every value type of SPEC §5.4 intact.

Failure policy: a node that raises stops the run with :class:`~qmtl.errors.NodeExecutionError`
naming the node (chaining the cause). Buckets written before stay (state writes are idempotent
per bucket, so a re-run after the fix converges), and so do the failing node's buckets before
the failing one; the failing bucket and nothing computed from it is written. How far *other*
nodes got depends on the engine's scheduling (batching, partitions): do not rely on it.

Sources yield :class:`qmtl.sources.Watermark` to close buckets by wall clock when idle.
"""

from __future__ import annotations

from qmtl.streaming._aligner import NodeAligner
from qmtl.streaming._bucketer import SourceBucketer
from qmtl.streaming._common import END, STATE_VERSION, Closure, OutputEvent, final_through
from qmtl.streaming._merge import MergedSource
from qmtl.summary import NodeSummary as NodeSummary  # re-exported: engines import it here
from qmtl.summary import RunSummary as RunSummary

__all__ = [
    "END",
    "STATE_VERSION",
    "Closure",
    "MergedSource",
    "NodeAligner",
    "NodeSummary",
    "OutputEvent",
    "RunSummary",
    "SourceBucketer",
    "final_through",
]
