"""pytest fixtures for real redis-server processes: started once per session, flushed per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from polycache.backends.redis import RedisBackend
from tests.stand_ins.redis_server import RedisCluster, RedisServer, TlsFiles, make_tls_files

ACL_PASSWORD = "acl-pass-Zq81"  # a throwaway password of the test server's ACL user


@pytest.fixture(scope="session")
def redis_standalone() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture(scope="session")
def redis_tls_server(redis_tls_files: TlsFiles) -> Iterator[RedisServer]:
    server = RedisServer(tls=redis_tls_files).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_acl_server() -> Iterator[RedisServer]:
    server = RedisServer(password=ACL_PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster_servers() -> Iterator[RedisCluster]:
    cluster = RedisCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_server(redis_standalone: RedisServer) -> RedisServer:
    """The standalone server, flushed."""
    redis_standalone.flush()
    return redis_standalone


@pytest.fixture
def redis_cluster(redis_cluster_servers: RedisCluster) -> RedisCluster:
    """The 3-node cluster, flushed."""
    redis_cluster_servers.flush()
    return redis_cluster_servers


@pytest.fixture
async def redis_backend(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    """A RedisBackend on the flushed standalone server."""
    backend = RedisBackend.from_url(redis_server.url, environ={})
    yield backend
    await backend.aclose()


@pytest.fixture
async def redis_cluster_backend(redis_cluster: RedisCluster) -> AsyncIterator[RedisBackend]:
    """A RedisBackend in cluster mode on the flushed 3-node cluster."""
    backend = RedisBackend.from_url(redis_cluster.url, environ={})
    yield backend
    await backend.aclose()
