"""Hypothesis strategies for the fuzzers: tool arguments from a JSON schema, adversarial
values, and models of the two gateway request bodies.

A fuzzer that sends only junk never gets past the first type check, and one that sends
only well-formed requests never finds the check that is missing. So every strategy here
mixes three sources: values the schema allows (`from_schema`), values that look like the
real thing and reach deep into the code (`HINTS`, the body models), and values chosen to
break it (`adversarial`: wrong types, huge, negative and NaN-like numbers, exponents, long
and odd Unicode text, nested junk).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from hypothesis import strategies as st

# Text that has broken parsers before: SQL, control characters, right-to-left override,
# a NUL, combining marks, an emoji, a lone surrogate (valid in a Python str, not in UTF-8).
ODD_TEXT = [
    "",
    " ",
    "'; DROP TABLE wallet; --",
    "ünïcødé 🚀 \u202e\u0000 ☃",
    "\ud800",
    "e\u0301" * 50,
    "\n\r\t",
    "null",
    "true",
    "[]",
    "{}",
    "%s%n%x",
    "../../etc/passwd",
]
NUMBER_LIKE_TEXT = [
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "-0",
    "0",
    "0.00",
    "-25",
    "1e3",
    "2.5e1",
    "1E+2",
    "0x19",
    "25.001",
    "25.",
    ".5",
    "$25",
    "$-25",
    "25 USD",
    "２５",  # full-width digits
    "²",
    "1_000",
    "10000.01",
    "9.99",
    "99999999999999999999999999",
    "0.0000001",
]
ODD_NUMBERS: list[Any] = [
    0,
    -1,
    -(10**30),
    10**30,
    2**63,
    2**64 + 1,
    10**5000,  # past CPython's 4,300-digit limit for int-to-text: str() of it raises ValueError
    1e308,
    -1e308,
    5e-324,
    -0.0,
    0.1 + 0.2,
    1e20,
    25.001,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
    False,
]


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value, nested: the junk a confused or hostile client sends."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def deeply_nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


def adversarial() -> st.SearchStrategy[Any]:
    """A value of the wrong kind, size or sign for almost any field."""
    return st.one_of(
        st.sampled_from(ODD_TEXT),
        st.sampled_from(NUMBER_LIKE_TEXT),
        st.sampled_from(ODD_NUMBERS),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),  # NaN and infinities included
        st.text(min_size=1, max_size=40),
        st.builds(lambda size: "x" * size, st.sampled_from([1_000, 100_000])),
        st.sampled_from([deeply_nested(30), deeply_nested(150), [[[[]]]], {"": {"": {}}}]),
        json_values(),
    )


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a JSON schema allows (the subset of JSON Schema the MCP SDK publishes)."""
    if "anyOf" in schema:
        return st.one_of([from_schema(option) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "string":
        return st.text(max_size=schema.get("maxLength", 40))
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        return st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=4)
    if kind == "object":
        properties = schema.get("properties")
        if properties:
            return st.fixed_dictionaries(
                {}, optional={name: from_schema(sub) for name, sub in properties.items()}
            )
        return st.dictionaries(st.text(max_size=8), json_values(), max_size=4)
    return json_values()


# -- plausible values by argument name: what a real caller sends -----------------------------

SERVICES = ["openai", "anthropic", "cheapchat", "weather", "ollama"]
OPENAI_MODELS = ["gpt-4o-mini", "cheap-1", "ollama/llama3"]
ANTHROPIC_MODELS = ["claude-haiku-4-5"]
UNKNOWN_MODELS = ["no-such-model", "gpt-", "claude-", "ollama/", "GPT-4O-MINI", " cheap-1", "m" * 300]


def _dates() -> st.SearchStrategy[str]:
    today = datetime.datetime.now(datetime.UTC).date()
    near = st.dates(
        min_value=today - datetime.timedelta(days=400), max_value=today + datetime.timedelta(days=5)
    )
    return st.one_of(
        near.map(datetime.date.isoformat),
        st.dates().map(datetime.date.isoformat),
        near.map(lambda day: day.strftime("%d/%m/%Y")),
        near.map(lambda day: f"{day.isoformat()}T00:00:00Z"),
        st.sampled_from(["2026-02-30", "2026-13-01", "0000-01-01", "9999-12-31", "20261123"]),
    )


def amounts() -> st.SearchStrategy[Any]:
    """Amounts a user could mean, as numbers and strings, in range and just outside."""
    cents = st.integers(min_value=0, max_value=1_100_000)
    return st.one_of(
        cents.map(lambda value: f"{value // 100}.{value % 100:02d}"),
        cents.map(lambda value: f"${value // 100}"),
        st.integers(min_value=-100, max_value=20_000),
        st.decimals(min_value=-100, max_value=20_000, places=3).map(str),
        st.floats(min_value=-100, max_value=20_000, allow_nan=False),
        st.sampled_from(["10", "10.00", "25", "$25", 25, 10.0, "10000.00", 10000]),
    )


def costs() -> st.SearchStrategy[Any]:
    micros = st.integers(min_value=0, max_value=2_000_000)
    return st.one_of(
        micros.map(lambda value: f"{value // 1_000_000}.{value % 1_000_000:06d}"),
        st.decimals(min_value=0, max_value=2, places=7).map(str),
        st.floats(min_value=0, max_value=2, allow_nan=False),
        st.sampled_from(["0.05", 0.05, "1", 1, "0.000001", "$0.05"]),
    )


HINTS: dict[str, st.SearchStrategy[Any]] = {
    "amount": amounts(),
    "max_cost": costs(),
    "payment_method_id": st.sampled_from(["pm_card_visa", "pm_missing", "card_0000", ""])
    | st.text(max_size=30),
    "use_checkout": st.booleans(),
    "idempotency_key": st.sampled_from(["retry-1", "retry-2"]) | st.text(max_size=300),
    "since": _dates(),
    "until": _dates(),
    "limit": st.integers(min_value=-5, max_value=120),
    "before": st.sampled_from(["req_" + "a" * 28, "req_" + "g" * 28, "cursor"]) | st.text(max_size=60),
    "service": st.sampled_from([*SERVICES, "no-such-service", "OPENAI", " openai"]),
    "model": st.sampled_from([*OPENAI_MODELS, *ANTHROPIC_MODELS, *UNKNOWN_MODELS]),
    "input": st.one_of(
        st.deferred(lambda: chat_body("openai")),  # defined below, with the gateway bodies
        st.deferred(lambda: chat_body("anthropic")),
        st.fixed_dictionaries({"city": st.text(max_size=20)}, optional={"days": json_values()}),
    ),
}


GIANT_INT = 10**5000  # past CPython's 4,300-digit limit: str() of it raises ValueError
_HELLO = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
_CHEAP = {"service": "cheapchat", "model": "cheap-1"}
# Arguments at the edges, per tool. Each one also runs as an explicit example in the MCP
# fuzzer, every time (a random draw may miss any one of them).
EDGE_ARGUMENTS: dict[str, list[dict[str, Any]]] = {
    "get_balance": [{"wallet_id": "wal_other"}, {"": GIANT_INT}],
    "add_funds": [
        {"amount": GIANT_INT},
        {"amount": float("nan")},
        {"amount": "1e3"},
        {"amount": "10000.00", "use_checkout": True},
        {"amount": 25, "idempotency_key": "x" * 10_000},
    ],
    "usage_summary": [
        {"until": "9999-12-31"},
        {"until": "0001-01-03"},
        {"since": "0001-01-01", "until": "0001-01-01"},
        {"since": GIANT_INT},
    ],
    "list_requests": [{"limit": GIANT_INT}, {"limit": -GIANT_INT}, {"before": GIANT_INT}, {"limit": 1e2}],
    "list_services": [{"service": GIANT_INT}, {"service": "x" * 100_000}],
    "call_paid_service": [
        {**_CHEAP, "input": {**_HELLO, "service_tier": GIANT_INT}},
        {**_CHEAP, "input": {**_HELLO, "tools": [{"type": GIANT_INT}]}},
        {**_CHEAP, "input": {**_HELLO, "metadata": {"n": GIANT_INT}}},
        {**_CHEAP, "input": {**_HELLO, "max_tokens": GIANT_INT}},
        {**_CHEAP, "input": _HELLO, "max_cost": GIANT_INT},
        {"service": "weather", "input": {"city": GIANT_INT}},
        {"service": "ollama", "model": "ollama/", "input": _HELLO},
        {
            "service": "anthropic",
            "model": "claude-haiku-4-5",
            "input": {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "x", "cache_control": {"ttl": GIANT_INT}}],
                    }
                ],
                "max_tokens": 5,
            },
        },
    ],
}


