"""This process's Prometheus instruments, and one-line hooks for the code they measure.

Two kinds of figures reach `GET /metrics`, and they are kept apart on purpose:

- **Events, counted in this process** (here): HTTP requests and errors by route and
  status, spend by service as calls settle, settle retries, rate-limiter decisions,
  upstream latency (a histogram of the time to the provider's response headers). These
  are cheap (no I/O on the hot path) and, as Prometheus expects of several server
  processes, each process is its own scrape target: sum them across instances
  (`sum(rate(lava_spend_micros_total[5m])) by (service)`). A restart starts them at 0,
  which `rate()` handles. prometheus-client's multiprocess mode
  (`PROMETHEUS_MULTIPROC_DIR`) is for several workers behind one port; every `lava-mcp
  serve` listens on its own, so it is not used.
- **State, read from the database at each scrape** (`core.stats.DatabaseFigures`):
  wallets, holds open and the amount they hold. These are global — every process
  reports the same value — so take `max()` across instances, never `sum()`.

Money is integer micro-dollars here too (`*_micros`); a counter's float is exact below
2^53 micro-dollars (9 billion dollars).

Routes are labelled by their template (`/v1/spend_keys/{key_id}`), never the raw path, so
a client can't grow the label set: unmatched paths share the label `unmatched`.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # CPU seconds, resident memory, open files

HTTP_REQUESTS = Counter(
    "lava_http_requests",
    "HTTP requests answered, by route and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_ERRORS = Counter(
    "lava_http_errors",
    "HTTP answers with a status of 400 or more, by route and status.",
    ["route", "status"],
    registry=REGISTRY,
)
SPEND = Counter(
    "lava_spend_micros", "Micro-dollars charged by settled calls, by service.", ["service"], registry=REGISTRY
)
SETTLE_RETRIES = Counter(
    "lava_settle_retries",
    "Settling transactions tried again after a busy, deadlocked or dropped database.",
    ["operation"],
    registry=REGISTRY,
)
RATE_LIMIT_DECISIONS = Counter(
    "lava_rate_limit_decisions",
    "Rate-limit checks: allowed, refused (bucket empty) or unavailable (Redis unreachable: refused).",
    ["decision"],
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "lava_upstream_latency_seconds",
    "Time from sending a call to the provider's response headers, by service.",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
    registry=REGISTRY,
)


# Each metric's child per label values, found once: `labels()` costs more than the
# increment itself (~2.5 µs against ~1 µs here), and these run on every request. The label
# values are few (route templates, statuses, services), so this stays small.
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    child = _children.get((metric, labels))
    if child is None:
        child = _children[(metric, labels)] = metric.labels(*labels)
    return child


def spent(service: str, cost_micros: int) -> None:
    """A call to `service` settled at `cost_micros`."""
    _child(SPEND, service).inc(cost_micros)


def settle_retried(operation: str) -> None:
    """A settling transaction (`settle` or `void`) is about to be tried again."""
    _child(SETTLE_RETRIES, operation).inc()


def rate_limit_decision(decision: str) -> None:
    """One rate-limit check: "allowed", "refused" or "unavailable"."""
    _child(RATE_LIMIT_DECISIONS, decision).inc()


def upstream_answered(service: str, started_s: float) -> None:
    """The provider's headers arrived; `started_s` is `time.perf_counter()` at sending."""
    _child(UPSTREAM_LATENCY, service).observe(time.perf_counter() - started_s)


def exposition() -> bytes:
    """This process's instruments in Prometheus text format."""
    return generate_latest(REGISTRY)


def route_of(scope: Scope) -> str:
    """The matched route's template; the MCP apps by their mount; else `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path or "/"
    request_path: str = scope.get("path", "")
    for prefix in ("/mcp", "/sse", "/messages/"):
        if request_path == prefix or request_path.startswith(prefix.rstrip("/") + "/"):
            return prefix
    return "unmatched"


def instrumented(app: ASGIApp) -> ASGIApp:
    """`app`, counting each HTTP answer by route, method and status."""

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = 500  # an app that raised before answering

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_counted)
        finally:
            route = route_of(scope)
            _child(HTTP_REQUESTS, route, scope.get("method", ""), str(status)).inc()
            if status >= 400:
                _child(HTTP_ERRORS, route, str(status)).inc()

    return counting
