"""polycache's AWS loaders against Powertools `parameters`, lambda-cache, raw aioboto3 and botocore.

Run: .venv/bin/python -m benchmarks.bench_aws [--quick]

One CountingMotoServer on 127.0.0.1 serves every contender in the same run. A warm Lambda-style
invocation (the sync entry point Lambda calls) reads one SSM parameter, one secret and one
DynamoDB item; each contender uses its own cache with a 300 s max age:

- polycache: `Cache()` with the built-in loaders, under `polycache.lambda_handler`;
- Powertools: `parameters.get_parameter`, `get_secret`, `DynamoDBProvider.get` (its own cache;
  sync, boto3);
- lambda-cache: its `ssm` and `secrets_manager` decorators, and its generic `get_value` with a
  boto3 GetItem for the item (it has no DynamoDB source);
- raw aioboto3: clients reused, the three calls concurrently, on every invocation.

Figures are medians over interleaved rounds (the machine is noisy), as ratios to polycache, and
AWS calls per 1000 invocations as counted by the moto server. Cold start: a fresh process
importing the library and serving its first invocation (bytecode compiled first), polycache
against Powertools and against a bare script making the same three calls on botocore clients
in worker threads (polycache's transport with nothing around it), contenders alternated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from tests.stand_ins.moto_server import CountingMotoServer

PARAMETER = "/bench/db/url"
SECRET = "bench/db/creds"
TABLE = "bench_params"
ITEM_ID = "user-42"
MAX_AGE = 300

Invocation = Callable[[], Any]

# Coroutines to run on the Lambda loop at the end, closing the clients the contenders made.
CLOSERS: list[Callable[[], Awaitable[None]]] = []


def seed(server: CountingMotoServer) -> None:
    import boto3

    session = boto3.Session(region_name="us-east-1")
    ssm = session.client("ssm", endpoint_url=server.url)
    ssm.put_parameter(Name=PARAMETER, Value="postgres://db/app", Type="SecureString")
    secrets = session.client("secretsmanager", endpoint_url=server.url)
    secrets.create_secret(Name=SECRET, SecretString=json.dumps({"user": "app", "password": "pw"}))
    dynamodb = session.client("dynamodb", endpoint_url=server.url)
    # Powertools' DynamoDBProvider reads items shaped {"id": name, "value": value}.
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(
        TableName=TABLE, Item={"id": {"S": ITEM_ID}, "value": {"S": '{"name": "Ann"}'}}
    )


# -- contenders: each returns a fresh, cold Lambda entry point --------------------------------


def polycache_invocation() -> Invocation:
    import polycache
    from polycache.loaders import _aws

    cache = polycache.Cache("memory://", ttl=MAX_AGE)
    CLOSERS.append(_aws.close_clients)

    @polycache.lambda_handler
    async def handler(event: Any, context: Any) -> tuple[Any, ...]:
        return (
            await cache.get(f"ssm:{PARAMETER}"),
            await cache.get(f"secretsmanager:{SECRET}"),
            await cache.get(f"dynamodb://{TABLE}?id={ITEM_ID}"),
        )

    return lambda: handler({}, None)


def powertools_invocation() -> Invocation:
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    items = parameters.DynamoDBProvider(table_name=TABLE)

    def handler(event: Any, context: Any) -> tuple[Any, ...]:
        return (
            parameters.get_parameter(PARAMETER, decrypt=True, max_age=MAX_AGE),
            parameters.get_secret(SECRET, max_age=MAX_AGE),
            items.get(ITEM_ID, max_age=MAX_AGE),
        )

    return lambda: handler({}, None)


def lambda_cache_invocation() -> Invocation:
    import boto3
    from lambda_cache import caching_logic, secrets_manager, ssm

    # lambda-cache keeps its entries in a module global, made on first use: start it cold.
    vars(caching_logic).pop("global_aws_lambda_cache", None)

    def load_item(item_id: str) -> Any:
        client = boto3.client("dynamodb")
        return client.get_item(TableName=TABLE, Key={"id": {"S": item_id}}).get("Item")

    @ssm.cache(  # type: ignore[untyped-decorator]
        parameter=PARAMETER, entry_name="url", max_age_in_seconds=MAX_AGE
    )
    @secrets_manager.cache(  # type: ignore[untyped-decorator]
        name=SECRET, entry_name="creds", max_age_in_seconds=MAX_AGE
    )
    def handler(event: Any, context: Any) -> tuple[Any, ...]:
        item = caching_logic.get_value(
            argument=ITEM_ID,
            max_age_in_seconds=MAX_AGE,
            entry_name="item",
            miss_function=load_item,
        )
        return context.url, context.creds, item

    return lambda: handler({}, SimpleNamespace())


def raw_aioboto3_invocation() -> Invocation:
    import aioboto3

    import polycache

    session: Any = aioboto3.Session()  # typed only where types-aioboto3 is installed
    clients: dict[str, Any] = {}

    async def client(service: str) -> Any:
        if service not in clients:
            clients[service] = await session.client(service).__aenter__()
        return clients[service]

    async def close() -> None:
        for made in clients.values():
            await made.close()
        clients.clear()

    CLOSERS.append(close)

    @polycache.lambda_handler
    async def handler(event: Any, context: Any) -> tuple[Any, ...]:
        ssm, secrets, dynamodb = (
            await client("ssm"),
            await client("secretsmanager"),
            await client("dynamodb"),
        )
        parameter, secret, item = await asyncio.gather(
            ssm.get_parameter(Name=PARAMETER, WithDecryption=True),
            secrets.get_secret_value(SecretId=SECRET),
            dynamodb.get_item(TableName=TABLE, Key={"id": {"S": ITEM_ID}}),
        )
        return parameter["Parameter"]["Value"], secret["SecretString"], item["Item"]

    return lambda: handler({}, None)


CONTENDERS: dict[str, Callable[[], Invocation]] = {
    "polycache": polycache_invocation,
    "powertools parameters": powertools_invocation,
    "lambda-cache": lambda_cache_invocation,
    "raw aioboto3 (every call)": raw_aioboto3_invocation,
}


# -- measurements -----------------------------------------------------------------------------


def warm_latencies(
    invocations: dict[str, Invocation], per_round: int, rounds: int
) -> dict[str, float]:
    """Median microseconds per warm invocation, contenders interleaved within each round."""
    samples: dict[str, list[float]] = {name: [] for name in invocations}
    for invoke in invocations.values():
        invoke()  # the first invocation loads: not a warm one
    for _ in range(rounds):
        for name, invoke in invocations.items():
            calls = per_round if not name.startswith("raw") else max(per_round // 20, 5)
            started = time.perf_counter_ns()
            for _ in range(calls):
                invoke()
            samples[name].append((time.perf_counter_ns() - started) / calls / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def calls_per_thousand(
    server: CountingMotoServer, factory: Callable[[], Invocation], invocations: int
) -> float:
    """AWS calls a fresh (cold) contender makes over `invocations`, scaled to 1000."""
    invoke = factory()
    server.clear_calls()
    for _ in range(invocations):
        invoke()
    return server.count() * 1000 / invocations


def polycache_gets_alone(per_round: int, rounds: int) -> float:
    """Median microseconds for the three warm gets inside a running loop (no entry point)."""
    import polycache

    cache = polycache.Cache("memory://", ttl=MAX_AGE)
    keys = (f"ssm:{PARAMETER}", f"secretsmanager:{SECRET}", f"dynamodb://{TABLE}?id={ITEM_ID}")

    @polycache.lambda_handler
    async def measure(event: Any, context: Any) -> list[float]:
        for key in keys:
            await cache.get(key)
        samples = []
        for _ in range(rounds):
            started = time.perf_counter_ns()
            for _ in range(per_round):
                for key in keys:
                    await cache.get(key)
            samples.append((time.perf_counter_ns() - started) / per_round / 1000)
        return samples

    return statistics.median(measure({}, None))


COLD_POLYCACHE = """
import time
started = time.perf_counter()
import polycache
cache = polycache.Cache()
@polycache.lambda_handler
async def handler(event, context):
    return (await cache.get("ssm:{parameter}"), await cache.get("secretsmanager:{secret}"),
            await cache.get("dynamodb://{table}?id={item}"))
