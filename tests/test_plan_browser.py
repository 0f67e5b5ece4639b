"""In a real browser (tests/test_dashboard_browser.py starts the dashboard and Chromium): a run with
--at 300:lr=1e-7, a jump of the rate at 400 and the rule spike:5:pause shows its scheduled actions and the rule
as diamonds on the loss and lr charts, the rule's pause says why, and the schedule still to come (550:stop) is
offered for editing. Screenshots: schedule_train.png,
schedule_lr.png, schedule_next_run.png."""

import re
import time

from conftest import SMALL, wait_for
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_dashboard_browser import ARTIFACTS, TRACE_NAMES_JS, browser_page, dashboard, settle, status_is  # noqa: F401

import engine
from engine import RunConfig

LR_TRACES_JS = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .filter(g => g.layout && g.layout.title && String(g.layout.title.text).includes('Learning rate'))
    .map(g => g._fullData.map(t => t.name))"""


LR_SCROLL_JS = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .find(g => String(g.layout.title.text).includes('Learning rate')).scrollIntoView({block: 'center'})"""


def test_scheduled_actions_and_a_spike_rule_are_marked_on_the_charts_and_the_rule_pauses(dashboard):  # noqa: F811
    store = dashboard["store"]
    cfg = RunConfig(
        **{**SMALL, "steps": 600, "telemetry_every": 1, "flush_every": 2, "flush_seconds": 3600},
        at=("300:lr=1e-7", "400:lr=1e-2", "550:stop"),
        rule=("spike:5:pause",),
    )
    run_id = engine.launch(cfg, store)  # its worker starts while the browser does
    with browser_page(height=1400, failure="schedule_failure.png") as page:
        page.goto(f"{dashboard['url']}/?run={run_id}")
        status_is(page, "paused", timeout=90_000)
        page.get_by_text(re.compile(r"Paused by rule spike:5:pause at step 40\d")).wait_for()
        wait_for(lambda: "scheduled / rule" in page.evaluate(TRACE_NAMES_JS), 30, what="the loss chart's marks")
        page.get_by_text("Schedule: 1 action(s) to come").click()  # the Train page's editor of what is to come
        page.get_by_role("button", name="Replace schedule").wait_for()
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "schedule_train.png"))
        main = page.get_by_test_id("stMainBlockContainer")
        main.get_by_test_id("stButtonGroup").get_by_text("Per-layer", exact=True).click()
        settle(page)
        wait_for(lambda: ["scheduled / rule" in t for t in page.evaluate(LR_TRACES_JS)] == [True], 30, what="lr")
        page.evaluate(LR_SCROLL_JS)
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "schedule_lr.png"))
        page.get_by_text(re.compile(r"Schedule and rules for the next run")).click()
        tables = main.get_by_test_id("stDataFrame")
        tables.nth(2).wait_for()  # the next run's actions and rules, then the running run's schedule
        page.evaluate("window.scrollTo(0, 0)")
        box = tables.nth(0).bounding_box()  # a person adds a row: a click on the empty row, then typing
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] - 12)
        editor = page.locator("textarea.gdg-input")  # the grid's cell editor, open on the new row's cell
        try:
            editor.wait_for(state="visible", timeout=3_000)
        except PlaywrightTimeout:  # the row came, its editor did not (a busy machine): a double click opens it
            page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + 36 + 17)
            editor.wait_for(state="visible")
        editor.fill("300:lr=1e-7")
        page.keyboard.press("Enter")
        page.get_by_text("1 scheduled action(s), 0 rule(s)").wait_for()
        time.sleep(0.5)
        page.screenshot(path=str(ARTIFACTS / "schedule_next_run.png"))
        # the sidebar's settings were not touched by the tables (a table in the sidebar once reset them)
        assert page.get_by_role("spinbutton", name="Steps", exact=True).input_value() == "500"
    assert engine.wait_ack(engine.stop(run_id, store), store)["result"] == "ok"
