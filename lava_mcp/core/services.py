"""What can be bought: the catalog's services, their models and prices, for a chat to read.

One listing for `list_services` (and any surface that wants it): each service with its
pricing (free, per call, per token) and, for model services, every model it can price —
the catalog's own prices first, then the models `genai-prices` knows for the provider that
match the service's model prefixes. Prices are dollars per million tokens as decimal
strings; a model whose price is tiered (it changes with the prompt's length or the time)
shows null and is still priced exactly per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from lava_mcp.errors import BadRequest
from lava_mcp.money import format_cost
from lava_mcp.providers.catalog import Catalog, Service


@dataclass(frozen=True)
class ModelListing:
    model: str
    input_per_mtok: Decimal | None
    output_per_mtok: Decimal | None


@dataclass(frozen=True)
class ServiceListing:
    service: Service
    models: list[ModelListing]


def list_services(catalog: Catalog, service_id: object = None) -> list[ServiceListing]:
    """Every service (or the one named), with its models and prices, sorted by id.

    Raises: BadRequest for a malformed id; NotFound for an unknown one.
    """
    if service_id is not None and not isinstance(service_id, str):
        raise BadRequest("service must be a string naming a catalog service")
    chosen = [catalog.get(service_id)] if service_id is not None else list(catalog.services.values())
    return [ServiceListing(service, _models(service)) for service in sorted(chosen, key=lambda s: s.id)]


def listing_json(listing: ServiceListing) -> dict[str, object]:
    """A service as `list_services` shows it."""
    service = listing.service
    body: dict[str, object] = {
        "id": service.id,
        "kind": "data" if service.shape == "http" else "model",
        "shape": service.shape,
        "pricing": service.pricing,
        "free": service.is_free,
        "models": [
            {
                "model": model.model,
                "input_per_million_tokens": _price(model.input_per_mtok),
                "output_per_million_tokens": _price(model.output_per_mtok),
            }
            for model in listing.models
        ],
    }
    if service.pricing == "per_call":
        body["price_per_call"] = format_cost(service.per_call_micros)
    if service.description:
        body["description"] = service.description
    return body


def _models(service: Service) -> list[ModelListing]:
    if service.shape == "http":
        return []
    found: dict[str, ModelListing] = {
        name: ModelListing(name, price.input_per_mtok, price.output_per_mtok)
        for name, price in service.models.items()
    }
    if service.pricing == "per_token":
        for model, price in _genai_prices(service.prices_provider or service.id):
            if any(model.startswith(prefix) for prefix in service.model_prefixes):
                found.setdefault(model, ModelListing(model, *price))
    return [found[name] for name in sorted(found)]


def _genai_prices(provider_id: str) -> list[tuple[str, tuple[Decimal | None, Decimal | None]]]:
    from genai_prices import data_snapshot

    provider = data_snapshot.find_provider_by_id(data_snapshot.get_snapshot().providers, provider_id)
    if provider is None:
        return []
    listed = []
    for model in provider.models:
        prices = model.prices
        # A list of prices is time-dependent; a non-Decimal field is tiered by prompt length.
        flat = prices if not isinstance(prices, list) else None
        input_price = getattr(flat, "input_mtok", None)
        output_price = getattr(flat, "output_mtok", None)
        listed.append(
            (
                model.id,
                (
                    input_price if isinstance(input_price, Decimal) else None,
                    output_price if isinstance(output_price, Decimal) else None,
                ),
            )
        )
    return listed


def _price(value: Decimal | None) -> str | None:
    if value is None:
        return None
    # Dollars per million tokens, as written (no float, no exponent): "0.15", "2.5".
    if value == value.quantize(Decimal("0.01")):
        return format(value.quantize(Decimal("0.01")), "f")
    return format(value.normalize(), "f")
