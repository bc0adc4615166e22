"""`lava-mcp stdio` as a thin client of a lava-mcp server (LAVA_SERVER_URL)."""

from __future__ import annotations

from lava_mcp.config import Settings


async def run_thin_client(settings: Settings) -> None:
    raise NotImplementedError
