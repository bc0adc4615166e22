"""Operational figures for `/metrics` (Prometheus text format), and who may read them.

A scrape is this process's instruments (`observability.metrics`: events counted as they
happen) followed by the ledger's state read from the database (`DatabaseFigures`: wallets,
holds open, the amount held). The state is global, the same from every process. A scrape
reads two aggregates (wallets counted; pending holds counted and summed through their
status index), the hot path none: it only increments counters.

`/metrics` is not public: with `LAVA_METRICS_TOKEN` set it needs `Authorization: Bearer
<token>` (compared in constant time); unset, it answers loopback clients only
(127.0.0.0/8, ::1). Behind a reverse proxy every client looks like loopback, so set the
token there.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import select

from lava_mcp.errors import Forbidden, Unauthorized
from lava_mcp.observability import metrics
from lava_mcp.store.db import Database
from lava_mcp.store.models import Hold, Wallet

# The Prometheus text format's media type, as prometheus-client names it.
MEDIA_TYPE = CONTENT_TYPE_LATEST


def require_metrics_access(*, metrics_token: str | None, bearer: str | None, client_host: str | None) -> None:
    """Let the caller read `/metrics`, or refuse.

    Raises: Unauthorized when a token is configured and the bearer token is missing or
    wrong; Forbidden when none is configured and the client is not on loopback.
    """
    if metrics_token:
        # Compare bytes: compare_digest on str refuses non-ASCII, and a header may carry any.
        if bearer is None or not hmac.compare_digest(bearer.encode(), metrics_token.encode()):
            raise Unauthorized(
                "GET /metrics needs Authorization: Bearer <LAVA_METRICS_TOKEN>",
                next_step="send the token configured as LAVA_METRICS_TOKEN on this server",
            )
        return
    if not is_loopback(client_host):
        raise Forbidden(
            "/metrics is served only to loopback clients while LAVA_METRICS_TOKEN is unset",
            next_step="set LAVA_METRICS_TOKEN on the server and send it as a bearer token",
        )


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (an IPv4-mapped loopback address included)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name, not an address: the server never resolves who is calling
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class DatabaseFigures(Collector):
    """The ledger's state at scrape time, as Prometheus gauges."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.read() as session:
            wallets = session.exec(select(func.count()).select_from(Wallet)).one()
            open_holds, held_micros = session.exec(
                select(func.count(), func.coalesce(func.sum(Hold.amount_micros), 0)).where(
                    Hold.status == "pending"
                )
            ).one()
        yield GaugeMetricFamily("lava_wallets", "Wallets in the ledger.", value=wallets)
        yield GaugeMetricFamily(
            "lava_open_holds", "Holds not yet settled, voided or expired.", value=open_holds
        )
        yield GaugeMetricFamily(
            "lava_held_micros", "Micro-dollars the open holds keep from being spent.", value=held_micros
        )


def snapshot(db: Database) -> bytes:
    """The figures, in Prometheus text format (blocking: it reads the database)."""
    registry = CollectorRegistry()
    registry.register(DatabaseFigures(db))
    return metrics.exposition() + generate_latest(registry)
