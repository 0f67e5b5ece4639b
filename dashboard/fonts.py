"""The font behind the code views' own, for the lecture's Chinese comments: the slices of Noto Sans SC
that scripts/cjk_font.py installs in dashboard/static/fonts/ (make setup), published by Streamlit's
static file serving (serve.py turns it on). Nothing is fetched at run time: without the files, the page
uses whatever fonts the machine has."""

from __future__ import annotations

from pathlib import Path

FONT_DIR = Path(__file__).parent / "static" / "fonts"
FAMILY = "Noto Sans SC"
# Streamlit's code font first: each Noto slice has a unicode-range, so it draws only the characters
# the code font lacks
CODE = f'[data-testid="stCode"] code {{ font-family: "Source Code Pro", "{FAMILY}", monospace; }}'


def style(folder: Path = FONT_DIR) -> str | None:
    """The <style> element for the page, or None when the font is not installed."""
    css = folder / "noto-sans-sc.css"
    return f"<style>\n{css.read_text(encoding='utf-8')}{CODE}\n</style>" if css.is_file() else None
