"""Typed results of the REST API: the server's own contract (`lava_mcp.contract`).

The client reads answers with the same models the server documents in `/openapi.json`, so
the two cannot drift. Answers are open (`extra="allow"`): an older client still reads a
newer server's answers. Money stays a decimal string, as on the wire.
"""

from __future__ import annotations

from lava_mcp.contract import (
    ConnectedClient,
    ConnectedClientList,
    Error,
    FundResult,
    Invitation,
    InvitationList,
    ModelUsage,
    Org,
    PaymentMethod,
    PaymentMethodList,
    RateLimit,
    RequestLimit,
    RequestList,
    RequestRecord,
    SpendKey,
    SpendKeyList,
    SpendLimit,
    Success,
    Usage,
    UsageDay,
    UsageTotals,
    Wallet,
)

__all__ = [
    "ConnectedClient",
    "ConnectedClientList",
    "Error",
    "FundResult",
    "Invitation",
    "InvitationList",
    "ModelUsage",
    "Org",
    "PaymentMethod",
    "PaymentMethodList",
    "RateLimit",
    "RequestLimit",
    "RequestList",
    "RequestRecord",
    "SpendKey",
    "SpendKeyList",
    "SpendLimit",
    "Success",
    "Usage",
    "UsageDay",
    "UsageTotals",
    "Wallet",
]