def argument_value(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """One argument: what the schema allows, what a caller would send, or junk."""
    plausible = HINTS.get(name)
    sources = [from_schema(schema), adversarial()]
    if plausible is not None:
        sources = [plausible, plausible, *sources]  # reach past the type checks often
    return st.one_of(sources)


def tool_arguments(
    input_schema: dict[str, Any], well_formed: st.SearchStrategy[dict[str, Any]] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments for a tool from its published `inputSchema`: every property may be given or
    left out (required ones included: a missing field is one of the cases), and sometimes
    fields the schema doesn't have are added. `well_formed` adds calls that are right but
    for at most one field (independent junk in every field seldom reaches the core)."""
    properties: dict[str, Any] = input_schema.get("properties", {})
    known = st.fixed_dictionaries(
        {}, optional={name: argument_value(name, sub) for name, sub in properties.items()}
    )
    extra = st.dictionaries(
        st.sampled_from(["amount_usd", "wallet_id", "__proto__", "", "x" * 200]) | st.text(max_size=10),
        adversarial(),
        max_size=2,
    ).map(lambda fields: {name: value for name, value in fields.items() if name not in properties})
    sources = [known, st.builds(lambda given, more: {**more, **given}, known, extra)]
    if well_formed is not None:
        sources += [well_formed, mutated(well_formed)]
    return st.one_of(sources)


def mutated(values: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """`values` with one field replaced by junk, or dropped."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        value = dict(draw(values))
        if not value:
            return value
        name = draw(st.sampled_from(sorted(value)))
        if draw(st.booleans()):
            del value[name]
        else:
            value[name] = draw(adversarial())
        return value

    return build()


def paid_calls() -> st.SearchStrategy[dict[str, Any]]:
    """`call_paid_service` arguments that can run: a service with one of its models and a
    body in its shape (each body field right, any of them mutated by `mutated`)."""
    chat = st.one_of(
        st.tuples(st.just("cheapchat"), st.just("cheap-1"), well_formed_chat_body("openai")),
        st.tuples(st.just("openai"), st.just("gpt-4o-mini"), well_formed_chat_body("openai")),
        st.tuples(
            st.just("ollama"), st.sampled_from(["llama3", "ollama/llama3"]), well_formed_chat_body("openai")
        ),
        st.tuples(st.just("anthropic"), st.just("claude-haiku-4-5"), well_formed_chat_body("anthropic")),
    ).map(lambda call: {"service": call[0], "model": call[1], "input": call[2]})
    data = st.fixed_dictionaries(
        {"service": st.just("weather"), "input": st.fixed_dictionaries({"city": _text()})}
    )
    both = st.one_of(chat, chat, chat, data)
    return st.builds(
        lambda call, cost: {**call, **cost}, both, st.fixed_dictionaries({}, optional={"max_cost": costs()})
    )


def well_formed_chat_body(shape: str) -> st.SearchStrategy[dict[str, Any]]:
    """A body the provider would accept: text messages, a small token limit."""
    roles = ["user", "assistant"] if shape == "anthropic" else ["user", "system", "assistant"]
    message = st.fixed_dictionaries({"role": st.sampled_from(roles), "content": _text()})
    optional: dict[str, st.SearchStrategy[Any]] = {
        "temperature": st.floats(min_value=0, max_value=1),
        "metadata": st.dictionaries(st.sampled_from(["user_id", "trace"]), st.text(max_size=10), max_size=2),
    }
    if shape == "anthropic":
        optional["system"] = _text()
    return st.fixed_dictionaries(
        {
            "messages": st.lists(message, min_size=1, max_size=3),
            # Mostly small; sometimes a hold the wallet or the key can't cover (a 402).
            "max_tokens": st.integers(min_value=1, max_value=64)
            | st.integers(min_value=1, max_value=1_000_000),
        },
        optional=optional,
    )


# -- gateway bodies ---------------------------------------------------------------------------


def _text() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=60), st.sampled_from(ODD_TEXT), st.just("Say hello"))


