"""In a real browser: a divergence whose banner names the first operation that went non-finite, "Step back and
retry at lr/10" drawn as a branch, and a fork made by clicking a point of the loss chart, whose dialog says how
many steps it replays; then the layer health table, a row chosen. Screenshots: forensics_banner.png,
forensics_retry.png, forensics_dialog.png, forensics_health.png.

The diverged run is trained here, in this process (SMALL, autograd): lr 2e-3 for 40 steps, then a command sets it
to 0.05 (as a viewer's Set lr would) and the loss overflows a few steps later; the run stops there.
"""

import re
import time

import pytest
from conftest import SMALL, run_in_process
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_dashboard_browser import ARTIFACTS, browser_page, dashboard, settle, status_is  # noqa: F401 (a fixture)

import engine
from engine.loop.control import Control
from engine.runs import worker

# the loss chart's point in the middle of its smoothed line, in page pixels, and its step
POINT_JS = """() => { const g = document.querySelector('.js-plotly-plot'); const t = g._fullData[1];
    const i = Math.floor(t._length / 2); const r = g.getBoundingClientRect();
    const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis;
    return {x: r.left + xa._offset + xa.c2p(t.x[i]), y: r.top + ya._offset + ya.c2p(t.y[i]), step: t.x[i]}; }"""


@pytest.fixture
def diverged(dashboard, monkeypatch):  # noqa: F811 (the fixture imported above)
    made = []
    monkeypatch.setattr(worker, "Control", lambda: made.append(Control()) or made[-1])

    def at_flush(f):
        if f.last_step + 1 == 41:  # flushes after steps 0, 4, 8, ...
            made[0].put(None, "set_lr", 0.05)

    cfg = engine.RunConfig(**{**SMALL, "mode": "autograd", "lr": 2e-3, "steps": 300, "flush_seconds": 3600.0,
                              "on_divergence": "stop"})  # fmt: skip
    run_id, status = run_in_process(cfg, dashboard["store"], callbacks={"on_flush": [at_flush]})
    assert status == "diverged"
    return run_id


def test_a_learner_reads_which_operation_diverged_steps_back_and_forks_from_the_chart(dashboard, diverged):  # noqa: F811
    store = dashboard["store"]
    s = engine.Store(store)
    d = s.last_event(diverged, "divergence")["data"]
    s.close()
    assert d["op"] and d["restored"] >= 40
    with browser_page(height=1300, failure="forensics_failure.png") as page:
        page.goto(f"{dashboard['url']}/?run={diverged}")
        page.get_by_text(re.compile(rf"First: the {d['phase']} of .{d['op']}. .*produced")).wait_for()
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "forensics_banner.png"))

        settle(page)
        page.get_by_role("button", name="Step back and retry at lr/10").click()
        page.get_by_text(re.compile(rf"Forked run {diverged} at step {d['restored']}")).wait_for()
        status_is(page, "finished", timeout=60_000)
        page.locator(".js-plotly-plot").first.get_by_text(re.compile(r"parent: autograd lr 0\.002")).wait_for()
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "forensics_retry.png"))
        [retry] = [r for r in engine.list_runs(store) if r["id"] != diverged]
        assert retry["config"]["lr"] == pytest.approx(0.005) and retry["status"] == "finished"

        settle(page)
        point = page.evaluate(POINT_JS)
        page.mouse.click(point["x"], point["y"])
        dialog = page.get_by_role("dialog")
        dialog.get_by_text(re.compile(r"replays [\d,]+ of its steps")).wait_for()
        at = int(dialog.get_by_role("spinbutton", name="from step").input_value())
        assert abs(at - point["step"]) <= 2  # the point clicked (the nearest step with a point)
        time.sleep(0.5)
        page.screenshot(path=str(ARTIFACTS / "forensics_dialog.png"))
        dialog.get_by_role("button", name="Fork", exact=True).click()
        page.get_by_text(re.compile(rf"Forked run {retry['id']} at step {at}")).wait_for()

        # the Health view's layer table, the worst first; a row chosen draws that layer's charts
        page.get_by_test_id("stButtonGroup").get_by_text("Health", exact=True).click()
        page.get_by_text("Layer health, the worst at the top").wait_for()
        table = page.get_by_test_id("stDataFrame").filter(visible=True).first  # the next run's tables are folded
        table.wait_for()
        table.scroll_into_view_if_needed()
        charts = page.get_by_text(re.compile(r"Gradients of \w+: distribution over time"))
        for _ in range(3):  # a click that the grid takes while it is drawn again is lost: click again
            box = table.bounding_box()
            page.mouse.click(box["x"] + 12, box["y"] + 36 + 17)  # the first row's selection box
            try:
                charts.wait_for(timeout=20_000)
                break
            except PlaywrightTimeout:
                continue
        charts.wait_for()
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "forensics_health.png"))
    forks = engine.forks_of(retry["id"], store)
    assert [step for _, step in forks] == [at]
