"""The Python client (sync and async) against the app on loopback, then its key in the SDKs."""

from __future__ import annotations

import openai
import pytest

from lava_mcp import AsyncLava, Lava, LavaAPIError
from lava_mcp.client import SpendKey
from lava_mcp.core import wallet
from tests.gateway.conftest import Gateway


def test_the_issue_snippet_works_end_to_end(gateway: Gateway) -> None:
    with Lava(gateway.wallet_key, base_url=gateway.url) as lava:
        key = lava.spend_keys.create(
            name="Agent - Production",
            allowed_providers=["openai"],
            allowed_models=["gpt-4o-mini", "gpt-4o"],
            spend_limit={"amount": "50.00", "cycle": "monthly"},
            rate_limit={"rpm": 60},
        )
        assert isinstance(key, SpendKey)
        assert key.key is not None and key.key.startswith("lava_sk_")
        assert key.spend_limit is not None and key.spend_limit.amount == "50.00"
        assert key.rate_limit is not None and (key.rate_limit.rpm, key.rate_limit.burst) == (60, 60)
        assert key.key not in repr(key) and key.key not in str(key)
        with openai.OpenAI(api_key=key.key, base_url=f"{gateway.url}/v1", max_retries=0) as client:
            completion = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert completion.choices[0].message.content
        seen = lava.spend_keys.retrieve(key.spend_key_id)
        assert seen.key is None and seen.total_requests == 1 and seen.last_used_at is not None
        assert float(seen.total_spend) > 0  # a 6-decimal string
        records = lava.requests.list(spend_key_id=key.spend_key_id)
        assert [record.spend_key_id for record in records.data] == [key.spend_key_id]
        balance = lava.wallet.balance()
        assert balance.wallet_id == gateway.wallet_id and balance.currency == "USD"
        assert lava.usage.retrieve().totals.total_requests == 1


def test_update_rotate_revoke_and_list(gateway: Gateway) -> None:
    with Lava(gateway.wallet_key, base_url=gateway.url) as lava:
        key = lava.spend_keys.create(name="one", request_limit={"count": 5, "cycle": "daily"})
        updated = lava.spend_keys.update(key.spend_key_id, name="two", request_limit=None, status="paused")
        assert (updated.name, updated.request_limit, updated.status) == ("two", None, "paused")
        assert updated.key is None and updated.key_preview == key.key_preview
        rotated = lava.spend_keys.rotate(key.spend_key_id)
        assert rotated.key and rotated.key != key.key and rotated.spend_key_id == key.spend_key_id
        page = lava.spend_keys.list(limit=10)
        assert [item.spend_key_id for item in page.data] == [key.spend_key_id] and not page.has_more
        assert lava.spend_keys.revoke(key.spend_key_id) is True
        assert lava.spend_keys.retrieve(key.spend_key_id).status == "revoked"


def test_errors_are_raised_with_status_and_message(gateway: Gateway) -> None:
    with Lava(gateway.wallet_key, base_url=gateway.url) as lava:
        with pytest.raises(LavaAPIError) as bad:
            lava.spend_keys.create(spend_limit={"amount": "1.234", "cycle": "daily"})
        assert bad.value.status == 400 and "spend_limit.amount" in bad.value.message
        with pytest.raises(LavaAPIError) as missing:
            lava.spend_keys.retrieve("sk_id_0000")
        assert missing.value.status == 404
    with Lava("lava_wk_wrong", base_url=gateway.url) as stranger, pytest.raises(LavaAPIError) as denied:
        stranger.spend_keys.list()
    assert denied.value.status == 401


def test_one_wallet_cannot_touch_another_wallets_key(gateway: Gateway) -> None:
    other = wallet.create_wallet(gateway.runtime.db, name="other")
    with (
        Lava(gateway.wallet_key, base_url=gateway.url) as mine,
        Lava(other.wallet_key, base_url=gateway.url) as theirs,
    ):
        key = mine.spend_keys.create(name="mine")
        for attempt in (
            lambda: theirs.spend_keys.retrieve(key.spend_key_id),
            lambda: theirs.spend_keys.update(key.spend_key_id, name="x"),
            lambda: theirs.spend_keys.rotate(key.spend_key_id),
            lambda: theirs.spend_keys.revoke(key.spend_key_id),
        ):
            with pytest.raises(LavaAPIError) as error:
                attempt()
            assert error.value.status == 404
        assert mine.spend_keys.retrieve(key.spend_key_id).name == "mine"


async def test_async_client(gateway: Gateway) -> None:
    async with AsyncLava(gateway.wallet_key, base_url=gateway.url) as lava:
        key = await lava.spend_keys.create(name="async", request_shape="anthropic")
        assert key.key and key.request_shape == "anthropic"
        assert (await lava.spend_keys.retrieve(key.spend_key_id)).name == "async"
        assert (await lava.spend_keys.update(key.spend_key_id, rate_limit={"rpm": 2})).rate_limit is not None
        rotated = await lava.spend_keys.rotate(key.spend_key_id)
        assert rotated.key != key.key
        assert [item.name for item in (await lava.spend_keys.list()).data] == ["async"]
        assert await lava.spend_keys.revoke(key.spend_key_id)
        assert (await lava.wallet.balance()).balance == "10.00"
        assert (await lava.requests.list()).data == []
        with pytest.raises(LavaAPIError) as error:
            await lava.spend_keys.create(request_shape="grpc")
        assert error.value.status == 400
