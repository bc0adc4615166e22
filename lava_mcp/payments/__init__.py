"""Payments adapters behind one interface (`base.Payments`), chosen by configuration, and
the lane their calls run in."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import anyio.to_thread

from lava_mcp.config import Settings
from lava_mcp.payments.base import Payments

# Worker threads that may wait on the processor at once. They are counted apart from the
# database's (anyio's default limiter), so a slow or hanging processor can fill this lane
# and never the one every balance read, metered call and webhook needs.
PROCESSOR_CAPACITY = 8
# A read that reconciles with the processor on the way (a balance read) waits this long at
# most: the reconciliation goes on in the lane, and the next read sees its result.
READ_WAIT_S = 0.5


class ProcessorLane:
    """Where calls to the card processor run: their own worker capacity, and a note of
    which reconciliations are under way so a second one for the same wallet is skipped."""

    def __init__(self, capacity: int = PROCESSOR_CAPACITY, *, read_wait_s: float = READ_WAIT_S) -> None:
        assert capacity > 0 and read_wait_s >= 0, (capacity, read_wait_s)
        self.limiter = anyio.CapacityLimiter(capacity)
        self.read_wait_s = read_wait_s
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, name: str) -> bool:
        """Start the job `name` unless it is already running; True when this caller runs it."""
        with self._lock:
            if name in self._running:
                return False
            self._running.add(name)
            return True

    def done(self, name: str) -> None:
        with self._lock:
            self._running.discard(name)

    async def run_once(self, name: str, work: Callable[[], object], *, wait_s: float) -> None:
        """Run `work` in the lane as the job `name` unless it is already running, waiting
        for it at most `wait_s` (it goes on in the lane after that).

        The job is released exactly once: by the worker when `work` ran, or here when the
        wait ended before a lane slot was free (`work` then never runs), so a read that gave
        up on a full lane never leaves its job claimed for the life of the process.
        """
        if not self.claim(name):
            return
        guard = threading.Lock()
        started = False
        abandoned = False

        def run() -> None:
            nonlocal started
            with guard:
                if abandoned:
                    return  # the caller gave up before a slot was free, and released the job
                started = True
            try:
                work()
            finally:
                self.done(name)

        try:
            with anyio.move_on_after(wait_s):
                await anyio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=self.limiter)
        finally:
            with guard:
                if not started:
                    abandoned = True
                    self.done(name)


def build_payments(settings: Settings) -> Payments:
    """Stripe when `payments_mode` is "stripe" (STRIPE_SECRET_KEY set), else the offline sandbox.

    Raises: ValueError when Stripe is asked for without a secret key.
    """
    if settings.payments_mode == "stripe":
        if not settings.stripe_secret_key:
            raise ValueError("LAVA_PAYMENTS=stripe needs STRIPE_SECRET_KEY")
        from lava_mcp.payments.stripe import StripePayments

        return StripePayments(
            settings.stripe_secret_key,
            webhook_secret=settings.stripe_webhook_secret,
            api_base=settings.stripe_api_base,
            timeout_s=settings.stripe_timeout_s,
        )
    from lava_mcp.payments.sandbox import SandboxPayments

    return SandboxPayments(base_url=settings.base_url)
