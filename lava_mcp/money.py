"""Money: integer micro-dollars inside, decimal strings at the edges.

1 USD = 1_000_000 micro-dollars. Nothing in lava-mcp holds money as a float: amounts
arrive as JSON numbers or strings, are parsed here into integers, and leave as strings
with 2 decimals (balances, funding amounts) or 6 (costs, spend figures).
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from lava_mcp.errors import BadRequest

MICROS_PER_DOLLAR = 1_000_000
MICROS_PER_CENT = 10_000

MIN_FUNDING_MICROS = 10 * MICROS_PER_DOLLAR
MAX_FUNDING_MICROS = 10_000 * MICROS_PER_DOLLAR

# "25", "25.5", "25.00", "$25", "$1,000.00" is not accepted: one plain form only. ASCII
# digits only: `\d` would also take "٢٥" or "２５", which are text, not amounts.
_AMOUNT_PATTERNS = {
    decimals: re.compile(rf"\$?([0-9]{{1,12}})(?:\.([0-9]{{1,{decimals}}}))?") for decimals in (2, 6)
}


def parse_amount(value: object, *, field: str = "amount", decimals: int = 2) -> int:
    """Parse a user-given dollar amount into micro-dollars.

    Accepts an int, a finite float with at most `decimals` decimals (2 for money moved,
    6 for cost limits such as `max_cost`), or a string like `25`, `"25.00"`, `"$25"`. A
    float that came from JSON text is judged by that text (its `text` attribute).
    The result is always positive.

    Raises:
        BadRequest: on anything else (negative, zero, NaN, exponent, >2 decimals, text, bool).
    """
    if isinstance(value, bool) or value is None:
        raise BadRequest(f'{field} must be a positive dollar amount like 25 or "25.00"')
    if isinstance(value, int):
        # str() of a huge int raises ValueError (CPython's digit limit); no amount is that long.
        text = str(value) if abs(value) < 10**15 else "(a number too large)"
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadRequest(f"{field} must be a finite dollar amount")
        # A number parsed from JSON text carries that text (`transports.http.JsonFloat`):
        # judge what the client wrote, so `1e1` is an exponent and `19.9999999999999999`
        # has 16 decimals. A float from elsewhere (an SDK's parsed arguments) is judged
        # by repr(), the shortest text that round-trips.
        exact = getattr(value, "text", None)
        text = exact if isinstance(exact, str) else repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise BadRequest(f'{field} must be a number or a string like "25.00"')
    match = _AMOUNT_PATTERNS[decimals].fullmatch(text)
    if match is None:
        raise BadRequest(
            f"{field} {text[:40]!r} is not a dollar amount: use a positive number with at "
            f'most {decimals} decimals, like 25 or "25.00"'
        )
    dollars, fraction = match.group(1), (match.group(2) or "").ljust(6, "0")
    micros = int(dollars) * MICROS_PER_DOLLAR + int(fraction)
    if micros <= 0:
        raise BadRequest(f"{field} must be greater than zero")
    return micros


def parse_funding_amount(value: object) -> int:
    """Parse an amount to add to a wallet and check the funding bounds.

    Raises:
        BadRequest: malformed, or outside $10.00 .. $10,000.00.
    """
    micros = parse_amount(value)
    if not MIN_FUNDING_MICROS <= micros <= MAX_FUNDING_MICROS:
        raise BadRequest(
            f"amount must be between {format_dollars(MIN_FUNDING_MICROS)} and "
            f"{format_dollars(MAX_FUNDING_MICROS)} USD",
            extra={
                "min": format_dollars(MIN_FUNDING_MICROS),
                "max": format_dollars(MAX_FUNDING_MICROS),
            },
        )
    return micros


def format_dollars(micros: int) -> str:
    """Two decimals, rounded down to the cent: never show money that isn't there."""
    cents = micros // MICROS_PER_CENT  # floor division rounds toward -inf: down for negatives too
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def format_cost(micros: int) -> str:
    """Six decimals, exact (costs and spend figures are whole micro-dollars)."""
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    return f"{sign}{micros // MICROS_PER_DOLLAR}.{micros % MICROS_PER_DOLLAR:06d}"


def dollars_to_micros_ceil(dollars: Decimal) -> int:
    """A price in dollars (exact Decimal) to micro-dollars, rounded up."""
    if not dollars.is_finite() or dollars < 0:
        raise ValueError(f"price must be a finite non-negative Decimal, got {dollars!r}")
    return int((dollars * MICROS_PER_DOLLAR).to_integral_value(rounding=ROUND_CEILING))


def parse_decimal_price(text: str) -> Decimal:
    """A price from configuration (e.g. `"0.15"` dollars per million tokens)."""
    try:
        value = Decimal(text)
    except InvalidOperation as error:
        raise ValueError(f"not a decimal price: {text!r}") from error
    if not value.is_finite() or value < 0:
        raise ValueError(f"price must be finite and non-negative: {text!r}")
    return value


def float_as_written(value: object) -> object:
    """A JSON number as the decimal text a client wrote, for the money parser.

    The MCP SDK hands tools JSON numbers as Python floats (the message's text is gone by
    then), and `repr(0.00005)` is `5e-05`, which the parser rightly refuses as an exponent.
    The shortest repr round-trips, so it is the text the client sent whenever that text had
    at most 15 significant digits; written out without an exponent it is that text again
    (`0.00005`). Strings and integers pass through untouched.
    """
    if isinstance(value, float) and math.isfinite(value):
        return format(Decimal(repr(value)), "f")
    return value
