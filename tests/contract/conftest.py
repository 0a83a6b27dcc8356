"""The backend under test: every backend in `BACKENDS` runs the whole contract suite."""

from __future__ import annotations

import pytest

from polycache import Backend
from polycache.backends.memory import MemoryBackend

# Each name needs a `{name}_backend` fixture yielding a fresh, empty backend (memory's is below;
# the others live in tests/stand_ins/*_fixtures.py beside their servers).
BACKENDS = ["memory", "extension", "momento", "near_momento", "redis", "redis_cluster"]


@pytest.fixture
def memory_backend() -> MemoryBackend:
    return MemoryBackend(max_entries=1000)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.getfixturevalue(f"{request.param}_backend")
    return backend
