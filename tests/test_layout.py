"""The shape of the code, checked: the engine's subpackages stand in floors and every import runs down,
liveprop/ stands on the top floor, the store is the one seam, the engine never reaches up, and no module grows
past MAX_LINES.

Each check reads the source with ast (nothing is imported), so a new file is covered the day it
is added.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400

# The engine's floors, bottom up. A module may import its own subpackage and any floor below its
# own, never a neighbour on the same floor, never one above.
FLOORS = {
    "engine.errors": -1,  # engine/errors.py: the kinds of failure, which every floor raises
    "engine.config": 0,
    "engine.modes": 0,
    "engine.build": 1,
    "engine.store": 1,
    "engine.loop": 1,
    "engine.sinks": 2,
    "engine.tools": 2,
    "engine.runs": 3,
    "engine": 4,  # engine/__init__.py (the public API) and engine/__main__.py (the CLI)
    "liveprop": 5,  # liveprop/: watch() for a user's own loop; it may import the public API and the floors below runs
}

# What the dashboard may import from the engine: the public API (engine/__init__.py), its errors, the config
# (the knobs, their choices and reasons), the store (the one seam: reads, decimation, the metrics
# export), the graph builder, the sinks' status lines, log-axis labels and the local Visdom server it starts, and the
# lecture's code that the Code tab shows (the modes, their functions, the models, the gradient check).
DASHBOARD_MAY_IMPORT = {
    "engine",
    "engine.errors",
    "engine.config",
    "engine.store",
    "engine.tools",
    "engine.sinks",
    "engine.modes",
    "engine.build.models",
}


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


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
    known = {module_of(p) for p in sources("engine")}
    return {n if n in known else n.rsplit(".", 1)[0] for n in names if n.split(".")[0] == "engine"}


def subpackage(module: str) -> str:
    """engine.loop.trainer -> engine.loop; engine.__main__ and engine -> engine; liveprop.run -> liveprop."""
    parts = module.split(".")
    if parts[0] == "liveprop":
        return "liveprop"
    return ".".join(parts[:2]) if len(parts) > 1 and ".".join(parts[:2]) in FLOORS else "engine"


def floor_breaks(module: str, names: set[str]) -> set[str]:
    """The engine modules `module` imports that stand on its own floor (another subpackage) or above."""
    own = subpackage(module)
    return {
        n
        for n in engine_modules(names)
        if subpackage(n) != own and FLOORS[subpackage(n)] >= FLOORS[own] and n != "engine"
    } | ({"engine"} if "engine" in engine_modules(names) and FLOORS[own] < FLOORS["engine"] else set())


def liveprop_breaks(names: set[str]) -> set[str]:
    """The engine modules liveprop may not import: runs and the CLI (it goes through the public API instead)."""
    return {n for n in engine_modules(names) if n != "engine" and FLOORS[subpackage(n)] >= FLOORS["engine.runs"]}


@pytest.mark.parametrize("path", sources("engine"), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_engine_import_runs_down_a_floor(path):
    broken = floor_breaks(module_of(path), imports(path))
    assert not broken, f"{path.relative_to(ROOT)} imports {sorted(broken)}: on its floor or above (FLOORS)"


def test_every_module_stands_on_a_floor():
    homeless = {module_of(p) for p in sources("engine")} - {
        m for m in (module_of(p) for p in sources("engine")) if subpackage(m) in FLOORS
    }
    flat = [m for m in (module_of(p) for p in sources("engine")) if m.count(".") == 1 and subpackage(m) == "engine"]
    assert not homeless and sorted(flat) == ["engine.__main__"], f"modules outside a subpackage: {flat}"
    assert subpackage("engine.errors") == "engine.errors"  # a floor of its own, below every other


@pytest.mark.parametrize("path", sources("liveprop"), ids=lambda p: str(p.relative_to(ROOT)))
def test_liveprop_imports_the_public_api_and_the_floors_below_runs(path):
    names = imports(path)
    assert not liveprop_breaks(names), f"{path.name} imports {sorted(liveprop_breaks(names))}: use engine's public API"
    assert not {n.split(".")[0] for n in names} & {"streamlit", "plotly", "dashboard", "sqlite3"}, path.name


@pytest.mark.parametrize("path", sources("dashboard"), ids=lambda p: str(p.relative_to(ROOT)))
def test_dashboard_reads_the_store_only_through_the_engine(path):
    names = imports(path)
    assert "sqlite3" not in names, f"{path.name} imports sqlite3: read through engine.store.db.Store"
    outside = {
        m for m in engine_modules(names) if not (m in DASHBOARD_MAY_IMPORT or subpackage(m) in DASHBOARD_MAY_IMPORT)
    }
    assert not outside, f"{path.name} imports engine internals {sorted(outside)}: use the public API or the store"


@pytest.mark.parametrize("path", sources("engine"), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_never_imports_streamlit_the_dashboard_or_liveprop(path):
    assert not {n.split(".")[0] for n in imports(path)} & {"streamlit", "dashboard", "liveprop"}


def test_only_the_store_speaks_sql():
    speakers = [str(p.relative_to(ROOT)) for p in sources("engine") + sources("dashboard") if "sqlite3" in imports(p)]
    assert speakers and all(s.startswith("engine/store/") for s in speakers), speakers


@pytest.mark.parametrize(
    "path", sources("engine") + sources("dashboard") + sources("liveprop"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by job"


def test_the_checks_see_a_violation():
    """The import reader and the floors see what a violation would look like (so the checks above can fail)."""
    names = imports(
        ROOT / "dashboard" / "probe.py",
        "import sqlite3\nfrom engine.runs.api import _reap\nfrom .feed import RunFeed\n",
    )
    assert "sqlite3" in names and "dashboard.feed" in names
    assert {m for m in engine_modules(names) if subpackage(m) not in DASHBOARD_MAY_IMPORT} == {"engine.runs.api"}
    # loop importing the store (a neighbour), and build importing runs (above): both refused
    up = imports(ROOT / "engine" / "loop" / "probe.py", "from engine.store.db import Store\nfrom ..runs import api\n")
    assert floor_breaks("engine.loop.probe", up) >= {"engine.store.db", "engine.runs.api"}
    down = imports(ROOT / "engine" / "runs" / "probe.py", "from engine.loop import trainer\nfrom .worker import run\n")
    assert floor_breaks("engine.runs.probe", down) == set()
    assert floor_breaks("engine.modes.probe", {"engine"}) == {"engine"}  # the public API is the top floor
    # liveprop: the public API and the loop are fine, runs' internals are not; the engine never imports liveprop
    probe = "import engine\nfrom engine.loop import telemetry\nfrom engine.runs.api import _reap\n"
    above = imports(ROOT / "liveprop" / "probe.py", probe)
    assert floor_breaks("liveprop.probe", above) == set() and liveprop_breaks(above) == {"engine.runs.api"}
    reaching_up = imports(ROOT / "engine" / "probe.py", "from liveprop import watch\n")
    assert "liveprop" in {n.split(".")[0] for n in reaching_up}
