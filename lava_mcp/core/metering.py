"""Metering: hold → call → settle. Every paid call, from any surface, runs through here.

    open()    validate, price the upper bound, take the hold (wallet and spend key, one
              transaction) and record the request as pending. A refusal (402/403/429)
              is recorded as a request that did not run, and raised.
    settle()  post the hold at the actual cost, release the rest, complete the record.
    fail()    void the hold (nothing charged) and record why the call failed.

`call()` does all three around one non-streaming upstream request. The gateway streams
between `open()` and `settle()` itself and calls `keep_alive()` while a stream lives.
Database work goes through `Database.run`: inline on SQLite, in a worker thread on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio.to_thread

from lava_mcp.core import holds, spend_keys
from lava_mcp.core.rate_limits import RateLimiter
from lava_mcp.errors import BadRequest, Forbidden, LavaError, PaymentRequired, RateLimited, UpstreamError
from lava_mcp.ids import new_id
from lava_mcp.money import format_cost
from lava_mcp.providers import prices, shapes, upstream
from lava_mcp.providers.catalog import Catalog, Service
from lava_mcp.providers.streams import StreamUsage
from lava_mcp.store import fast
from lava_mcp.store.db import Database
from lava_mcp.store.models import RequestRecord, SpendKey, Wallet, utc_now

# The two request-record writes of every call, built once (building SQLAlchemy
# statements per call costs more than running them).
_INSERT_PENDING = fast.Statement(
    "INSERT INTO request_record (id, wallet_id, spend_key_id, service, model, endpoint, status, ran,"
    " input_tokens, output_tokens, input_cost_micros, cost_micros, hold_micros, created_at)"
    " VALUES (:id, :wallet_id, :spend_key_id, :service, :model, :endpoint, 'pending', :ran, 0, 0, 0, 0,"
    " :hold, :created_at)"
)
_COMPLETE = fast.Statement(
    "UPDATE request_record SET status = 'completed', input_tokens = :input_tokens,"
    " output_tokens = :output_tokens, input_cost_micros = :input_cost, cost_micros = :cost,"
    " completed_at = :completed_at WHERE id = :id"
)

logger = logging.getLogger("lava_mcp.metering")


@dataclass(frozen=True)
class Ticket:
    """A call that holds money and may now run."""

    request_id: str
    wallet_id: str
    service: Service
    model: str | None
    body: dict[str, Any]  # what to send upstream
    hold_id: str
    hold_micros: int
    spend_key_id: str | None
    # The token bounds the hold was priced at (what a call that reports no usage is charged).
    bound: shapes.Usage


@dataclass(frozen=True)
class Settlement:
    request_id: str
    usage: shapes.Usage
    cost: prices.Cost
    available_micros: int  # the wallet's balance after, less what other calls hold


@dataclass(frozen=True)
class CallResult:
    result: Any
    settlement: Settlement


class Metering:
    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        upstream_client: upstream.Upstream,
        *,
        hold_ttl_s: int = 600,
        default_max_tokens: int = 4096,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.upstream = upstream_client
        self.hold_ttl_s = hold_ttl_s
        self.default_max_tokens = default_max_tokens
        self.rate_limiter = rate_limiter
        # Called with the request id once a call is settled or failed (metrics, tests).
        self.resolved_listeners: list[Callable[[str], None]] = []

    async def call(
        self,
        *,
        wallet_id: str,
        service_id: object,
        model: object,
        body: object,
        endpoint: str = "call_paid_service",
        max_cost_micros: int | None = None,
        spend_key: SpendKey | None = None,
        request_shape: str | None = None,
        request_id: str | None = None,
    ) -> CallResult:
        """Run one non-streaming call through hold → call → settle.

        Raises: any LavaError; a 502 or upstream 400 after the hold means nothing was charged.
        """
        if isinstance(body, dict) and body.get("stream"):
            # The provider would stream a billable answer that this JSON call can't read,
            # and the failure would charge nothing: refuse before any hold or traffic.
            raise BadRequest("this call does not stream: leave out input.stream (the gateway streams)")
        ticket = await self.open(
            wallet_id=wallet_id,
            service_id=service_id,
            model=model,
            body=body,
            endpoint=endpoint,
            max_cost_micros=max_cost_micros,
            spend_key=spend_key,
            request_shape=request_shape,
            request_id=request_id,
        )
        try:
            result = await self.upstream.post_json(ticket.service, ticket.body)
        except LavaError as error:
            await self.fail(ticket, error)
            raise
        except BaseException:
            # Cancelled mid-call (the client went away): release the hold, charge nothing.
            with anyio.CancelScope(shield=True):
                await self.db.run(self._fail_sync, ticket, "call cancelled", 499)
            raise
        usage = _usage(ticket.service, result)
        if usage is None:
            # A paid model answered without reporting usage: charge the hold, never nothing.
            logger.warning(
                "%s answered request %s without usage; charging its hold",
                ticket.service.id,
                ticket.request_id,
            )
            usage = ticket.bound
        settlement = await self.settle(ticket, usage)
        return CallResult(result, settlement)

    async def open(
        self,
        *,
        wallet_id: str,
        service_id: object,
        model: object,
        body: object,
        endpoint: str,
        max_cost_micros: int | None = None,
        spend_key: SpendKey | None = None,
        request_shape: str | None = None,
        request_id: str | None = None,
    ) -> Ticket:
        """Validate and price the call, then hold its upper bound.

        Raises: BadRequest/NotFound (nothing recorded); InsufficientBalance,
        SpendLimitReached, Forbidden, RateLimited (recorded as a refused request).
        """
        service = self.catalog.get(service_id)
        model_name = _model_name(service, model, body)
        prices.require_price(service, model_name)
        prepared = self._prepare(service, model_name, body)
        bound = prices.cost_of(service, model_name, prepared.input_tokens_bound, prepared.output_tokens_bound)
        ticket = Ticket(
            request_id=request_id or new_id("req"),
            wallet_id=wallet_id,
            service=service,
            model=model_name,
            body=prepared.body,
            hold_id="",
            hold_micros=bound.total_micros,
            bound=shapes.Usage(prepared.input_tokens_bound, prepared.output_tokens_bound),
            spend_key_id=spend_key.id if spend_key else None,
        )
        try:
            if spend_key is not None:
                spend_keys.check_allowed(
                    spend_key, service_id=service.id, model=model_name, now=utc_now(), shape=request_shape
                )
                if spend_key.rate_rpm and self.rate_limiter is not None:
                    await self.rate_limiter.acquire(
                        spend_key.id, rpm=spend_key.rate_rpm, burst=spend_key.rate_burst
                    )
            if max_cost_micros is not None and bound.total_micros > max_cost_micros:
                raise PaymentRequired(
                    f"this call could cost up to {format_cost(bound.total_micros)} USD, more than max_cost",
                    next_step="raise max_cost or lower max_tokens",
                )
            return await self.db.run(self._open_sync, ticket, endpoint, spend_key)
        except (PaymentRequired, Forbidden, RateLimited) as error:
            await self.db.run(self._record_refusal, ticket, endpoint, error)
            raise

    async def settle(self, ticket: Ticket, usage: shapes.Usage) -> Settlement:
        """Post the hold at the cost of `usage` (capped at the hold) and complete the record."""
        cost = prices.cost_of(ticket.service, ticket.model, usage.input_tokens, usage.output_tokens)
        if cost.total_micros > ticket.hold_micros:
            # The provider reported more than the bound allowed; the hold caps the charge.
            cost = prices.Cost(min(cost.input_micros, ticket.hold_micros), ticket.hold_micros)
        settlement = await self.db.run(self._settle_sync, ticket, usage, cost)
        self._resolved(ticket)
        return settlement

    async def fail(self, ticket: Ticket, error: LavaError) -> None:
        """Void the hold and record the failure: nothing is charged."""
        await self.db.run(self._fail_sync, ticket, error.message, error.code)
        self._resolved(ticket)

    async def finish_stream(self, ticket: Ticket, meter: StreamUsage, *, failed: bool) -> None:
        """Settle a stream at what it produced; one that failed before producing anything
        is voided (nothing charged)."""
        if failed and not meter.produced:
            await self.fail(ticket, UpstreamError(f"{ticket.service.id} stream failed; nothing was charged"))
            return
        await self.settle(ticket, meter.usage())

    async def keep_alive(self, ticket: Ticket) -> None:
        """Push the hold's expiry forward while its stream is still alive."""

        def extend() -> None:
            with self.db.write() as session:
                holds.extend(session, ticket.hold_id, self.hold_ttl_s)

        await self.db.run(extend)

    def _resolved(self, ticket: Ticket) -> None:
        for listener in self.resolved_listeners:
            listener(ticket.request_id)

    def expire_holds(self) -> int:
        """Release every hold past its expiry (a crash between hold and settle loses nothing)."""
        with self.db.write() as session:
            return holds.expire_due(session)

    # -- the transactions ---------------------------------------------------------------

    def _prepare(self, service: Service, model: str | None, body: object) -> shapes.Prepared:
        upstream_model = service.upstream_model(model) if model else ""
        if service.shape == "openai":
            return shapes.prepare_openai(
                body, upstream_model=upstream_model, default_max_tokens=self.default_max_tokens
            )
        if service.shape == "anthropic":
            return shapes.prepare_anthropic(
                body, upstream_model=upstream_model, default_max_tokens=self.default_max_tokens
            )
        if not isinstance(body, dict):
            raise BadRequest("input must be a JSON object of the service's parameters")
        shapes.json_size_bytes(body)  # raises BadRequest for a body that can't be sent
        return shapes.Prepared(dict(body), 0, 0)

    def _open_sync(self, ticket: Ticket, endpoint: str, spend_key: SpendKey | None) -> Ticket:
        now = utc_now()
        with self.db.write() as session:
            if spend_key is not None:
                spend_keys.reserve(
                    session,
                    spend_key,
                    hold_micros=ticket.hold_micros,
                    now=now,
                    service_id=ticket.service.id,
                    model=ticket.model,
                    # The call's shape: check_allowed passed it against this very key.
                    shape=spend_key.request_shape,
                    max_tokens=ticket.bound.output_tokens or None,
                )
            hold = holds.reserve(
                session,
                wallet_id=ticket.wallet_id,
                amount_micros=ticket.hold_micros,
                request_id=ticket.request_id,
                ttl_s=self.hold_ttl_s,
                spend_key_id=ticket.spend_key_id,
            )
            fast.run(
                session,
                _INSERT_PENDING,
                {
                    "ran": True,
                    "id": ticket.request_id,
                    "wallet_id": ticket.wallet_id,
                    "spend_key_id": ticket.spend_key_id,
                    "service": ticket.service.id,
                    "model": ticket.model,
                    "endpoint": endpoint,
                    "hold": ticket.hold_micros,
                    "created_at": now,
                },
            )
        return replace(ticket, hold_id=hold.id)

    def _settle_sync(self, ticket: Ticket, usage: shapes.Usage, cost: prices.Cost) -> Settlement:
        with self.db.write() as session:
            available = holds.post(session, ticket.hold_id, cost.total_micros)
            completed = fast.run(
                session,
                _COMPLETE,
                {
                    "id": ticket.request_id,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "input_cost": cost.input_micros,
                    "cost": cost.total_micros,
                    "completed_at": utc_now(),
                },
            )
            assert completed.rowcount == 1, ticket.request_id
        return Settlement(ticket.request_id, usage, cost, available)

    def _fail_sync(self, ticket: Ticket, message: str, code: int) -> None:
        with self.db.write() as session:
            holds.void(session, ticket.hold_id)
            record = session.get(RequestRecord, ticket.request_id)
            assert record is not None
            record.status = "error"
            record.error = message[:500]
            record.error_code = code
            record.completed_at = utc_now()
            session.add(record)

    def _record_refusal(self, ticket: Ticket, endpoint: str, error: LavaError) -> None:
        with self.db.write() as session:
            if session.get(Wallet, ticket.wallet_id) is None:
                return
            session.add(
                RequestRecord(
                    id=ticket.request_id,
                    wallet_id=ticket.wallet_id,
                    spend_key_id=ticket.spend_key_id,
                    service=ticket.service.id,
                    model=ticket.model,
                    endpoint=endpoint,
                    status="error",
                    ran=False,
                    error=error.message[:500],
                    error_code=error.code,
                    completed_at=utc_now(),
                )
            )


def _model_name(service: Service, model: object, body: object) -> str | None:
    if model is None and isinstance(body, dict):
        model = body.get("model")
    if model is None:
        return None
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise BadRequest("model must be a non-empty string")
    return model


def _usage(service: Service, result: Any) -> shapes.Usage | None:
    """The usage the provider reported; None when a per-token service reported none."""
    if service.shape not in ("openai", "anthropic"):
        return shapes.Usage(0, 0)
    reported = isinstance(result, dict) and isinstance(result.get("usage"), dict)
    if not reported:
        return None if service.pricing == "per_token" else shapes.Usage(0, 0)
    if service.shape == "openai":
        return shapes.openai_usage(result)
    return shapes.anthropic_usage(result)
