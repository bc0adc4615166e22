"""Money at the edges (DESIGN §2): amounts in, 2- and 6-decimal strings out, never a float."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lava_mcp.errors import BadRequest
from lava_mcp.money import (
    MAX_FUNDING_MICROS,
    MICROS_PER_CENT,
    MICROS_PER_DOLLAR,
    MIN_FUNDING_MICROS,
    dollars_to_micros_ceil,
    format_cost,
    format_dollars,
    parse_amount,
    parse_decimal_price,
    parse_funding_amount,
)
from lava_mcp.providers.catalog import ModelPrice, Service
from lava_mcp.providers.prices import cost_of

CENTS = st.integers(min_value=1, max_value=10**14 - 1)  # up to 12 dollar digits


def repr_id(value: object) -> str:
    return repr(value)[:30] if not isinstance(value, int) or abs(value) < 10**30 else "huge-int"


def cents_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


# -- parsing -------------------------------------------------------------------------------


@given(CENTS)
def test_every_two_decimal_form_parses_to_its_micros(cents: int) -> None:
    micros = cents * MICROS_PER_CENT
    text = cents_text(cents)
    assert parse_amount(text) == micros
    assert parse_amount("$" + text) == micros
    assert parse_amount(f"  {text}\n") == micros
    if cents % 10 == 0:
        assert parse_amount(text[:-1]) == micros  # "25.5"
    if cents % 100 == 0:
        assert parse_amount(str(cents // 100)) == micros  # "25"
        assert parse_amount(cents // 100) == micros  # 25


@given(st.integers(min_value=1, max_value=10**11))
def test_a_json_number_with_two_decimals_parses_exactly(cents: int) -> None:
    # A JSON number arrives as a float; its shortest repr is what the JSON said.
    assert parse_amount(cents / 100) == cents * MICROS_PER_CENT


@given(st.integers(min_value=0, max_value=10**14))
def test_format_dollars_then_parse_round_trips_whole_cents(micros: int) -> None:
    cents = micros // MICROS_PER_CENT
    if cents == 0:
        with pytest.raises(BadRequest):
            parse_amount(format_dollars(micros))
    else:
        assert parse_amount(format_dollars(micros)) == cents * MICROS_PER_CENT


@pytest.mark.parametrize(
    "value",
    [
        0,
        0.0,
        "0",
        "0.00",
        "$0",
        "-5",
        -5,
        -0.01,
        "-0.01",  # zero and negative
        float("nan"),
        float("inf"),
        float("-inf"),
        "NaN",
        "nan",
        "Infinity",
        "inf",
        "1.234",
        "25.000",
        1.234,
        0.001,
        "0.001",  # three decimals
        "1e3",
        "2.5E1",
        "1e-2",
        1e16,
        1e-5,
        1e300,  # exponents
        True,
        False,
        None,
        [],
        {},
        [25],
        {"amount": 25},
        b"25",
        Decimal("25"),  # wrong types
        "",
        " ",
        "abc",
        "$",
        "$$5",
        "5$",
        "+5",
        "5.",
        ".5",
        "1,000.00",
        "1 000",
        "0x10",
        "25 USD",
        "٢٥",
        "２５",
        "²",
        "5\x00",
        "25\n.00",  # non-ASCII digits and control characters
        "'; DROP TABLE wallet; --",
        "1234567890123",
        10**13,
        10**5000,  # too long
    ],
    ids=repr_id,
)
def test_everything_else_is_a_400(value: object) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_amount(value)
    assert raised.value.code == 400
    assert raised.value.to_dict()["code"] == 400


def _oracle(text: str) -> int | None:
    """What an amount string means, computed independently of the parser's regex."""
    stripped = text.strip()
    stripped = stripped.removeprefix("$")
    whole, dot, fraction = stripped.partition(".")
    ascii_digits = set("0123456789")
    if not whole or len(whole) > 12 or not set(whole) <= ascii_digits:
        return None
    if dot and (not 1 <= len(fraction) <= 2 or not set(fraction) <= ascii_digits):
        return None
    micros = int(whole) * MICROS_PER_DOLLAR + int(fraction.ljust(2, "0") or "0") * MICROS_PER_CENT
    return micros or None


@given(st.text(max_size=20))
@example("٢٥")
@example("$٣.٠٠")
@example("12.5\n")
def test_random_text_is_parsed_exactly_when_it_is_an_amount(text: str) -> None:
    expected = _oracle(text)
    if expected is None:
        with pytest.raises(BadRequest):
            parse_amount(text)
    else:
        assert parse_amount(text) == expected


