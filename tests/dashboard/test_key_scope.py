"""The dashboard's key forms run the core's scope rule: an allowed model the key could never
call (another request shape's, or a provider's it leaves out) is refused, and nothing is
created or changed."""

from __future__ import annotations

import html
import re

import httpx

from lava_mcp.core import spend_keys
from tests.dashboard.conftest import signed_in_client
from tests.gateway.conftest import Gateway


def form_token(client: httpx.Client) -> str:
    found = re.search(r'name="form_token" value="([0-9a-f]{64})"', client.get("/dashboard/keys").text)
    assert found is not None
    return found.group(1)


def test_a_claude_model_on_an_openai_key_is_refused_on_create_and_update(served: Gateway) -> None:
    with signed_in_client(served) as browser:
        token = form_token(browser)
        refused = browser.post(
            "/dashboard/keys",
            data={"name": "mixed", "request_shape": "openai", "allowed_models": "gpt-4o-mini, claude-haiku-4-5",
                  "form_token": token},
        )  # fmt: skip
        assert refused.status_code == 400
        assert "model 'claude-haiku-4-5' is served in the anthropic shape" in html.unescape(refused.text)
        assert spend_keys.list_keys(served.runtime.db, served.wallet_id).keys == []

        key = spend_keys.create(
            served.runtime.db, served.wallet_id, {"name": "claude", "request_shape": "anthropic"}
        ).key
        changed = browser.post(
            f"/dashboard/keys/{key.id}", data={"allowed_models": "gpt-4o-mini", "form_token": token}
        )
        assert changed.status_code == 400
        assert "model 'gpt-4o-mini' is served in the openai shape" in html.unescape(changed.text)
        after = spend_keys.get(served.runtime.db, served.wallet_id, key.id)
        assert (after.allowed_models, after.version) == (None, key.version)
