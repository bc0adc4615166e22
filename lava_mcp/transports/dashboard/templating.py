"""The dashboard's Jinja2 templates (in `templates/`), autoescaped: every value a page
shows is escaped unless it is markup the server drew itself (the chart's SVG)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES_DIR = Path(__file__).with_name("templates")

templates = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a missing value is a bug to see, not an empty cell
    trim_blocks=True,
    lstrip_blocks=True,
)
