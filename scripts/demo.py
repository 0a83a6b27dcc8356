"""polycache demo: simulated Lambda invocations against an embedded moto server.

Run: .venv/bin/python scripts/demo.py

It seeds SSM parameters, a secret, an S3 object and a DynamoDB item in moto (in server mode on
127.0.0.1), registers a slow custom loader, and drives invocations through
`polycache.lambda_handler` on the memory backend with a short ttl and stale_ttl. The clock is
injected and moved forward between invocations, so that hits, misses, stale serves, background
refreshes and S3 revalidations (304, no body) all show up in a few seconds. Beside each
invocation: its latency, what each key was (hit / stale / miss / not found), loader calls, and
the AWS calls that reached moto, which is what AWS would bill.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# The demo runs from a checkout: polycache and its moto stand-in come from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polycache
from polycache.loaders import _aws
from polycache.loaders.s3 import S3Loader
from polycache.loaders.ssm import SsmLoader
from tests.stand_ins.moto_server import CountingMotoServer

TTL = 2.0
STALE_TTL = 4.0
SLOW_SECONDS = 0.25
IDLE_SECONDS = 0.4
NEGATIVE_TTL = 10.0

KEYS = {
    "db_url": "ssm:/demo/db/url",
    "settings": "config:/demo/app/settings.json",
    "creds": "secretsmanager:demo/db/creds",
    "model": "s3://demo-models/v1/model.json",
    "user": "dynamodb://demo_users?id=42",
    "report": "slow:daily",
    "missing": "ssm:/demo/not/there",
}

# (clock advance before the invocation, what happens in between)
TIMELINE: list[tuple[float, str]] = [
    (0.0, "cold start: every key misses"),
    (0.5, "warm: every key is fresh"),
    (0.5, ""),
    (1.5, "past ttl: stale values served at once, refreshes start"),
    (0.1, "the refreshed values are fresh"),
    (0.5, "db url changed in SSM"),
    (2.5, "stale again: the refresh picks up the new url; S3 answers 304"),
    (0.1, ""),
    (7.0, "past stale_ttl: expired, the caller waits for loads"),
    (0.5, ""),
]


class Clock:
    """The cache's clock: it moves only when the demo moves it, so the run is repeatable."""

    def __init__(self) -> None:
        self.start = time.time()
        self.skipped = 0.0

    def __call__(self) -> float:
        return self.start + self.skipped


class RevalidationCountingS3Loader(S3Loader):
    """The built-in S3 loader, counting the revalidations S3 answered with 304."""

    not_modified = 0

    async def load_conditional(self, name: str, validator: str | None) -> polycache.Loaded:
        loaded = await super().load_conditional(name, validator)
        if not loaded.modified:
            type(self).not_modified += 1
        return loaded


def seed(server: CountingMotoServer) -> None:
    import boto3

    session = boto3.Session(region_name="us-east-1")
    ssm = session.client("ssm", endpoint_url=server.url)
    ssm.put_parameter(Name="/demo/db/url", Value="postgres://db-1/app", Type="String")
    settings = json.dumps({"feature_x": True, "page_size": 50})
    ssm.put_parameter(Name="/demo/app/settings.json", Value=settings, Type="String")
    secrets = session.client("secretsmanager", endpoint_url=server.url)
    secrets.create_secret(Name="demo/db/creds", SecretString=json.dumps({"user": "app"}))
    s3 = session.client("s3", endpoint_url=server.url)
    s3.create_bucket(Bucket="demo-models")
    s3.put_object(Bucket="demo-models", Key="v1/model.json", Body=b'{"weights": [0.1, 0.2]}')
    dynamodb = session.client("dynamodb", endpoint_url=server.url)
    dynamodb.create_table(
        TableName="demo_users",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="demo_users", Item={"id": {"N": "42"}, "name": {"S": "Ann"}})


def update_db_url(server: CountingMotoServer) -> None:
    import boto3

    ssm = boto3.Session(region_name="us-east-1").client("ssm", endpoint_url=server.url)
    ssm.put_parameter(
        Name="/demo/db/url", Value="postgres://db-2/app", Type="String", Overwrite=True
    )


def status(before: polycache.Stats, after: polycache.Stats, value: Any) -> str:
    if after.stale_hits > before.stale_hits:
        return "stale"
    if after.hits > before.hits:
        return "hit" if value is not None else "neg-hit"
    if after.misses > before.misses:
        return "miss" if value is not None else "notfound"
    return "?"


