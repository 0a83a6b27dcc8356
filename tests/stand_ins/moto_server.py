"""moto in server mode on 127.0.0.1, counting the AWS calls that reach it.

The count is what AWS would bill: it proves caching by the calls that did not happen.

One gap in moto is closed here: DynamoDB answers a GetItem whose key attribute has the wrong type
(`{"N": "7"}` for a string key) with a ValidationException, where moto answers "no item". The
DynamoDB loader relies on that answer to correct a guessed key type, so the server gives it.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from moto.server import ThreadedMotoServer

__all__ = ["AWS_TEST_ENVIRONMENT", "CountingMotoServer"]

AWS_TEST_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class CountingMotoServer:
    """A ThreadedMotoServer whose WSGI app records each request's operation.

    Operations are named like `ssm.GetParameter`, `secretsmanager.GetSecretValue`,
    `dynamodb.GetItem`, or `s3.GET /bucket/key` for S3's REST calls.
    """

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def start(self) -> CountingMotoServer:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        wsgi_server = self._server._server  # moto offers no other handle on its WSGI app
        assert wsgi_server is not None
        wsgi_server.app = self._counting(wsgi_server.app)
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def environment(self) -> dict[str, str]:
        """The variables that point AWS SDKs at this server."""
        return {**AWS_TEST_ENVIRONMENT, "AWS_ENDPOINT_URL": self.url}

    def reset(self) -> None:
        """Forget every resource (moto's reset API) and every counted call."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self.clear_calls()

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def count(self, operation: str | None = None) -> int:
        """Calls recorded for `operation` (`ssm.GetParameter`, or a prefix like `s3.`).

        With no operation, every call is counted.
        """
        with self._lock:
            if operation is None:
                return len(self.calls)
            return sum(
                1
                for call in self.calls
                if call == operation or (operation.endswith(".") and call.startswith(operation))
            )

    def counts(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.calls)

    def _counting(self, app: WsgiApp) -> WsgiApp:
        def counting_app(
            environ: dict[str, Any], start_response: Callable[..., Any]
        ) -> Iterable[bytes]:
            operation = _operation(environ)
            if operation is not None:
                with self._lock:
                    self.calls.append(operation)
            if operation == "dynamodb.GetItem" and _key_type_mismatch(environ):
                body = json.dumps(
                    {
                        "__type": "com.amazon.coral.validate#ValidationException",
                        "message": "The provided key element does not match the schema",
                    }
                ).encode()
                start_response(
                    "400 Bad Request",
                    [
                        ("Content-Type", "application/x-amz-json-1.0"),
                        ("Content-Length", str(len(body))),
                    ],
                )
                return [body]
            return app(environ, start_response)

        return counting_app


def _operation(environ: dict[str, Any]) -> str | None:
    path = environ.get("PATH_INFO", "")
    if path.startswith("/moto-api"):
        return None
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        service, _, action = target.partition(".")
        prefix = {"AmazonSSM": "ssm", "secretsmanager": "secretsmanager"}.get(service, "")
        if service.startswith("DynamoDB"):
            prefix = "dynamodb"
        return f"{prefix or service}.{action}"
    scope = _scope(environ)
    service = scope[3] if len(scope) >= 4 else ""
    return f"{service or 'unknown'}.{environ.get('REQUEST_METHOD', '')} {path}"


def _key_type_mismatch(environ: dict[str, Any]) -> bool:
    """Whether a GetItem's key gives an attribute a type other than the table's (as DynamoDB
    checks); the request body is put back for moto to read."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(raw)
    try:
        request = json.loads(raw)
        region = _scope(environ)[2] or "us-east-1"
        table = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].tables[request["TableName"]]
    except (ValueError, KeyError, IndexError):
        return False  # moto answers what is wrong with it
    expected: dict[str, str | None] = {table.hash_key_attr: table.hash_key_type}
    if table.range_key_attr is not None:
        expected[table.range_key_attr] = table.range_key_type
    return any(
        field in expected and set(value) != {expected[field]}
        for field, value in request.get("Key", {}).items()
    )


def _scope(environ: dict[str, Any]) -> list[str]:
    """The SigV4 credential scope: key id, date, region, service, aws4_request."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" not in authorization:
        return []
    scope: list[str] = authorization.split("Credential=", 1)[1].split(",", 1)[0].split("/")
    return scope


def seed_json(server: CountingMotoServer, path: str, body: dict[str, Any]) -> None:
    """POST JSON to a moto-api path (used for moto's own configuration endpoints)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(f"{server.url}{path}", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def patched_environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a `with`, restoring them afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
