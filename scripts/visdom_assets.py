"""Fetch the browser assets of Visdom's page from the npm registry, for offline use.

`python -m visdom.server` downloads these files from CDNs (unpkg, cdn.plot.ly, d3js.org,
cdnjs) at first start, and dies without internet. Every one of them is published on npm at
the version visdom 0.2.4 asks for (see visdom/server/build.py), so we fetch the packages
with `npm pack` and put the files where visdom's page expects them:
DEST_DIR/static/{js,css,fonts}/... . engine/sinks/visdom/server.py serves them from there.

    python scripts/visdom_assets.py [DEST_DIR]      # default: .cache/visdom in the repo root

Standard library only (plus the `npm` CLI). Idempotent: a marker file records a complete
fetch of exactly this list, and a second run does nothing.
"""

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEFAULT_DEST = Path(__file__).resolve().parents[1] / ".cache" / "visdom"
MARKER = "COMPLETE"

# (npm package@version, file inside the package, target under DEST/static/).
# Targets are the names visdom's build.py gives the CDN downloads.
FILES = [
    ("jquery@3.1.1", "dist/jquery.min.js", "js/jquery.min.js"),
    ("bootstrap@3.3.7", "dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
    ("react@16.2.0", "umd/react.production.min.js", "js/react-react.min.js"),
    ("react-dom@16.2.0", "umd/react-dom.production.min.js", "js/react-dom.min.js"),
    ("react-modal@3.1.10", "dist/react-modal.min.js", "js/react-modal.min.js"),
    # cdn.plot.ly/plotly-2.11.1.min.js is the same build as plotly.js-dist-min 2.11.1
    ("plotly.js-dist-min@2.11.1", "plotly.min.js", "js/plotly-plotly.min.js"),
    ("sjcl@1.0.7", "sjcl.js", "js/sjcl.js"),
    ("layout-bin-packer@1.4.0", "dist/layout-bin-packer.js.map", "js/layout-bin-packer.js.map"),
    ("layout-bin-packer@1.4.0", "dist/layout-bin-packer.js", "js/layout_bin_packer.js"),
    # d3js.org/d3.v3.min.js and d3-selection-multi.v1.js serve the last v3 / v1 releases
    ("d3@3.5.17", "d3.min.js", "js/d3.v3.min.js"),
    ("d3-selection-multi@1.0.1", "build/d3-selection-multi.js", "js/d3-selection-multi.v1.js"),
    ("save-svg-as-png@1.4.17", "lib/saveSvgAsPng.js", "js/saveSvgAsPng.js"),
    ("react-resizable@1.4.6", "css/styles.css", "css/react-resizable-styles.css"),
    ("react-grid-layout@0.16.3", "css/styles.css", "css/react-grid-layout-styles.css"),
    ("bootstrap@3.3.7", "dist/css/bootstrap.min.css", "css/bootstrap.min.css"),
    ("classnames@2.2.5", "index.js", "fonts/classnames"),
] + [
    # build.py names the svg font "...svg#glyphicons_halflingsregular"; the browser asks
    # for "...svg" (the "#..." is a URL fragment), so we use the real name.
    ("bootstrap@3.3.7", f"dist/fonts/glyphicons-halflings-regular.{ext}", f"fonts/glyphicons-halflings-regular.{ext}")
    for ext in ("eot", "woff2", "woff", "ttf", "svg")
]

# MathJax loads parts of itself on demand, so we keep its runtime tree (not its unpacked
# sources, tests, other configs or other fonts). build.py fetches a subset of these.
MATHJAX = "mathjax@2.7.5"
MATHJAX_KEEP = (
    "MathJax.js",
    "config/TeX-AMS-MML_HTMLorMML.js",
    "config/Safe.js",
    "extensions/",
    "jax/",
    "localization/en/",
    "fonts/HTML-CSS/TeX/woff/",
    "fonts/HTML-CSS/TeX/otf/",
)
MATHJAX_DEST = "js/mathjax/2.7.5/"


def fail(message):
    sys.exit(f"visdom_assets: error: {message}")


def manifest_id():
    """Changes whenever the list above changes, so an old cache is fetched again."""
    text = json.dumps([FILES, MATHJAX, MATHJAX_KEEP, MATHJAX_DEST])
    return hashlib.sha256(text.encode()).hexdigest()


def npm_pack(spec, workdir):
    """Download the package tarball with npm; return its path."""
    result = subprocess.run(["npm", "pack", "--loglevel=error", spec], cwd=workdir, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        errors = [line for line in result.stderr.splitlines() if not line.startswith("npm error code")]
        fail(f"cannot fetch {spec} from the npm registry: {(errors or ['no output'])[0]}")
    return Path(workdir) / lines[-1]


def members(tarball):
    """Yield (path inside the package, member) for each regular file of an npm tarball."""
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            if member.isfile():
                # npm tarballs have one top folder, usually "package/"
                yield member.name.split("/", 1)[1], tar.extractfile(member)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main(argv):
    dest = Path(argv[1]) if len(argv) > 1 else DEFAULT_DEST
    marker = dest / MARKER
    if marker.is_file() and marker.read_text() == manifest_id():
        print(f"Visdom assets already complete in {dest}")
        return 0
    if shutil.which("npm") is None:
        fail("npm not found; install Node.js/npm to fetch Visdom's browser assets")

    with tempfile.TemporaryDirectory() as workdir:
        static = Path(workdir) / "static"
        specs = sorted({spec for spec, _, _ in FILES} | {MATHJAX})
        for spec in specs:
            print(f"fetching {spec}", flush=True)
            wanted = {inner: target for s, inner, target in FILES if s == spec}
            for inner, file in members(npm_pack(spec, workdir)):
                if inner in wanted:
                    write(static / wanted.pop(inner), file.read())
                elif spec == MATHJAX and inner.startswith(MATHJAX_KEEP) and ".." not in inner:
                    write(static / MATHJAX_DEST / inner, file.read())
            if wanted:
                fail(f"{spec} has no file {', '.join(wanted)}")

        dest.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        shutil.rmtree(dest / "static", ignore_errors=True)
        shutil.move(str(static), dest / "static")
    (dest / ".gitignore").write_text("*\n")  # a cache: never committed
    marker.write_text(manifest_id())
    print(f"Visdom assets ready in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
