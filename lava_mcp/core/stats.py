"""Operational figures for `/metrics` (Prometheus text format), and who may read them.

`/metrics` is not public: with `LAVA_METRICS_TOKEN` set it needs `Authorization: Bearer
<token>` (compared in constant time); unset, it answers loopback clients only
(127.0.0.0/8, ::1). Behind a reverse proxy every client looks like loopback, so set the
token there.
"""

from __future__ import annotations

import hmac
import ipaddress

from sqlalchemy import func
from sqlmodel import select

from lava_mcp.errors import Forbidden, Unauthorized
from lava_mcp.store.db import Database
from lava_mcp.store.models import Hold, RequestRecord, Wallet


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


def snapshot(db: Database) -> str:
    """The figures, in Prometheus text format."""
    with db.read() as session:
        wallets = session.exec(select(func.count()).select_from(Wallet)).one()
        open_holds = session.exec(
            select(func.count()).select_from(Hold).where(Hold.status == "pending")
        ).one()
        by_status = session.exec(
            select(RequestRecord.status, func.count()).group_by(RequestRecord.status)
        ).all()
    lines = [
        "# TYPE lava_wallets gauge",
        f"lava_wallets {wallets}",
        "# TYPE lava_open_holds gauge",
        f"lava_open_holds {open_holds}",
        "# TYPE lava_requests_total counter",
    ]
    lines += [f'lava_requests_total{{status="{status}"}} {count}' for status, count in by_status]
    return "\n".join(lines) + "\n"
