"""End to end in a real browser: `python examples/digits_cnn.py`, a user's own loop watched by liveprop, steered
from the dashboard's Train page: its loss draws, Pause stops its steps, Set lr reaches its optimizer (the script
prints the rate it ended with: its OneCycle schedule's, scaled by new / old), and Stop ends it with exit 0.
The dashboard and Chromium are started as tests/test_dashboard_browser.py starts them (its `dashboard` fixture);
screenshots go to tests/artifacts/watch_*.png."""

import os
import re
import subprocess
import sys
import time

import pytest
from conftest import REPO, wait_for
from test_dashboard_browser import (  # noqa: F401 (dashboard: the fixture)
    ARTIFACTS,
    CHROMIUM,
    FIRST_PLOT_JS,
    TRACE_NAMES_JS,
    browser_page,
    dashboard,
    set_number,
    status_is,
)
from test_liveprop_examples import onecycle_rate

import liveprop
from engine import Store

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")
NEW_LR = 1e-4


def test_a_watched_script_draws_on_the_train_page_and_pause_set_lr_and_stop_reach_its_loop(dashboard):  # noqa: F811
    store = dashboard["store"]
    proc = subprocess.Popen(
        [sys.executable, REPO / "examples" / "digits_cnn.py", "--epochs", "400", "--name", "digits-browser"],
        cwd=REPO,
        env={**os.environ, "LIVEPROP_STORE": store, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with browser_page(failure="watch_failure.png") as page:  # Chromium starts while the script does
            run_id = wait_for(lambda: next(iter(r["id"] for r in liveprop.list_runs(store)), None), 60, what="run")
            page.goto(f"{dashboard['url']}/?run={run_id}")  # the link the script prints, on this dashboard's port
            main = page.get_by_test_id("stMainBlockContainer")
            page.wait_for_function(FIRST_PLOT_JS)
            first = page.evaluate(FIRST_PLOT_JS)
            page.wait_for_function(f"() => ({FIRST_PLOT_JS})() > {first}")  # the loss keeps drawing
            status_is(page, "running")
            page.get_by_text("digits-browser").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "watch_running.png"))

            main.get_by_role("button", name="Pause").click()
            status_is(page, "paused")
            at = liveprop.get_run(run_id, store)["step"]
            time.sleep(1.5)
            assert liveprop.get_run(run_id, store)["step"] == at and proc.poll() is None  # no step while paused
            set_number(page, "New learning rate", str(NEW_LR))
            main.get_by_role("button", name="Set lr").click()
            page.wait_for_function(f"() => ({TRACE_NAMES_JS})().includes('lr change')")
            main.get_by_text(re.compile(r"A script's run \(liveprop\.watch\): Edit a layer")).wait_for()
            assert main.get_by_role("button", name="Apply", exact=True).count() == 0  # not for a script
            assert main.get_by_role("button", name="Landscape", exact=True).count() == 0
            page.screenshot(path=str(ARTIFACTS / "watch_paused_lr_set.png"))

            main.get_by_role("button", name="Resume").click()
            status_is(page, "running")
            wait_for(lambda: liveprop.get_run(run_id, store)["step"] > at + 20, 60, what="steps after Resume")
            main.get_by_role("button", name="Stop", exact=True).click()
            status_is(page, "stopped")
            out, err = proc.communicate(timeout=60)
            time.sleep(1.0)  # let the charts settle
            page.screenshot(path=str(ARTIFACTS / "watch_stopped.png"))
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    row = liveprop.get_run(run_id, store)
    assert row["status"] == "stopped" and row["step"] > at + 20
    s = Store(store)
    [change] = [e["data"] for e in s.events(run_id, kind="lr_change")]
    kinds = [e["kind"] for e in s.events(run_id) if e["kind"] in ("pause", "lr_change", "resume", "stop")]
    s.close()
    assert change["new"] == NEW_LR and kinds == ["pause", "lr_change", "resume", "stop"]
    final = float(re.search(r"final lr (\S+)", out).group(1))  # the rate the script's optimizer ended with
    assert final == pytest.approx(onecycle_rate(row["total_steps"], row["step"]) * NEW_LR / change["old"], rel=1e-6)
