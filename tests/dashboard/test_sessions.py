"""The dashboard's guard, over plain HTTP: sessions (missing, expired, signed out, rotated),
form posts from other sites, and one wallet never reaching another's ids."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import httpx
import pytest

from lava_mcp.config import Settings
from lava_mcp.core import payment_methods, sessions, spend_keys, wallet
from lava_mcp.errors import Forbidden, Unauthorized
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import SpendKey, utc_now
from lava_mcp.transports.app import build_app
from tests.conftest import ledger_state
from tests.dashboard.conftest import signed_in_client
from tests.fake_provider import free_port, serve_in_thread
from tests.gateway.conftest import Gateway

EVIL = "https://evil.example"
SIGN_IN = "/dashboard/signin"
GET_PAGES = [
    "/",
    "/dashboard/funds",
    "/dashboard/cards",
    "/dashboard/history",
    "/dashboard/keys",
    "/dashboard/requests",
]


def form_token(client: httpx.Client) -> str:
    page = client.get("/dashboard/keys")
    assert page.status_code == 200, page.text
    found = re.search(r'name="form_token" value="([0-9a-f]{64})"', page.text)
    assert found is not None
    return found.group(1)


def key_count(app: Gateway, wallet_id: str | None = None) -> int:
    return len(spend_keys.list_keys(app.runtime.db, wallet_id or app.wallet_id, limit=100).keys)


def test_without_a_session_every_page_and_post_redirects_to_sign_in(served: Gateway) -> None:
    with httpx.Client(base_url=served.url, headers={"origin": served.url}) as anonymous:
        for path in GET_PAGES:
            response = anonymous.get(path)
            assert (response.status_code, response.headers["location"]) == (303, SIGN_IN), path
        response = anonymous.post("/dashboard/keys", data={"name": "sneaky", "form_token": "0" * 64})
        assert (response.status_code, response.headers["location"]) == (303, SIGN_IN)
        # A made-up session id is no session either.
        anonymous.cookies.set("lava_session", "lava_ws_" + "a" * 43)
        assert anonymous.get("/dashboard/keys").headers["location"] == SIGN_IN
        assert anonymous.get(SIGN_IN).status_code == 200
    assert key_count(served) == 0


def test_an_expired_session_redirects_to_sign_in_and_is_forgotten(served: Gateway) -> None:
    old = sessions.sign_in(
        served.runtime.db, served.wallet_key, now=utc_now() - sessions.SESSION_LIFETIME - timedelta(seconds=1)
    )
    with pytest.raises(Unauthorized, match="expired"):
        sessions.resolve(served.runtime.db, old.session_id)
    with httpx.Client(base_url=served.url) as browser:
        browser.cookies.set("lava_session", old.session_id)
        response = browser.get("/dashboard/keys")
        assert (response.status_code, response.headers["location"]) == (303, SIGN_IN)
        assert 'lava_session=""' in response.headers["set-cookie"]  # the browser is told to drop it
        assert "Max-Age=0" in response.headers["set-cookie"]


def test_sign_in_sets_a_hardened_cookie_rotates_the_id_and_sign_out_ends_it(served: Gateway) -> None:
    with httpx.Client(base_url=served.url, headers={"origin": served.url}) as browser:
        first = browser.post(SIGN_IN, data={"wallet_key": served.wallet_key})
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # served over http, with an http public URL
        first_id = browser.cookies["lava_session"]
        assert served.wallet_key not in cookie
        # Signing in again (same browser) gives a new id, and the previous one is dead.
        browser.post(SIGN_IN, data={"wallet_key": served.wallet_key})
        second_id = browser.cookies["lava_session"]
        assert second_id != first_id
        with pytest.raises(Unauthorized):
            sessions.resolve(served.runtime.db, first_id)
        token = form_token(browser)
        assert browser.post("/dashboard/signout", data={"form_token": token}).headers["location"] == SIGN_IN
        with pytest.raises(Unauthorized):
            sessions.resolve(served.runtime.db, second_id)
    with httpx.Client(base_url=served.url) as replay:
        replay.cookies.set("lava_session", second_id)
        assert replay.get("/").headers["location"] == SIGN_IN


def test_the_cookie_is_secure_when_the_public_url_is_https(settings: Settings) -> None:
    runtime = Runtime.build(settings.model_copy(update={"public_url": "https://lava.example"}))
    runtime.db.upgrade()
    created = wallet.create_wallet(runtime.db)
    with (
        serve_in_thread(build_app(runtime), port=free_port()) as url,
        httpx.Client(base_url=url, headers={"origin": url}) as browser,
    ):
        response = browser.post(SIGN_IN, data={"wallet_key": created.wallet_key})
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


def test_a_wrong_key_is_refused_and_the_key_is_never_echoed_or_logged(
    served: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "lava_wk_" + "Z" * 43
    with httpx.Client(base_url=served.url, headers={"origin": served.url}) as browser:
        refused = browser.post(SIGN_IN, data={"wallet_key": wrong})
        assert refused.status_code == 401
        assert "Unknown wallet key." in refused.text and wrong not in refused.text
        assert "lava_session" not in browser.cookies
        signed = browser.post(SIGN_IN, data={"wallet_key": served.wallet_key})
        assert (signed.status_code, signed.headers["location"]) == (303, "/")
        after = browser.get("/")
        assert after.status_code == 200 and served.wallet_key not in after.text
        assert after.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in after.headers["content-security-policy"]
    assert served.wallet_key not in caplog.text and wrong not in caplog.text


def test_a_cross_origin_form_post_with_the_session_cookie_changes_nothing(served: Gateway) -> None:
    with served.rest() as rest:
        card = rest.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"}).json()
    key = served.create_key(name="target")
    before = ledger_state(served.runtime.db, served.wallet_id)
    with signed_in_client(served) as browser:
        token = form_token(browser)  # even with the right token, another site's post is refused
        session_id = browser.cookies["lava_session"]
        attempts = [
            ("/dashboard/keys", {"name": "planted"}),
            ("/dashboard/funds", {"amount": "25", "payment_method": card["id"], "attempt": "x1"}),
            (f"/dashboard/keys/{key['spend_key_id']}/revoke", {}),
            (f"/dashboard/keys/{key['spend_key_id']}/status", {"status": "paused"}),
            (f"/dashboard/keys/{key['spend_key_id']}/rotate", {}),
            (f"/dashboard/cards/{card['id']}/remove", {}),
            ("/dashboard/cards", {"payment_method_id": "pm_card_mastercard"}),
            ("/dashboard/signout", {}),
        ]
        for path, fields in attempts:
            response = browser.post(path, data={**fields, "form_token": token}, headers={"origin": EVIL})
            assert response.status_code == 403, (path, response.status_code)
            assert "posted from another site; nothing was changed" in response.text
            with httpx.Client(base_url=served.url, cookies={"lava_session": session_id}) as no_origin:
                referred = no_origin.post(
                    path, data={**fields, "form_token": token}, headers={"referer": f"{EVIL}/page"}
                )
            assert referred.status_code == 403, path
        # Same origin but without this session's token (a forged form): refused as well.
        other = sessions.sign_in(served.runtime.db, served.wallet_key)
        for bad_token in (None, "", sessions.form_token(other.session_id)):
            fields = (
                {"name": "planted"} if bad_token is None else {"name": "planted", "form_token": bad_token}
            )
            response = browser.post("/dashboard/keys", data=fields)
            assert response.status_code == 403
            assert "not sent by your dashboard page" in response.text
        sessions.resolve(served.runtime.db, session_id)  # still signed in: sign-out was refused too
    assert ledger_state(served.runtime.db, served.wallet_id) == before
    assert key_count(served) == 1
    unchanged = spend_keys.get(served.runtime.db, served.wallet_id, key["spend_key_id"])
    assert (unchanged.status, unchanged.version) == ("active", 1)
    assert [c.id for c in payment_methods.list_cards(served.runtime.db, served.wallet_id)] == [card["id"]]


def test_a_cross_origin_sign_in_is_refused(served: Gateway) -> None:
    with httpx.Client(base_url=served.url) as browser:
        response = browser.post(SIGN_IN, data={"wallet_key": served.wallet_key}, headers={"origin": EVIL})
    assert response.status_code == 403
    assert "lava_session" not in response.headers.get("set-cookie", "")


def test_another_wallets_ids_answer_404_and_change_nothing(served: Gateway) -> None:
    other = wallet.create_wallet(served.runtime.db, name="someone else")
    theirs = spend_keys.create(served.runtime.db, other.wallet_id, {"name": "theirs"})
    with served.rest(other.wallet_key) as rest:
        their_card = rest.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"}).json()
    their_key = theirs.key.id
    with signed_in_client(served) as browser:
        token = form_token(browser)
        for path in (
            f"/dashboard/keys/{their_key}",
            f"/dashboard/keys/{their_key}/revoke",
            f"/dashboard/requests?spend_key_id={their_key}",
        ):
            response = browser.get(path)
            assert response.status_code == 404, path
            assert their_key in response.text or "no spend key" in response.text.lower()
        for path, fields in (
            (f"/dashboard/keys/{their_key}", {"spend_limit_amount": "1.00"}),
            (f"/dashboard/keys/{their_key}/status", {"status": "paused"}),
            (f"/dashboard/keys/{their_key}/rotate", {}),
            (f"/dashboard/keys/{their_key}/revoke", {}),
            (f"/dashboard/cards/{their_card['id']}/default", {}),
            (f"/dashboard/cards/{their_card['id']}/remove", {}),
        ):
            response = browser.post(path, data={**fields, "form_token": token})
            assert response.status_code == 404, path
        charged = browser.post(
            "/dashboard/funds",
            data={"amount": "25", "payment_method": their_card["id"], "attempt": "a1", "form_token": token},
        )
        assert charged.status_code == 404
        assert their_key not in browser.get("/dashboard/keys").text
    with served.runtime.db.read() as session:
        row = session.get(SpendKey, their_key)
        assert row is not None and (row.status, row.version, row.key_hash) == (
            "active",
            1,
            theirs.key.key_hash,
        )
    assert [c.id for c in payment_methods.list_cards(served.runtime.db, other.wallet_id)] == [
        their_card["id"]
    ]
    assert wallet.get_balance(served.runtime.db, other.wallet_id).balance_micros == 0


def test_form_tokens_are_bound_to_their_session() -> None:
    one, two = "lava_ws_" + "a" * 43, "lava_ws_" + "b" * 43
    sessions.check_form_token(one, sessions.form_token(one))
    for wrong in (None, "", sessions.form_token(two), sessions.form_token(one)[:-1]):
        with pytest.raises(Forbidden):
            sessions.check_form_token(one, wrong)


def test_a_form_post_is_bounded_like_every_body(served: Gateway) -> None:
    with signed_in_client(served) as browser:
        token = form_token(browser)
        huge = browser.post("/dashboard/keys", data={"form_token": token, "name": "x" * 1_100_000})
        # refused before the page runs, in the flat JSON (transports/limits.py)
        assert (huge.status_code, huge.json()["code"]) == (413, 413)
        assert "request body over 1000000 bytes" in huge.json()["error"]
        not_a_form = browser.post(
            "/dashboard/keys", content=b'{"name": "json"}', headers={"content-type": "application/json"}
        )
        assert not_a_form.status_code == 400
    assert key_count(served) == 0


def test_the_header_names_a_shortfall(served: Gateway) -> None:
    from lava_mcp.store.models import Wallet

    # As a refund the balance could not cover leaves it (`ledger.reverse`): owed, not spendable.
    with served.runtime.db.write() as session:
        row = session.get(Wallet, served.wallet_id)
        assert row is not None
        row.shortfall_micros = 4_000_000
        session.add(row)
    with signed_in_client(served) as browser:
        page = browser.get("/").text
    assert 'id="balance-shortfall"' in page and "$4.00" in page
    assert 'id="balance-available">$6.00<' in page
