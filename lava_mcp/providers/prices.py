"""What a call costs: per-token prices from `genai-prices`, overridable in the catalog.

A cost is the exact price rounded up to the micro-dollar; `input_micros` is the input
part rounded up and the output part is the rest, so the two always add up to the cost.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from decimal import Decimal

from genai_prices import Usage, calc_price
from genai_prices.types import ModelPrice as GenaiModelPrice

from lava_mcp.errors import BadRequest
from lava_mcp.money import dollars_to_micros_ceil
from lava_mcp.providers.catalog import ModelPrice, Service


@dataclass(frozen=True)
class Cost:
    input_micros: int
    total_micros: int

    @property
    def output_micros(self) -> int:
        return self.total_micros - self.input_micros


FREE = Cost(0, 0)


def require_price(service: Service, model: str | None) -> None:
    """Raises: BadRequest when a paid service has no price for `model`."""
    if service.pricing != "per_token":
        return
    if not model:
        raise BadRequest(f"service {service.id!r} needs a model")
    if _override(service, model) is None and not _known_to_genai_prices(
        service.prices_provider or service.id, service.upstream_model(model)
    ):
        raise BadRequest(
            f"model {model[:80]!r} has no known price on service {service.id!r}",
            next_step="choose a priced model, or price it in the catalog (LAVA_CATALOG)",
        )


def cost_of(service: Service, model: str | None, input_tokens: int, output_tokens: int) -> Cost:
    """The cost of a call that used these tokens (or of one call, for per-call services)."""
    assert input_tokens >= 0 and output_tokens >= 0, (input_tokens, output_tokens)
    if service.pricing == "free":
        return FREE
    if service.pricing == "per_call":
        return Cost(service.per_call_micros, service.per_call_micros)
    assert model, "per-token pricing needs a model (require_price checks this first)"
    override = _override(service, model)
    if override is not None:
        # Dollars per million tokens == micro-dollars per token.
        input_exact = override.input_per_mtok * input_tokens
        total_exact = input_exact + override.output_per_mtok * output_tokens
        return Cost(_ceil(input_exact), _ceil(total_exact))
    model_price = _model_price(
        service.prices_provider or service.id, service.upstream_model(model), _this_minute()
    )
    if isinstance(model_price.input_mtok, Decimal) and isinstance(model_price.output_mtok, Decimal):
        # Flat per-token prices (most models): the same arithmetic as an override.
        input_exact = model_price.input_mtok * input_tokens
        total_exact = input_exact + model_price.output_mtok * output_tokens
        return Cost(_ceil(input_exact), _ceil(total_exact))
    prices = model_price.calc_price(Usage(input_tokens=input_tokens, output_tokens=output_tokens))
    return Cost(
        dollars_to_micros_ceil(prices["input_price"]),
        dollars_to_micros_ceil(prices["total_price"]),
    )


def _ceil(micros: Decimal) -> int:
    return int(micros.to_integral_value(rounding="ROUND_CEILING"))


def _override(service: Service, model: str) -> ModelPrice | None:
    return service.models.get(model) or service.models.get(service.upstream_model(model))


def _this_minute() -> int:
    return int(time.time() // 60)


@functools.lru_cache(maxsize=256)
def _model_price(provider_id: str, model: str, minute: int) -> GenaiModelPrice:
    """genai-prices' price for the model, looked up once a minute (a lookup costs ~0.3 ms;
    some providers' prices change with the time of day, so the minute is part of the key)."""
    calculation = calc_price(Usage(input_tokens=1, output_tokens=1), model_ref=model, provider_id=provider_id)
    return calculation.model_price


@functools.lru_cache(maxsize=1024)
def _known_to_genai_prices(provider_id: str, model: str) -> bool:
    try:
        calc_price(Usage(input_tokens=1, output_tokens=1), model_ref=model, provider_id=provider_id)
    except LookupError:
        return False
    return True