handler({{}}, None)
print((time.perf_counter() - started) * 1000)
"""

COLD_POWERTOOLS = """
import time
started = time.perf_counter()
from aws_lambda_powertools.utilities import parameters
def handler(event, context):
    return (parameters.get_parameter("{parameter}", decrypt=True),
            parameters.get_secret("{secret}"),
            parameters.DynamoDBProvider(table_name="{table}").get("{item}"))
handler({{}}, None)
print((time.perf_counter() - started) * 1000)
"""

# What polycache's transport does, with nothing around it: the floor for polycache's own work.
COLD_BOTOCORE = """
import time
started = time.perf_counter()
import asyncio
import botocore.session
session = botocore.session.Session()
clients = {{}}
def call(service, operation, **arguments):
    if service not in clients:
        clients[service] = session.create_client(service)
    return getattr(clients[service], operation)(**arguments)
async def handler(event, context):
    return (
        await asyncio.to_thread(call, "ssm", "get_parameter", Name="{parameter}",
                                WithDecryption=True),
        await asyncio.to_thread(call, "secretsmanager", "get_secret_value", SecretId="{secret}"),
        await asyncio.to_thread(call, "dynamodb", "get_item", TableName="{table}",
                                Key={{"id": {{"S": "{item}"}}}}),
    )
