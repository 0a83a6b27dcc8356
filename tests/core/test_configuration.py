"""Arguments beat environment variables, which beat defaults; bad values are named."""

from __future__ import annotations

from datetime import timedelta

import pytest

import polycache
from polycache import Cache, ConfigurationError
from polycache import _registry as registry
from polycache.backends.memory import MemoryBackend
from tests.core.fakes import BytesBackend


def test_defaults() -> None:
    settings = Cache(environ={}).settings
    assert settings.backend == "memory://"
    assert (settings.ttl, settings.stale_ttl, settings.stale_if_error) == (300, 0, 0)
    assert (settings.negative_ttl, settings.backend_timeout, settings.disabled) == (30, 1, False)


def test_environment_beats_defaults_and_arguments_beat_environment() -> None:
    environ = {
        "POLYCACHE_BACKEND": "memory://?max_entries=5",
        "POLYCACHE_TTL": "60",
        "POLYCACHE_STALE_TTL": "600",
        "POLYCACHE_STALE_IF_ERROR": "3600",
        "POLYCACHE_NEGATIVE_TTL": "5",
        "POLYCACHE_BACKEND_TIMEOUT": "0.25",
        "POLYCACHE_DISABLED": "1",
    }
    cache = Cache.from_env(environ)
    assert isinstance(cache.backend, MemoryBackend)
    assert cache.backend.max_entries == 5
    settings = cache.settings
    assert (settings.ttl, settings.stale_ttl, settings.stale_if_error) == (60, 600, 3600)
    assert (settings.negative_ttl, settings.backend_timeout, settings.disabled) == (5, 0.25, True)
    overridden = Cache.from_env(environ, ttl=timedelta(minutes=2), disabled=False)
    assert overridden.settings.ttl == 120
    assert overridden.settings.disabled is False
    assert overridden.settings.stale_ttl == 600


def test_cache_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYCACHE_TTL", "42")
    assert Cache().settings.ttl == 42
    assert Cache.from_env().settings.ttl == 42
    assert Cache(ttl=1).settings.ttl == 1


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("POLYCACHE_TTL", "five", "POLYCACHE_TTL='five' is not a number of seconds"),
        ("POLYCACHE_STALE_TTL", "-1", "POLYCACHE_STALE_TTL='-1'"),
        ("POLYCACHE_NEGATIVE_TTL", "nan", "POLYCACHE_NEGATIVE_TTL='nan'"),
        ("POLYCACHE_BACKEND_TIMEOUT", "0", "POLYCACHE_BACKEND_TIMEOUT='0': expected a positive"),
        ("POLYCACHE_DISABLED", "maybe", "POLYCACHE_DISABLED='maybe': expected '1' or '0'"),
        ("POLYCACHE_BACKEND", "memcached://x", "unknown backend scheme 'memcached'"),
        ("POLYCACHE_BACKEND", "memory", "has no scheme"),
        ("POLYCACHE_BACKEND", "memory://?max_entries=0", "max_entries='0'"),
        ("POLYCACHE_BACKEND", "memory://?max_entry=5", "unknown option 'max_entry'"),
        ("POLYCACHE_BACKEND", "memory://somehost", "takes no host"),
    ],
)
def test_bad_environment_values_are_named(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Cache.from_env({variable: value})
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"ttl": -1}, "ttl must be a finite, non-negative"),
        ({"stale_ttl": "5"}, "stale_ttl must be a number of seconds or a timedelta, got str"),
        ({"backend_timeout": 0}, "backend_timeout must be a positive"),
        ({"backend": 42}, "backend must be a URL str or a Backend object, got int"),
        ({"serializer": "yaml"}, "serializer must be 'json', 'pickle'"),
        ({"fail_open": "no"}, "fail_open must be a bool"),
        ({"negative_ttl": timedelta(seconds=-1)}, "negative_ttl"),
    ],
)
def test_bad_arguments_are_named(arguments: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        Cache(environ={}, **arguments)  # type: ignore[arg-type]


def test_register_backend_adds_a_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_registered", {})
    created: list[str] = []

    def factory(url: str) -> BytesBackend:
        created.append(url)
        return BytesBackend()

    polycache.register_backend("fake", factory)
    cache = Cache("fake://anything?x=1")
    assert isinstance(cache.backend, BytesBackend)
    assert created == ["fake://anything?x=1"]
    with pytest.raises(ConfigurationError, match="URL scheme"):
        polycache.register_backend("1bad", factory)
    with pytest.raises(ConfigurationError, match="callable"):
        polycache.register_backend("ok", "factory")  # type: ignore[arg-type]
    polycache.register_backend("notabackend", lambda url: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigurationError, match="not a Backend"):
        Cache("notabackend://")


def test_a_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        registry._BUILTIN, "momento", ("polycache_test_no_such_module", "Backend", "momento")
    )
    with pytest.raises(ConfigurationError, match=r"pip install 'polycache\[momento\]'"):
        Cache("momento://cache")
