"""Install the font the dashboard's code views need for the lecture's Chinese comments, for offline use.

A machine without a CJK font draws those comments as boxes. Noto Sans SC (SIL Open Font License) is
published on npm as @fontsource/noto-sans-sc, cut into about a hundred woff2 slices, each with the
unicode-range it holds. This script fetches the package with `npm pack`, keeps only the slices (weight
400) that hold a character of the lecture's cells (dashboard/lecture_cells.py), and writes them with
their @font-face rules and the license to DEST_DIR (default dashboard/static/fonts, which Streamlit's
static file serving publishes at app/static/fonts/; dashboard/fonts.py reads the rules):

    python scripts/cjk_font.py [DEST_DIR]

Standard library only (plus the `npm` CLI). Idempotent: a marker file records the slices of a complete
install, and a second run with the same characters does nothing.
"""

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEST = ROOT / "dashboard" / "static" / "fonts"
CELLS = ROOT / "dashboard" / "lecture_cells.py"
PACKAGE = "@fontsource/noto-sans-sc@5.3.1"
FAMILY = "Noto Sans SC"
CSS = "noto-sans-sc.css"  # the name dashboard/fonts.py reads
MARKER = "COMPLETE"
URL = "app/static/fonts/"  # where Streamlit serves DEST_DIR, relative to the page
WIDE = 0x2E80  # CJK radicals and above: the characters a Latin code font lacks


def needed(text: str) -> set[int]:
    """The code points of text that a Latin code font lacks."""
    return {ord(c) for c in text if ord(c) >= WIDE}


def faces(css: str) -> list[tuple[str, list[tuple[int, int]], str]]:
    """(woff2 file, [(first, last) code point], unicode-range as written) for each @font-face of fontsource's css."""
    out = []
    for block in re.findall(r"@font-face\s*{(.*?)}", css, re.S):
        woff2 = re.search(r"url\(\./files/([^)]+\.woff2)\)", block)
        rng = re.search(r"unicode-range:\s*([^;]+);", block)
        if woff2 and rng:
            spans = []
            for part in rng.group(1).split(","):
                lo, _, hi = part.strip().removeprefix("U+").partition("-")
                spans.append((int(lo, 16), int(hi or lo, 16)))
            out.append((woff2.group(1), spans, rng.group(1).strip()))
    return out


def choose(all_faces, chars: set[int]):
    """The faces that hold at least one of chars; raises if a character is in none of them."""
    chosen = [f for f in all_faces if any(lo <= c <= hi for c in chars for lo, hi in f[1])]
    held = {c for c in chars for _, spans, _ in chosen for lo, hi in spans if lo <= c <= hi}
    if chars - held:
        raise SystemExit(f"no slice of {PACKAGE} holds {''.join(map(chr, sorted(chars - held)))}")
    return chosen


def rules(chosen) -> str:
    return "".join(
        f"@font-face {{ font-family: '{FAMILY}'; font-style: normal; font-weight: 400; font-display: swap; "
        f"src: url({URL}{file}) format('woff2'); unicode-range: {rng}; }}\n"
        for file, _, rng in chosen
    )


def main(dest: Path) -> int:
    chars = needed(CELLS.read_text(encoding="utf-8"))
    marker = dest / MARKER
    want = f"{PACKAGE} {''.join(map(chr, sorted(chars)))}\n"
    if marker.is_file() and marker.read_text(encoding="utf-8") == want:
        marker.touch()  # up to date: newer than the cells, for make
        return 0
    if shutil.which("npm") is None:
        print("cjk_font: npm is not installed; the lecture's Chinese comments need a CJK font", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", "--silent", PACKAGE], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        [tgz] = Path(tmp).glob("*.tgz")
        with tarfile.open(tgz) as tar:
            css = tar.extractfile("package/400.css").read().decode()
            chosen = choose(faces(css), chars)
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for name in ["LICENSE"] + [f"files/{file}" for file, _, _ in chosen]:
                (dest / Path(name).name).write_bytes(tar.extractfile(f"package/{name}").read())
    (dest / CSS).write_text(rules(chosen), encoding="utf-8")
    marker.write_text(want, encoding="utf-8")
    print(f"cjk_font: {len(chosen)} slices of {PACKAGE} for {len(chars)} characters in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DEST))
