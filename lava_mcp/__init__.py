"""lava-mcp."""

__version__ = "0.1.0"

from lava_mcp.client import AsyncLava, Lava, LavaAPIError

__all__ = ["AsyncLava", "Lava", "LavaAPIError", "__version__"]
