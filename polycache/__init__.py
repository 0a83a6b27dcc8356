"""polycache: an async cache for Python services and AWS Lambda functions.

```python
from polycache import Cache

cache = Cache.from_env()
db_url = await cache.get("ssm:/prod/db/url")
```

The public API is what `__all__` lists. Backends live in `polycache.backends`, loaders in
`polycache.loaders`; neither is imported until used, so `import polycache` stays cheap.
"""

from typing import TYPE_CHECKING

from polycache._cache import Cache, Stats
from polycache._config import Settings
from polycache._contracts import (
    Backend,
    BackendFactory,
    BatchBackend,
    BatchLoader,
    ClearableBackend,
    ConditionalLoader,
    Entry,
    LeaseBackend,
    Loaded,
    LoaderFunction,
)
from polycache._errors import (
    BackendError,
    BackendTimeout,
    ConfigurationError,
    LoaderError,
    PolycacheError,
    SerializationError,
    SourceNotFound,
)
from polycache._observe import BaseObserver, Observer
from polycache._registry import register_backend
from polycache._serializers import JsonSerializer, PickleSerializer, Serializer

if TYPE_CHECKING:
    from polycache._emf import EmfMetrics
    from polycache._inject import inject
    from polycache._lambda import lambda_handler

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendFactory",
    "BackendTimeout",
    "BaseObserver",
    "BatchBackend",
    "BatchLoader",
    "Cache",
    "ClearableBackend",
    "ConditionalLoader",
    "ConfigurationError",
    "EmfMetrics",
    "Entry",
    "JsonSerializer",
    "LeaseBackend",
    "Loaded",
    "LoaderError",
    "LoaderFunction",
    "Observer",
    "PickleSerializer",
    "PolycacheError",
    "SerializationError",
    "Serializer",
    "Settings",
    "SourceNotFound",
    "Stats",
    "inject",
    "lambda_handler",
    "register_backend",
]


# Imported on first use: a process that never asks for them does not pay for their import.
_ON_FIRST_USE = {
    "EmfMetrics": "polycache._emf",
    "inject": "polycache._inject",
    "lambda_handler": "polycache._lambda",
}


def __getattr__(name: str) -> object:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'polycache' has no attribute {name!r}")
    import importlib

    value: object = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
