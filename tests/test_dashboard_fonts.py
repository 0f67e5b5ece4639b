"""The CJK font of the code views (scripts/cjk_font.py installs it, dashboard/fonts.py puts it on the page):
the slices chosen hold every character of the lecture's Chinese comments, and the page names the font
behind Streamlit's code font only when it is installed. Nothing here reaches the network."""

import importlib.util
from pathlib import Path

import pytest

from dashboard import fonts
from dashboard.lecture_cells import CELLS

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("cjk_font", ROOT / "scripts" / "cjk_font.py")
cjk_font = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cjk_font)

FONTSOURCE_CSS = """
/* noto-sans-sc-[118]-400-normal */
@font-face {
  font-family: 'Noto Sans SC';
  src: url(./files/noto-sans-sc-118-400-normal.woff2) format('woff2'), url(./files/x.woff) format('woff');
  unicode-range: U+4e00-4e09,U+68af;
}
/* noto-sans-sc-[119]-400-normal */
@font-face {
  font-family: 'Noto Sans SC';
  src: url(./files/noto-sans-sc-119-400-normal.woff2) format('woff2');
  unicode-range: U+5ea6;
}
/* noto-sans-sc-[5]-400-normal */
@font-face {
  font-family: 'Noto Sans SC';
  src: url(./files/noto-sans-sc-5-400-normal.woff2) format('woff2');
  unicode-range: U+ff08-ff09;
}
"""


def test_the_slices_that_hold_the_characters_are_chosen_and_only_those():
    faces = cjk_font.faces(FONTSOURCE_CSS)
    assert [f[0] for f in faces] == [f"noto-sans-sc-{n}-400-normal.woff2" for n in (118, 119, 5)]
    assert faces[0][1] == [(0x4E00, 0x4E09), (0x68AF, 0x68AF)]
    chosen = cjk_font.choose(faces, cjk_font.needed("x = 1  # 梯度（"))
    assert [f[0] for f in chosen] == [f"noto-sans-sc-{n}-400-normal.woff2" for n in (118, 119, 5)]
    assert [f[0] for f in cjk_font.choose(faces, cjk_font.needed("# 梯"))] == ["noto-sans-sc-118-400-normal.woff2"]
    with pytest.raises(SystemExit, match="holds 损"):
        cjk_font.choose(faces, cjk_font.needed("损"))


def test_the_rules_point_at_streamlits_static_folder_with_each_slices_range():
    css = cjk_font.rules(cjk_font.faces(FONTSOURCE_CSS)[:1])
    assert (
        "font-family: 'Noto Sans SC'" in css and "src: url(app/static/fonts/noto-sans-sc-118-400-normal.woff2)" in css
    )
    assert "unicode-range: U+4e00-4e09,U+68af;" in css


def test_the_page_gets_the_font_only_when_it_is_installed(tmp_path):
    assert fonts.style(tmp_path) is None
    (tmp_path / "noto-sans-sc.css").write_text("@font-face { font-family: 'Noto Sans SC'; }\n")
    style = fonts.style(tmp_path)
    assert style.startswith("<style>") and "@font-face" in style
    assert '"Source Code Pro", "Noto Sans SC", monospace' in style  # behind the code font: CJK only


@pytest.mark.skipif(not (fonts.FONT_DIR / "noto-sans-sc.css").is_file(), reason="no font installed (make setup)")
def test_the_installed_slices_hold_every_character_of_the_lectures_cells():
    css = (fonts.FONT_DIR / "noto-sans-sc.css").read_text()
    spans = [span for block in css.split("@font-face")[1:] for span in _ranges(block)]
    text = "".join(cell for _, cell in CELLS.values())
    missing = {c for c in cjk_font.needed(text) if not any(lo <= c <= hi for lo, hi in spans)}
    assert not missing, "".join(map(chr, sorted(missing)))
    for block in css.split("@font-face")[1:]:
        assert (fonts.FONT_DIR / block.split("app/static/fonts/")[1].split(")")[0]).is_file()


def _ranges(block: str):
    return cjk_font.faces("@font-face {" + block.replace("app/static/fonts/", "./files/").split("}")[0] + "}")[0][1]
