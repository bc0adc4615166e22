"""The MCP Bundle's entry point: `lava-mcp stdio`, the server Claude Desktop runs.

Run by the host (`uv run server/main.py` in the bundle's folder, with the project's
dependencies from `pyproject.toml` and `uv.lock`) or by hand with any Python that has
them. The bundle's root, which holds the `lava_mcp` package, is put on the path first so
the script also runs from an unpacked bundle that was never installed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lava_mcp.cli import main  # noqa: E402  (after the path is set)

sys.argv = [sys.argv[0], "stdio", *sys.argv[1:]]
main()
