"""Real `redis-server` processes on 127.0.0.1 for the tests: standalone, TLS, ACL, cluster.

Debian's `redis-server` package (installed by scripts/bootstrap.sh). Each server runs in its own
temporary directory with persistence off, on a free port, and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

__all__ = ["RedisCluster", "RedisServer", "TlsFiles", "free_port", "make_tls_files"]

STARTUP_TIMEOUT = 20.0  # a loaded 2-core machine


def free_port(*, cluster: bool = False) -> int:
    """A free port; for a cluster node one whose bus port (+10000) is free and valid too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if not cluster:
            return port
        if port <= 55535:
            with socket.socket() as bus, contextlib.suppress(OSError):
                bus.bind(("127.0.0.1", port + 10000))
                return port


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1, as PEM files."""

    ca: Path
    certificate: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Make a CA and a certificate for 127.0.0.1 / localhost signed by it (valid one day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(name("polycache test CA"))
        .issuer_name(name("polycache test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_certificate = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca_certificate.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    files.certificate.write_bytes(server_certificate.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


class PortTakenError(RuntimeError):
    """Another process bound the port between its choice and the server's start."""


class RedisServer:
    """One `redis-server` process.

    Args:
        tls: Serve TLS only, with these files (clients are not asked for certificates).
        password: Turn the `default` user off and add the ACL user `username` with this password.
        username: The ACL user's name.
        cluster: Start with `--cluster-enabled yes` (join it with `RedisCluster`).
        port: The port to listen on; a free one by default.
    """

    def __init__(
        self,
        *,
        tls: TlsFiles | None = None,
        password: str | None = None,
        username: str = "polycache",
        cluster: bool = False,
        port: int = 0,
    ) -> None:
        self.tls = tls
        self.username = username if password else None
        self.password = password
        self.cluster = cluster
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._directory: str | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f"{self.username}:{self.password}@" if self.password else ""
        ca = f"?ssl_ca={self.tls.ca}" if self.tls else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{ca}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING.

        On a free port of its choosing, it tries again on another port if some other process
        took the chosen one before the server could bind it.
        """
        fixed_port = self.port
        for attempt in range(3):
            try:
                return self._start_once()
            except PortTakenError:
                if fixed_port or attempt == 2:
                    raise
                self.port = 0
        raise AssertionError("unreachable")

    def _start_once(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._directory = tempfile.mkdtemp(prefix="polycache-redis-")
        self.port = self.port or free_port(cluster=self.cluster)
        arguments = [
            binary,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._directory,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            os.path.join(self._directory, "redis.log"),
        ]
        if self.tls:
            arguments += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.certificate),
                "--tls-key-file",
                str(self.tls.key),
                "--tls-ca-cert-file",
                str(self.tls.ca),
                "--tls-auth-clients",
                "no",
            ]
            if self.cluster:
                arguments += ["--tls-cluster", "yes"]
        else:
            arguments += ["--port", str(self.port)]
        if self.password:
            arguments += [
                "--user",
                "default",
                "off",
                "--user",
                f"{self.username}",
                "on",
                f">{self.password}",
                "~*",
                "&*",
                "+@all",
            ]
        if self.cluster:
            arguments += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                os.path.join(self._directory, "nodes.conf"),
                "--cluster-node-timeout",
                "5000",
            ]
        self.process = subprocess.Popen(
            arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                self.client().ping()
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.log()
                    self.stop()
                    if "Address already in use" in log:
                        raise PortTakenError(f"port {self.port} was taken:\n{log}") from None
                    raise RuntimeError(f"redis-server did not start:\n{log}") from None
                time.sleep(0.02)
            else:
                return self

    def client(self, **options: Any) -> redis.Redis:
        """A synchronous client for the fixtures themselves (flush, inspect, configure)."""
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "socket_timeout": 5,
            "username": self.username,
            "password": self.password,
        }
        if self.tls:
            settings.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
        settings.update(options)
        return redis.Redis(**settings)

    def log(self) -> str:
        if self._directory is None:
            return ""
        with contextlib.suppress(OSError):
            return Path(self._directory, "redis.log").read_text()[-3000:]
        return ""

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, the server answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the process this object started, by its PID, and remove its directory."""
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def kill(self) -> None:
        """SIGKILL the process (a crashed server); its port then refuses connections."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def flush(self) -> None:
        self.client().flushall()


class RedisCluster:
    """Three `redis-server --cluster-enabled yes` primaries with every slot assigned.

    Args:
        nodes: How many primaries.
        tls: Serve TLS only, the cluster bus included (as ElastiCache Serverless does).
    """

    def __init__(self, nodes: int = 3, *, tls: TlsFiles | None = None) -> None:
        self.tls = tls
        self.nodes = [RedisServer(cluster=True, tls=tls) for _ in range(nodes)]

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.nodes[0].port}?cluster=1&ssl_ca={self.tls.ca}"
        return f"redis://127.0.0.1:{self.nodes[0].port}?cluster=1"

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            self._assign_slots()
        except BaseException:
            self.stop()
            raise
        return self

    def _assign_slots(self) -> None:
        clients = [node.client() for node in self.nodes]
        share = 16384 // len(self.nodes)
        for index, client in enumerate(clients):
            first = index * share
            last = 16383 if index == len(clients) - 1 else first + share - 1
            client.cluster("ADDSLOTSRANGE", first, last)
        for node in self.nodes[1:]:
            clients[0].cluster("MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(self._ready(client) for client in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def _ready(self, client: redis.Redis) -> bool:
        info = client.cluster("INFO")
        return bool(
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_known_nodes", 0)) == len(self.nodes)
        )

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
