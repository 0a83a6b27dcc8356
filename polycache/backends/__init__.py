"""Backends: where entries live.

- `polycache.backends.memory.MemoryBackend` (`memory://`): in process, LRU-bounded.
- `polycache.backends.extension.ExtensionBackend` (`extension://host:port`): the polycache
  Lambda extension over local HTTP.
- `polycache.backends.momento.MomentoBackend` (`momento://CACHE_NAME`): Momento.

The contract every backend implements is `polycache.Backend`. Nothing here is imported until
a backend is used, so that `import polycache` stays cheap.
"""
