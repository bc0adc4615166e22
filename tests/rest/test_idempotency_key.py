"""`POST /v1/wallet/fund`'s `Idempotency-Key` is judged on every request that carries one:
1 to 255 printable characters, else the flat 400 and nothing changes, whatever the body
asks for. (Found by the schemathesis fuzzer: a fund without an amount, answered
`amount_required`, never looked at the key, so a 256-character key was a 200.) The
`add_funds` tool shares the rule."""

from __future__ import annotations

from typing import Any

import pytest

from lava_mcp.core import idempotency, wallet
from lava_mcp.runtime import Runtime
from tests.conftest import ledger_state
from tests.payments.conftest import mcp, tool_error
from tests.rest.conftest import Gateway


@pytest.mark.parametrize("key", ["", "k" * (idempotency.MAX_KEY_LENGTH + 1)], ids=["empty", "overlong"])
@pytest.mark.parametrize(
    "body",
    [None, {}, {"use_checkout": True}, {"amount": "25.00"}],
    ids=["none", "empty", "checkout", "amount"],
)
def test_a_malformed_idempotency_key_is_a_flat_400_whatever_the_body(
    gateway: Gateway, key: str, body: dict[str, Any] | None
) -> None:
    before = ledger_state(gateway.runtime.db, gateway.wallet_id)
    with gateway.rest() as rest:
        response = rest.post("/v1/wallet/fund", json=body, headers={"Idempotency-Key": key})
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": f"Idempotency-Key must be 1 to {idempotency.MAX_KEY_LENGTH} printable characters",
        "code": 400,
    }
    assert ledger_state(gateway.runtime.db, gateway.wallet_id) == before


async def test_the_add_funds_tool_judges_its_idempotency_key_without_an_amount_too(
    runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    async with mcp(runtime, new_wallet) as chat:
        for key in ("", "k" * (idempotency.MAX_KEY_LENGTH + 1)):
            tool_error(await chat.call_tool("add_funds", {"idempotency_key": key}), 400)
    assert ledger_state(runtime.db, new_wallet.wallet_id).entries == 0


def test_the_longest_key_is_still_accepted(gateway: Gateway) -> None:
    with gateway.rest() as rest:
        response = rest.post("/v1/wallet/fund", headers={"Idempotency-Key": "k" * idempotency.MAX_KEY_LENGTH})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "amount_required"
