"""`import polycache` stays cheap: nothing heavy, nothing happening at import time."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("aioboto3", "aiobotocore", "botocore", "boto3", "momento", "grpc", "httpx", "aiohttp")


def test_import_pulls_in_no_heavy_dependency() -> None:
    code = (
        "import sys, threading, polycache\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(threading.active_count())\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout.split("\n")
    assert output[0] == "[]"
    assert output[1] == "1"


def test_public_surface_is_sorted_and_complete() -> None:
    import polycache

    assert polycache.__all__ == sorted(polycache.__all__)
    for name in polycache.__all__:
        assert getattr(polycache, name) is not None
    for name in ("Cache", "lambda_handler", "register_backend", "PolycacheError"):
        assert name in polycache.__all__
