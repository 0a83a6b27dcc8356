"""ElastiCache IAM authentication: the token's shape, its refresh, and what the server receives.

A local server cannot check SigV4, so the test computes each token itself (an independent SigV4
presign below, not botocore) and makes it the password of an ACL user on a TLS server: the
backend gets in only if it sends exactly that token, and only at the right time.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from urllib.parse import parse_qsl, quote

import pytest

from polycache import BackendError
from polycache.backends._redis_credentials import (
    IAM_TOKEN_REFRESH_AFTER,
    IamCredentials,
    iam_token,
)
from polycache.backends.redis import RedisBackend
from tests.conftest import FakeClock
from tests.stand_ins.redis_server import RedisServer

pytestmark = pytest.mark.redis

ACCESS_KEY = "AKIDPOLYCACHETEST"
SECRET_KEY = "polycache-test-secret-key"  # a made-up key for the local test server
SESSION_TOKEN = "polycache-test-session-token"
REGION = "us-east-1"
USER = "iam-user"
CACHE = "test-cache"
ENVIRON = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_SESSION_TOKEN": SESSION_TOKEN,
}


def expected_token(
    when: float, *, user: str = USER, cache: str = CACHE, serverless: bool = False
) -> str:
    """SigV4 query presigning of `GET http://{cache}/?Action=connect&User={user}`, by hand."""
    moment = datetime.datetime.fromtimestamp(when, datetime.UTC)
    stamp, day = moment.strftime("%Y%m%dT%H%M%SZ"), moment.strftime("%Y%m%d")
    scope = f"{day}/{REGION}/elasticache/aws4_request"
    # In the order AWS's examples (and botocore) write them; signed in sorted order.
    query = {"Action": "connect", "User": user}
    if serverless:
        query["ResourceType"] = "ServerlessCache"
    query.update(
        {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{ACCESS_KEY}/{scope}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": "900",
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Security-Token": SESSION_TOKEN,
        }
    )

    def encode(pairs: list[tuple[str, str]]) -> str:
        return "&".join(
            f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}" for name, value in pairs
        )

    canonical_query = encode(sorted(query.items()))
    canonical_request = "\n".join(
        ["GET", "/", canonical_query, f"host:{cache}", "", "host", hashlib.sha256(b"").hexdigest()]
    )
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            stamp,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{SECRET_KEY}".encode()
    for part in (day, REGION, "elasticache", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{cache}/?{encode(list(query.items()))}&X-Amz-Signature={signature}"


@pytest.fixture
def signing_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """One fake epoch clock for polycache's refresh decisions and botocore's signing time."""
    import botocore.auth

    clock = FakeClock(1_790_000_000.0)

    def now(remove_tzinfo: bool = True) -> datetime.datetime:
        moment = datetime.datetime.fromtimestamp(clock.now, datetime.UTC)
        return moment.replace(tzinfo=None) if remove_tzinfo else moment

    monkeypatch.setattr(botocore.auth, "get_current_datetime", now)
    return clock


def credentials(clock: FakeClock, *, serverless: bool = False) -> IamCredentials:
    return IamCredentials(
        USER, CACHE, region=REGION, environ=ENVIRON, serverless=serverless, clock=clock
    )


def as_set(token: str) -> set[tuple[str, str]]:
    return set(parse_qsl(token.partition("?")[2]))


def test_token_shape(signing_clock: FakeClock) -> None:
    from botocore.credentials import Credentials

    token = iam_token(
        CACHE,
        USER,
        region=REGION,
        aws_credentials=Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN),
    )
    assert token.startswith(f"{CACHE}/?Action=connect&User={USER}&")
    assert "://" not in token
    fields = dict(parse_qsl(token.partition("?")[2]))
    assert fields["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert fields["X-Amz-Credential"].endswith(f"/{REGION}/elasticache/aws4_request")
    assert fields["X-Amz-Expires"] == "900"
    assert fields["X-Amz-SignedHeaders"] == "host"
    # The same request signed independently: same fields, same signature.
    assert token == expected_token(signing_clock.now)


def test_serverless_token_names_its_resource_type(signing_clock: FakeClock) -> None:
    from botocore.credentials import Credentials

    token = iam_token(
        CACHE,
        USER,
        region=REGION,
        aws_credentials=Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN),
        serverless=True,
    )
    assert ("ResourceType", "ServerlessCache") in as_set(token)
    assert token == expected_token(signing_clock.now, serverless=True)


async def test_token_is_reused_then_refreshed_before_it_ends(signing_clock: FakeClock) -> None:
    source = credentials(signing_clock)
    first = await source()
    assert first.username == USER
    signing_clock.advance(IAM_TOKEN_REFRESH_AFTER - 1)
    assert (await source()).password == first.password  # not signed again
    signing_clock.advance(1)
    second = await source()
    assert second.password != first.password
    assert second.password == expected_token(signing_clock.now)
    assert IAM_TOKEN_REFRESH_AFTER < 900  # the old one was still valid when replaced
    assert first.password not in repr(source) and first.password not in repr(first)


async def test_server_receives_the_current_token_on_each_new_connection(
    redis_tls_server: RedisServer, signing_clock: FakeClock
) -> None:
    admin = redis_tls_server.client()
    admin.flushall()
    started = signing_clock.now
    admin.acl_setuser(
        USER, enabled=True, passwords=[f"+{expected_token(started)}"], keys="*", commands=["+@all"]
    )
    backend = RedisBackend(
        "127.0.0.1",
        redis_tls_server.port,
        tls=True,
        ssl_ca=str(redis_tls_server.tls.ca) if redis_tls_server.tls else None,
        credentials=credentials(signing_clock),
        clock=lambda: signing_clock.now,
    )
    try:
        assert await backend.get("k") is None
        assert admin.acl_whoami() == "default"
        # Five minutes on, a new connection still sends the first token.
        signing_clock.advance(300)
        admin.client_kill_filter(user=USER)
        assert await backend.get("k") is None
        # Past the refresh point, the server only takes the new token, and gets it.
        signing_clock.advance(IAM_TOKEN_REFRESH_AFTER)
        refreshed = expected_token(signing_clock.now)
        admin.acl_setuser(USER, enabled=True, reset_passwords=True, passwords=[f"+{refreshed}"])
        admin.client_kill_filter(user=USER)
        assert await backend.get("k") is None
        # And a server that accepts neither gets a BackendError without either token in it.
        admin.acl_setuser(USER, enabled=True, reset_passwords=True, passwords=["+something-else"])
        admin.client_kill_filter(user=USER)
        with pytest.raises(BackendError) as caught:
            await backend.get("k")
        message = f"{caught.value} {caught.value.__cause__!r} {backend!r}"
        assert refreshed not in message and expected_token(started) not in message
        assert "Signature" not in message
    finally:
        await backend.aclose()
        admin.acl_deluser(USER)


def test_iam_without_botocore_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from polycache import ConfigurationError

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "botocore" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigurationError, match=r"pip install 'polycache\[aws\]'"):
        RedisBackend.from_url(
            f"rediss://{USER}@h?iam=1&cache_name={CACHE}&region={REGION}", environ={}
        )


async def test_without_aws_variables_botocores_default_chain_is_asked(
    signing_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The chain's first provider reads the process environment: no network is involved.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMTHECHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    source = IamCredentials(USER, CACHE, region=REGION, environ={}, clock=signing_clock)
    token = (await source()).password
    assert "X-Amz-Credential=AKIDFROMTHECHAIN%2F" in token
