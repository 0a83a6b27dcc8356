"""The extension's environment variables, including Go durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from polycache import ConfigurationError
from polycache.extension._lifecycle import api_base_url
from polycache.extension._settings import ExtensionSettings, go_duration, read_settings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("300s", 300.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("250ms", 0.25),
        ("10us", 1e-5),
        ("10µs", 1e-5),
        ("1h0m0.5s", 3600.5),
        ("+5m", 300.0),
        (".5s", 0.5),
        ("9000h", 32_400_000.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "-5s", "5 s", "5d", "s", "1m30", "abc", "1.2.3s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        go_duration(text)


def test_defaults() -> None:
    settings = read_settings({})
    assert settings.port == 4000
    assert settings.runtime_api is None
    assert settings.token is None
    assert settings.parameters_ttl == settings.ssm_ttl == settings.secrets_ttl == 300.0
    assert settings.config_path == Path("/var/task/config.yaml")
    assert settings.init_startup is True


def test_compatible_variables_without_the_300_second_cap() -> None:
    settings = read_settings(
        {
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": "2773",
            "CACHE_EXTENSION_TTL": "1h30m",
            "SSM_PARAMETER_STORE_TTL": "3600",
            "SECRETS_MANAGER_TTL": "15m",
            "CACHE_EXTENSION_INIT_STARTUP": "false",
            "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE": "50",
            "SSM_PARAMETER_STORE_TIMEOUT_MILLIS": "1500",
            "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL": "warn",
            "LAMBDA_TASK_ROOT": "/opt/app",
            "AWS_SESSION_TOKEN": "token",
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        }
    )
    assert settings.port == 2773
    assert settings.parameters_ttl == 5400.0
    assert settings.ssm_ttl == 3600.0
    assert settings.secrets_ttl == 900.0
    assert settings.init_startup is False
    assert settings.max_entries == 50
    assert settings.source_timeout == 1.5
    assert settings.log_level == "WARNING"
    assert settings.config_path == Path("/opt/app/config.yaml")
    assert settings.token == "token"
    assert settings.runtime_api == "127.0.0.1:9001"


def test_polycache_variables_win() -> None:
    settings = read_settings(
        {
            "POLYCACHE_EXTENSION_PORT": "4100",
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": "2773",
            "POLYCACHE_EXTENSION_TTL": "10s",
            "CACHE_EXTENSION_TTL": "1h",
            "POLYCACHE_EXTENSION_CONFIG": "/tmp/cache.yaml",
            "POLYCACHE_EXTENSION_MAX_ITEM_BYTES": "2048",
        }
    )
    assert settings.port == 4100
    assert settings.parameters_ttl == 10.0
    assert settings.config_path == Path("/tmp/cache.yaml")
    assert settings.max_item_bytes == 2048


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POLYCACHE_EXTENSION_PORT", "70000"),
        ("POLYCACHE_EXTENSION_PORT", "http"),
        ("CACHE_EXTENSION_TTL", "5 minutes"),
        ("SSM_PARAMETER_STORE_TTL", "-1"),
        ("SECRETS_MANAGER_TTL", "forever"),
        ("CACHE_EXTENSION_INIT_STARTUP", "maybe"),
        ("POLYCACHE_EXTENSION_MAX_ITEM_BYTES", "0"),
        ("SECRETS_MANAGER_TIMEOUT_MILLIS", "0"),
        ("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "loud"),
        ("POLYCACHE_EXTENSION_IDLE_TIMEOUT", "0"),
        ("POLYCACHE_EXTENSION_BODY_TIMEOUT", "soon"),
        ("POLYCACHE_EXTENSION_MAX_CONNECTIONS", "-3"),
        ("POLYCACHE_EXTENSION_MAX_INFLIGHT_BYTES", "1000"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        read_settings({variable: value})


def test_the_token_never_shows_in_the_repr() -> None:
    settings = ExtensionSettings(token="very-secret-session-token")
    assert "very-secret-session-token" not in repr(settings)
    assert "token=set" in repr(settings)


@pytest.mark.parametrize(
    ("runtime_api", "base"),
    [
        ("127.0.0.1:9001", "http://127.0.0.1:9001/2020-01-01/extension"),
        ("http://127.0.0.1:9000/.rt", "http://127.0.0.1:9000/.rt/2020-01-01/extension"),
        ("127.0.0.1:9000/.rt/", "http://127.0.0.1:9000/.rt/2020-01-01/extension"),
    ],
)
def test_runtime_api_forms(runtime_api: str, base: str) -> None:
    assert api_base_url(runtime_api) == base


def test_connection_deadline_and_memory_limits() -> None:
    defaults = read_settings({})
    assert (
        defaults.idle_timeout,
        defaults.body_timeout,
        defaults.max_connections,
        defaults.max_inflight_bytes,
    ) == (10.0, 5.0, 256, 4 * defaults.max_item_bytes)
    chosen = read_settings(
        {
            "POLYCACHE_EXTENSION_IDLE_TIMEOUT": "2.5",
            "POLYCACHE_EXTENSION_BODY_TIMEOUT": "1500ms",
            "POLYCACHE_EXTENSION_MAX_CONNECTIONS": "32",
            "POLYCACHE_EXTENSION_MAX_ITEM_BYTES": "1000",
            "POLYCACHE_EXTENSION_MAX_INFLIGHT_BYTES": "3000",
        }
    )
    assert (
        chosen.idle_timeout,
        chosen.body_timeout,
        chosen.max_connections,
        chosen.max_inflight_bytes,
    ) == (2.5, 1.5, 32, 3000)
    # The in-flight budget follows the item limit unless it is given.
    assert read_settings({"POLYCACHE_EXTENSION_MAX_ITEM_BYTES": "1000"}).max_inflight_bytes == 4000
