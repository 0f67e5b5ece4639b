"""The shape of the code, checked: the store is the one seam, the engine never reaches up.

Each check reads the source with ast (nothing is imported), so a new file is covered the day it
is added.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 350

# What the dashboard may import from the engine: the package's public API (engine/__init__.py,
# engine/runs.py behind it), the store (the one seam), the config (the knobs and their choices),
# the shared min-max decimation, the exporter, the graph builder, the sinks' status lines, the
# local Visdom server it starts, and the lecture's own source that the About page shows.
DASHBOARD_MAY_IMPORT = {
    "engine",
    "engine.store",
    "engine.config",
    "engine.decimate",
    "engine.export",
    "engine.graph",
    "engine.sinks",
    "engine.visdom_server",
    "engine.modes",
    "engine.functions",
    "engine.models",
    "engine.gradcheck",  # the gradient check's tolerances and verdict, pure numpy: the page says what the engine judges
}  # (their source, shown)


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports(path: Path, source: str | None = None) -> set[str]:
    """Every module name a file imports, relative imports resolved against its package."""
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from engine import store`
    return out


def engine_modules(names: set[str]) -> set[str]:
    """The engine modules among imported names (a name from `from engine import X` that is not a
    module, such as engine.launch, counts as the package itself)."""
    known = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in sources("engine")}
    found = {n if n in known else n.rsplit(".", 1)[0] for n in names if n.split(".")[0] == "engine"}
    return {"engine.modes" if n.startswith("engine.modes.") else n for n in found}  # one file per mode


@pytest.mark.parametrize("path", sources("dashboard"), ids=lambda p: str(p.relative_to(ROOT)))
def test_dashboard_reads_the_store_only_through_the_engine(path):
    names = imports(path)
    assert "sqlite3" not in names, f"{path.name} imports sqlite3: read through engine.store.Store"
    outside = engine_modules(names) - DASHBOARD_MAY_IMPORT
    assert not outside, f"{path.name} imports engine internals {sorted(outside)}: use the public API or the store"


@pytest.mark.parametrize("path", sources("engine"), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_never_imports_streamlit_or_the_dashboard(path):
    assert not {n.split(".")[0] for n in imports(path)} & {"streamlit", "dashboard"}


def test_only_the_store_speaks_sql():
    speakers = [str(p.relative_to(ROOT)) for p in sources("engine") + sources("dashboard") if "sqlite3" in imports(p)]
    assert speakers == ["engine/store.py"]


@pytest.mark.parametrize("path", sources("engine"), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_modules_stay_small_or_say_why(path):
    lines = len(path.read_text().splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert lines <= MAX_LINES or f"over {MAX_LINES} lines" in doc, (
        f"{path.name} has {lines} lines: split it by job, or say in its docstring why it is over {MAX_LINES} lines"
    )


def test_the_checks_see_a_violation():
    """The import reader resolves what a violation would look like (so the checks above can fail)."""
    names = imports(
        ROOT / "dashboard" / "probe.py", "import sqlite3\nfrom engine.runs import _reap\nfrom .feed import RunFeed\n"
    )
    assert "sqlite3" in names and "dashboard.feed" in names
    assert engine_modules(names) - DASHBOARD_MAY_IMPORT == {"engine.runs"}
