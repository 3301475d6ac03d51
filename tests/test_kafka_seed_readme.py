"""The seed README's parallel-engine and history examples (docs/seed-README.ko.md, sections
"병렬 실행 엔진" and "상태 관리"), run as written against the real Kafka broker and Redis.

The only change: the seed's addresses ``brokers="localhost:9092"`` and
``redis_uri="redis://localhost:6379/0"`` are replaced by the test services' addresses
(``QMTL_TEST_KAFKA_BOOTSTRAP`` / ``QMTL_TEST_REDIS_URL``), which run on free ports.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _clean(redis_url: str, pipeline: str) -> None:
    from qmtl_state_redis import RedisStateBackend

    state = RedisStateBackend(url=redis_url)
    state.delete(pipeline)
    state.close()


def test_parallel_example_and_history_example(kafka_bootstrap: str, redis_url: str) -> None:
    from qmtl.sdk.node import Node
    from qmtl.sdk.pipeline import Pipeline

    # -- "병렬 실행 엔진 (ParallelExecutionEngine)", as written ------------------------------
    # 파이프라인 생성
    pipeline = Pipeline(name="my_parallel_pipeline")

    # 인터벌 설정을 포함한 노드 추가
    node_a = Node(
        name="price_source",
        fn=lambda: {"price": 100.5},
        interval_settings={
            "1d": {"interval": "1d", "period": "7d", "max_history": 100},
            "1h": {"interval": "1h", "period": "2d", "max_history": 50},
        },
    )
    pipeline.add_node(node_a)
    _clean(redis_url, "my_parallel_pipeline")  # a clean slate (not in the seed)

    # 병렬 모드로 실행
    results = pipeline.execute(
        parallel=True,
        brokers=kafka_bootstrap,  # seed: "localhost:9092"
        redis_uri=redis_url,  # seed: "redis://localhost:6379/0"
    )
    assert results == {"price_source": {"price": 100.5}}

    # -- "상태 관리 (StateManager)", as written -----------------------------------------------
    # 히스토리 데이터 조회
    history = pipeline.get_history(
        node_name="price_source",
        interval="1d",
        count=5,
        start_ts=1714000000,  # 시작 타임스탬프 (선택 사항)
        end_ts=1714100000,  # 종료 타임스탬프 (선택 사항)
    )

    # 값만 조회 (타임스탬프 없이)
    values = pipeline.get_interval_data(node_name="price_source", interval="1h", count=10)

    # 노드 메타데이터 조회
    metadata = pipeline.get_node_metadata(node_name="price_source", interval="1d")
    print(metadata)  # {'count': 42, 'max_items': 100, 'ttl': 604800, ...}

    assert history == []  # the run is recorded now, not in the seed's April 2024 window
    assert values == [{"price": 100.5}]
    assert metadata["count"] == 1
    assert metadata["max_items"] == 100
    assert metadata["ttl"] == 604800  # period "7d" on 1d
    latest = pipeline.get_history(node_name="price_source", interval="1d", count=5)
    assert [item["value"] for item in latest] == [{"price": 100.5}]
    pipeline.clear_history()


def test_parallel_execution_engine_seed_api(kafka_bootstrap: str, redis_url: str) -> None:
    from qmtl.sdk.execution import ParallelExecutionEngine, StreamProcessor
    from qmtl.sdk.node import Node
    from qmtl.sdk.pipeline import Pipeline

    engine = ParallelExecutionEngine(brokers=kafka_bootstrap, redis_uri=redis_url)
    assert (engine.brokers, engine.redis_uri, engine.max_workers) == (
        kafka_bootstrap,
        redis_url,
        10,
    )
    assert engine.running is False and engine.topics == {}
    assert engine.execute_pipeline(Pipeline(name="kafka_seed_empty")) == {}

    pipeline = Pipeline(name="kafka_seed_api")
    pipeline.add_node(Node(name="A", fn=lambda: 42))
    pipeline.add_node(Node(name="B", fn=lambda A: A * 2, upstreams=["A"]))
    _clean(redis_url, "kafka_seed_api")
    topics = engine.prepare_pipeline(pipeline)
    assert topics["A"] == {
        "input": "qmtl.input.kafka_seed_api.A",
        "output": "qmtl.output.kafka_seed_api.A",
    }
    assert engine.execute_pipeline(pipeline) == {"A": 42, "B": 84}
    assert engine.running is False
    assert pipeline.get_interval_data("B", interval="1d") == [84]
    pipeline.clear_history()
    engine.close()
    assert StreamProcessor.__module__.startswith("qmtl_engine_kafka")
