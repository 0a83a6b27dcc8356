"""One load across processes: 8 OS processes share one backend (the Momento-protocol stand-in,
the extension process, then a redis-server) and miss one key at the same moment; the loader
reads from moto."""

from __future__ import annotations

import time
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

from polycache._storage import lease_key
from polycache.backends.redis import DEFAULT_KEY_PREFIX
from tests.fleet_leases.fleet import WARM_PARAMETER, Fleet, seed_parameters
from tests.stand_ins.extension_process import ExtensionProcess
from tests.stand_ins.momento_fixtures import TEST_CACHE
from tests.stand_ins.momento_server import MomentoStandIn
from tests.stand_ins.moto_server import CountingMotoServer
from tests.stand_ins.redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.moto]

LEASE_WAIT = 1.5
LOAD_SECONDS = 0.3
# What 9 interpreters on the 2 shared cores of this machine may add to a bound (measured: the
# others answer within ~0.1 s of lease_wait + one load when the machine is quiet).
SCHEDULING_SLACK = 1.0


@pytest.fixture(
    scope="module", params=["momento", "extension", pytest.param("redis", marks=pytest.mark.redis)]
)
def fleet(
    request: pytest.FixtureRequest, moto_server: CountingMotoServer
) -> Iterator[tuple[Fleet, str]]:
    """8 workers on one shared backend, ready; and which backend it is."""
    seed_parameters(moto_server.url, {WARM_PARAMETER: "warm"})
    if request.param == "momento":
        server: MomentoStandIn = request.getfixturevalue("momento_server")
        server.reset(caches=[TEST_CACHE])
        url = server.url(TEST_CACHE)
    elif request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_standalone")
        redis_server.flush()
        url = redis_server.url
    else:
        process: ExtensionProcess = request.getfixturevalue("extension_process")
        url = f"extension://127.0.0.1:{process.port}"
    with Fleet(
        url, moto_server.environment(), lease_wait=LEASE_WAIT, load_seconds=LOAD_SECONDS
    ) as workers:
        yield workers, request.param


def fresh_parameter(moto_server: CountingMotoServer) -> tuple[str, str]:
    """A new SSM parameter in moto, and its value; moto's call count starts from 0."""
    name, value = f"/fleet/{uuid.uuid4().hex}", f"value-{uuid.uuid4().hex[:8]}"
    seed_parameters(moto_server.url, {name: value})
    moto_server.clear_calls()
    return name, value


def lease_left(backend: str, name: str, request: pytest.FixtureRequest) -> bool:
    """Whether the shared backend still holds the lease of `fleet:{name}`."""
    lease = lease_key(f"fleet:{name}")
    if backend == "momento":
        server: MomentoStandIn = request.getfixturevalue("momento_server")
        return any(item.endswith(lease) for item in server.items(TEST_CACHE))
    if backend == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_standalone")
        return bool(redis_server.client().exists(DEFAULT_KEY_PREFIX + lease))
    process: ExtensionProcess = request.getfixturevalue("extension_process")
    return process.request("GET", "/v1/kv/" + urllib.parse.quote(lease, safe=""))[0] != 404


def test_eight_processes_missing_one_key_call_the_source_once(
    fleet: tuple[Fleet, str], moto_server: CountingMotoServer, request: pytest.FixtureRequest
) -> None:
    workers, backend = fleet
    name, value = fresh_parameter(moto_server)
    answers = workers.get(name)
    assert [answer["value"] for answer in answers] == [value] * 8
    assert moto_server.count("ssm.GetParameter") == 1
    assert sorted(answer["loads"] for answer in answers) == [0] * 7 + [1]
    assert sum(answer["lease_waits"] for answer in answers) >= 1
    assert sum(answer["backend_errors"] for answer in answers) == 0
    # The holder gave its lease back once it had stored the value.
    assert not lease_left(backend, name, request)
    # The waiters answered once the holder had stored: about one load, never lease_wait.
    assert max(answer["seconds"] for answer in answers) < LEASE_WAIT


def test_without_leases_every_process_calls_the_source(
    fleet: tuple[Fleet, str], moto_server: CountingMotoServer
) -> None:
    workers, _ = fleet
    name, value = fresh_parameter(moto_server)
    answers = workers.get(name, leases=False)
    assert [answer["value"] for answer in answers] == [value] * 8
    # Each process loads on its own (a process whose read came after another's store hits).
    assert moto_server.count("ssm.GetParameter") == sum(answer["loads"] for answer in answers)
    assert moto_server.count("ssm.GetParameter") > 1


def test_a_killed_lease_holder_blocks_nobody_past_lease_wait_and_one_load(
    fleet: tuple[Fleet, str], moto_server: CountingMotoServer, request: pytest.FixtureRequest
) -> None:
    workers, backend = fleet
    name, value = fresh_parameter(moto_server)
    # The holder's load takes far longer than the test: it is killed in the middle of it.
    holder = workers.spawn(load_seconds=600)
    try:
        holder.expect("ready", 60)
        moto_server.clear_calls()
        holder.send({"get": name, "leases": True})
        holder.expect("loading", 30)
        assert lease_left(backend, name, request)  # it holds the lease and is loading
        others = workers.workers[:7]
        for worker in others:
            worker.send({"get": name, "leases": True})
        time.sleep(0.1)  # every other process is now waiting for the holder's value
        holder.kill()
        answers = [worker.expect("answer", 30) for worker in others]
    finally:
        holder.stop()
    assert [answer["value"] for answer in answers] == [value] * 7
    bound = LEASE_WAIT + LOAD_SECONDS + SCHEDULING_SLACK
    for answer in answers:
        # They waited for the holder (it held the lease), then loaded themselves.
        assert LEASE_WAIT - 0.2 <= answer["seconds"] <= bound, answer
        assert answer["lease_waits"] == 1
    assert 1 <= moto_server.count("ssm.GetParameter") <= 7
