"""What a call costs: per-token prices from `genai-prices`, overridable in the catalog.

A cost is the exact price rounded up to the micro-dollar; `input_micros` is the input
part rounded up and the output part is the rest, so the two always add up to the cost.

Prompt caching is priced as the provider prices it: cache reads and writes (5-minute and
1-hour TTLs) at their own rates, through genai-prices. A catalog override that names no
cache prices uses a rule that never charges less than Anthropic would: reads at the input
price, 5-minute writes at 1.25x input, 1-hour writes at 2x input.

A hold is priced by `bound_cost`: its input bound at the dearest input rate the request
may incur (all of it written to the cache, when the request asks for caching).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from decimal import Decimal

from genai_prices import Usage, calc_price, data_snapshot
from genai_prices.types import ModelPrice as GenaiModelPrice

from lava_mcp.errors import BadRequest
from lava_mcp.money import dollars_to_micros_ceil
from lava_mcp.providers import shapes
from lava_mcp.providers.catalog import ModelPrice, Service

# The override rule for cache prices a catalog entry leaves out (Anthropic's multipliers).
CACHE_WRITE_MULTIPLIER = Decimal("1.25")
CACHE_WRITE_1H_MULTIPLIER = Decimal("2")


@dataclass(frozen=True)
class Cost:
    input_micros: int
    total_micros: int

    @property
    def output_micros(self) -> int:
        return self.total_micros - self.input_micros


FREE = Cost(0, 0)


def load_table() -> None:
    """Load genai-prices' bundled price table now instead of at the first priced call.

    The table is a 1.6 MB Python module: compiled from source (no bytecode cache, as under
    PYTHONDONTWRITEBYTECODE=1) it takes ~0.25 s of CPU and ~60 MB of transient memory, part
    of which stays behind as fragments in a process that is already large. `lava-mcp serve`
    calls this first, while its process is small: the first call does not wait for it, and
    the server is ~10 MB smaller under load.
    """
    data_snapshot.get_snapshot()


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


def cost_of(
    service: Service,
    model: str | None,
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
) -> Cost:
    """The cost of a call that used these tokens (or of one call, for per-call services).

    `input_tokens` is the uncached input; `cache_write_tokens` counts every cache write,
    of which `cache_write_1h_tokens` were at the 1-hour TTL.
    """
    counts = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens)
    assert all(count >= 0 for count in counts), counts
    assert cache_write_1h_tokens <= cache_write_tokens, (cache_write_1h_tokens, cache_write_tokens)
    if service.pricing == "free":
        return FREE
    if service.pricing == "per_call":
        return Cost(service.per_call_micros, service.per_call_micros)
    assert model, "per-token pricing needs a model (require_price checks this first)"
    cached = cache_read_tokens or cache_write_tokens
    override = _override(service, model)
    if override is not None:
        # Dollars per million tokens == micro-dollars per token.
        input_exact = (
            override.input_per_mtok * input_tokens
            + _or(override.cache_read_per_mtok, override.input_per_mtok) * cache_read_tokens
            + _or(override.cache_write_per_mtok, override.input_per_mtok * CACHE_WRITE_MULTIPLIER)
            * (cache_write_tokens - cache_write_1h_tokens)
            + _or(override.cache_write_1h_per_mtok, override.input_per_mtok * CACHE_WRITE_1H_MULTIPLIER)
            * cache_write_1h_tokens
        )
        total_exact = input_exact + override.output_per_mtok * output_tokens
        return Cost(_ceil(input_exact), _ceil(total_exact))
    model_price = _model_price(
        service.prices_provider or service.id, service.upstream_model(model), _this_minute()
    )
    if (
        not cached
        and isinstance(model_price.input_mtok, Decimal)
        and isinstance(model_price.output_mtok, Decimal)
    ):
        # Flat per-token prices (most models) and no cache: the same arithmetic as an override.
        input_exact = model_price.input_mtok * input_tokens
        total_exact = input_exact + model_price.output_mtok * output_tokens
        return Cost(_ceil(input_exact), _ceil(total_exact))
    # genai-prices counts cached tokens inside input_tokens and prices them apart.
    usage = Usage(
        input_tokens=input_tokens + cache_read_tokens + cache_write_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens or None,
        cache_write_tokens=cache_write_tokens or None,
        cache_write_1h_tokens=cache_write_1h_tokens or None,
    )
    prices = model_price.calc_price(usage)
    return Cost(
        dollars_to_micros_ceil(prices["input_price"]),
        dollars_to_micros_ceil(prices["total_price"]),
    )


def price(service: Service, model: str | None, usage: shapes.Usage) -> Cost:
    """`cost_of` for a `shapes.Usage`."""
    return cost_of(
        service,
        model,
        usage.input_tokens,
        usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
    )


def bound_cost(service: Service, model: str | None, prepared: shapes.Prepared) -> Cost:
    """What a hold for `prepared` must be: the most its token bounds can cost.

    Without caching that is the bound at the input rate. A request that asks for cache
    writes may have every input token billed as a write (1.25x, or 2x for the 1-hour TTL),
    so the bound is priced at the dearest of the rates it may incur.
    """
    input_bound, output_bound = prepared.input_tokens_bound, prepared.output_tokens_bound
    plain = cost_of(service, model, input_bound, output_bound)
    if not prepared.cache.writes:
        return plain
    written = cost_of(
        service,
        model,
        0,
        output_bound,
        cache_write_tokens=input_bound,
        cache_write_1h_tokens=input_bound if prepared.cache.writes_1h else 0,
    )
    return written if written.total_micros > plain.total_micros else plain


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


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
