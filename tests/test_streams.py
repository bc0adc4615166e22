"""Usage read from relayed server-sent events, whatever way the bytes are split."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from lava_mcp.providers import shapes
from lava_mcp.providers.streams import StreamUsage

OPENAI = (
    b"".join(
        f"data: {json.dumps(event)}\n\n".encode()
        for event in [
            {"choices": [{"delta": {"content": "Hel"}}]},
            {"choices": [{"delta": {"content": "lo"}}]},
            {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}},
        ]
    )
    + b"data: [DONE]\n\n"
)


@given(st.lists(st.integers(min_value=1, max_value=len(OPENAI) - 1), unique=True, max_size=12))
def test_openai_final_usage_survives_any_split(cuts: list[int]) -> None:
    meter = StreamUsage("openai")
    edges = [0, *sorted(cuts), len(OPENAI)]
    for start, end in itertools.pairwise(edges):
        meter.feed(OPENAI[start:end])
    assert meter.final and meter.usage() == shapes.Usage(9, 2)


def test_a_stream_cut_short_has_no_usage_to_charge() -> None:
    """Nothing is estimated from what passed: with no final usage, the hold is charged."""
    meter = StreamUsage("openai")
    meter.feed(OPENAI[: OPENAI.index(b"usage")])  # the final usage never arrives
    assert not meter.final and meter.usage() is None


RUNNING_TOTALS = [  # an OpenAI-compatible server that reports usage on every chunk
    {"choices": [{"delta": {"content": "Hel"}}], "usage": {"prompt_tokens": 9, "completion_tokens": 1}},
    {"choices": [{"delta": {"content": "lo"}}], "usage": {"prompt_tokens": 9, "completion_tokens": 2}},
    {
        "choices": [{"delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3},
    },
]


def test_running_usage_totals_are_final_only_at_the_end_of_the_stream() -> None:
    """A stream left after two chunks of running totals has no final usage (the provider
    bills the whole answer): the hold is charged, never the running total."""
    cut_short = StreamUsage("openai")
    for event in RUNNING_TOTALS[:2]:
        cut_short.feed(f"data: {json.dumps(event)}\n\n".encode())
    assert not cut_short.final and cut_short.usage() is None

    whole = StreamUsage("openai")
    for event in RUNNING_TOTALS:
        whole.feed(f"data: {json.dumps(event)}\n\n".encode())
    whole.feed(b"data: [DONE]\n\n")
    assert whole.final and whole.usage() == shapes.Usage(9, 3)


def test_anthropic_usage_from_message_start_and_delta() -> None:
    events = [
        ("message_start", {"message": {"usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ("content_block_delta", {"delta": {"type": "text_delta", "text": "Hi"}}),
        ("message_delta", {"usage": {"output_tokens": 5}}),
    ]
    meter = StreamUsage("anthropic")
    for name, data in events:
        meter.feed(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode())
    assert meter.final and meter.usage() == shapes.Usage(12, 5)


def test_anthropic_delta_counts_left_null_keep_the_start_counts() -> None:
    """Newer API versions repeat the input counts in message_delta, or send them as null."""
    events = [
        (
            "message_start",
            {"message": {"usage": {"input_tokens": 12, "cache_read_input_tokens": 30, "output_tokens": 1}}},
        ),
        (
            "message_delta",
            {"usage": {"input_tokens": None, "cache_read_input_tokens": None, "output_tokens": 5}},
        ),
    ]
    meter = StreamUsage("anthropic")
    for name, data in events:
        meter.feed(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode())
    assert meter.usage() == shapes.Usage(12, 5, cache_read_tokens=30)
