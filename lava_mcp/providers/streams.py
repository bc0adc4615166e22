"""Reading usage from a provider's server-sent events as they pass through.

The events themselves are relayed untouched; this only watches them, so that a stream is
settled at the provider's own final usage, or, for a stream cut short, at an estimate of
what was produced (which the hold caps in `Metering.settle`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from lava_mcp.providers import shapes

_CONTENT = re.compile(rb'"(?:content|text|partial_json|arguments|refusal|thinking)"\s*:\s*"(?!")')


@dataclass
class StreamUsage:
    """Usage read from a stream's events as they pass (the events themselves pass untouched).

    OpenAI reports usage in a last chunk (`stream_options.include_usage`); Anthropic in
    `message_start` (input) and `message_delta` (output, cumulative). Until then the
    chunks that carried content are counted, to settle a stream cut short.
    """

    shape: str
    body: dict[str, Any]  # the request sent upstream (to estimate a cut-short stream's input)
    input_tokens: int | None = None
    output_tokens: int | None = None
    content_chunks: int = 0
    final: bool = False  # the provider's own final usage arrived
    _partial: bytes = field(default=b"", repr=False)

    def feed(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        if self.shape == "openai":
            if b'"usage"' in data and data != b"[DONE]":
                usage = shapes.openai_usage(_json(data))
                if usage.input_tokens or usage.output_tokens:
                    self.input_tokens, self.output_tokens, self.final = (
                        usage.input_tokens,
                        usage.output_tokens,
                        True,
                    )
                    return
            if _CONTENT.search(data):
                self.content_chunks += 1
            return
        if b"message_start" in data[:40]:
            usage = shapes.anthropic_usage(_json(data).get("message"))
            self.input_tokens = usage.input_tokens
            self.output_tokens = usage.output_tokens
        elif b"message_delta" in data[:40]:
            delta_usage = _json(data).get("usage")
            output = delta_usage.get("output_tokens") if isinstance(delta_usage, dict) else None
            if isinstance(output, int) and not isinstance(output, bool) and output >= 0:
                self.output_tokens = output
                self.final = True
        elif _CONTENT.search(data):
            self.content_chunks += 1

    def usage(self) -> shapes.Usage:
        """Exact when the provider's final usage arrived; otherwise an estimate of what was
        produced (content chunks ≈ tokens) that the hold caps in `Metering.settle`."""
        if self.final and self.input_tokens is not None and self.output_tokens is not None:
            return shapes.Usage(self.input_tokens, self.output_tokens)
        input_tokens = self.input_tokens if self.input_tokens is not None else _estimate_input(self.body)
        output_tokens = max(self.output_tokens or 0, self.content_chunks)
        return shapes.Usage(input_tokens, output_tokens)

    @property
    def produced(self) -> bool:
        return self.content_chunks > 0 or bool(self.output_tokens) or self.final


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _estimate_input(body: dict[str, Any]) -> int:
    """About four bytes of prompt per token (an estimate only for a stream cut short)."""
    prompt = json.dumps([body.get("system"), body.get("messages")], ensure_ascii=False)
    return len(prompt.encode()) // 4 + 1
