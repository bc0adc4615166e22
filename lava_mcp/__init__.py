"""lava-mcp."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["AsyncLava", "Lava", "LavaAPIError", "__version__"]

if TYPE_CHECKING:
    from lava_mcp.client import AsyncLava, Lava, LavaAPIError

_CLIENT_NAMES = frozenset({"AsyncLava", "Lava", "LavaAPIError"})


def __getattr__(name: str) -> Any:
    # The client (and what it imports) loads on first use: `lava-mcp serve` and `stdio`
    # import this package without ever using it.
    if name in _CLIENT_NAMES:
        from lava_mcp import client

        return getattr(client, name)
    raise AttributeError(f"module 'lava_mcp' has no attribute {name!r}")
