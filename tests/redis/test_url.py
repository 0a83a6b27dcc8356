"""redis:// URLs: what they build, and a named ConfigurationError for every bad value."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from polycache import Cache, ConfigurationError
from polycache._registry import backend_from_url
from polycache.backends import redis as redis_module
from polycache.backends._redis_credentials import (
    IamCredentials,
    PasswordCredentials,
    SecretPasswordCredentials,
)
from polycache.backends.redis import RedisBackend

PASSWORD = "url-pass-7781"


def test_plain_url_defaults() -> None:
    backend = RedisBackend.from_url("redis://cache.internal", environ={})
    assert repr(backend) == (
        "RedisBackend(host='cache.internal', port=6379, db=0, tls=False, cluster=False, "
        "key_prefix='polycache:', credentials=None)"
    )
    assert backend.key_prefix == "polycache:"
    assert backend.stores_objects is False
    assert backend.max_item_bytes == 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("url", "tls"),
    [
        ("redis://h:6380/2", False),
        ("rediss://h:6380/2", True),
        ("valkey://h:6380/2", False),
        ("valkeys://h:6380/2", True),
        ("REDIS://h:6380/2", False),
    ],
)
def test_every_scheme_is_registered(url: str, tls: bool) -> None:
    backend = backend_from_url(url)
    assert isinstance(backend, RedisBackend)
    assert f"port=6380, db=2, tls={tls}" in repr(backend)


def test_options() -> None:
    backend = RedisBackend.from_url(
        "redis://h?cluster=1&key_prefix=app1:&max_connections=7&socket_timeout=0.25", environ={}
    )
    assert "cluster=True" in repr(backend) and "key_prefix='app1:'" in repr(backend)
    assert backend._max_connections == 7
    assert backend._socket_timeout == 0.25


def test_user_and_password_come_from_the_url_and_never_show() -> None:
    backend = RedisBackend.from_url(f"redis://alice:{PASSWORD}@h:6379/0", environ={})
    assert isinstance(backend._credentials, PasswordCredentials)
    assert PASSWORD not in repr(backend)
    assert "username='alice'" in repr(backend)


async def test_url_password_with_escapes_is_unquoted() -> None:
    backend = RedisBackend.from_url("redis://:p%40ss%3Aword@h", environ={})
    assert backend._credentials is not None
    credentials = await backend._credentials()
    assert (credentials.username, credentials.password) == (None, "p@ss:word")
    assert "p@ss" not in repr(credentials)


def test_secret_variable_is_read_from_environ_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYCACHE_REDIS_PASSWORD_SECRET", "from/os/environ")
    backend = RedisBackend.from_url(
        "redis://bob@h", environ={"POLYCACHE_REDIS_PASSWORD_SECRET": "prod/redis"}
    )
    assert isinstance(backend._credentials, SecretPasswordCredentials)
    assert backend._credentials.secret_name == "prod/redis"
    assert backend._credentials.username == "bob"
    assert RedisBackend.from_url("redis://h", environ={})._credentials is None


def test_iam_url(tmp_path: Path) -> None:
    backend = RedisBackend.from_url(
        "rediss://app-user@my-cache-abc123.serverless.use1.cache.amazonaws.com:6379"
        "?iam=1&cache_name=My-Cache&cluster=1",
        environ={"AWS_REGION": "us-east-1"},
    )
    credentials = backend._credentials
    assert isinstance(credentials, IamCredentials)
    assert (credentials.user, credentials.cache_name, credentials.region) == (
        "app-user",
        "my-cache",
        "us-east-1",
    )
    assert credentials.serverless is True
    explicit = RedisBackend.from_url(
        "rediss://u@master.c.xyz.euw1.cache.amazonaws.com?iam=1&cache_name=c&region=eu-west-1",
        environ={},
    )
    assert isinstance(explicit._credentials, IamCredentials)
    assert explicit._credentials.region == "eu-west-1"
    assert explicit._credentials.serverless is False


@pytest.mark.parametrize(
    ("url", "environ", "message"),
    [
        ("memcached://h", {}, "must start with redis://"),
        ("redis://", {}, "names no host"),
        ("redis://h:99999", {}, "malformed port"),
        ("redis://h/zero", {}, "database number"),
        ("redis://h?colour=blue", {}, "unknown option 'colour'"),
        ("redis://h?max_connections=0", {}, "max_connections=.*greater than 0"),
        ("redis://h?max_connections=many", {}, "max_connections"),
        ("redis://h?socket_timeout=0", {}, "socket_timeout"),
        ("redis://h?cluster=maybe", {}, "cluster=.*true or false"),
        ("redis://h?key_prefix=", {}, "key_prefix.*non-empty"),
        ("redis://h?ssl_ca=/no/such/ca.pem", {}, "ssl_ca=.*readable PEM"),
        ("redis://h/3?cluster=1", {}, "only database 0"),
        ("redis://alice@h", {}, "user 'alice'.*has no password"),
        ("redis://h?cache_name=c", {}, "cache_name.*iam=1 only"),
        ("rediss://h?iam=1&cache_name=c&region=r", {}, "needs the ElastiCache user"),
        ("redis://u@h?iam=1&cache_name=c&region=r", {}, "over TLS only"),
        ("rediss://u@h?iam=1&region=r", {}, "needs cache_name"),
        ("rediss://u@h?iam=1&cache_name=c", {}, "region"),
        (f"rediss://u:{PASSWORD}@h?iam=1&cache_name=c&region=r", {}, "drop the password"),
        (
            "rediss://u@h?iam=1&cache_name=c&region=r",
            {"POLYCACHE_REDIS_PASSWORD_SECRET": "s"},
            "unset POLYCACHE_REDIS_PASSWORD_SECRET",
        ),
        (
            f"redis://:{PASSWORD}@h",
            {"POLYCACHE_REDIS_PASSWORD_SECRET": "s"},
            "both POLYCACHE_REDIS_PASSWORD_SECRET and a password",
        ),
        ("redis://h", {"POLYCACHE_REDIS_PASSWORD_SECRET": " "}, "set but empty"),
    ],
)
def test_bad_urls_are_named(url: str, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        RedisBackend.from_url(url, environ=environ)
    assert PASSWORD not in str(caught.value)


def test_ssl_ca_needs_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigurationError, match="ssl_ca verifies a TLS server"):
        RedisBackend.from_url(f"redis://h?ssl_ca={ca}", environ={})
    assert "tls=True" in repr(RedisBackend.from_url(f"rediss://h?ssl_ca={ca}", environ={}))


def test_an_unknown_option_error_hides_the_password() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option 'bogus'") as caught:
        RedisBackend.from_url(f"redis://alice:{PASSWORD}@h?bogus=1", environ={})
    assert PASSWORD not in str(caught.value)
    assert "alice:***@h" in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"db": -1}, "db"),
        ({"key_prefix": ""}, "key_prefix"),
        ({"max_connections": True}, "max_connections"),
        ({"socket_timeout": float("inf")}, "socket_timeout"),
    ],
)
def test_bad_constructor_arguments(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RedisBackend(**arguments)  # type: ignore[arg-type]


def test_missing_redis_package_is_named_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "redis" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigurationError, match=r"pip install 'polycache\[redis\]'"):
        Cache("redis://127.0.0.1:6379")


def test_importing_the_module_imports_no_redis() -> None:
    code = (
        "import sys, polycache, polycache.backends.redis; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('redis', 'hiredis', 'botocore')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    assert redis_module.__name__ == "polycache.backends.redis"