def main() -> int:
    started = time.perf_counter()
    server = CountingMotoServer().start()
    os.environ.update(server.environment())
    try:
        seed(server)
        server.clear_calls()
        clock = Clock()
        cache = polycache.Cache(
            "memory://", ttl=TTL, stale_ttl=STALE_TTL, negative_ttl=NEGATIVE_TTL, clock=clock
        )
        cache.register_loader("config", SsmLoader(transform="auto"))
        cache.register_loader("s3", RevalidationCountingS3Loader())
        slow_calls = 0

        @cache.loader("slow")
        async def build_report(name: str) -> dict[str, Any]:
            nonlocal slow_calls
            slow_calls += 1
            await asyncio.sleep(SLOW_SECONDS)  # a slow downstream (a report query)
            return {"report": name, "build": slow_calls}

        @polycache.lambda_handler
        async def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            statuses: dict[str, str] = {}
            values: dict[str, Any] = {}
            for label, key in KEYS.items():
                before = cache.stats
                values[label] = await cache.get(key)
                statuses[label] = status(before, cache.stats, values[label])
            return {"statuses": statuses, "db_url": values["db_url"]}

        @polycache.lambda_handler
        async def idle(event: Any, context: Any) -> None:
            await asyncio.sleep(IDLE_SECONDS)

        labels = list(KEYS)
        print(
            f"polycache demo: memory backend, ttl={TTL}s, stale_ttl={STALE_TTL}s, "
            f"negative_ttl={NEGATIVE_TTL}s"
        )
        print(f"moto server at {server.url} (AWS calls counted there)\n")
        for label, key in KEYS.items():
            print(f"  {label:<9} {key}")
        print()
        header = f"{'#':>2} {'t(s)':>5} {'latency':>9}  " + " ".join(f"{x:<9}" for x in labels)
        print(header + "  loads  AWS  bg AWS  db_url")
        previous_stats = cache.stats
        previous_calls = server.count()
        for number, (advance, note) in enumerate(TIMELINE, start=1):
            clock.skipped += advance
            if note.startswith("db url changed"):
                update_db_url(server)
                previous_calls = server.count()
            begin = time.perf_counter()
            result = handler({"invocation": number}, None)
            latency = (time.perf_counter() - begin) * 1000
            stats = cache.stats
            calls = server.count()
            cells = " ".join(f"{result['statuses'][label]:<9}" for label in labels)
            # Background refreshes carry on on the environment's loop: on Lambda during the
            # next invocation; here for a moment before it, so that each shows on its own.
            idle(None, None)
            background = server.count() - calls
            print(
                f"{number:>2} {clock.skipped:>5.1f} {latency:>7.1f}ms  {cells}"
                f"  {stats.loads - previous_stats.loads:>5}  {calls - previous_calls:>3}"
                f"  {background:>6}  {result['db_url']}" + (f"   <- {note}" if note else "")
            )
            previous_stats, previous_calls = cache.stats, server.count()

        @polycache.lambda_handler
        async def shutdown(event: Any, context: Any) -> None:
            await _aws.close_clients()

        shutdown(None, None)
        stats = cache.stats
        reads = len(TIMELINE) * len(KEYS)
        aws_reads = len(TIMELINE) * sum(1 for key in KEYS.values() if not key.startswith("slow:"))
        aws_calls = server.count() - server.count("ssm.PutParameter")
        print()
        print(
            f"{reads} key reads in {len(TIMELINE)} invocations. Without a cache: {aws_reads} AWS "
            f"calls and {len(TIMELINE)} slow loads. With polycache: {aws_calls} AWS calls and "
            f"{slow_calls} slow loads."
        )
        print(
            f"polycache stats: hits={stats.hits} stale_hits={stats.stale_hits} "
            f"misses={stats.misses} loads={stats.loads} (misses + background refreshes) "
            f"load_errors={stats.load_errors}"
        )
        print(
            f"S3 revalidations answered 304 (no body): {RevalidationCountingS3Loader.not_modified}"
        )
        print(f"AWS calls by operation: {dict(sorted(server.counts().items()))}")
        print(f"demo took {time.perf_counter() - started:.1f}s")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