def _cache_control() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just({"type": "ephemeral"}),
        st.fixed_dictionaries(
            {"type": st.just("ephemeral"), "ttl": st.sampled_from(["5m", "1h", "24h", 300])}
        ),
        adversarial(),
    )


def _content_part() -> st.SearchStrategy[Any]:
    text_part = st.fixed_dictionaries(
        {"type": st.just("text"), "text": _text()}, optional={"cache_control": _cache_control()}
    )
    unmetered = st.sampled_from(
        [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            {"type": "document", "source": {"type": "text", "data": "x"}},
        ]
    )
    return st.one_of(text_part, text_part, unmetered, adversarial())


def _message(roles: list[str]) -> st.SearchStrategy[Any]:
    content = st.one_of(_text(), _text(), st.lists(_content_part(), max_size=3), adversarial())
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(roles), "content": content},
        optional={"name": st.text(max_size=10), "cache_control": _cache_control()},
    )
    return st.one_of(message, message, message, adversarial())


def _token_limit() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(min_value=1, max_value=64),
        st.integers(min_value=-5, max_value=2_000_000),
        st.sampled_from([None, "50", 1.5, 50.0, True, 10**20]),
        adversarial(),
    )


def _function_tool(shape: str) -> st.SearchStrategy[Any]:
    schema = st.just({"type": "object", "properties": {"city": {"type": "string"}}})
    if shape == "openai":
        function = st.fixed_dictionaries(
            {
                "type": st.just("function"),
                "function": st.fixed_dictionaries({"name": _text(), "parameters": schema}),
            }
        )
        server_tools = st.sampled_from(
            [{"type": "web_search"}, {"type": "code_interpreter"}, {"type": "custom"}]
        )
    else:
        function = st.fixed_dictionaries(
            {"name": _text(), "input_schema": schema},
            optional={"type": st.just("custom"), "cache_control": _cache_control()},
        )
        server_tools = st.sampled_from(
            [{"type": "web_search_20250305", "name": "web_search"}, {"type": "function"}]
        )
    return st.one_of(function, function, server_tools, adversarial())


