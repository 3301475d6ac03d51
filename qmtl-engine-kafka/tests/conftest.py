"""Fixtures of the Kafka engine tests; ``kafka_bootstrap`` comes from qmtl.testing.services."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qmtl_engine_kafka import KafkaEngineSettings


@pytest.fixture
def unique() -> str:
    """A fresh name part, so tests sharing one broker never see each other's topics."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaEngineSettings:
    return KafkaEngineSettings(bootstrap_servers=kafka_bootstrap, connect_timeout_s=10)


@pytest.fixture
def serve() -> Iterator[Callable[..., Any]]:
    """``serve(engine, pipeline, state, **worker_options)`` starts one worker of the pipeline's
    deployment in a thread (what `qmtl worker` runs); every worker stops at the test's end."""
    running: list[tuple[threading.Event, threading.Thread, Any]] = []
    errors: list[BaseException] = []

    def start(engine: Any, pipeline: Any, state: Any, **options: Any) -> Any:
        worker = engine.worker(pipeline.build(), state, **options)
        stop = threading.Event()

        def work() -> None:
            try:
                worker.run_until(stop)
            except BaseException as error:  # reported when the test ends
                errors.append(error)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        running.append((stop, thread, worker))
        return worker

    yield start
    for stop, thread, _worker in running:
        stop.set()
        thread.join(30)
    assert not errors, errors