@given(st.from_regex(r"\A[0-9]{1,6}\.[0-9]{3,8}\Z"))
def test_more_than_two_decimals_is_refused(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_amount(text)


@given(st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,2})?[eE][+-]?[0-9]{1,2}\Z"))
def test_an_exponent_is_refused(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_amount(text)


def test_funding_bounds_are_ten_to_ten_thousand_dollars() -> None:
    assert parse_funding_amount("10") == MIN_FUNDING_MICROS
    assert parse_funding_amount("$10000.00") == MAX_FUNDING_MICROS
    for outside in ("9.99", "10000.01", "0.50", 10001):
        with pytest.raises(BadRequest) as raised:
            parse_funding_amount(outside)
        assert raised.value.to_dict() == {
            "error": "amount must be between 10.00 and 10000.00 USD",
            "code": 400,
            "min": "10.00",
            "max": "10000.00",
        }


@given(st.integers(min_value=1, max_value=10**14 - 1))
def test_funding_accepts_exactly_the_range(cents: int) -> None:
    micros = cents * MICROS_PER_CENT
    if MIN_FUNDING_MICROS <= micros <= MAX_FUNDING_MICROS:
        assert parse_funding_amount(cents_text(cents)) == micros
    else:
        with pytest.raises(BadRequest):
            parse_funding_amount(cents_text(cents))


# -- formatting ----------------------------------------------------------------------------


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_balances_show_two_decimals_rounded_down(micros: int) -> None:
    text = format_dollars(micros)
    assert re.fullmatch(r"-?[0-9]+\.[0-9]{2}", text)
    shown = Decimal(text) * MICROS_PER_DOLLAR
    assert shown <= micros < shown + MICROS_PER_CENT  # never more than is there


def test_rounding_down_examples() -> None:
    assert format_dollars(47_500_000) == "47.50"
    assert format_dollars(1_239_999) == "1.23"
    assert format_dollars(9_999) == "0.00"
    assert format_dollars(0) == "0.00"
    assert format_dollars(-1) == "-0.01"


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_costs_show_six_decimals_exactly(micros: int) -> None:
    text = format_cost(micros)
    assert re.fullmatch(r"-?[0-9]+\.[0-9]{6}", text)
    assert Decimal(text) * MICROS_PER_DOLLAR == micros


def test_cost_examples() -> None:
    assert format_cost(210) == "0.000210"
    assert format_cost(0) == "0.000000"
    assert format_cost(12_345_678) == "12.345678"


# -- prices round up -----------------------------------------------------------------------

PRICES = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)


@given(PRICES)
def test_a_price_converts_to_micros_rounded_up(dollars: Decimal) -> None:
    micros = dollars_to_micros_ceil(dollars)
    exact = dollars * MICROS_PER_DOLLAR
    assert micros - 1 < exact <= micros


@given(st.decimals(min_value=0, max_value=1, places=12, allow_nan=False, allow_infinity=False))
def test_a_fraction_of_a_micro_dollar_costs_a_whole_one(dollars: Decimal) -> None:
    micros = dollars_to_micros_ceil(dollars)
    assert micros == math.ceil(Fraction(dollars) * MICROS_PER_DOLLAR)
    assert micros >= 1 or dollars == 0


@pytest.mark.parametrize("bad", [Decimal("-0.000001"), Decimal("NaN"), Decimal("Infinity")])
def test_a_price_must_be_finite_and_non_negative(bad: Decimal) -> None:
    with pytest.raises(ValueError):
        dollars_to_micros_ceil(bad)
    with pytest.raises(ValueError):
        parse_decimal_price(str(bad))


def _per_token(input_price: Decimal, output_price: Decimal) -> Service:
    return Service(
        id="priced",
        shape="openai",
        pricing="per_token",
        base_url="http://127.0.0.1:9",
        models={"m": ModelPrice(input_per_mtok=input_price, output_per_mtok=output_price)},
    )


@given(
    PRICES,
    PRICES,
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=0, max_value=10**7),
)
def test_a_request_cost_is_its_exact_price_rounded_up(
    input_price: Decimal, output_price: Decimal, input_tokens: int, output_tokens: int
) -> None:
    cost = cost_of(_per_token(input_price, output_price), "m", input_tokens, output_tokens)
    # Dollars per million tokens are micro-dollars per token.
    input_exact = input_price * input_tokens
    total_exact = input_exact + output_price * output_tokens
    assert cost.total_micros - 1 < total_exact <= cost.total_micros
    assert cost.input_micros - 1 < input_exact <= cost.input_micros
    assert cost.output_micros == cost.total_micros - cost.input_micros >= 0


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_genai_prices_costs_round_up_too(input_tokens: int, output_tokens: int) -> None:
    from genai_prices import Usage, calc_price

    openai = Service(
        id="openai", shape="openai", pricing="per_token", base_url="http://x", prices_provider="openai"
    )
    cost = cost_of(openai, "gpt-4o-mini", input_tokens, output_tokens)
    exact = calc_price(
        Usage(input_tokens=input_tokens, output_tokens=output_tokens),
        model_ref="gpt-4o-mini",
        provider_id="openai",
    ).total_price
    assert cost.total_micros - 1 < exact * MICROS_PER_DOLLAR <= cost.total_micros
