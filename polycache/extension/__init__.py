"""The polycache Lambda extension: a shared cache for every runtime in an execution environment.

Run it as `polycache-extension` (or `python -m polycache.extension`); under Lambda it registers
with the Extensions API, outside Lambda it runs standalone. It serves on 127.0.0.1 only, on
`POLYCACHE_EXTENSION_PORT` (default 4000). See the "Lambda extension" page of the docs.
"""

from polycache.extension._runner import main

__all__ = ["main"]
