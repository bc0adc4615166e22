"""The two kinds of model the REST contract is made of, and the money types they share.

A `Body` is what a client sends: strict (a string is never taken for a number, nor `true`
for 1) and closed (`extra="forbid"`: a typo such as `spend_limt` must never create a key
without a budget). A `Shape` is what the server answers: open (`extra="allow"`), so an
older client still reads a newer server's answers; it can also be read like the dict it
was (`usage.totals["total_requests"]`).

Amounts arrive as a JSON number or a decimal string and are judged by `money.py`'s rules
on the text the client wrote (`transports.http.JsonFloat` keeps it), so the contract never
holds a float of money: an `Amount` field holds integer micro-dollars once validated and
is written back as the decimal string it means.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, WithJsonSchema

from lava_mcp.errors import BadRequest
from lava_mcp.money import format_dollars, parse_amount


class Body(BaseModel):
    """A request body: strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Shape(BaseModel):
    """A response: every documented field, and whatever a newer server adds."""

    model_config = ConfigDict(extra="allow")

    def __getitem__(self, name: str) -> Any:
        # The client's results were dicts once; `result["field"]` still reads a field.
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None


def _amount(value: Any) -> int:
    try:
        return parse_amount(value, field="the amount")
    except BadRequest as error:
        raise ValueError(error.message) from None


def _number_or_string(value: Any) -> Any:
    # Passed through untouched (a JsonFloat keeps its text): the core judges the amount.
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError('must be a number or a string like "25.00"')
    return value


AMOUNT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*\$?[0-9]{1,12}(\.[0-9]{1,2})?\s*$"},
        {"type": "number", "exclusiveMinimum": 0},
    ],
    "description": 'Dollars: a positive number or decimal string with at most 2 decimals, like 25 or "25.00"'
    ' (a leading "$" is accepted); no exponent.',
    "examples": ["50.00"],
}

Amount = Annotated[
    int,
    PlainValidator(_amount),
    PlainSerializer(format_dollars, return_type=str),
    WithJsonSchema(AMOUNT_SCHEMA, mode="validation"),
    WithJsonSchema({"type": "string", "examples": ["50.00"]}, mode="serialization"),
]
"""Dollars in, micro-dollars held (`money.parse_amount`), dollars out."""

RawAmount = Annotated[
    str | int | float,
    PlainValidator(_number_or_string),
    WithJsonSchema(
        AMOUNT_SCHEMA | {"description": AMOUNT_SCHEMA["description"] + " Funding: 10.00 to 10000.00."}
    ),
]
"""An amount the core judges itself (funding's bounds come with their own error fields)."""

Dollars = Annotated[
    str, WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$", "examples": ["47.50"]})
]
"""A balance or amount moved: 2 decimals, rounded down to the cent."""

Cost = Annotated[
    str, WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{6}$", "examples": ["0.000210"]})
]
"""A cost or spend figure: 6 decimals, exact micro-dollars."""

Moment = Annotated[
    str, WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2026-12-01T09:30:00Z"]})
]
"""An ISO 8601 date-time in UTC, as the server writes it."""
