"""The bench report (bench/report.py, `make bench`) stays runnable: its sections, in their quick form, write a
well-formed bench/results-style JSON and Markdown pair. make test runs the sections measured in this process;
make fault also the ones that start dashboards, browsers and scripts (start, refresh, memory, watch: minutes), and
playground (two moons runs and their snapshots: 15 s).
No figure is judged here (speed belongs to the bench);
what is checked is the report's shape, and that its two statistics are the ones its own per-round values give.
"""

import json
import math
import os
import re
import statistics
import subprocess
import sys

import pytest
from conftest import REPO

IN_PROCESS = {"engine", "precision", "fast", "compile", "visdom", "store"}
SECTIONS = IN_PROCESS | {"watch", "memory", "start", "refresh", "playground"}
ENGINE_MODES = {"manual", "autograd", "custom_function", "nn", "optim (adam)", "parallel_block + adam"}


def strict(text):
    """json.loads that refuses NaN and Infinity, which strict JSON does not have."""
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} in the JSON")))


@pytest.mark.parametrize(
    "sections", [pytest.param(IN_PROCESS, id="in-process"), pytest.param(SECTIONS, id="every", marks=pytest.mark.full)]
)
def test_the_quick_report_is_well_formed(tmp_path, sections):
    env = {**os.environ, "BENCH_MEMORY_S": "4", "LIVEPROP_STORE": str(tmp_path / "unused.db")}
    cmd = [sys.executable, "bench/report.py", "--device", "cpu", "--quick", "--rounds", "2", "--out", str(tmp_path)]
    cmd += ["--sections", ",".join(sorted(sections))]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (json_path,) = tmp_path.glob("*.json")
    assert re.fullmatch(r"cpu-\d+core(-[a-z]+)*", json_path.stem)  # a partial report names its sections
    report = strict(json_path.read_text())
    md = json_path.with_suffix(".md").read_text()
    rows = report["rows"]
    assert {r["section"] for r in rows} == sections
    assert {r["name"] for r in rows if r["group"] == "engine vs bare"} == ENGINE_MODES

    for r in rows:
        assert f"| {r['group']} | {r['name']} |" in md
        assert r["status"] in ("measured", "not measured", "skipped"), r  # "failed" is a broken bench
        if r["status"] != "measured":
            assert r["note"], r  # says why
            continue
        values, anchors, ratios = r["values"], r["anchor_values"], r["ratios"]
        assert len(values) == r["rounds"] and all(math.isfinite(v) for v in values + anchors)
        if r["kind"] == "pair":  # one anchor per round
            assert r["rounds"] == 2 and len(anchors) == 2
            expected = [v / a for v, a in zip(values, anchors)]
            assert r["ratio_of_medians"] == statistics.median(values) / statistics.median(anchors)
        else:  # one fixed anchor (a target)
            assert r["kind"] == "single" and len(anchors) == 1
            expected = [v / anchors[0] for v in values]
            assert r["ratio_of_medians"] == statistics.median(values) / anchors[0]
        assert ratios == expected
        assert r["median_ratio"] == statistics.median(expected)
        assert r["verdict"] in (("met", "floor", "missed") if r["target"] else ("n/a",))
