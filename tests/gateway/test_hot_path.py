"""The gateway's fast JSON path: orjson reads bodies with `parse_json`'s rules and words,
the provider's JSON answer is forwarded as its own bytes,
and the three gateway routes answer through the app's fast dispatch like any other."""

from __future__ import annotations

import httpx
import pytest

from lava_mcp.errors import BadRequest
from lava_mcp.providers import upstream
from lava_mcp.transports.gateway import OrjsonResponse, parse_body
from lava_mcp.transports.http import parse_json
from tests.fake_provider import FakeProvider
from tests.gateway.conftest import Gateway


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": ',
        b"\xff\xfe",
        b'{"temperature": NaN}',
        b'{"temperature": -Infinity}',
        b'{"temperature": 1e400}',
        b'{"a": ' + b"[" * 101 + b"]" * 101 + b"}",
        b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_parse_body_refuses_what_parse_json_refuses_with_its_words(raw: bytes) -> None:
    with pytest.raises(BadRequest) as expected:
        parse_json(raw, exact_numbers=False)
    with pytest.raises(BadRequest) as refused:
        parse_body(raw)
    assert refused.value.message == expected.value.message


@pytest.mark.parametrize("raw", [b"", b"  ", b"[1, 2]", b'"text"'])
def test_parse_body_wants_an_object(raw: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_body(raw)
    assert refused.value.message == "request body must be a JSON object"


def test_what_orjson_refuses_and_the_standard_parser_reads_is_read_as_it_reads_it() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'  # a lone surrogate
    assert parse_body(raw) == parse_json(raw, exact_numbers=False)


def test_parse_body_reads_what_parse_json_reads() -> None:
    raw = b'{"model": "m", "n": 1, "t": 0.5, "s": "caf\\u00e9 \xe2\x98\x95", "x": [{"y": null}]}'
    assert parse_body(raw) == {"model": "m", "n": 1, "t": 0.5, "s": "café ☕", "x": [{"y": None}]}


def test_an_answer_keeps_the_bytes_it_was_read_from_and_is_sent_as_them() -> None:
    raw = b'{ "id" : "chatcmpl-1",\n  "usage": {"prompt_tokens": 3, "completion_tokens": 2} }'
    answer = upstream.loads(raw)
    assert isinstance(answer, upstream.Answer) and answer["usage"]["prompt_tokens"] == 3
    assert answer.raw is raw
    assert OrjsonResponse(answer.raw).body == raw  # forwarded as sent, not rendered again


def test_nan_in_a_gateway_body_is_400_in_the_shape_and_reaches_no_provider(
    gateway: Gateway, fake: FakeProvider
) -> None:
    key = gateway.create_key()
    body = b'{"model": "cheap-1", "max_tokens": 8, "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}'
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {key['key']}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "NaN" in response.json()["error"]["message"]
    assert response.headers["x-lava-request-id"].startswith("req")
    assert fake.received == []


def test_a_wrong_method_on_a_gateway_path_falls_through_to_the_app(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/v1/chat/completions").status_code == 405
    assert httpx.post(f"{gateway.url}/v1/models").status_code == 405
