"""polycache: an async cache for Python services and AWS Lambda functions.

```python
from polycache import Cache

cache = Cache.from_env()
db_url = await cache.get("ssm:/prod/db/url")
```

The public API is what `__all__` lists. Backends live in `polycache.backends`, loaders in
`polycache.loaders`; neither is imported until used, so `import polycache` stays cheap.
"""

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
from polycache._emf import EmfMetrics
from polycache._errors import (
    BackendError,
    BackendTimeout,
    ConfigurationError,
    LoaderError,
    PolycacheError,
    SerializationError,
    SourceNotFound,
)
from polycache._inject import inject
from polycache._lambda import lambda_handler
from polycache._observe import BaseObserver, Observer
from polycache._registry import register_backend
from polycache._serializers import JsonSerializer, PickleSerializer, Serializer

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
