"""A moto server in a process of its own, behind a keep-alive proxy that records each call.

moto keeps its resources in module globals, so two servers in one process would share them; a
restore "into another environment" needs two servers with different contents, hence processes.
moto's server (werkzeug) closes every connection after one response; the proxy in front keeps
connections open as AWS endpoints do, so that a client's pooled connection can be seen, and
whether it survives a snapshot.

Run as `python -m tests.snapstart.moto_process`: it prints its URL on one line, then serves
until killed. `GET /_calls` answers the calls so far as JSON, `[[operation, access key id]]`,
and `DELETE /_calls` forgets them.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import ClientSession, web

from tests.stand_ins.moto_server import CountingMotoServer, _operation, _scope

# Hop-by-hop headers, and those the proxy's own HTTP stack sets.
_DROPPED = {"connection", "content-length", "host", "keep-alive", "transfer-encoding"}


async def serve() -> None:
    moto = CountingMotoServer().start()
    calls: list[tuple[str, str]] = []
    async with ClientSession(auto_decompress=False) as session:

        async def calls_endpoint(request: web.Request) -> web.Response:
            answer = json.dumps(calls)
            if request.method == "DELETE":
                calls.clear()
            return web.Response(text=answer, content_type="application/json")

        async def forward(request: web.Request) -> web.Response:
            body = await request.read()
            environ = {
                "PATH_INFO": request.path,
                "REQUEST_METHOD": request.method,
                "HTTP_X_AMZ_TARGET": request.headers.get("X-Amz-Target", ""),
                "HTTP_AUTHORIZATION": request.headers.get("Authorization", ""),
            }
            operation = _operation(environ)
            if operation is not None:
                scope = _scope(environ)
                calls.append((operation, scope[0] if scope else ""))
            headers = {
                name: value
                for name, value in request.headers.items()
                if name.lower() not in _DROPPED
            }
            async with session.request(
                request.method, moto.url + request.path_qs, headers=headers, data=body
            ) as answer:
                payload = await answer.read()
                return web.Response(
                    status=answer.status,
                    body=payload,
                    headers={
                        name: value
                        for name, value in answer.headers.items()
                        if name.lower() not in _DROPPED
                    },
                )

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/_calls", calls_endpoint)
        app.router.add_route("*", "/{path:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve())
