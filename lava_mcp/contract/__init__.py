"""The REST API's contract: one pydantic model per request body and per answer.

The server validates bodies with these models and documents them in `/openapi.json`
(`transports.rest`); the Python client types its results with them (`client.models`
re-exports the answers); the docs link the generated document. One module per domain
noun: `wallet`, `payment_methods`, `spend_keys`, `usage` (usage and requests), `orgs`,
`oauth` (connected clients), `errors`; `base` holds the two kinds of model (`Body`,
strict and closed; `Shape`, open) and the money types.
"""

from lava_mcp.contract.base import Body, Shape
from lava_mcp.contract.common import Success
from lava_mcp.contract.errors import Error
from lava_mcp.contract.oauth import ConnectedClient, ConnectedClientList
from lava_mcp.contract.orgs import Invitation, InvitationList, MemberInvite, Org, OrgCreate, RoleChange
from lava_mcp.contract.payment_methods import PaymentMethod, PaymentMethodList, SavePaymentMethod
from lava_mcp.contract.spend_keys import (
    NewRateLimit,
    NewRequestLimit,
    NewSpendLimit,
    RateLimit,
    RateLimitInput,
    RequestLimit,
    RequestLimitInput,
    SpendKey,
    SpendKeyCreate,
    SpendKeyList,
    SpendKeyUpdate,
    SpendLimit,
    SpendLimitInput,
)
from lava_mcp.contract.usage import ModelUsage, RequestList, RequestRecord, Usage, UsageDay, UsageTotals
from lava_mcp.contract.wallet import FundRequest, FundResult, Wallet

__all__ = [
    "Body",
    "ConnectedClient",
    "ConnectedClientList",
    "Error",
    "FundRequest",
    "FundResult",
    "Invitation",
    "InvitationList",
    "MemberInvite",
    "ModelUsage",
    "NewRateLimit",
    "NewRequestLimit",
    "NewSpendLimit",
    "Org",
    "OrgCreate",
    "PaymentMethod",
    "PaymentMethodList",
    "RateLimit",
    "RateLimitInput",
    "RequestLimit",
    "RequestLimitInput",
    "RequestList",
    "RequestRecord",
    "RoleChange",
    "SavePaymentMethod",
    "Shape",
    "SpendKey",
    "SpendKeyCreate",
    "SpendKeyList",
    "SpendKeyUpdate",
    "SpendLimit",
    "SpendLimitInput",
    "Success",
    "Usage",
    "UsageDay",
    "UsageTotals",
    "Wallet",
]
