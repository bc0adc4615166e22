"""The wire formats lava-mcp meters: what to send upstream, how to bound and read usage.

The hold's upper bound must really bound: a byte-level BPE token is at least one byte of
UTF-8, so a request's input tokens are at most the bytes of its JSON body plus a small
per-message allowance for the role markers the provider adds; its output tokens are at
most `max_tokens` (set here when the caller gave none) times the number of choices.

Only what that argument covers is accepted: text (and tool calls, which are text). Images,
audio, files and documents cost tokens their JSON bytes don't bound, and server-side tools
(web search, code execution) are billed per use, so such requests are refused with a 400
rather than metered wrongly. Tool definitions get a fixed allowance for the system prompt
the provider wraps them in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lava_mcp.errors import BadRequest

PER_MESSAGE_ALLOWANCE_TOKENS = 16
PER_REQUEST_ALLOWANCE_TOKENS = 64
# Anthropic documents up to ~530 tokens of tool-use system prompt; OpenAI a few dozen.
TOOLS_ALLOWANCE_TOKENS = 1024
UNMETERED_PART_TYPES = frozenset(
    {
        "image",
        "image_url",
        "input_image",
        "input_audio",
        "audio",
        "file",
        "input_file",
        "document",
        "container_upload",
        "search_result",
    }
)
UNMETERED_OPENAI_FIELDS = ("audio", "web_search_options", "modalities", "prediction")
MAX_CHOICES = 8


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Prepared:
    """A request ready to send upstream, with the token bounds its hold is priced at."""

    body: dict[str, Any]
    input_tokens_bound: int
    output_tokens_bound: int


def prepare_openai(body: Any, *, upstream_model: str, default_max_tokens: int) -> Prepared:
    """Raises: BadRequest for a body that isn't a chat completion request."""
    body = _require_messages(body)
    _refuse_unmetered_parts(body["messages"])
    for name in UNMETERED_OPENAI_FIELDS:
        if body.get(name) not in (None, ["text"]):
            raise BadRequest(f"{name} is not supported: lava-mcp meters text only")
    _require_function_tools(body.get("tools"), allowed_types=("function",))
    body["model"] = upstream_model
    choices = body.get("n", 1)
    if not isinstance(choices, int) or isinstance(choices, bool) or not 1 <= choices <= MAX_CHOICES:
        raise BadRequest(f"n must be an integer from 1 to {MAX_CHOICES}")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None:
        limit = default_max_tokens
        body["max_completion_tokens"] = limit
    _check_max_tokens(limit)
    if body.get("stream"):
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise BadRequest("stream_options must be an object")
        body["stream_options"] = {**options, "include_usage": True}
    return Prepared(body, _input_bound(body), limit * choices)


def prepare_anthropic(body: Any, *, upstream_model: str, default_max_tokens: int) -> Prepared:
    """Raises: BadRequest for a body that isn't a Messages API request."""
    body = _require_messages(body)
    _refuse_unmetered_parts(body["messages"])
    _refuse_unmetered_parts(body.get("system"))
    _require_function_tools(body.get("tools"), allowed_types=("custom",))
    body["model"] = upstream_model
    limit = body.get("max_tokens")
    if limit is None:
        limit = default_max_tokens
        body["max_tokens"] = limit
    _check_max_tokens(limit)
    return Prepared(body, _input_bound(body), limit)


def openai_usage(response: Any) -> Usage:
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return Usage(0, 0)
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))


def anthropic_usage(response: Any) -> Usage:
    """Cache reads and writes count as input (never below the real price: cache reads are
    cheaper, writes cost 1.25x input and are rare through a metered gateway)."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return Usage(0, 0)
    input_tokens = (
        _count(usage.get("input_tokens"))
        + _count(usage.get("cache_creation_input_tokens"))
        + _count(usage.get("cache_read_input_tokens"))
    )
    return Usage(input_tokens, _count(usage.get("output_tokens")))


def _require_messages(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("input must be a JSON object in the provider's request shape")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("input.messages must be a non-empty list")
    return dict(body)


def _refuse_unmetered_parts(value: Any) -> None:
    """Raises: BadRequest for an image, audio, file or document anywhere in `value`."""
    if isinstance(value, list):
        for item in value:
            _refuse_unmetered_parts(item)
    elif isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str) and kind in UNMETERED_PART_TYPES:
            raise BadRequest(
                f"content of type {kind!r} is not supported: lava-mcp meters text only "
                "(its tokens can't be bounded before the call)"
            )
        for item in value.values():
            if isinstance(item, list | dict):
                _refuse_unmetered_parts(item)


def _require_function_tools(tools: Any, *, allowed_types: tuple[str, ...]) -> None:
    """Raises: BadRequest for tools that are not plain function tools (server tools bill per use)."""
    if tools is None:
        return
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list")
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or (kind is not None and kind not in allowed_types):
            raise BadRequest(
                f"tool type {str(kind)[:40]!r} is not supported: only function tools are metered"
            )


def _check_max_tokens(limit: Any) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1_000_000:
        raise BadRequest("max_tokens must be an integer from 1 to 1000000")


def json_size_bytes(body: Any) -> int:
    """The UTF-8 size of `body` as compact JSON.

    Raises: BadRequest for text that can't be encoded (json.loads accepts a lone surrogate
    such as "\\ud800"; such a body could be neither bounded nor sent upstream).
    """
    try:
        return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    except UnicodeEncodeError as error:
        raise BadRequest("input contains text that is not valid Unicode (a lone surrogate)") from error


def _input_bound(body: dict[str, Any]) -> int:
    size = json_size_bytes(body)
    messages = body.get("messages") or []
    tools_allowance = TOOLS_ALLOWANCE_TOKENS if body.get("tools") else 0
    return (
        size + PER_MESSAGE_ALLOWANCE_TOKENS * len(messages) + PER_REQUEST_ALLOWANCE_TOKENS + tools_allowance
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
