"""The service catalog: which services exist, how to reach them, how they are priced.

Built-in defaults ship in `catalog.toml` beside this module; `LAVA_CATALOG` names a TOML
file of the same shape merged over them. `GET /v1/models`, the gateway and
`call_paid_service` all read this one catalog.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from lava_mcp.errors import BadRequest, NotFound
from lava_mcp.money import dollars_to_micros_ceil, parse_decimal_price

BUILT_IN = Path(__file__).with_name("catalog.toml")

Shape = Literal["openai", "anthropic", "http"]
Pricing = Literal["per_token", "per_call", "free"]


@dataclass(frozen=True)
class ModelPrice:
    """Dollars per million tokens, which is also micro-dollars per token. Cache prices
    left out follow `prices`' rule (reads at input, writes at 1.25x, 1-hour writes at 2x)."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    cache_write_1h_per_mtok: Decimal | None = None


@dataclass(frozen=True)
class Service:
    id: str
    shape: Shape
    pricing: Pricing
    base_url: str
    api_key: str | None = None
    prices_provider: str | None = None
    per_call_micros: int = 0
    model_prefixes: tuple[str, ...] = ()
    strip_prefix: bool = False
    models: Mapping[str, ModelPrice] = field(default_factory=dict)
    description: str = ""

    @property
    def is_free(self) -> bool:
        return self.pricing == "free"

    def upstream_model(self, model: str) -> str:
        """The model name the provider knows (without our routing prefix).

        Raises: BadRequest when nothing is left after the prefix (`ollama/`): no model to ask for.
        """
        if self.strip_prefix:
            for prefix in self.model_prefixes:
                if model.startswith(prefix):
                    if not model[len(prefix) :].strip():
                        raise BadRequest(f"model {model[:80]!r} names no model after {prefix!r}")
                    return model[len(prefix) :]
        return model


class Catalog:
    def __init__(self, services: Mapping[str, Service]) -> None:
        self.services = dict(services)

    def get(self, service_id: object) -> Service:
        """Raises: BadRequest for a non-string id; NotFound for an unknown service."""
        if not isinstance(service_id, str) or not service_id.strip():
            raise BadRequest("service must be a non-empty string naming a catalog service")
        service = self.services.get(service_id)
        if service is None:
            known = ", ".join(sorted(self.services))
            raise NotFound(
                f"unknown service {service_id[:60]!r}",
                next_step=f"use one of: {known}",
            )
        return service

    def for_model(self, model: str) -> Service:
        """The service that serves `model` (longest matching prefix wins).

        Raises: NotFound when no service claims the model.
        """
        best: tuple[int, Service] | None = None
        for service in self.services.values():
            for prefix in service.model_prefixes:
                if model.startswith(prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), service)
        if best is None:
            raise NotFound(f"no service in the catalog serves model {model[:80]!r}")
        return best[1]


def load_catalog(
    extra_path: Path | None = None, environment: Mapping[str, str | None] | None = None
) -> Catalog:
    """Read the built-in catalog and merge `extra_path` over it.

    `environment` resolves the `*_env` variables (defaults to `os.environ`).
    Raises: ValueError for a malformed catalog file (a start-up error, not a request error).
    """
    env: Mapping[str, str | None] = environment if environment is not None else os.environ
    raw: dict[str, Any] = tomllib.loads(BUILT_IN.read_text())["services"]
    if extra_path is not None:
        extra = tomllib.loads(Path(extra_path).read_text()).get("services", {})
        for service_id, entry in extra.items():
            raw[service_id] = entry
    return Catalog({sid: _service(sid, entry, env) for sid, entry in raw.items()})


def _service(service_id: str, entry: Mapping[str, Any], env: Mapping[str, str | None]) -> Service:
    shape = entry.get("shape", "openai")
    pricing = entry.get("pricing", "per_token")
    if shape not in ("openai", "anthropic", "http"):
        raise ValueError(f"catalog service {service_id!r}: unknown shape {shape!r}")
    if pricing not in ("per_token", "per_call", "free"):
        raise ValueError(f"catalog service {service_id!r}: unknown pricing {pricing!r}")
    base_url_env = entry.get("base_url_env")
    base_url = (
        (env.get(base_url_env) if base_url_env else None)
        or entry.get("base_url")
        or entry.get("default_base_url")
    )
    if not base_url:
        raise ValueError(f"catalog service {service_id!r} has no base_url")
    api_key_env = entry.get("api_key_env")
    models = {
        name: ModelPrice(
            input_per_mtok=parse_decimal_price(str(price["input_per_mtok"])),
            output_per_mtok=parse_decimal_price(str(price["output_per_mtok"])),
            cache_read_per_mtok=_optional_price(price, "cache_read_per_mtok"),
            cache_write_per_mtok=_optional_price(price, "cache_write_per_mtok"),
            cache_write_1h_per_mtok=_optional_price(price, "cache_write_1h_per_mtok"),
        )
        for name, price in entry.get("models", {}).items()
    }
    per_call = entry.get("price_per_call")
    return Service(
        id=service_id,
        shape=shape,
        pricing=pricing,
        base_url=str(base_url).rstrip("/"),
        api_key=env.get(api_key_env) if api_key_env else None,
        prices_provider=entry.get("prices_provider"),
        per_call_micros=dollars_to_micros_ceil(parse_decimal_price(str(per_call))) if per_call else 0,
        model_prefixes=tuple(entry.get("model_prefixes", ())),
        strip_prefix=bool(entry.get("strip_prefix", False)),
        models=models,
        description=str(entry.get("description", "")),
    )


def _optional_price(price: Mapping[str, Any], name: str) -> Decimal | None:
    value = price.get(name)
    return None if value is None else parse_decimal_price(str(value))