asyncio.run(handler({{}}, None))
print((time.perf_counter() - started) * 1000)
"""

COLD_STARTS = {
    "polycache": COLD_POLYCACHE,
    "powertools parameters": COLD_POWERTOOLS,
    "bare botocore in threads": COLD_BOTOCORE,
}


def cold_start_ms(
    code: str, environment: dict[str, str], python: str = sys.executable
) -> tuple[float, float]:
    """Wall milliseconds the script reports, and the CPU milliseconds its process used.

    CPU time (user + system, every thread, interpreter start-up included) is the steadier
    figure on a shared machine; wall time is what Lambda bills.
    """
    source = textwrap.dedent(code).format(
        parameter=PARAMETER, secret=SECRET, table=TABLE, item=ITEM_ID
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [python, "-c", source],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return float(result.stdout.strip().splitlines()[-1]), cpu


def compile_bytecode() -> None:
    """Write .pyc for everything the cold starts import, as a deployment that ships them."""
    import site

    roots = [os.path.join(os.getcwd(), "polycache"), *site.getsitepackages()]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *roots],
        capture_output=True,
        check=False,  # an unrelated file that does not compile must not stop the benchmark
        timeout=600,
    )


@dataclass(frozen=True, slots=True)
class ColdStart:
    """A script run by a fresh `python` with `environment`."""

    code: str
    environment: dict[str, str]
    python: str = sys.executable


Samples = dict[str, list[tuple[float, float]]]


def cold_starts(contenders: dict[str, ColdStart], runs: int) -> Samples:
    """(wall, CPU) milliseconds per fresh process, contenders alternated (the order rotates)."""
    samples: Samples = {name: [] for name in contenders}
    names = list(contenders)
    for run in range(runs):
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            contender = contenders[name]
            samples[name].append(
                cold_start_ms(contender.code, contender.environment, contender.python)
            )
    return samples


def layer_cold_starts(environment: dict[str, str], runs: int) -> None:
    """Build the layer with and without bytecode; time a function importing from each tree.

    The function runs on the base interpreter (no virtualenv), with the unpacked layer's
    `python/` first on its path as Lambda puts /opt/python, and writes no bytecode, as on
    Lambda's read-only /opt.
    """
    import tempfile

    python = os.path.join(sys.base_prefix, "bin", "python3")
    contenders: dict[str, ColdStart] = {}
    with tempfile.TemporaryDirectory(prefix="polycache-layer-bench-") as scratch:
        print("\n# the Lambda layer (scripts/build_layer.py --dependencies environment)")
        for label, extra in (("with .pyc", []), ("sources only", ["--no-bytecode"])):
            tree = os.path.join(scratch, label.replace(" ", "-"))
            archive = f"{tree}.zip"
            subprocess.run(
                [sys.executable, "scripts/build_layer.py", "--dependencies", "environment",
                 "--tree", tree, "--output", archive, *extra],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            print(f"  layer {label:<14} {os.path.getsize(archive) / 1e6:6.1f} MB zipped")
            layer_environment = {
                **environment,
                "PYTHONPATH": os.path.join(tree, "python"),
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONNOUSERSITE": "1",
            }
            contenders[f"polycache, layer {label}"] = ColdStart(
                COLD_POLYCACHE, layer_environment, python
            )
        cold_starts(contenders, 1)  # warms the OS file cache
        samples = cold_starts(contenders, runs)
    print_cold_starts(
        samples, "polycache, layer sources only", "cold start from the unpacked layer"
    )


def print_cold_starts(samples: Samples, base: str, title: str) -> dict[str, float]:
    """Print wall and CPU medians with their ratios to `base`; return the wall medians."""
    wall = {name: statistics.median(wall for wall, _ in values) for name, values in samples.items()}
    cpu = {name: statistics.median(cpu for _, cpu in values) for name, values in samples.items()}
    runs = len(next(iter(samples.values())))
    print(f"\n# {title}, medians of {runs} alternated fresh processes")
    print(f"  {'contender':<28} {'wall':>10} {'ratio':>7} {'CPU':>10} {'ratio':>7}   (vs {base})")
    for name in samples:
        print(
            f"  {name:<28} {wall[name]:>7.1f} ms {wall[name] / wall[base]:>6.2f}x "
            f"{cpu[name]:>7.1f} ms {cpu[name] / cpu[base]:>6.2f}x"
        )
    return wall


def sdk_import_ms() -> float:
    code = (
        "import time; started = time.perf_counter(); import aiobotocore.session; "
        "print((time.perf_counter() - started) * 1000)"
    )
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=environment,
    )
    return float(result.stdout.strip())


def close_clients() -> None:
    import polycache

    @polycache.lambda_handler
    async def close(event: Any, context: Any) -> None:
        for closer in CLOSERS:
            await closer()

    close({}, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    options = parser.parse_args(argv)
    per_round, rounds, raw_calls, colds = (100, 2, 20, 1) if options.quick else (2000, 7, 300, 11)

    server = CountingMotoServer().start()
    os.environ.update(server.environment())
    try:
        seed(server)
        print(
            "# AWS loaders: warm Lambda invocation reading 1 parameter, 1 secret, 1 DynamoDB item"
        )
        print(f"moto at {server.url}; medians of {rounds} interleaved rounds; max age {MAX_AGE}s\n")

        invocations = {name: factory() for name, factory in CONTENDERS.items()}
        latencies = warm_latencies(invocations, per_round, rounds)
        calls = {
            # Cached contenders run exactly 1000 invocations; raw calls scale linearly.
            name: calls_per_thousand(server, factory, raw_calls if name.startswith("raw") else 1000)
            for name, factory in CONTENDERS.items()
        }
        base = latencies["polycache"]
        print(f"  {'contender':<28} {'median':>12} {'vs polycache':>13} {'AWS calls/1000':>15}")
        for name, latency in latencies.items():
            print(f"  {name:<28} {latency:>9.1f} us {latency / base:>12.2f}x {calls[name]:>15.0f}")
        alone = polycache_gets_alone(per_round, rounds)
        print(
            f"  (polycache's three gets alone, inside the running loop: {alone:.1f} us; the rest "
            "is lambda_handler's sync-to-async entry)"
        )

        # Bytecode is written first and reused, as in a deployment package that ships .pyc files.
        environment = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "PYTHONPATH": os.getcwd(),
        }
        contenders = {name: ColdStart(code, environment) for name, code in COLD_STARTS.items()}
        if not options.quick:
            compile_bytecode()
            cold_starts(contenders, 1)  # warms the OS file cache for all
        samples = cold_starts(contenders, colds)
        print_cold_starts(
            samples, "powertools parameters", "cold start: import + first invocation (3 lookups)"
        )
        print("  goal: polycache <= 0.90x powertools parameters")
        print(f"  (aiobotocore import alone in this environment: {sdk_import_ms():.0f} ms)")
        if options.quick:
            print("\n# the Lambda layer: not built in --quick mode")
        else:
            layer_cold_starts(environment, colds)
    finally:
        close_clients()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
