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

Prompt caching changes the price, never the bound on tokens: a cache write costs more per
token than plain input (Anthropic: 1.25x for the 5-minute TTL, 2x for 1 hour), so the
hold prices its input bound at the dearest input rate the request can incur (`CacheUse`).
Fields whose price the hold can't bound are refused here with a 400 (a `service_tier`
other than the standard one, an unknown cache TTL, both `max_tokens` and
`max_completion_tokens`), never forwarded unpriced.

Usage is read strictly: every count must be a non-negative integer, and the output count
must be present. Anything else (`{}`, strings, floats, negatives) reads as no usage
(`None`), which the metering core charges at the hold — never at $0.
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
# The service tiers billed at the standard price; any other tier (OpenAI's `priority`,
# `flex`, `scale`) is priced differently and refused.
STANDARD_SERVICE_TIERS = {"openai": ("auto", "default"), "anthropic": ("auto", "standard_only")}
CACHE_TTLS = ("5m", "1h")


@dataclass(frozen=True)
class Usage:
    """Tokens as the provider bills them. `input_tokens` is plain (uncached) input; cache
    reads and writes are counted apart (`cache_write_tokens` includes the 1-hour writes,
    which `cache_write_1h_tokens` counts again on their own)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def all_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


@dataclass(frozen=True)
class CacheUse:
    """The prompt-cache writes a request may cause (what its hold must be priced for)."""

    writes: bool = False  # may write the cache at the 5-minute rate
    writes_1h: bool = False  # may write at the 1-hour rate


NO_CACHE = CacheUse()


@dataclass(frozen=True)
class Prepared:
    """A request ready to send upstream, with the token bounds its hold is priced at."""

    body: dict[str, Any]
    input_tokens_bound: int
    output_tokens_bound: int
    cache: CacheUse = NO_CACHE


def prepare_openai(body: Any, *, upstream_model: str, default_max_tokens: int) -> Prepared:
    """Raises: BadRequest for a body that isn't a chat completion request."""
    body = _require_messages(body)
    _refuse_unmetered_parts(body["messages"])
    for name in UNMETERED_OPENAI_FIELDS:
        if body.get(name) not in (None, ["text"]):
            raise BadRequest(f"{name} is not supported: lava-mcp meters text only")
    _require_function_tools(body.get("tools"), allowed_types=("function",))
    body["model"] = upstream_model
    _require_standard_tier(body, "openai")
    choices = body.get("n", 1)
    if not isinstance(choices, int) or isinstance(choices, bool) or not 1 <= choices <= MAX_CHOICES:
        raise BadRequest(f"n must be an integer from 1 to {MAX_CHOICES}")
    for name in ("max_completion_tokens", "max_tokens"):
        if name in body and body[name] is None:
            # A null limit is no limit: left in, the provider might read it as absent and
            # obey the other field, or treat it as its own default, past what is held.
            del body[name]
    if "max_completion_tokens" in body and "max_tokens" in body:
        # Which one the provider obeys is its choice; the hold can bound only one.
        raise BadRequest("give max_completion_tokens or max_tokens, not both")
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
    # OpenAI caches prompts on its own and charges no more for it (cached input is
    # cheaper): the plain input rate bounds every input token.
    return Prepared(body, _input_bound(body), limit * choices)


def prepare_anthropic(body: Any, *, upstream_model: str, default_max_tokens: int) -> Prepared:
    """Raises: BadRequest for a body that isn't a Messages API request."""
    body = _require_messages(body)
    _refuse_unmetered_parts(body["messages"])
    _refuse_unmetered_parts(body.get("system"))
    _require_function_tools(body.get("tools"), allowed_types=("custom",))
    body["model"] = upstream_model
    _require_standard_tier(body, "anthropic")
    limit = body.get("max_tokens")
    if limit is None:
        limit = default_max_tokens
        body["max_tokens"] = limit
    _check_max_tokens(limit)
    return Prepared(body, _input_bound(body), limit, _cache_use(body))


