"""A function snapshotted in one environment and restored into another, hooks run as Lambda does.

The snapshot's environment is moto server A with credentials X; the restored one is server B
(same names, other values) with credentials Y. See restored_function.py for the function.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.snapstart.conftest import ROOT, MotoProcess
from tests.stand_ins.moto_server import AWS_TEST_ENVIRONMENT

SNAPSHOT_KEY_ID = "SNAPSHOTKEYID"
RESTORED_KEY_ID = "RESTOREDKEYID"


def seed(server: MotoProcess, suffix: str) -> None:
    server.client("ssm").put_parameter(Name="/app/config", Value=f"config-{suffix}", Type="String")
    server.client("secretsmanager").create_secret(Name="app/token", SecretString=f"token-{suffix}")
    server.calls(clear=True)


@pytest.fixture(scope="module")
def restored(moto_processes: Callable[[], MotoProcess]) -> dict[str, Any]:
    """Runs the function once; its report, and the calls each server received."""
    snapshot_server, restored_server = moto_processes(), moto_processes()
    seed(snapshot_server, "A")
    seed(restored_server, "B")
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "POLYCACHE_", "MOMENTO_"))
    }
    environment.update(
        AWS_TEST_ENVIRONMENT,
        AWS_ACCESS_KEY_ID=SNAPSHOT_KEY_ID,
        AWS_ENDPOINT_URL=snapshot_server.url,
    )
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.snapstart.restored_function",
            restored_server.url,
            RESTORED_KEY_ID,
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    report: dict[str, Any] = json.loads(finished.stdout)
    report["snapshot_calls"] = snapshot_server.calls()
    report["restored_calls"] = restored_server.calls()
    return report


def test_init_loads_from_the_snapshot_environment_over_an_open_connection(
    restored: dict[str, Any],
) -> None:
    assert restored["init_stats"] == 2
    assert restored["init_connections"] >= 1  # the check below can fail: one was open
    assert Counter(restored["snapshot_calls"]) == {
        ("ssm.GetParameter", SNAPSHOT_KEY_ID): 1,
        ("secretsmanager.GetSecretValue", SNAPSHOT_KEY_ID): 1,
    }


def test_no_connection_goes_into_the_snapshot(restored: dict[str, Any]) -> None:
    assert restored["snapshot_connections"] == 0
    assert restored["final_connections"] == 0


def test_the_first_get_after_restore_serves_the_snapshot_value_at_once(
    restored: dict[str, Any],
) -> None:
    first = restored["first"]
    assert first["parameter"] == "config-A"
    # Answered stale, not loaded: a load would have answered B's value.
    assert first["stale_hits"] == 1
    assert first["misses"] == 2  # the two prefetches at INIT, nothing since


def test_a_background_refresh_brings_the_restored_environment_value(
    restored: dict[str, Any],
) -> None:
    assert restored["later"]["parameter"] == "config-B"


def test_a_reload_on_restore_secret_is_loaded_from_the_restored_environment_before_use(
    restored: dict[str, Any],
) -> None:
    assert restored["first"]["secret"] == "token-B"
    assert restored["later"]["secret"] == "token-B"


def test_after_restore_every_call_goes_to_the_new_endpoint_with_the_new_credentials(
    restored: dict[str, Any],
) -> None:
    restored_key = RESTORED_KEY_ID
    # Nothing more reached A than the two INIT loads: no old connection was reused.
    assert len(restored["snapshot_calls"]) == 2
    assert Counter(restored["restored_calls"]) == {
        ("secretsmanager.GetSecretValue", restored_key): 1,
        ("ssm.GetParameter", restored_key): 1,
    }
    assert restored["stats"]["loads"] == 4


def test_the_after_restore_hook_is_quick(restored: dict[str, Any]) -> None:
    # It makes no network call; a generous bound for a loaded 2-core machine.
    assert restored["restore_seconds"] < 0.5
