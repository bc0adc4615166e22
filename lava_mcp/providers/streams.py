"""Reading usage from a provider's server-sent events as they pass through.

The events themselves are relayed untouched; this only watches them for the provider's
own final usage. A stream is charged by the same rule as a JSON answer: that usage when
it arrives, the hold when it never does (`usage()` is then None). Nothing is estimated
from the bytes or chunks that passed: an estimate is far below what the provider bills.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from lava_mcp.providers import shapes


@dataclass
class StreamUsage:
    """Usage read from a stream's events as they pass (the events themselves pass untouched).

    OpenAI reports usage in a last chunk with no choices (`stream_options.include_usage`);
    a running total on content chunks is final only at `[DONE]`. Anthropic reports it in
    `message_start` (input and cache tokens) and `message_delta` (output, cumulative; newer
    API versions repeat the input counts there). The usage is final once that last report
    arrived: OpenAI's usage chunk, Anthropic's `message_delta`.
    """

    shape: str
    final: bool = False  # the provider's own final usage arrived
    ended: bool = False  # the stream's last event arrived (OpenAI `[DONE]`, Anthropic `message_stop`)
    _usage: shapes.Usage | None = field(default=None, repr=False)
    _anthropic_fields: dict[str, Any] = field(default_factory=dict, repr=False)
    _partial: bytes = field(default=b"", repr=False)
    received_bytes: int = 0

    def feed(self, chunk: bytes) -> None:
        self.received_bytes += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        if self.shape == "openai":
            if data == b"[DONE]":
                # The end: a running report (below) that reached it was the last one.
                self.final = self.final or self._usage is not None
                self.ended = True
            elif b'"usage"' in data:
                event = _json(data)
                if event.get("usage") is not None:
                    # A present but unusable report reads as None: charged the hold.
                    self._usage = shapes.openai_usage(event)
                    # OpenAI's final report comes in a chunk of its own, with no choices.
                    # Some compatible servers (vLLM's continuous usage) put running totals
                    # on every chunk: those are final only at the end of the stream.
                    self.final = event.get("choices") == []
            return
        if b"message_stop" in data[:40]:
            self.ended = True
        elif b"message_start" in data[:40]:
            message = _json(data).get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self._anthropic_fields.update(usage)
        elif b"message_delta" in data[:40]:
            usage = _json(data).get("usage")
            if isinstance(usage, dict):
                # The delta's counts are cumulative; a count it leaves null keeps message_start's.
                self._anthropic_fields.update(
                    {name: value for name, value in usage.items() if value is not None}
                )
            else:
                self._anthropic_fields["output_tokens"] = None  # a final report with no counts
            self._usage = shapes.anthropic_usage_fields(self._anthropic_fields)
            self.final = True

    def usage(self) -> shapes.Usage | None:
        """The provider's final usage; None when it never arrived or can't be used."""
        return self._usage if self.final else None


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except ValueError:  # orjson's JSONDecodeError (nesting past its limit included)
        return {}
    return value if isinstance(value, dict) else {}
