"""`python -m lava_mcp` → the CLI."""

from lava_mcp.cli import main

main()