def chat_body(shape: str) -> st.SearchStrategy[dict[str, Any]]:
    """A model of a request body in this shape: every field a client sends, each one right
    or wrong, plus fields the API doesn't have."""
    if shape == "openai":
        models = [*OPENAI_MODELS, *OPENAI_MODELS, *ANTHROPIC_MODELS, *UNKNOWN_MODELS]
        roles = ["user", "user", "system", "assistant", "developer", "tool", "robot"]
    else:
        models = [*ANTHROPIC_MODELS, *ANTHROPIC_MODELS, *ANTHROPIC_MODELS, "gpt-4o-mini", *UNKNOWN_MODELS]
        roles = ["user", "user", "user", "assistant", "system", "robot"]
    model = st.one_of(st.sampled_from(models), st.sampled_from(models), adversarial())
    messages = st.one_of(
        st.lists(_message(roles), min_size=1, max_size=3),
        st.lists(_message(roles), min_size=1, max_size=3),
        st.just([]),
        adversarial(),
    )
    tier = (
        st.sampled_from(
            ["auto", "default", "standard_only", "priority", "flex", "scale", None, 5, "", "AUTO"]
        )
        | adversarial()
    )
    optional: dict[str, st.SearchStrategy[Any]] = {
        "max_tokens": _token_limit(),
        "stream": st.one_of(st.booleans(), st.booleans(), adversarial()),
        "temperature": st.one_of(st.floats(min_value=0, max_value=2), adversarial()),
        "tools": st.one_of(st.lists(_function_tool(shape), max_size=2), adversarial()),
        "service_tier": tier,
        "metadata": st.one_of(
            st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), adversarial()
        ),
        "cache_control": _cache_control(),
    }
    if shape == "openai":
        optional["max_completion_tokens"] = _token_limit()
        optional["stream_options"] = st.one_of(
            st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}), adversarial()
        )
        optional["n"] = st.one_of(st.integers(min_value=1, max_value=10), adversarial())
        optional["modalities"] = st.sampled_from([["text"], ["text", "audio"], "text"])
    else:
        optional["system"] = st.one_of(_text(), st.lists(_content_part(), max_size=2), adversarial())
    junk = st.dictionaries(
        st.sampled_from(["junk", "max_token", "modell", "extra_body"]), json_values(), max_size=2
    )
    body = st.fixed_dictionaries({"model": model, "messages": messages}, optional=optional)
    return st.one_of(body, body, st.builds(lambda known, more: {**more, **known}, body, junk))


