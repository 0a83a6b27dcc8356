"""Fixtures for the SnapStart tests: moto servers in processes of their own; a clean registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from polycache import snapstart
from tests.stand_ins.moto_server import AWS_TEST_ENVIRONMENT

ROOT = Path(__file__).resolve().parents[2]


class MotoProcess:
    """`tests.snapstart.moto_process` running in a child process, stopped by its PID."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.snapstart.moto_process"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **AWS_TEST_ENVIRONMENT},
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the moto process did not start (it said {self.url!r})")

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)

    def client(self, service: str) -> Any:
        return botocore.session.Session().create_client(
            service,
            endpoint_url=self.url,
            aws_access_key_id="SEEDINGKEYID",
            aws_secret_access_key="seeding",
            region_name=AWS_TEST_ENVIRONMENT["AWS_REGION"],
        )

    def calls(self, *, clear: bool = False) -> list[tuple[str, str]]:
        """The AWS calls made so far, as (operation, access key id)."""
        request = urllib.request.Request(f"{self.url}/_calls", method="DELETE" if clear else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return [(operation, key) for operation, key in json.load(response)]


@pytest.fixture(scope="module")
def moto_processes() -> Iterator[Callable[[], MotoProcess]]:
    """Starts moto servers in child processes on demand; stops each at the end of the module."""
    started: list[MotoProcess] = []

    def start() -> MotoProcess:
        server = MotoProcess()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def _forget_registrations() -> Iterator[None]:
    """Each test registers its own caches; none outlives it."""
    yield
    snapstart._caches.clear()
