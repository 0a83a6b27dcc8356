"""EmfMetrics: exact EMF lines, valid against the specification's schema, from lambda_handler."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import jsonschema
import pytest

import polycache
from polycache import Cache, ConfigurationError, EmfMetrics
from polycache._emf import COUNTS
from tests.conftest import FakeClock
from tests.core.fakes import CountingLoader
from tests.observe.helpers import check_emf


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    documents = [json.loads(line) for line in stream.getvalue().splitlines()]
    for document in documents:
        check_emf(document)
    return documents


def test_the_schema_rejects_what_the_specification_forbids() -> None:
    valid = {
        "_aws": {
            "Timestamp": 1,
            "CloudWatchMetrics": [
                {"Namespace": "n", "Dimensions": [[]], "Metrics": [{"Name": "Hits"}]}
            ],
        },
        "Hits": 1,
    }
    check_emf(valid)
    no_timestamp = {"_aws": {"CloudWatchMetrics": valid["_aws"]["CloudWatchMetrics"]}}  # type: ignore[index]
    bad_unit = json.loads(json.dumps(valid))
    bad_unit["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = "ms"
    for invalid in (no_timestamp, bad_unit):
        with pytest.raises(jsonschema.ValidationError):
            check_emf(invalid)


def test_a_line_has_the_interval_counts_and_exact_percentiles(clock: FakeClock) -> None:
    stream = io.StringIO()
    metrics = EmfMetrics(
        namespace="shop", dimensions={"Service": "cart"}, stream=stream, clock=clock
    )
    metrics.hits(40)
    metrics.lookup("k", "stale")
    for milliseconds in range(1, 101):  # shuffled order: percentiles sort
        metrics.lookup("k", "miss")
        metrics.load("k", ((milliseconds * 37) % 100 + 1) / 1000, "ok")
    metrics.load("k", 0.5, "error")
    metrics.load("k", 0.5, "stale_served")
    metrics.load("k", 0.001, "not_found")
    metrics.backend_call("get", 0.002, "ok")
    metrics.backend_call("set", 0.004, "timeout")
    metrics.backend_call("get", 0.0, "skipped")
    metrics.breaker("open")
    metrics.breaker("half_open")
    metrics.invalidation(["k"], "delete")
    metrics.flush()
    (document,) = lines(stream)
    assert document == {
        "_aws": {
            "Timestamp": 1_700_000_000_000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "shop",
                    "Dimensions": [["Service"]],
                    "Metrics": [
                        *({"Name": name, "Unit": "Count"} for name in COUNTS),
                        *(
                            {"Name": f"{kind}TimeP{percentile}", "Unit": "Milliseconds"}
                            for kind in ("Load", "Backend")
                            for percentile in (50, 90, 99)
                        ),
                    ],
                }
            ],
        },
        "Service": "cart",
        "Hits": 40,
        "StaleHits": 1,
        "Misses": 100,
        "Loads": 103,
        "LoadErrors": 2,
        "BackendCalls": 2,
        "BackendErrors": 1,
        "BreakerOpens": 1,
        # 103 loads, sorted 1, 1, 2 .. 100, 500, 500 ms; nearest rank: the 52nd, 93rd, 102nd.
        "LoadTimeP50": 51.0,
        "LoadTimeP90": 92.0,
        "LoadTimeP99": 500.0,
        "BackendTimeP50": 2.0,
        "BackendTimeP90": 4.0,
        "BackendTimeP99": 4.0,
    }


def test_nothing_happened_no_line_and_no_latency_without_calls(clock: FakeClock) -> None:
    stream = io.StringIO()
    metrics = EmfMetrics(dimensions={}, stream=stream, clock=clock)
    metrics.flush()
    metrics.invalidation(["k"], "delete")  # not a metric
    metrics.flush()
    assert stream.getvalue() == ""
    metrics.hits(3)
    metrics.flush()
    metrics.flush()
    (document,) = lines(stream)
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]
    assert document["Hits"] == 3
    assert not [name for name in document if "Time" in name]


def test_many_durations_stay_bounded_and_keep_their_percentiles(clock: FakeClock) -> None:
    metrics = EmfMetrics(stream=io.StringIO(), clock=clock)
    for milliseconds in range(1, 20_001):
        metrics.load("k", milliseconds / 1000, "ok")
    document = metrics.document()
    assert document is not None
    assert document["Loads"] == 20_000
    assert len(metrics._load_times.values) < 1024
    assert document["LoadTimeP50"] == pytest.approx(10_000, rel=0.02)
    assert document["LoadTimeP99"] == pytest.approx(19_800, rel=0.02)


@pytest.fixture
def handler_cache(clock: FakeClock) -> Cache:
    cache = Cache(ttl=1000, clock=clock)
    cache.register_loader("item", CountingLoader())
    return cache


def test_lambda_handler_writes_one_line_per_invocation_that_did_something(
    handler_cache: Cache,
) -> None:
    stream = io.StringIO()
    metrics = EmfMetrics(namespace="shop", dimensions={"Service": "cart"}, stream=stream)

    @polycache.lambda_handler(cache=handler_cache, metrics=metrics)
    async def handler(event: list[str], context: Any) -> list[Any]:
        return [await handler_cache.get(key) for key in event]

    assert handler(["item:a", "item:a", "item:a"], None) == ["a#1"] * 3
    assert handler(["item:a"], None) == ["a#1"]
    assert handler([], None) == []  # nothing happened: no line
    first, second = lines(stream)
    assert {name: first[name] for name in COUNTS} == {
        "Hits": 2,
        "StaleHits": 0,
        "Misses": 1,
        "Loads": 1,
        "LoadErrors": 0,
        "BackendCalls": 0,
        "BackendErrors": 0,
        "BreakerOpens": 0,
    }
    assert 0 <= first["LoadTimeP50"] == first["LoadTimeP99"] < 1000
    assert {name: second[name] for name in COUNTS} == {
        name: 1 if name == "Hits" else 0 for name in COUNTS
    }
    assert "LoadTimeP50" not in second


def test_metrics_true_writes_to_stdout_with_the_function_name(
    handler_cache: Cache, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")

    @polycache.lambda_handler(cache=handler_cache, metrics=True)
    async def handler(event: Any, context: Any) -> Any:
        return await handler_cache.get("item:a")

    handler({}, None)
    output = capsys.readouterr().out.splitlines()
    assert len(output) == 1
    document = json.loads(output[0])
    check_emf(document)
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "polycache"
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["FunctionName"]]
    assert document["FunctionName"] == "orders"
    assert (document["Misses"], document["Loads"]) == (1, 1)


def test_every_n_invocations_sums_the_interval(handler_cache: Cache) -> None:
    stream = io.StringIO()

    @polycache.lambda_handler(
        cache=handler_cache, metrics=EmfMetrics(every_invocations=3, stream=stream)
    )
    async def handler(event: Any, context: Any) -> Any:
        return await handler_cache.get("item:a")

    for invocation in range(1, 8):
        handler({}, None)
        assert len(stream.getvalue().splitlines()) == invocation // 3
    first, second = lines(stream)
    assert (first["Misses"], first["Hits"], second["Misses"], second["Hits"]) == (1, 2, 0, 3)


def test_every_seconds_writes_once_the_time_has_passed(
    handler_cache: Cache, clock: FakeClock
) -> None:
    stream = io.StringIO()
    metrics = EmfMetrics(every_invocations=None, every_seconds=60, stream=stream, clock=clock)

    @polycache.lambda_handler(cache=handler_cache, metrics=metrics)
    async def handler(event: Any, context: Any) -> Any:
        return await handler_cache.get("item:a")

    handler({}, None)
    clock.advance(59)
    handler({}, None)
    assert stream.getvalue() == ""
    clock.advance(1)
    handler({}, None)
    (document,) = lines(stream)
    assert (document["Misses"], document["Hits"]) == (1, 2)
    assert document["_aws"]["Timestamp"] == int(clock.now * 1000)


def test_a_broken_stdout_never_fails_the_handler(
    handler_cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    stream = io.StringIO()
    stream.close()

    @polycache.lambda_handler(cache=handler_cache, metrics=EmfMetrics(stream=stream))
    async def handler(event: Any, context: Any) -> Any:
        return await handler_cache.get("item:a")

    with caplog.at_level(logging.WARNING, logger="polycache"):
        assert handler({}, None) == "a#1"
        assert handler({}, None) == "a#1"
    assert len([r for r in caplog.records if "EMF" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"namespace": ""}, "namespace"),
        ({"dimensions": {f"d{n}": "v" for n in range(10)}}, "at most 9 dimensions"),
        ({"dimensions": {"Hits": "v"}}, "'Hits'"),
        ({"dimensions": {"Service": 1}}, "'Service' needs a non-empty str"),
        ({"dimensions": ["Service"]}, "mapping"),
        ({"every_invocations": 0}, "every_invocations"),
        ({"every_invocations": True}, "every_invocations"),
        ({"every_seconds": -1}, "every_seconds"),
        ({"every_invocations": None}, "needs every_invocations or every_seconds"),
    ],
)
def test_bad_settings_are_named(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        EmfMetrics(**arguments)


def test_lambda_handler_metrics_needs_a_cache_and_an_emf_metrics() -> None:
    with pytest.raises(ConfigurationError, match="needs the cache"):
        polycache.lambda_handler(metrics=True)
    with pytest.raises(ConfigurationError, match=r"True or a polycache\.EmfMetrics"):
        polycache.lambda_handler(cache=Cache(), metrics="yes")  # type: ignore[call-overload]
