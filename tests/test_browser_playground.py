"""A learner's walk through a playground, in a real browser (the dashboard and Chromium as in
tests/test_dashboard_browser.py): pick moons in the sidebar, take its suggested settings, start, watch the
decision regions form over the points, pause, resume. Screenshots go to tests/artifacts/playground_*.png."""

import os
import re

import pytest
from test_dashboard_browser import ARTIFACTS, CHROMIUM, browser_page, choose, dashboard, settle, status_is  # noqa: F401

import engine

# the decision regions: a plotly chart whose title names them; its first trace is the heatmap
REGIONS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].some(g => g.layout && g.layout.title
    && /Decision regions at step/.test(g.layout.title.text) && g._fullData && g._fullData[0].type === 'heatmap')"""
REGIONS_STEP_JS = """() => { const g = [...document.querySelectorAll('.js-plotly-plot')].find(g => g.layout
    && g.layout.title && /Decision regions/.test(g.layout.title.text));
    return g ? parseInt(g.layout.title.text.match(/step ([\\d,]+)/)[1].replace(/,/g, '')) : -1; }"""

TITLE_JS = """() => { const g = [...document.querySelectorAll('.js-plotly-plot')].find(g => g.layout
    && g.layout.title && /Decision regions/.test(g.layout.title.text)); return g ? g.layout.title.text : ''; }"""

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")


def test_a_learner_watches_the_moons_regions_form(dashboard):  # noqa: F811
    with browser_page(height=2200, failure="playground_failure.png") as page:
        page.goto(dashboard["url"])
        sidebar = page.get_by_test_id("stSidebar")
        main = page.get_by_test_id("stMainBlockContainer")
        page.get_by_role("button", name="Start", exact=True).wait_for()
        sidebar.get_by_text("Data", exact=True).click()
        choose(page, "Dataset", "moons")
        sidebar.get_by_text(re.compile("Suggested for moons")).wait_for()
        sidebar.get_by_role("button", name="Use these settings").click()
        page.get_by_text(
            re.compile(r"Ready: nn \+ optim · mlp · moons · cross_entropy loss · lr 0\.01 · 1,500")
        ).wait_for()
        pace = page.get_by_role("spinbutton", name="Pace (steps per second, 0 = full speed)", exact=True)
        pace.fill("100")  # a class's pace: 15 s for the 1,500 steps
        pace.press("Enter")
        page.get_by_text(re.compile(r"at most 100 steps/s")).wait_for()
        settle(page)

        page.get_by_role("button", name="Start", exact=True).click()
        main.get_by_text("What it learned").wait_for(timeout=60_000)
        page.wait_for_function(REGIONS_JS, timeout=30_000)
        first = page.evaluate(REGIONS_STEP_JS)
        page.wait_for_function(f"() => ({REGIONS_STEP_JS})() > {first}", timeout=30_000)  # the regions move on
        page.screenshot(path=str(ARTIFACTS / "playground_forming.png"), full_page=True)

        main.get_by_role("button", name="Pause").click()
        status_is(page, "paused")
        run = engine.list_runs(dashboard["store"])[0]
        assert (run["config"]["dataset"], run["config"]["hidden"], run["status"]) == ("moons", 100, "paused")
        main.get_by_role("button", name="Landscape", exact=True).click()  # the loss around where it paused
        main.get_by_text(re.compile("The path: the")).wait_for(timeout=60_000)
        assert main.get_by_text("Loss on a plane through the weights").count() >= 1
        page.screenshot(path=str(ARTIFACTS / "playground_paused.png"), full_page=True)

        main.get_by_role("button", name="Resume").click()
        status_is(page, "(running|finished)")
        status_is(page, "finished", timeout=60_000)
        page.wait_for_function(f"() => ({REGIONS_STEP_JS})() === 1499", timeout=30_000)
        accuracy = float(re.search(r"test accuracy ([\d.]+)%", page.evaluate(TITLE_JS)).group(1))
        assert accuracy >= 95, page.evaluate(TITLE_JS)
        page.screenshot(path=str(ARTIFACTS / "playground_learned.png"), full_page=True)
