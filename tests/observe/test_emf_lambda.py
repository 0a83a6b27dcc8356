"""EMF lines from a real runtime process: a handler served through cargo-lambda's Runtime API
writes its metrics to the process's stdout, one line per invocation that used the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.observe.helpers import check_emf
from tests.stand_ins.lambda_api import CargoLambdaApi

ROOT = Path(__file__).resolve().parents[2]

# A minimal Lambda runtime client: what awslambdaric does, in the standard library.
RUNTIME = """
import json, os, sys, urllib.request

import polycache

cache = polycache.Cache(ttl=300)


@cache.loader("item")
async def load_item(name):
    return name.upper()


@polycache.lambda_handler(cache=cache, metrics=True)
async def handler(event, context):
    return [await cache.get(key) for key in event["keys"]]


api = os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation"
for _ in range(int(sys.argv[1])):
    with urllib.request.urlopen(f"{api}/next", timeout=60) as response:
        request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(response.read())
    body = json.dumps(handler(event, None)).encode()
    urllib.request.urlopen(
        urllib.request.Request(f"{api}/{request_id}/response", data=body, method="POST"),
        timeout=60,
    ).close()
"""


def invoke(api: CargoLambdaApi, event: object) -> object:
    request = urllib.request.Request(api.invoke_url, data=json.dumps(event).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.lambda_api
def test_a_runtime_process_writes_one_emf_line_per_invocation_that_used_the_cache(
    fresh_cargo_lambda: CargoLambdaApi, tmp_path: Path
) -> None:
    cargo_lambda = fresh_cargo_lambda
    script = tmp_path / "runtime.py"
    script.write_text(RUNTIME)
    environment = {
        **os.environ,
        "AWS_LAMBDA_RUNTIME_API": cargo_lambda.runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": "orders",
        "PYTHONPATH": str(ROOT),
    }
    with subprocess.Popen(
        [sys.executable, str(script), "3"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as runtime:
        try:
            assert invoke(cargo_lambda, {"keys": ["item:a", "item:a"]}) == ["A", "A"]
            assert invoke(cargo_lambda, {"keys": ["item:a"]}) == ["A"]
            assert invoke(cargo_lambda, {"keys": []}) == []
            stdout, stderr = runtime.communicate(timeout=30)
        finally:
            if runtime.poll() is None:
                runtime.kill()
    assert runtime.returncode == 0, stderr
    documents = [json.loads(line) for line in stdout.splitlines()]
    for document in documents:
        check_emf(document)
    assert [
        (document["FunctionName"], document["Misses"], document["Loads"], document["Hits"])
        for document in documents
    ] == [("orders", 1, 1, 1), ("orders", 0, 0, 1)]
    assert "LoadTimeP99" in documents[0]
    assert "LoadTimeP99" not in documents[1]
