"""The gateway's hot-path steps one by one, before and after, in CPU microseconds per call:
the figures behind the README's list of what changed (a whole-server run on a shared
machine is too noisy to show a step of tens of microseconds; these are steady).

    uv run python bench/hot_path.py [--calls 5000]

- the spend key: an ORM read by secret hash (`spend_keys.authenticate`) against the cache
  (`spend_keys.cached`);
- a gateway request through the whole app (a body, no key: the 401 path, which touches no
  database), through the fast dispatch and through Starlette's middleware and routing;
- the body: `http.parse_json` (the standard library) against `gateway.parse_body` (orjson);
- the answer: rendering the parsed dict again (Starlette's `JSONResponse`) against sending
  the provider's bytes (`OrjsonResponse(answer.raw)`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello"}]}
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the fake provider."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9},
}


def per_call_us(function: Callable[[], Any], calls: int) -> float:
    for _ in range(min(300, calls)):
        function()
    start = time.process_time()
    for _ in range(calls):
        function()
    return (time.process_time() - start) / calls * 1e6


async def per_call_async_us(function: Callable[[], Awaitable[Any]], calls: int) -> float:
    for _ in range(min(300, calls)):
        await function()
    start = time.process_time()
    for _ in range(calls):
        await function()
    return (time.process_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000)
    calls = parser.parse_args().calls

    from starlette.responses import JSONResponse

    from lava_mcp.config import Settings
    from lava_mcp.core import spend_keys, wallet
    from lava_mcp.providers import upstream
    from lava_mcp.runtime import Runtime
    from lava_mcp.transports import gateway
    from lava_mcp.transports.app import build_app
    from lava_mcp.transports.http import parse_json

    directory = Path(tempfile.mkdtemp(prefix="lava-bench-"))
    runtime = Runtime.build(Settings(database_url=f"sqlite:///{directory / 'lava.db'}"))
    runtime.db.upgrade()
    owner = wallet.create_wallet(runtime.db, name="bench")
    secret = spend_keys.create(
        runtime.db, owner.wallet_id, {"spend_limit": {"amount": "10.00", "cycle": "monthly"}}
    ).secret
    spend_keys.authenticate(runtime.db, secret, remember=True)
    rows: list[tuple[str, float, float]] = []
    rows.append(
        (
            "spend key: ORM read → cache",
            per_call_us(lambda: spend_keys.authenticate(runtime.db, secret), calls),
            per_call_us(lambda: spend_keys.cached(runtime.db, secret), calls),
        )
    )

    app = build_app(runtime, migrate=False)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", b"2")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }  # fmt: skip

    async def request() -> None:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(dict(scope), receive, send)
        assert sent[0]["status"] == 401, sent[0]

    async def dispatch_figures() -> tuple[float, float]:
        routes = dict(gateway.asgi_routes)
        gateway.asgi_routes.clear()  # the app's dispatch falls through to Starlette
        through_starlette = await per_call_async_us(request, calls)
        gateway.asgi_routes.update(routes)
        return through_starlette, await per_call_async_us(request, calls)

    try:
        import uvloop

        starlette_us, fast_us = uvloop.run(dispatch_figures())
    except ImportError:
        starlette_us, fast_us = asyncio.run(dispatch_figures())
    rows.append(("a gateway request (401 path): Starlette → fast dispatch", starlette_us, fast_us))

    raw_body = json.dumps(BODY).encode()
    rows.append(
        (
            "the body: json → orjson",
            per_call_us(lambda: parse_json(raw_body, exact_numbers=False), calls),
            per_call_us(lambda: gateway.parse_body(raw_body), calls),
        )
    )
    raw_answer = json.dumps(ANSWER).encode()
    answer = upstream.loads(raw_answer)
    rows.append(
        (
            "the answer: parse + render again → parse + forward",
            per_call_us(lambda: JSONResponse(json.loads(raw_answer)), calls),
            per_call_us(lambda: gateway.OrjsonResponse(upstream.loads(raw_answer).raw), calls),
        )
    )
    assert isinstance(answer, upstream.Answer)
    print(f"CPU µs per call, {calls} calls each (time.process_time)")
    for name, before, after in rows:
        print(f"  {name:<58} {before:8.1f} → {after:8.1f}")
    runtime.db.dispose()


if __name__ == "__main__":
    main()
