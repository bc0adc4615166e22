"""Metering: hold → call → settle. Every paid call, from any surface, runs through here.

    open()    validate, price the upper bound, take the hold (wallet and spend key, one
              transaction) and record the request as pending. A refusal (402/403/429)
              is recorded as a request that did not run, and raised.
    settle()  post the hold at the actual cost, release the rest, complete the record.
    fail()    void the hold (nothing charged) and record why the call failed.

The charging rule, one for every surface: a call is charged the usage its provider
reported, priced as the provider prices it (cache reads and writes included), capped at
its hold (`charge_basis` "usage" or "capped"). No usable usage — missing, empty,
malformed, or absurd (orders of magnitude beyond the bound) — is charged the hold
("hold"), never $0. A call the provider never received, or answered with an error, is
voided: nothing charged (the 502 contract).

`call()` does all three around one non-streaming upstream request, sent at most once. The
hold is kept alive while it waits. If the caller goes away (an MCP cancel) after the
request may have reached the provider, the answer is still awaited for up to
`stream_drain_s` for its usage, then charged by the rule; before that, it is voided. The
gateway streams between `open()` and `settle()` through `core.relay`.

A settle or void that fails on the database (busy, deadlock, serialization failure, a
dropped connection) is retried with bounded backoff until it succeeds, shielded from
cancellation: an answered call is never left uncharged.

Every write is a job for `Database.transact` (`store.writer`): on SQLite the holds, settles
and voids of concurrent calls share one commit (group commit) in the writer thread, each in
a savepoint of its own, so a refused hold never rolls back the others; on PostgreSQL each is
its own transaction in a worker thread. A caller goes on only once its job is committed: a
hold before the upstream call (on SQLite its fsync is left to the settle's: `Database.submit`),
a settle durable before the answer is complete. A call alone in the process asks for its
writes to run at once on the event loop's thread (`now_if_idle`), skipping the hand-off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import anyio.to_thread
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from lava_mcp.core import holds, spend_keys
from lava_mcp.core.rate_limits import RateLimiter
from lava_mcp.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    LavaError,
    PaymentRequired,
    RateLimited,
    UpstreamError,
)
from lava_mcp.ids import new_id
from lava_mcp.money import format_cost
from lava_mcp.observability import metrics
from lava_mcp.providers import prices, shapes, upstream
from lava_mcp.providers.catalog import Catalog, Service
from lava_mcp.store import fast
from lava_mcp.store.db import Database, retryable
from lava_mcp.store.models import SpendKey, utc_now
from lava_mcp.store.writer import wait_out

# The two request-record writes of every call, built once (building SQLAlchemy
# statements per call costs more than running them).
_INSERT_PENDING = fast.Statement(
    "INSERT INTO request_record (id, wallet_id, spend_key_id, service, model, endpoint, status, ran,"
    " input_tokens, output_tokens, input_cost_micros, cost_micros, hold_micros, created_at)"
    " VALUES (:id, :wallet_id, :spend_key_id, :service, :model, :endpoint, 'pending', :ran, 0, 0, 0, 0,"
    " :hold, :created_at)"
)
# A refused call is recorded as a request that did not run (for a wallet that exists).
_INSERT_REFUSED = fast.Statement(
    "INSERT INTO request_record (id, wallet_id, spend_key_id, service, model, endpoint, status, ran,"
    " input_tokens, output_tokens, input_cost_micros, cost_micros, hold_micros, error, error_code,"
    " created_at, completed_at) SELECT :id, :wallet_id, :spend_key_id, :service, :model, :endpoint,"
    " 'error', :ran, 0, 0, 0, 0, 0, :error, :error_code, :now, :now"
    " WHERE EXISTS (SELECT 1 FROM wallet WHERE id = :owner)"  # (PostgreSQL types each name once)
)
# A failed call's record; one settled already (a cancel racing the settle) keeps its charge.
_RECORD_FAILED = fast.Statement(
    "UPDATE request_record SET status = 'error', error = :error, error_code = :error_code,"
    " completed_at = :completed_at WHERE id = :id AND status != 'completed'"
)
_RECORD_EXISTS = fast.Statement("SELECT 1 FROM request_record WHERE id = :id")
# A hold refused after the key's share was taken gives that share back with it.
_BEFORE_HOLD = fast.Statement("SAVEPOINT lava_hold")
_UNDO_HOLD = fast.Statement("ROLLBACK TO lava_hold")
_AFTER_HOLD = fast.Statement("RELEASE lava_hold")
_REFUSALS = (PaymentRequired, Forbidden, RateLimited)
_COMPLETE = fast.Statement(
    "UPDATE request_record SET status = 'completed', input_tokens = :input_tokens,"
    " output_tokens = :output_tokens, cache_read_tokens = :cache_read_tokens,"
    " cache_write_tokens = :cache_write_tokens, charge_basis = :charge_basis,"
    " input_cost_micros = :input_cost, cost_micros = :cost, completed_at = :completed_at WHERE id = :id"
)

logger = logging.getLogger("lava_mcp.metering")

T = TypeVar("T")
ChargeBasis = Literal["usage", "capped", "hold"]
# Reported usage this many times beyond the bound is not a report that can be believed
# (nor stored: such counts may not even fit a database integer): charged the hold.
ABSURD_FACTOR = 100
# A failed settle is retried after these waits, doubling up to the longest (then forever).
SETTLE_RETRY_FIRST_S = 0.05
SETTLE_RETRY_LONGEST_S = 5.0


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
    bound_cost: prices.Cost = prices.FREE  # the hold's price; total_micros == hold_micros


@dataclass(frozen=True)
class Charge:
    """What a call is charged, by the charging rule."""

    usage: shapes.Usage  # the tokens charged (the bound, for basis "hold")
    cost: prices.Cost
    basis: ChargeBasis


@dataclass(frozen=True)
class Settlement:
    request_id: str
    usage: shapes.Usage
    cost: prices.Cost
    available_micros: int  # the wallet's balance after, less what other calls hold
    basis: ChargeBasis = "usage"
    held_micros: int = 0  # the hold the call ran under (the most it could have been charged)


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
        stream_drain_s: float = 5.0,
        money_mode: str | None = None,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.upstream = upstream_client
        self.hold_ttl_s = hold_ttl_s
        self.default_max_tokens = default_max_tokens
        self.rate_limiter = rate_limiter
        # How long a call whose caller left is still read for its usage.
        self.stream_drain_s = stream_drain_s
        # The server's money mode: paid calls need a wallet in the same mode (None: any).
        self.money_mode = money_mode
        self.settle_retry_first_s = SETTLE_RETRY_FIRST_S
        self.settle_retry_longest_s = SETTLE_RETRY_LONGEST_S
        # Called with the request id once a call is settled or failed (metrics, tests).
        self.resolved_listeners: list[Callable[[str], None]] = []
        # Called with the request id when a call's client left and its upstream is drained.
        self.draining_listeners: list[Callable[[str], None]] = []
        # The request ids of the calls holding money: from their hold until they are resolved.
        self._open_calls: set[str] = set()

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
        exchange = upstream.Exchange()
        # The request runs in its own task, so that a caller who leaves (a cancel) does not
        # cut it off before its usage can be read (`_abandon`).
        request = asyncio.ensure_future(self.upstream.post_json(ticket.service, ticket.body, exchange))
        keep_alive = asyncio.ensure_future(self.keep_alive_while(ticket))
        try:
            result = await asyncio.shield(request)
        except LavaError as error:
            await self.fail(ticket, error)
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._abandon(ticket, exchange, request)
            raise
        finally:
            keep_alive.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait({keep_alive})
        settlement = await self.settle(ticket, _usage(ticket.service, result))
        return CallResult(result, settlement)

    async def _abandon(
        self, ticket: Ticket, exchange: upstream.Exchange, request: asyncio.Future[Any]
    ) -> None:
        """Resolve a call whose caller left while it waited on the provider.

        Not yet sent: voided. Sent (the provider may bill it): its answer is awaited for
        up to `stream_drain_s` and charged by the rule — its usage, or the hold when none
        comes. A provider that answers with an error is voided, as for any caller.
        """
        if not exchange.sent:
            request.cancel()
            await self._write(
                "void", self._fail_job, ticket, "call cancelled before it reached the provider", 499
            )
            self._resolved(ticket)
            return
        for listener in self.draining_listeners:
            listener(ticket.request_id)
        await _wait_for(request, self.stream_drain_s)
        result: Any = None
        if request.done() and not request.cancelled():
            failure = request.exception()
            if isinstance(failure, LavaError):
                await self.fail(ticket, failure)
                return
            if failure is not None:
                logger.error("request %s failed after its caller left", ticket.request_id, exc_info=failure)
            else:
                result = request.result()
        request.cancel()
        usage = _usage(ticket.service, result) if result is not None else None
        logger.info(
            "request %s: caller left; charging %s", ticket.request_id, "its usage" if usage else "its hold"
        )
        await self.settle(ticket, usage)

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
        bound = prices.bound_cost(service, model_name, prepared)
        ticket = Ticket(
            request_id=request_id or new_id("req"),
            wallet_id=wallet_id,
            service=service,
            model=model_name,
            body=prepared.body,
            hold_id="",
            hold_micros=bound.total_micros,
            bound=shapes.Usage(prepared.input_tokens_bound, prepared.output_tokens_bound),
            bound_cost=bound,
            spend_key_id=spend_key.id if spend_key else None,
        )
        try:
            if spend_key is not None:
                spend_keys.check_allowed(
                    spend_key, service_id=service.id, model=model_name, now=utc_now(), shape=request_shape
                )
            if max_cost_micros is not None and bound.total_micros > max_cost_micros:
                raise PaymentRequired(
                    f"this call could cost up to {format_cost(bound.total_micros)} USD, more than max_cost",
                    next_step="raise max_cost or lower max_tokens",
                )
            if spend_key is not None:  # last: a call refused for another reason takes no token
                await self._rate_limit(spend_key)
        except _REFUSALS as error:
            await self.db.transact(self._record_refusal, ticket, endpoint, error)
            raise
        for _ in range(spend_keys.MAX_REJUDGEMENTS + 1):
            admitted = await self._take_hold(ticket, endpoint, spend_key)
            if not isinstance(admitted, spend_keys.RateLimitMoved):
                break
            # A (cached) key whose rate limit changed elsewhere: the call passes the key's
            # current rate limit too, or is refused by it, before its hold is taken.
            spend_key = admitted.current
            try:
                await self._rate_limit(spend_key)
            except RateLimited as error:
                await self.db.transact(self._record_refusal, ticket, endpoint, error)
                raise
        else:
            raise Conflict("this spend key kept changing while the call was being admitted; nothing was done")
        if isinstance(admitted, LavaError):
            raise admitted  # refused by the hold's own conditional UPDATEs, and recorded
        return admitted

    async def _rate_limit(self, spend_key: SpendKey) -> None:
        """The key's rate-limit step (Raises: RateLimited)."""
        if spend_key.rate_rpm and self.rate_limiter is not None:
            await self.rate_limiter.acquire(spend_key.id, rpm=spend_key.rate_rpm, burst=spend_key.rate_burst)

    async def _take_hold(
        self, ticket: Ticket, endpoint: str, spend_key: SpendKey | None
    ) -> Ticket | LavaError | spend_keys.RateLimitMoved:
        """The hold's transaction. A caller that leaves while it commits gets no ticket, so
        a hold it took is voided at once (not left to expire)."""
        self._open_calls.add(ticket.request_id)  # open from its hold until it is resolved
        # On SQLite committed, not yet durable: the settle's durable commit makes it so
        # (`Database.submit`).
        job = self.db.submit(
            self._open_job, ticket, endpoint, spend_key, durable=False, now_if_idle=self._alone()
        )
        admitted: Ticket | LavaError | spend_keys.RateLimitMoved | None = None
        try:
            admitted = await asyncio.shield(job)
            return admitted
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                await wait_out(job)
                taken = None if job.cancelled() or job.exception() else job.result()
                if isinstance(taken, Ticket):
                    await self._write(
                        "void", self._fail_job, taken, "call cancelled before it reached the provider", 499
                    )
                    self._resolved(taken)
            raise
        finally:
            if not isinstance(admitted, Ticket):  # refused, failed or cancelled: not open
                self._open_calls.discard(ticket.request_id)

    def _alone(self) -> bool:
        """Whether this process has no metered call open but one: its writes may then
        commit at once instead of waiting to share a commit (`Database.submit`)."""
        return len(self._open_calls) <= 1

    def charge(self, ticket: Ticket, usage: shapes.Usage | None) -> Charge:
        """What `ticket` is charged for `usage` (None: no usable usage) by the charging rule."""
        if usage is not None and not _believable(usage, ticket.bound):
            logger.warning(
                "%s reported usage far beyond request %s's bound (%s); charging its hold",
                ticket.service.id,
                ticket.request_id,
                usage,
            )
            usage = None
        if usage is None:
            if ticket.service.pricing == "per_token":
                logger.warning(
                    "%s gave request %s no usable usage; charging its hold",
                    ticket.service.id,
                    ticket.request_id,
                )
            return Charge(ticket.bound, ticket.bound_cost, "hold")
        cost = prices.price(ticket.service, ticket.model, usage)
        if cost.total_micros > ticket.hold_micros:
            # The provider reported more than the bound allowed; the hold caps the charge.
            capped = prices.Cost(min(cost.input_micros, ticket.hold_micros), ticket.hold_micros)
            return Charge(usage, capped, "capped")
        return Charge(usage, cost, "usage")

    async def settle(self, ticket: Ticket, usage: shapes.Usage | None) -> Settlement:
        """Post the hold at what the charging rule says `usage` costs and complete the
        record; retried until the database takes it."""
        charge = self.charge(ticket, usage)
        try:
            settlement = await self._write("settle", self._settle_job, ticket, charge)
        finally:
            self._open_calls.discard(ticket.request_id)  # (open no more, whatever happened)
        metrics.spent(ticket.service.id, settlement.cost.total_micros)
        self._resolved(ticket)
        return settlement

    async def fail(self, ticket: Ticket, error: LavaError) -> None:
        """Void the hold and record the failure: nothing is charged."""
        try:
            await self._write("void", self._fail_job, ticket, error.message, error.code)
        finally:
            self._open_calls.discard(ticket.request_id)
        self._resolved(ticket)

    async def finish_stream(self, ticket: Ticket, usage: shapes.Usage | None, *, accepted: bool) -> None:
        """Settle a stream by the charging rule. One the provider never accepted (no 2xx
        answer) is voided; once it answered 2xx it may bill, so it is charged its usage,
        or its hold when no usable usage came."""
        if not accepted:
            await self.fail(ticket, UpstreamError(f"{ticket.service.id} stream failed; nothing was charged"))
            return
        await self.settle(ticket, usage)

    async def keep_alive(self, ticket: Ticket) -> None:
        """Push the hold's expiry forward while its call is still running."""
        await self.db.transact(holds.extend, ticket.hold_id, self.hold_ttl_s)

    async def keep_alive_while(self, ticket: Ticket) -> None:
        """Keep the hold alive until cancelled (run beside a call that waits upstream)."""
        while True:
            await anyio.sleep(max(1.0, self.hold_ttl_s / 3))
            try:
                await self.keep_alive(ticket)
            except Exception:  # the next round retries; the hold's TTL covers a miss
                logger.exception("could not extend the hold of request %s", ticket.request_id)

    async def _write(self, operation: Literal["settle", "void"], function: Callable[..., T], *args: Any) -> T:
        """Run a settling transaction (`operation`, as the logs and metrics name it) until it
        commits, shielded from cancellation.

        Only errors that say "try again" are retried (busy or locked, deadlock,
        serialization failure, a dropped connection); anything else is a bug and raised.
        """
        delay_s = self.settle_retry_first_s
        attempt = 1
        with anyio.CancelScope(shield=True):
            while True:
                try:
                    return await self.db.transact(function, *args, now_if_idle=self._alone())
                except Exception as error:
                    if not retryable(error):
                        raise
                    driver_error = error.orig if isinstance(error, DBAPIError) else error
                    metrics.settle_retried(operation)
                    logger.warning(
                        "%s failed on attempt %d (%s); retrying in %.2fs",
                        operation,
                        attempt,
                        str(driver_error).splitlines()[0] if str(driver_error) else type(error).__name__,
                        delay_s,
                    )
                await anyio.sleep(delay_s)
                delay_s = min(delay_s * 2, self.settle_retry_longest_s)
                attempt += 1
        raise AssertionError("a shielded scope is never cancelled")

    def _resolved(self, ticket: Ticket) -> None:
        self._open_calls.discard(ticket.request_id)
        for listener in self.resolved_listeners:
            listener(ticket.request_id)

    def expire_holds(self) -> int:
        """Release every hold past its expiry (a crash between hold and settle loses nothing).

        One hold per transaction, in the same lock order as a settlement (hold, key,
        wallet), so the sweep and concurrent settlements never deadlock.
        """
        now = utc_now()
        with self.db.read() as session:
            due = holds.due(session, now)
        released = 0
        for hold_id in due:
            with self.db.write() as session:
                released += holds.expire_one(session, hold_id, now)
        return released

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

    def _open_job(
        self, session: Session, ticket: Ticket, endpoint: str, spend_key: SpendKey | None
    ) -> Ticket | LavaError | spend_keys.RateLimitMoved:
        """Take the hold (key, then wallet) and record the request as pending; or, refused,
        undo the key's share and record the refusal (returned, for the caller to raise)."""
        now = utc_now()
        fast.run(session, _BEFORE_HOLD, {})
        try:
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
                mode=None if ticket.service.is_free else self.money_mode,
            )
        except (*_REFUSALS, spend_keys.RateLimitMoved) as refusal:
            fast.run(session, _UNDO_HOLD, {})
            fast.run(session, _AFTER_HOLD, {})
            if not isinstance(refusal, spend_keys.RateLimitMoved):  # (that one is judged again)
                self._record_refusal(session, ticket, endpoint, refusal)
            return refusal
        fast.run(session, _AFTER_HOLD, {})
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

    def _settle_job(self, session: Session, ticket: Ticket, charge: Charge) -> Settlement:
        usage, cost = charge.usage, charge.cost
        available = holds.post(session, ticket.hold_id, cost.total_micros)
        completed = fast.run(
            session,
            _COMPLETE,
            {
                "id": ticket.request_id,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "charge_basis": charge.basis,
                "input_cost": cost.input_micros,
                "cost": cost.total_micros,
                "completed_at": utc_now(),
            },
        )
        assert completed.rowcount == 1, ticket.request_id
        return Settlement(ticket.request_id, usage, cost, available, charge.basis, ticket.hold_micros)

    def _fail_job(self, session: Session, ticket: Ticket, message: str, code: int) -> None:
        holds.void(session, ticket.hold_id)
        failed = fast.run(
            session,
            _RECORD_FAILED,
            {"id": ticket.request_id, "error": message[:500], "error_code": code, "completed_at": utc_now()},
        )
        if failed.rowcount != 1:  # completed already: keep the charge
            assert fast.run(session, _RECORD_EXISTS, {"id": ticket.request_id}).fetchone(), ticket.request_id

    def _record_refusal(self, session: Session, ticket: Ticket, endpoint: str, error: LavaError) -> None:
        fast.run(
            session,
            _INSERT_REFUSED,
            {
                "id": ticket.request_id,
                "wallet_id": ticket.wallet_id,
                "owner": ticket.wallet_id,
                "spend_key_id": ticket.spend_key_id,
                "service": ticket.service.id,
                "model": ticket.model,
                "endpoint": endpoint,
                "ran": False,
                "error": error.message[:500],
                "error_code": error.code,
                "now": utc_now(),
            },
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
    """The usage the provider reported; None when a per-token service reported none usable."""
    if service.shape not in ("openai", "anthropic"):
        return shapes.Usage(0, 0)
    usage = shapes.openai_usage(result) if service.shape == "openai" else shapes.anthropic_usage(result)
    if usage is None and service.pricing != "per_token":
        return shapes.Usage(0, 0)  # a free or per-call service costs the same either way
    return usage


async def _wait_for(request: asyncio.Future[Any], timeout_s: float) -> None:
    """Wait up to `timeout_s` for `request` without ever cancelling it, even when a
    cancellation of the caller that was already on its way is delivered meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not request.done() and (remaining_s := deadline - loop.time()) > 0:
        try:
            await asyncio.wait({request}, timeout=remaining_s)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the same cancel delivered again; the caller re-raises the first


def _believable(usage: shapes.Usage, bound: shapes.Usage) -> bool:
    """Usage within orders of magnitude of the bound (beyond it, it is capped; far beyond,
    it is not a report to store or believe). A real prompt is at least one token."""
    if usage.all_input_tokens > ABSURD_FACTOR * max(bound.input_tokens, 1):
        return False
    if usage.output_tokens > ABSURD_FACTOR * max(bound.output_tokens, 1):
        return False
    return usage.all_input_tokens > 0 or bound.input_tokens == 0
