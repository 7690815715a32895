"""The operations endpoint of the gateway and the processor.

``/metrics`` (Prometheus text format), ``/healthz`` (the process runs) and
``/readyz`` (the service's own readiness check passes). A few lines of asyncio
instead of a web framework: it answers three GETs from Prometheus and
orchestrators, on the service's own event loop, and must stay up when
everything else is struggling.

``/metrics`` also carries the process's own metrics (``process_start_time_seconds``,
CPU, memory, open files), which prometheus_client puts only in its default
registry, not in the service's own: a new start time is how Prometheus sees a
restart, whoever restarted the service (supervisord, systemd, Docker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], tuple[bool, str]]


class HealthServer:
    """Serves /metrics, /healthz and /readyz on ``host:port``."""

    def __init__(
        self, registry: CollectorRegistry, ready: ReadinessCheck, host: str, port: int
    ) -> None:
        self._registry = registry
        # Beside the service's registry, not in it: that one is the caller's.
        self._process = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self._process)
        self._ready = ready
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("metrics and health on http://%s:%d/metrics", self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, ctype, body = self._respond(method, path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that went away or spoke garbage: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _respond(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            body = generate_latest(self._registry) + generate_latest(self._process)
            return "200 OK", CONTENT_TYPE_LATEST, body
        if path == "/healthz":
            return "200 OK", "application/json", b'{"status":"ok"}\n'
        if path == "/readyz":
            ok, detail = self._ready()
            body = orjson.dumps({"status": "ready" if ok else "not ready", "detail": detail})
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        return "404 Not Found", "text/plain", b"try /metrics, /healthz or /readyz\n"
