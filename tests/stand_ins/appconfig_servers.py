"""AppConfig stand-ins on 127.0.0.1: the AppConfigData API and the AppConfig Agent's HTTP API.

moto does not serve AppConfigData, so `AppConfigDataServer` speaks its wire protocol (REST-JSON,
as botocore's service model describes it) for botocore to talk to:

- `POST /configurationsessions` with a JSON body naming the application, environment and
  profile (and `RequiredMinimumPollIntervalInSeconds`) answers 201 `{"InitialConfigurationToken"}`;
- `GET /configuration?configuration_token=T` answers 200 with the configuration as the body (empty
  when the session has already been given this version), and the headers
  `Next-Poll-Configuration-Token`, `Next-Poll-Interval-In-Seconds`, `Content-Type`,
  `Version-Label`. A token is good for one call: a second use is a `BadRequestException`.
- Unknown names are a 404 `ResourceNotFoundException`; errors carry `x-amzn-ErrorType`.

`AppConfigAgentServer` is the AppConfig Lambda extension's local API:
`GET /applications/{app}/environments/{env}/configurations/{profile}` answers the configuration
with its Content-Type, or 404.
"""

from __future__ import annotations

import collections
import http.server
import json
import secrets
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Self

__all__ = ["AppConfigAgentServer", "AppConfigDataServer", "Configuration"]


@dataclass(frozen=True, slots=True)
class Configuration:
    """One deployed configuration version."""

    content: bytes
    content_type: str = "application/json"
    version: str = "1"


@dataclass(slots=True)
class _Session:
    profile: tuple[str, str, str]
    delivered: str | None  # the version label this session was last given


class _Server:
    """A threaded HTTP server on 127.0.0.1 holding configurations and counting requests."""

    def __init__(self) -> None:
        self.configurations: dict[tuple[str, str, str], Configuration] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.handle(self, "GET")

            def do_POST(self) -> None:
                owner.handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests read the counters

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)

    def deploy(
        self,
        application: str,
        environment: str,
        profile: str,
        content: bytes,
        content_type: str = "application/json",
    ) -> None:
        """Deploy a new version of a configuration."""
        with self.lock:
            previous = self.configurations.get((application, environment, profile))
            version = str(int(previous.version) + 1) if previous else "1"
            self.configurations[(application, environment, profile)] = Configuration(
                content, content_type, version
            )

    def handle(self, request: http.server.BaseHTTPRequestHandler, method: str) -> None:
        raise NotImplementedError

    @staticmethod
    def send(
        request: http.server.BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str],
    ) -> None:
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


class AppConfigDataServer(_Server):
    """The AppConfigData API (StartConfigurationSession, GetLatestConfiguration).

    Attributes:
        poll_interval: The `Next-Poll-Interval-In-Seconds` it answers when the session asked
            for no minimum.
    """

    def __init__(self, poll_interval: int = 60) -> None:
        super().__init__()
        self.poll_interval = poll_interval
        self._sessions: dict[str, _Session] = {}
        self._intervals: dict[str, int] = {}

    def environment(self) -> dict[str, str]:
        """Points botocore's appconfigdata client at this server."""
        return {"AWS_ENDPOINT_URL_APPCONFIGDATA": self.url}

    def expire_tokens(self) -> None:
        """Forget every session, as AppConfig does with tokens older than 24 hours."""
        with self.lock:
            self._sessions.clear()

    def handle(self, request: http.server.BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        if "AWS4-HMAC-SHA256" not in (request.headers.get("Authorization") or ""):
            self._error(request, 403, "UnrecognizedClientException", "request is not signed")
        elif method == "POST" and url.path == "/configurationsessions":
            self._start(request, body)
        elif method == "GET" and url.path == "/configuration":
            tokens = urllib.parse.parse_qs(url.query).get("configuration_token", [])
            self._latest(request, tokens[0] if tokens else "")
        else:
            self._error(request, 404, "UnknownOperationException", f"{method} {url.path}")

    def _start(self, request: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        with self.lock:
            self.calls["StartConfigurationSession"] += 1
        try:
            arguments = json.loads(body)
            profile = (
                arguments["ApplicationIdentifier"],
                arguments["EnvironmentIdentifier"],
                arguments["ConfigurationProfileIdentifier"],
            )
        except (ValueError, KeyError):
            self._error(request, 400, "BadRequestException", "missing identifiers")
            return
        interval = arguments.get("RequiredMinimumPollIntervalInSeconds")
        if interval is not None and not 15 <= interval <= 86400:
            self._error(request, 400, "BadRequestException", "poll interval out of range")
            return
        if profile not in self.configurations:
            self._error(request, 404, "ResourceNotFoundException", "no such configuration")
            return
        token = secrets.token_urlsafe(16)
        with self.lock:
            self._sessions[token] = _Session(profile, None)
            self._intervals[token] = interval or self.poll_interval
        payload = json.dumps({"InitialConfigurationToken": token}).encode()
        self.send(request, 201, payload, {"Content-Type": "application/json"})

    def _latest(self, request: http.server.BaseHTTPRequestHandler, token: str) -> None:
        with self.lock:
            self.calls["GetLatestConfiguration"] += 1
            session = self._sessions.pop(token, None)  # a token is good for one call
            interval = self._intervals.pop(token, self.poll_interval)
            if session is None:
                configuration = None
            else:
                configuration = self.configurations[session.profile]
                next_token = secrets.token_urlsafe(16)
                changed = session.delivered != configuration.version
                self._sessions[next_token] = _Session(session.profile, configuration.version)
                self._intervals[next_token] = interval
        if session is None or configuration is None:
            self._error(request, 400, "BadRequestException", "invalid or expired token")
            return
        headers = {
            "Next-Poll-Configuration-Token": next_token,
            "Next-Poll-Interval-In-Seconds": str(interval),
            "Content-Type": configuration.content_type,
            "Version-Label": configuration.version,
        }
        self.send(request, 200, configuration.content if changed else b"", headers)

    def _error(
        self, request: http.server.BaseHTTPRequestHandler, status: int, code: str, message: str
    ) -> None:
        payload = json.dumps({"Message": message}).encode()
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": code}
        self.send(request, status, payload, headers)


class AppConfigAgentServer(_Server):
    """The AppConfig Agent's local HTTP API."""

    def environment(self) -> dict[str, str]:
        """The variables under which polycache uses this agent."""
        return {"AWS_APPCONFIG_EXTENSION_HTTP_PORT": str(self.port)}

    def handle(self, request: http.server.BaseHTTPRequestHandler, method: str) -> None:
        parts = [urllib.parse.unquote(part) for part in request.path.split("?")[0].split("/")]
        # ["", "applications", app, "environments", env, "configurations", profile]
        with self.lock:
            self.calls[f"{method} configuration"] += 1
        if (
            method != "GET"
            or len(parts) != 7
            or parts[1::2] != ["applications", "environments", "configurations"]
        ):
            self.send(request, 400, b"bad request", {"Content-Type": "text/plain"})
            return
        configuration = self.configurations.get((parts[2], parts[4], parts[6]))
        if configuration is None:
            self.send(request, 404, b"ResourceNotFoundException", {"Content-Type": "text/plain"})
            return
        headers = {
            "Content-Type": configuration.content_type,
            "Configuration-Version": configuration.version,
        }
        self.send(request, 200, configuration.content, headers)
