"""What the hold's bound can't cover is refused before any hold: images, audio, files,
documents and server-side tools. Tool definitions get an allowance."""

from __future__ import annotations

from typing import Any

import pytest

from lava_mcp.errors import BadRequest
from lava_mcp.providers import shapes

TEXT = [{"role": "user", "content": "hello"}]


def openai(body: dict[str, Any]) -> shapes.Prepared:
    return shapes.prepare_openai(body, upstream_model="gpt-4o-mini", default_max_tokens=100)


def anthropic(body: dict[str, Any]) -> shapes.Prepared:
    return shapes.prepare_anthropic(body, upstream_model="claude-sonnet-4-0", default_max_tokens=100)


IMAGE_URL = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
ANTHROPIC_IMAGE = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
DOCUMENT = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this"}, IMAGE_URL]}]},
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]},
        {"messages": TEXT, "modalities": ["text", "audio"]},
        {"messages": TEXT, "web_search_options": {}},
        {"messages": TEXT, "tools": [{"type": "web_search_preview"}]},
        {"messages": TEXT, "tools": "all"},
    ],
)
def test_openai_input_the_bound_cannot_cover_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        openai(body)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": [ANTHROPIC_IMAGE]}]},
        {"messages": [{"role": "user", "content": [DOCUMENT]}]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": [ANTHROPIC_IMAGE]}],
                }
            ]
        },
        {"messages": TEXT, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
    ],
)
def test_anthropic_input_the_bound_cannot_cover_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        anthropic(body)


def test_text_and_function_tools_pass_with_a_tools_allowance() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    plain = openai({"messages": TEXT})
    with_tools = openai({"messages": TEXT, "tools": [tool], "modalities": ["text"]})
    assert with_tools.input_tokens_bound >= plain.input_tokens_bound + shapes.TOOLS_ALLOWANCE_TOKENS
    custom = anthropic({"messages": TEXT, "tools": [{"name": "f", "input_schema": {"type": "object"}}]})
    assert custom.input_tokens_bound > shapes.TOOLS_ALLOWANCE_TOKENS
