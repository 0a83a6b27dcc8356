"""The polycache Lambda extension: a shared cache for every runtime in an execution environment.

Run it as `polycache-extension` (or `python -m polycache.extension`); under Lambda it registers
with the Extensions API, outside Lambda it runs standalone. It serves on 127.0.0.1 only, on
`POLYCACHE_EXTENSION_PORT` (default 4000). See the "Lambda extension" page of the docs.
"""

from __future__ import annotations

import sys

from polycache._errors import ConfigurationError
from polycache._extras import require_extra

__all__ = ["main"]


def main() -> int:
    """The `polycache-extension` command: run the extension until SHUTDOWN or SIGTERM.

    Without the `extension` extra it prints the one line that says what to install, and
    exits with status 2.

    Returns:
        The exit status.
    """
    try:
        require_extra("the polycache-extension command", "extension", "aiohttp")
    except ConfigurationError as exc:
        print(f"polycache-extension: {exc}", file=sys.stderr)
        return 2
    # aiohttp is imported only now that it is known to be there.
    from polycache.extension._runner import main as run

    return run()