def openai_usage(response: Any) -> Usage | None:
    """The usage of an OpenAI answer; None when it reported none that can be used.

    `prompt_tokens` includes the cached tokens (`prompt_tokens_details.cached_tokens`),
    which are billed at the cache-read rate."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached: int | None = 0
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        cached = _count(details.get("cached_tokens"))
    elif details is not None and not isinstance(details, dict):
        cached = None
    if prompt is None or completion is None or cached is None or cached > prompt:
        return None
    return Usage(prompt - cached, completion, cache_read_tokens=cached)


def anthropic_usage(response: Any) -> Usage | None:
    """The usage of an Anthropic message (or of `message_start`'s message); None when it
    reported none that can be used.

    `input_tokens` is the uncached input; cache writes (`cache_creation_input_tokens`,
    split by TTL in `cache_creation`) and reads are billed at their own rates."""
    usage = response.get("usage") if isinstance(response, dict) else None
    return anthropic_usage_fields(usage)


def anthropic_usage_fields(usage: Any) -> Usage | None:
    """`anthropic_usage` for the `usage` object itself (a stream's events carry it bare)."""
    if not isinstance(usage, dict):
        return None
    input_tokens = _count(usage.get("input_tokens"))
    output_tokens = _count(usage.get("output_tokens"))
    reads = _optional_count(usage, "cache_read_input_tokens")
    writes = _optional_count(usage, "cache_creation_input_tokens")
    split = usage.get("cache_creation")
    writes_5m: int | None = 0
    writes_1h: int | None = 0
    if isinstance(split, dict):
        writes_5m = _optional_count(split, "ephemeral_5m_input_tokens")
        writes_1h = _optional_count(split, "ephemeral_1h_input_tokens")
    elif split is not None:
        writes_5m = writes_1h = None
    counts = (input_tokens, output_tokens, reads, writes, writes_5m, writes_1h)
    if any(count is None for count in counts):
        return None
    assert input_tokens is not None and output_tokens is not None
    assert reads is not None and writes is not None and writes_5m is not None and writes_1h is not None
    # The split should add up to the total; where it doesn't, bill the larger (never less).
    return Usage(
        input_tokens,
        output_tokens,
        cache_read_tokens=reads,
        cache_write_tokens=max(writes, writes_5m + writes_1h),
        cache_write_1h_tokens=writes_1h,
    )


def _require_standard_tier(body: dict[str, Any], shape: str) -> None:
    tier = body.get("service_tier")
    if tier is not None and tier not in STANDARD_SERVICE_TIERS[shape]:
        raise BadRequest(
            f"service_tier {_shown(tier, 40)!r} is not supported: its price can't be held in advance",
            next_step=f"leave service_tier out or use one of: {', '.join(STANDARD_SERVICE_TIERS[shape])}",
        )


def _cache_use(body: dict[str, Any]) -> CacheUse:
    """The cache writes an Anthropic request asks for, from every `cache_control` in it.

    Raises: BadRequest for a cache_control that isn't an object, or an unknown TTL.
    """
    ttls: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            control = value.get("cache_control")
            if control is not None:
                if not isinstance(control, dict):
                    raise BadRequest("cache_control must be an object")
                ttl = control.get("ttl", "5m")
                if ttl not in CACHE_TTLS:
                    raise BadRequest(
                        f"cache_control ttl {_shown(ttl, 20)!r} is not supported",
                        next_step=f"use one of: {', '.join(CACHE_TTLS)}",
                    )
                ttls.add(ttl)
            for item in value.values():
                if isinstance(item, list | dict):
                    visit(item)

    visit(body)
    return CacheUse(writes=bool(ttls), writes_1h="1h" in ttls)


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
                f"tool type {_shown(kind, 40)!r} is not supported: only function tools are metered"
            )


def _check_max_tokens(limit: Any) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1_000_000:
        raise BadRequest("max_tokens must be an integer from 1 to 1000000")


def json_size_bytes(body: Any) -> int:
    """The UTF-8 size of `body` as compact JSON.

    Raises: BadRequest for text that can't be encoded (json.loads accepts a lone surrogate
    such as "\\ud800"; such a body could be neither bounded nor sent upstream), and for a
    number JSON can't carry.
    """
    try:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return len(text.encode())
    except UnicodeEncodeError as error:
        raise BadRequest("input contains text that is not valid Unicode (a lone surrogate)") from error
    except ValueError as error:
        # NaN or an infinity (not JSON), or an integer past CPython's digit limit for
        # int-to-text: the MCP SDK's parser hands both over, and neither can be sent.
        raise BadRequest(
            "input contains a number that can't be sent as JSON (NaN, infinite or too long)"
        ) from error


def _input_bound(body: dict[str, Any]) -> int:
    size = json_size_bytes(body)
    messages = body.get("messages") or []
    tools_allowance = TOOLS_ALLOWANCE_TOKENS if body.get("tools") else 0
    return (
        size + PER_MESSAGE_ALLOWANCE_TOKENS * len(messages) + PER_REQUEST_ALLOWANCE_TOKENS + tools_allowance
    )


def _shown(value: Any, limit: int) -> str:
    """`value` as text for an error message, cut to `limit` characters. str() of an integer
    past CPython's digit limit raises ValueError: such a value is named, not shown."""
    try:
        return str(value)[:limit]
    except ValueError:
        return "(a number too large)"


def _count(value: Any) -> int | None:
    """A token count as reported: a non-negative integer, or None (unusable)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _optional_count(fields: dict[str, Any], name: str) -> int | None:
    """A count that may be left out (0), or None when present but unusable."""
    value = fields.get(name)
    return 0 if value is None else _count(value)