def well_formed_gateway_body(shape: str) -> st.SearchStrategy[dict[str, Any]]:
    """A body the gateway should serve: a model of this shape, text messages, a small limit,
    and any of the optional fields with a value the API allows."""
    if shape == "openai":
        models = OPENAI_MODELS
        tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
        optional: dict[str, st.SearchStrategy[Any]] = {
            "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
            "service_tier": st.sampled_from(["auto", "default"]),
            "n": st.integers(min_value=1, max_value=3),
        }
    else:
        models = ANTHROPIC_MODELS
        tool = {"name": "weather", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}
        optional = {
            "service_tier": st.sampled_from(["auto", "standard_only"]),
            "cache_control": st.sampled_from([{"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}]),
        }
    optional["stream"] = st.booleans()
    optional["tools"] = st.just([tool])
    return st.builds(
        lambda model, body, extra: {"model": model, **body, **extra},
        st.sampled_from(models),
        well_formed_chat_body(shape),
        st.fixed_dictionaries({}, optional=optional),
    )


# Bytes at the edges of JSON and of the gateway's checks. Each one also runs as an explicit
# example in the gateway fuzzer, every time (a random draw may miss any one of them).
EDGE_BODIES: list[bytes] = [
    b"",
    b"{",
    b"not json",
    b'{"model": "gpt-4o-mini", "messages": [',
    b"[" * 5_000 + b"]" * 5_000,
    b'{"a":' * 3_000 + b"1" + b"}" * 3_000,
    b"\xff\xfe\x00\x01",
    b'{"model": "\xc3\x28"}',
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": NaN}',
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}',
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}',
    b'{"model": "ollama/", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "gpt-4o-mini", "model": 7, "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "\\ud800"}]}',
]


GIANT_MARK = "\u2063giant-int\u2063"


def _mark_giant_ints(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**4000:
        return GIANT_MARK
    if isinstance(value, list):
        return [_mark_giant_ints(item) for item in value]
    if isinstance(value, dict):
        return {key: _mark_giant_ints(item) for key, item in value.items()}
    return value


def raw_body(shape: str) -> st.SearchStrategy[bytes]:
    """What goes over the wire: JSON of the body model (sometimes with NaN, which is not
    JSON), JSON that is not an object, deep nesting, broken JSON and non-UTF-8 bytes."""

    def encoded(value: Any) -> bytes:
        # json.dumps can't write an int past CPython's digit limit: write its digits ourselves.
        text = json.dumps(_mark_giant_ints(value), ensure_ascii=False)
        return text.replace(f'"{GIANT_MARK}"', str(10**4000) + "0" * 1000).encode("utf-8", "surrogatepass")

    return st.one_of(
        chat_body(shape).map(encoded),
        chat_body(shape).map(encoded),
        well_formed_gateway_body(shape).map(encoded),
        mutated(well_formed_gateway_body(shape)).map(encoded),
        json_values().map(encoded),
        st.sampled_from(EDGE_BODIES),
        st.binary(max_size=64),
    )
