"""The extension process: serve, register, wait for events, stop on SHUTDOWN or a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from aiohttp import web

from polycache._errors import ConfigurationError
from polycache.extension._app import Status, create_app
from polycache.extension._lifecycle import ExtensionsApi, ExtensionsApiError, HttpExtensionsApi
from polycache.extension._server import Listener, serve
from polycache.extension._settings import read_settings
from polycache.extension._sources import AwsSources, ReadThrough, Sources, load_sample_config

__all__ = ["main", "run"]

logger = logging.getLogger("polycache.extension")

_HOST: Final = "127.0.0.1"
# Lambda allows 2 s between SHUTDOWN and SIGKILL (500 ms with internal extensions only).
_SHUTDOWN_BUDGET: Final = 1.5
_EVENTS: Final = ("INVOKE", "SHUTDOWN")


def _program_name(argv0: str) -> str:
    name = Path(argv0).name
    # `python -m polycache.extension` gives __main__.py, which is no extension's file name.
    return name if name and not name.endswith(".py") else "polycache-extension"


async def run(
    environ: Mapping[str, str] | None = None,
    *,
    program: str = "polycache-extension",
    api_factory: Callable[[str], ExtensionsApi] = HttpExtensionsApi,
    sources: Sources | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the extension until SHUTDOWN (under Lambda) or `stop` / SIGTERM (standalone).

    Args:
        environ: The environment to read settings from; defaults to `os.environ`.
        program: The registration name unless `POLYCACHE_EXTENSION_NAME` gives one.
        api_factory: Builds the Extensions API client from `AWS_LAMBDA_RUNTIME_API`.
        sources: The AWS calls behind the read-through endpoints (default: aiobotocore).
        stop: Set it to stop the extension; SIGTERM and SIGINT set it too.

    Returns:
        The process exit status: 0 after a clean stop, 1 after a failed start.
    """
    env = os.environ if environ is None else environ
    stop = stop or asyncio.Event()
    _install_signal_handlers(stop)
    runtime_api = env.get("AWS_LAMBDA_RUNTIME_API", "").strip() or None
    name = env.get("POLYCACHE_EXTENSION_NAME", "").strip() or program
    api = api_factory(runtime_api) if runtime_api else None
    try:
        return await _serve(env, name, api, sources, stop)
    except ExtensionsApiError as exc:
        # The cause is in the message; a traceback would only add noise to the function's log.
        logger.error("polycache-extension: the Lambda Extensions API failed: %s", exc)  # noqa: TRY400
        return 1
    finally:
        _remove_signal_handlers()
        if api is not None:
            await api.aclose()


async def _serve(
    env: Mapping[str, str],
    name: str,
    api: ExtensionsApi | None,
    sources: Sources | None,
    stop: asyncio.Event,
) -> int:
    try:
        settings = read_settings(env)
        _configure_logging(settings.log_level)
        config = load_sample_config(settings.config_path)
    except ConfigurationError as exc:
        return await _failed_start(api, name, "Extension.ConfigurationError", str(exc))
    sources = sources or AwsSources(timeout=settings.source_timeout)
    reads = ReadThrough(settings, sources, config)
    status = Status()
    runner = web.AppRunner(
        create_app(settings, reads, status=status),
        access_log=None,
        shutdown_timeout=0.25,
        handle_signals=False,
    )
    await runner.setup()
    listener: Listener | None = None
    try:
        try:
            # Serving before registering: the function's own INIT may already call us.
            listener = await serve(
                runner,
                _HOST,
                settings.port,
                max_connections=settings.max_connections,
                idle_timeout=settings.idle_timeout,
            )
        except OSError as exc:
            return await _failed_start(
                api, name, "Extension.BindError", f"cannot serve on {_HOST}:{settings.port}: {exc}"
            )
        if api is not None:
            await api.register(name, _EVENTS)
            status.registered = True
        logger.info(
            "polycache-extension: serving on http://%s:%d as %s (%s)",
            _HOST,
            settings.port,
            name,
            "registered with Lambda" if api is not None else "standalone",
        )
        if settings.init_startup and (config.parameters or config.items):
            # Before the first event/next, so that it is done before the first invoke.
            await reads.prefetch()
        status.prefetched = True
        if api is None:
            await stop.wait()
        else:
            await _follow_events(api, status, stop)
    finally:
        await _shut_down(listener, runner, reads)
    return 0


async def _follow_events(api: ExtensionsApi, status: Status, stop: asyncio.Event) -> None:
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            # cargo-lambda drops an INVOKE sent while nobody waits: go back to waiting at once.
            waiting = asyncio.ensure_future(api.next_event())
            done, _ = await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if waiting not in done:
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError, ExtensionsApiError):
                    await waiting
                return
            event = waiting.result()
            if event.kind == "SHUTDOWN":
                logger.info("polycache-extension: SHUTDOWN (%s)", event.shutdown_reason)
                return
            if event.kind == "INVOKE":
                status.invokes += 1
    finally:
        stopping.cancel()


async def _failed_start(api: ExtensionsApi | None, name: str, error_type: str, message: str) -> int:
    logger.error("polycache-extension: cannot start: %s", message)
    if api is not None:
        # Lambda takes an init error only from a registered extension.
        with contextlib.suppress(ExtensionsApiError):
            await api.register(name, _EVENTS)
            await api.init_error(error_type, message)
    return 1


async def _shut_down(listener: Listener | None, runner: web.AppRunner, reads: ReadThrough) -> None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(_SHUTDOWN_BUDGET):
            if listener is not None:
                await listener.aclose()
            await runner.cleanup()
            await reads.aclose()
    except TimeoutError:
        logger.warning("polycache-extension: shutdown took over %.1f s; exiting", _SHUTDOWN_BUDGET)
    logger.info("polycache-extension: stopped in %.0f ms", (time.monotonic() - started) * 1000)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(number, stop.set)


def _remove_signal_handlers() -> None:
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(number)


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(message)s")
    logger.setLevel(level)


def main() -> int:
    """The `polycache-extension` command: run the extension until SHUTDOWN or SIGTERM.

    Returns:
        The exit status.
    """
    _configure_logging("INFO")
    return asyncio.run(run(program=_program_name(sys.argv[0])))
