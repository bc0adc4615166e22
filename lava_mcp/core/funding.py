"""Funding a wallet. (Placeholder: the payments issue replaces this module.)"""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from lava_mcp.core import wallet
from lava_mcp.errors import BadRequest
from lava_mcp.runtime import Runtime


async def balance(runtime: Runtime, wallet_id: str) -> wallet.Balance:
    return await anyio.to_thread.run_sync(wallet.get_balance, runtime.db, wallet_id)


async def add_funds(
    runtime: Runtime,
    wallet_id: str,
    *,
    amount: object,
    payment_method_id: str | None = None,
    use_checkout: bool = False,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    raise BadRequest("funding is not available yet")
