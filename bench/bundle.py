"""The MCP Bundle's size and first start, as the README reports them (issue 8 §1).

    uv run python bench/bundle.py            # uv's cache as it is (a machine that ran lava-mcp)
    uv run python bench/bundle.py --cold     # an empty uv cache: every dependency downloaded

Packs the bundle with the pinned `mcpb` (npx), unpacks it into a clean folder, and times the
manifest's own server command from its start until the MCP SDK's stdio client has listed
the tools. Prints the bundle's size, its unpacked size, and the start time of each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

REPOSITORY = Path(__file__).resolve().parents[1]
MCPB = "@anthropic-ai/mcpb@2.1.2"  # the version .ci/run and the tests pin


def substitute(value: str, variables: dict[str, str]) -> str:
    """`${NAME}` replaced as the host does; an unset user_config field becomes empty."""
    return re.sub(r"\$\{([^}]+)\}", lambda match: variables.get(match.group(1), ""), value)


def pack(folder: Path) -> Path:
    npx = shutil.which("npx")
    if npx is None:
        raise SystemExit("npx (Node.js) is needed to pack the bundle")
    bundle = folder / "lava-mcp.mcpb"
    subprocess.run([npx, "-y", MCPB, "pack", str(REPOSITORY), str(bundle)], check=True, capture_output=True)
    return bundle


async def first_start_s(unpacked: Path, home: Path, uv_cache: Path | None) -> float:
    manifest: dict[str, Any] = json.loads((unpacked / "manifest.json").read_text())
    config = manifest["server"]["mcp_config"]
    variables = {"__dirname": str(unpacked), "user_config.database_url": f"sqlite:///{home / 'lava.db'}"}
    # The host's environment (PATH, proxies, CA certificates, uv's cache), less lava-mcp's own
    # variables and any virtualenv, then the manifest's variables.
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("LAVA_") and name not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    environment.update({name: substitute(value, variables) for name, value in config["env"].items()})
    if uv_cache is not None:
        environment["UV_CACHE_DIR"] = str(uv_cache)
    parameters = StdioServerParameters(
        command=config["command"],
        args=[substitute(argument, variables) for argument in config["args"]],
        env=environment,
        cwd=str(unpacked),
    )
    started = time.perf_counter()
    async with Client(parameters) as client:
        tools = await client.list_tools()
        elapsed_s = time.perf_counter() - started
    assert any(tool.name == "get_balance" for tool in tools.tools)
    return elapsed_s


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="start with an empty uv cache")
    parser.add_argument("--runs", type=int, default=2, help="starts to time (the first installs)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        bundle = pack(folder)
        unpacked = folder / "unpacked"
        with zipfile.ZipFile(bundle) as archive:
            archive.extractall(unpacked)
            unpacked_bytes = sum(info.file_size for info in archive.infolist())
        print(f"bundle: {bundle.stat().st_size / 1e6:.2f} MB ({unpacked_bytes / 1e6:.2f} MB unpacked)")
        uv_cache = folder / "uv-cache" if options.cold else None
        for run in range(1, options.runs + 1):
            home = folder / f"home-{run}"
            home.mkdir()
            elapsed_s = await first_start_s(unpacked, home, uv_cache)
            label = "first start (installs the environment)" if run == 1 else "next start"
            print(f"{label}: {elapsed_s:.1f} s{' (empty uv cache)' if options.cold and run == 1 else ''}")


if __name__ == "__main__":
    asyncio.run(main())
