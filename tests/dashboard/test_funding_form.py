"""The dashboard's funding form: one form shown is one attempt (a resubmission replays), and
a post that carries no attempt of ours gets the server-chosen retry window, never a key
shared by every such post of the wallet."""

from __future__ import annotations

from sqlmodel import select

from lava_mcp.store.models import IdempotencyRecord, Payment
from tests.dashboard.conftest import signed_in_client
from tests.dashboard.test_sessions import form_token
from tests.gateway.conftest import Gateway


def test_posts_without_an_attempt_share_no_idempotency_key(served: Gateway) -> None:
    with served.rest() as rest:
        card = rest.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"}).json()
    with signed_in_client(served) as browser:
        token = form_token(browser)
        for amount in ("25", "30"):
            answer = browser.post(
                "/dashboard/funds", data={"amount": amount, "payment_method": card["id"], "form_token": token}
            )
            assert answer.status_code == 200, answer.text
            assert "Done" in answer.text, answer.text[:400]
    with served.runtime.db.read() as session:
        paid = sorted(p.amount_micros for p in session.exec(select(Payment)).all() if p.status == "succeeded")
        keys = [record.key for record in session.exec(select(IdempotencyRecord)).all()]
    assert paid == [25_000_000, 30_000_000]
    assert "dashboard-" not in keys
