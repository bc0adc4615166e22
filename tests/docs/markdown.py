"""The fenced code blocks of the README and `docs/*.md`, and the marker comments that say
what to do with one that can't run here.

Every block declares its language. `python`, `bash`, `sh` and `console` blocks are examples
and run; `json` blocks must parse; `text` (output, layouts) and config languages
(`caddyfile`) are shown only. A block is preceded, at most, by one marker comment, which a
rendered page does not show:

- `<!-- snippet: skip reason="…" -->`: not run, for the reason given (installing into
  Claude Desktop, a deployment, the test suite itself). Kept to a minimum: every skip is
  listed when the test runs.
- `<!-- snippet: output of="lava-mcp serve" -->`: a `text` block that claims to be what
  that command printed; each of its lines must appear in the output (`…` stands for any
  characters but spaces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = frozenset({"python", "bash", "sh", "console"})
PARSE = frozenset({"json"})
SHOW = frozenset({"text", "caddyfile"})

FENCE = re.compile(r"^(?P<indent> *)```(?P<language>[\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<verb>[\w-]+)(?P<arguments>.*?)-->\s*$")
ARGUMENT = re.compile(r'(?P<name>[\w-]+)="(?P<value>[^"]*)"')


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str | None = None  # the verb: "skip", "output"
    arguments: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    """The README first, then `docs/` in name order: examples run in reading order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of one Markdown file, with its marker (if any)."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent = len(opening["indent"])
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            body.append(lines[end][indent:] if lines[end][:indent].strip() == "" else lines[end])
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{index + 1}: a code block is never closed")
        marker, arguments = _marker_before(lines, index)
        found.append(
            Block(
                path=path,
                line=index + 1,
                language=opening["language"],
                text="\n".join(body) + "\n",
                marker=marker,
                arguments=arguments,
            )
        )
        index = end + 1
    return found


def _marker_before(lines: list[str], fence_index: int) -> tuple[str | None, dict[str, str]]:
    before = fence_index - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    if before < 0:
        return None, {}
    match = MARKER.match(lines[before])
    if match is None:
        return None, {}
    arguments = {item["name"]: item["value"] for item in ARGUMENT.finditer(match["arguments"])}
    return match["verb"], arguments


def shell_commands(block: Block) -> list[str]:
    """The commands of a shell block, one per entry: continued lines (`\\`) joined, comment
    and blank lines dropped; in a `console` block only the `$ ` lines (the rest is output)."""
    commands: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        if pending:
            line = raw.strip()
        elif block.language != "console":
            line = raw
        elif raw.startswith("$ "):
            line = raw[2:]
        else:
            continue  # a console block's output
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].rstrip() + " "
            continue
        commands.append(pending + line)
        pending = ""
    if pending:
        commands.append(pending)
    return commands


def output_pattern(line: str) -> re.Pattern[str]:
    """A line of claimed output as a pattern: `…` matches any run of non-space characters,
    whitespace any whitespace (the terminal may have wrapped the line)."""
    parts = [re.escape(part) for part in line.strip().split("…")]
    pattern = r"\S*".join(parts)
    return re.compile(re.sub(r"(\\ )+|\s+", r"\\s+", pattern))
