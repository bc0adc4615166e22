"""The snippet runner's reading of Markdown (`tests/docs/markdown.py`): which blocks it finds,
the commands it takes from a shell block, and the output lines it matches."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.markdown import blocks, output_pattern, shell_commands

DOCUMENT = """# A page

<!-- snippet: skip reason="installs into Claude Desktop" -->
```bash
open -a Claude
```

Text.

```console
$ lava-mcp keys create --name ci \\
    --rpm 60
spend_key_id  sk_id_…
$ lava-mcp keys list
```

- a list item with a block:

  ```python
  print("indented")
  ```

```bash
# a comment
lava-mcp keys show sk_id_…   # trailing comment

lava-mcp keys create --name ci \\
    --spend-limit 50.00
```
"""


def test_blocks_markers_and_commands(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(DOCUMENT)
    found = blocks(page)
    assert [(block.language, block.line, block.marker) for block in found] == [
        ("bash", 4, "skip"),
        ("console", 10, None),
        ("python", 19, None),
        ("bash", 23, None),
    ]
    assert found[0].arguments == {"reason": "installs into Claude Desktop"}
    assert found[2].text == 'print("indented")\n'  # the list item's indent is not Python's
    assert shell_commands(found[1]) == ["lava-mcp keys create --name ci --rpm 60", "lava-mcp keys list"]
    assert shell_commands(found[3]) == [
        "lava-mcp keys show sk_id_…   # trailing comment",
        "lava-mcp keys create --name ci --spend-limit 50.00",
    ]


def test_an_unclosed_block_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```bash\necho never closed\n")
    with pytest.raises(ValueError, match="never closed"):
        blocks(page)


def test_output_lines_match_with_ellipses_and_wrapping() -> None:
    pattern = output_pattern("Created wallet wal_…. Its key is shown once; keep it:")
    assert pattern.search("INFO x\nCreated wallet wal_01a2b3. Its key is shown once;\n keep it:\n")
    assert not pattern.search("Created wallet . Its key is shown twice; keep it:")
    assert output_pattern("    LAVA_WALLET_KEY=lava_wk_…").search("    LAVA_WALLET_KEY=lava_wk_AbC123")
