"""Prometheus metrics of the API, on their own registry (served at /metrics)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector


class ApiMetrics:
    """Created once per app; labels are bounded (route templates, never raw paths)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # process_start_time_seconds and the rest: a restart shows as a new start time.
        ProcessCollector(registry=registry)
        self.requests = Counter(
            "nakhon_api_requests_total",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "nakhon_api_request_duration_seconds",
            "Time to answer a request, by route template.",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )


def _route_template(request: Request) -> str:
    """The matched route's template (``/v1/sensors/{sensor_id}``), set by routing.

    Routing records the route relative to its router, so the /v1 prefix is
    put back from the path; anything unrouted is one label, ``unmatched``.
    """
    route = request.scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not path:
        return "unmatched"
    prefix = "/v1" if request.url.path.startswith("/v1/") else ""
    return f"{prefix}{path}"


def install_metrics(app: FastAPI, metrics: ApiMetrics) -> None:
    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = _route_template(request)
        metrics.duration.labels(request.method, route).observe(time.perf_counter() - started)
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        return response
