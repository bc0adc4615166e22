"""The MCP Bundle as Claude Desktop gets it (issue 8 §1): `mcpb pack` from the repository
root makes a small bundle of only what the server runs; unpacked into a clean folder, the
server command of its manifest (with `${__dirname}` and `${user_config.…}` substituted as
the host does) starts, lists the tools and answers `get_balance` — without a wallet key,
as a first run does.

Packing takes a few seconds once npm has the packer cached; the first start installs the
locked dependencies from uv's cache (from PyPI on a machine that has never seen them).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from lava_mcp.config import Settings
from tests.fake_provider import FakeProvider
from tests.mcp.conftest import ok
from tests.mcp.node_tools import NPX_TIMEOUT_S, child_environment, mcpb_command
from tests.mcp.test_transports import child_environment as server_environment

REPOSITORY = Path(__file__).resolve().parents[2]
# What a bundle may hold: the package, its entry point, the project file, lock and README.
ALLOWED_TOP_LEVEL = {"manifest.json", "pyproject.toml", "uv.lock", "README.md", "server", "lava_mcp"}
MAX_BUNDLE_BYTES = 1_000_000  # 130 MB before .mcpbignore; about 0.4 MB with it


def substitute(value: str, variables: dict[str, str]) -> str:
    """`${NAME}` replaced as the host does; an unset user_config field becomes empty."""
    return re.sub(r"\$\{([^}]+)\}", lambda match: variables.get(match.group(1), ""), value)


def test_manifest_is_valid() -> None:
    checked = subprocess.run(
        mcpb_command("validate", str(REPOSITORY / "manifest.json")),
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=NPX_TIMEOUT_S,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_the_packed_bundle_runs_from_a_clean_folder(
    settings: Settings, fake: FakeProvider, tmp_path: Path
) -> None:
    bundle = tmp_path / "lava.mcpb"
    packed = subprocess.run(
        mcpb_command("pack", str(REPOSITORY), str(bundle)),
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=NPX_TIMEOUT_S,
    )
    assert packed.returncode == 0, packed.stdout + packed.stderr
    assert bundle.stat().st_size < MAX_BUNDLE_BYTES, bundle.stat().st_size
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        assert {name.split("/", 1)[0] for name in names} == ALLOWED_TOP_LEVEL, names
        assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
        unpacked = tmp_path / "unpacked"  # a clean folder: no .venv, no .env, nothing of ours
        archive.extractall(unpacked)

    manifest: dict[str, Any] = json.loads((unpacked / "manifest.json").read_text())
    server = manifest["server"]
    assert server["type"] == "uv"
    assert (unpacked / server["entry_point"]).is_file()
    variables = {"__dirname": str(unpacked), "HOME": str(tmp_path)}
    # The user leaves every optional field empty but the ledger's place (a test database).
    variables["user_config.database_url"] = settings.database_url
    config = server["mcp_config"]
    command = config["command"]
    assert command == "uv" and shutil.which(command), "the manifest runs uv, which must be on PATH"
    environment = {
        **child_environment(),
        # What the test catalog's data and model services need (not part of the bundle).
        **{
            name: value
            for name, value in server_environment(settings, "", fake).items()
            if name not in ("LAVA_WALLET_KEY", "LAVA_DATABASE_URL")
        },
        **{name: substitute(value, variables) for name, value in config["env"].items()},
    }
    parameters = StdioServerParameters(
        command=command,
        args=[substitute(argument, variables) for argument in config["args"]],
        env=environment,
        cwd=tmp_path,
    )
    async with Client(parameters) as chat:
        tools = {tool.name for tool in (await chat.list_tools()).tools}
        assert {tool["name"] for tool in manifest["tools"]} == tools
        balance = ok(await chat.call_tool("get_balance", {}))
        assert balance["balance"] == "0.00" and balance["sandbox"] is True
        assert "wallet key" in balance["notice"]  # a first run without a key: told where it is
    assert (unpacked / ".venv").is_dir()  # uv made the bundle's own environment


def test_server_json_agrees_with_the_package_and_the_bundle() -> None:
    """The MCP registry entry (server.json, the registry's 2025-12-11 format): the same
    version as the package and the bundle, the registry's limits, a remote streamable-http
    URL template ending in /mcp, and the PyPI package run as `lava-mcp stdio` with only
    variables the server reads."""
    import tomllib

    entry = json.loads((REPOSITORY / "server.json").read_text())
    manifest = json.loads((REPOSITORY / "manifest.json").read_text())
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    assert entry["$schema"] == "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
    assert re.fullmatch(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+", entry["name"])
    assert 1 <= len(entry["description"]) <= 100 and len(entry["title"]) <= 100
    assert entry["version"] == project["version"] == manifest["version"]

    [remote] = entry["remotes"]
    assert remote["type"] == "streamable-http" and remote["url"].endswith("/mcp")
    assert set(re.findall(r"\{(\w+)\}", remote["url"])) == set(remote["variables"])

    [package] = entry["packages"]
    assert (package["registryType"], package["identifier"]) == ("pypi", project["name"])
    assert package["version"] == project["version"] and package["transport"] == {"type": "stdio"}
    assert package["packageArguments"] == [{"type": "positional", "value": "stdio"}]
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert {variable["name"] for variable in package["environmentVariables"]} <= aliases
    assert all(
        variable["isSecret"]
        for variable in package["environmentVariables"]
        if variable["name"].endswith("_KEY")
    )
