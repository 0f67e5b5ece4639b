"""End to end in a real browser: `python -m dashboard` (Streamlit + the Visdom server) on free ports
with a temp store, driven by Debian's headless Chromium through Playwright.

The test configures a run by clicking (mode, architecture, optimizer, learning rate), starts it,
sees loss points arrive (and the run's Visdom sink report in), toggles manual/autograd, changes the
learning rate live, pauses, resumes, stops, opens the Runs page, and saves screenshots to
tests/artifacts/. Every process it starts is stopped afterwards: the dashboard and Visdom by Ctrl-C
(SIGINT) to `python -m dashboard`, training workers by engine.kill and the conftest's reaper.
"""

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_for

import engine
from dashboard.serve import CHROMIUM, CHROMIUM_ARGS
from engine.store.db import ACTIVE

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("LIVEPROP_ARTIFACTS", Path(__file__).parent / "artifacts"))
# the loss chart is the page's first plotly chart; _fullData holds its decoded traces
FIRST_PLOT_JS = """() => { const g = document.querySelector('.js-plotly-plot');
    return g && g._fullData && g._fullData.length > 1 ? (g._fullData[1]._length || 0) : 0; }"""
TRACE_NAMES_JS = """() => { const g = document.querySelector('.js-plotly-plot');
    return g && g._fullData ? g._fullData.map(t => t.name) : []; }"""
# the Code panel: faces of the shipped CJK font that hold the lecture's comments, loaded; the code font
# list that names it; and the code blocks whose lines run past their box (cut off)
CJK_FACES_JS = """async () => (await document.fonts.load('16px "Noto Sans SC"', '反向传播的计算过程')).length"""
CODE_FONT_JS = """() => getComputedStyle(document.querySelector('[data-testid="stCode"] code')).fontFamily"""
CUT_OFF_JS = """() => [...document.querySelectorAll('[data-testid="stCode"] pre')]
    .filter(p => p.scrollWidth > p.clientWidth + 1).length"""
TABLE_SCROLL_JS = """() => document.querySelector('[data-testid="stDataFrame"] .dvn-scroller').scrollLeft"""

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)",
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Lines:
    """A child's stdout, line by line, with a timeout."""

    def __init__(self, stream):
        self.q, self.seen = queue.Queue(), []
        threading.Thread(target=lambda: [self.q.put(line) for line in stream], daemon=True).start()

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m
        pytest.fail(f"no line matching {pattern!r} within {timeout} s; output so far:\n{''.join(self.seen)}")


@contextlib.contextmanager
def dashboard_process(env: dict, *args):
    """`python -m dashboard ARGS` on free ports -> (process, its output Lines, port, Visdom port); stopped
    with Ctrl-C afterwards, which must end it with status 0 and leave neither port listening."""
    port, vport = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "--port", str(port), "--visdom-port", str(vport), *args],
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc, Lines(proc.stdout), port, vport
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"python -m dashboard exited with {proc.returncode}"
    assert not port_open(port) and not port_open(vport), "Ctrl-C left a server listening"


@pytest.fixture
def dashboard(tmp_path):
    """`python -m dashboard` with a temp store; the runs it started are killed afterwards."""
    store = str(tmp_path / "runs" / "liveprop.db")
    env = {**os.environ, "LIVEPROP_STORE": store}
    env.pop("LIVEPROP_HOST", None)
    try:
        with dashboard_process(env) as (_proc, out, port, vport):
            url = out.wait_for(r"Liveprop dashboard: (http://\S+)", 90).group(1)
            visdom = out.wait_for(r"Visdom:\s+(http://\S+)", 10).group(1)
            yield {"url": url, "visdom": visdom, "store": store, "port": port, "vport": vport}
    finally:
        for run in engine.list_runs(store):
            if run["status"] in ACTIVE:
                engine.kill(run["id"], store)


def status_is(page, status, timeout=30_000):
    page.get_by_text(re.compile(rf"status\s+{status}\b")).first.wait_for(timeout=timeout)


def settle(page):
    """Wait until no script run is in progress (a click during a full rerun can be dropped, as
    it would be for a person clicking within a tenth of a second of a page change)."""
    page.wait_for_function("""() => { const a = document.querySelector('[data-test-script-state]');
        return a && a.getAttribute('data-test-script-state') !== 'running'; }""")


def choose(page, label, option):
    """Pick an option of a Streamlit selectbox by its label."""
    page.get_by_test_id("stSelectbox").filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def set_number(page, label, value):
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Enter")


@contextlib.contextmanager
def browser_page(width=1400, height=1100, timeout_ms=60_000, failure="dashboard_failure.png"):
    """A page in headless Chromium; a screenshot (tests/artifacts/FAILURE) when the test fails in it."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(timeout_ms)
        try:
            yield page
        except Exception:
            page.screenshot(path=str(ARTIFACTS / failure))
            raise
        finally:
            browser.close()


def test_train_watch_control_and_list_a_run(dashboard):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    assert opener.open(dashboard["visdom"], timeout=10).status == 200  # Visdom is up too

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.set_default_timeout(30_000)
            page.goto(dashboard["url"])
            sidebar = page.get_by_test_id("stSidebar")
            main = page.get_by_test_id("stMainBlockContainer")
            start = page.get_by_role("button", name="Start", exact=True)
            start.wait_for()

            # configure: nn + optim, mlp, SGD, lr 1e-3, a long run
            sidebar.get_by_text("nn + optim", exact=True).click()
            page.get_by_text(re.compile(r"Ready: nn \+ optim")).wait_for()
            choose(page, "Architecture", "mlp")
            choose(page, "Optimizer", "sgd")
            sidebar.get_by_text("Optimizer settings").click()
            set_number(page, "Momentum", "0.9")
            page.get_by_text(re.compile(r"Ready: nn \+ optim · mlp")).wait_for()
            set_number(page, "Learning rate (exact)", "0.001")
            page.get_by_text(re.compile(r"Ready: nn \+ optim · mlp .* lr 0\.001")).wait_for()
            set_number(page, "Steps", 200_000)
            page.get_by_text(re.compile(r"Ready: nn \+ optim · mlp .* lr 0\.001 · 200,000 steps")).wait_for()

            # start, and see loss points arrive and keep arriving
            start.click()
            page.wait_for_function(FIRST_PLOT_JS, timeout=90_000)
            first = page.evaluate(FIRST_PLOT_JS)
            page.wait_for_function(f"() => ({FIRST_PLOT_JS})() > {first}", timeout=30_000)
            status_is(page, "running")
            page.get_by_text(re.compile(r"visdom: \w+ \(env liveprop_")).wait_for()  # the run sends to Visdom too
            run = engine.list_runs(dashboard["store"])[0]
            assert (
                run["config"]["mode"],
                run["config"]["arch"],
                run["config"]["optimizer"],
                run["config"]["momentum"],
                run["config"]["lr"],
            ) == ("optim", "mlp", "sgd", 0.9, 0.001)

            # toggle manual / autograd: the optimizer greys out with its reason; back to nn + optim
            sidebar.get_by_text("manual", exact=True).click()
            page.get_by_text("updates the weights by hand").first.wait_for()
            sidebar.get_by_text("autograd", exact=True).click()
            page.get_by_text(re.compile(r"Ready: autograd")).wait_for()
            assert page.get_by_text("updates the weights by hand").first.is_visible()
            assert sidebar.get_by_test_id("stSelectbox").filter(has_text="Optimizer").locator("input").is_disabled()
            sidebar.get_by_text("manual", exact=True).click()
            page.get_by_text(re.compile(r"Ready: manual")).wait_for()

            # a live learning-rate change shows as a marker on the loss curve
            set_number(page, "New learning rate", "0.0005")
            main.get_by_role("button", name="Set lr").click()
            page.wait_for_function(f"() => ({TRACE_NAMES_JS})().includes('lr change')", timeout=30_000)

            # pause, resume, stop
            main.get_by_role("button", name="Pause").click()
            status_is(page, "paused")
            settle(page)
            main.get_by_role("button", name="Resume").click()
            status_is(page, "running")
            main.get_by_role("button", name="Stop", exact=True).click()
            status_is(page, "stopped")
            main.get_by_role("button", name="Pause").wait_for()
            assert main.get_by_role("button", name="Pause").is_disabled()
            # a stopped run resumes from its checkpoint, in place; then stop it for good
            stopped_at = engine.get_run(run["id"], dashboard["store"])["step"]
            settle(page)
            main.get_by_role("button", name="Resume").click()
            status_is(page, "running", timeout=60_000)
            wait_for(lambda: engine.get_run(run["id"], dashboard["store"])["step"] > stopped_at, what="new steps")
            main.get_by_role("button", name="Stop", exact=True).click()
            status_is(page, "stopped")
            time.sleep(1.5)  # let the charts settle
            page.screenshot(path=str(ARTIFACTS / "dashboard_train.png"))

            # the Runs page lists it, with its downloads
            sidebar.get_by_role("link", name="Runs").click()
            page.get_by_role("heading", name="Runs").wait_for()
            page.get_by_test_id("stDataFrame").wait_for()
            page.locator("[role=gridcell]", has_text=run["id"]).first.wait_for(state="attached")  # canvas table cells
            picker = main.get_by_test_id("stSelectbox").first
            assert run["id"] in picker.evaluate("e => e.innerText + ' ' + (e.querySelector('input') || {}).value")
            main.get_by_role("button", name="Metrics CSV").wait_for()
            page.screenshot(path=str(ARTIFACTS / "dashboard_runs.png"))
            # the table scrolls sideways to its last columns, the run column pinned
            page.get_by_test_id("stDataFrame").hover()
            page.mouse.wheel(2000, 0)
            page.wait_for_function(f"() => ({TABLE_SCROLL_JS})() > 0")
            time.sleep(0.5)
            page.screenshot(path=str(ARTIFACTS / "dashboard_runs_scrolled.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "dashboard_failure.png"))
            raise
        finally:
            browser.close()
    final = engine.get_run(run["id"], dashboard["store"])
    assert final["status"] == "stopped" and final["checkpoint"] and os.path.isfile(final["checkpoint"])
    events = [e["kind"] for e in engine.Store(dashboard["store"]).events(run["id"])]
    assert {"lr_change", "pause", "resume", "stop", "resumed"} <= set(events)


def test_settings_survive_every_page_and_a_reload_and_nothing_leaves_the_machine(dashboard):
    """Set non-default values, walk Train -> Runs -> About -> Graph -> Train, reload, come back
    once more, then Start: the launched run's config is what was set. Every request the browser
    makes goes to loopback, and there is no Deploy button."""
    from urllib.parse import urlsplit

    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        hosts = set()
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.on("request", lambda r: hosts.add(urlsplit(r.url).hostname or r.url.split(":", 1)[0]))
            page.set_default_timeout(30_000)
            page.goto(dashboard["url"])
            sidebar = page.get_by_test_id("stSidebar")
            start = page.get_by_role("button", name="Start", exact=True)
            start.wait_for()

            sidebar.get_by_text("nn + optim", exact=True).click()
            page.get_by_text(re.compile(r"Ready: nn \+ optim")).wait_for()
            choose(page, "Architecture", "mlp")
            page.get_by_text(re.compile(r"Ready: nn \+ optim · mlp")).wait_for()
            choose(page, "Optimizer", "rmsprop")
            settle(page)
            set_number(page, "Learning rate (exact)", "0.003")
            page.get_by_text(re.compile(r"Ready: nn \+ optim · mlp .* lr 0\.003")).wait_for()
            set_number(page, "Batch size", "32")
            settle(page)
            set_number(page, "Steps", "1234")
            ready = re.compile(r"Ready: nn \+ optim · mlp .* lr 0\.003 · 1,234 steps")
            page.get_by_text(ready).wait_for()
            settle(page)

            def walk():
                for name in ("Runs", "About", "Computation graph", "Train"):
                    sidebar.get_by_role("link", name=name).click()
                    settle(page)
                page.get_by_text(ready).wait_for()

            walk()
            page.reload()
            page.get_by_text(ready).wait_for()
            walk()
            assert page.get_by_role("spinbutton", name="Batch size", exact=True).input_value() == "32"
            optimizer = sidebar.get_by_test_id("stSelectbox").filter(has_text="Optimizer")
            assert "rmsprop" in optimizer.evaluate("e => e.innerText + ' ' + (e.querySelector('input') || {}).value")
            assert page.get_by_role("button", name="Deploy").count() == 0
            page.screenshot(path=str(ARTIFACTS / "dashboard_settings_kept.png"))
            start.click()
            page.wait_for_function(FIRST_PLOT_JS, timeout=90_000)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "dashboard_failure.png"))
            raise
        finally:
            browser.close()
    [run] = engine.list_runs(dashboard["store"])
    c = run["config"]
    assert (c["mode"], c["arch"], c["optimizer"], c["lr"], c["batch_size"], c["steps"]) == (
        "optim",
        "mlp",
        "rmsprop",
        0.003,
        32,
        1234,
    )
    assert hosts <= {"127.0.0.1", "localhost", "data", "blob"}, f"the page reached beyond loopback: {sorted(hosts)}"


def test_a_learner_walks_every_panel_of_a_manual_run_and_a_diverged_one(dashboard):
    """The lecture's manual run in float32: every detail panel draws, the gradient check's verdict
    says the hand-written gradients agree to float32 rounding, the Code panel shows the lecture's
    cell in the shipped CJK font, no line cut off; Compare modes ends with its verdict; then a run at
    lr 1e3 diverges, the banner says where, at the status line's step, and what to do next, and the
    histogram names the weights put back. Screenshots of each panel."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.set_default_timeout(60_000)
            page.goto(dashboard["url"])
            main = page.get_by_test_id("stMainBlockContainer")
            start = page.get_by_role("button", name="Start", exact=True)
            start.wait_for()
            set_number(page, "Steps", 3000)
            page.get_by_text(re.compile(r"Ready: manual .* 3,000 steps")).wait_for()
            start.click()
            status_is(page, "finished", timeout=120_000)
            for view in ("Weights", "Gradients", "Per-layer", "Health", "Gradient check", "Code"):
                main.get_by_test_id("stButtonGroup").get_by_text(view, exact=True).click()
                settle(page)
                if view == "Gradient check":
                    page.get_by_text("Hand-written vs autograd: agree to float32 rounding").wait_for()
                elif view == "Code":
                    page.get_by_text("The lecture's cell In [16]").wait_for()
                    page.locator('[data-testid="stCode"] code').nth(2).wait_for()  # the two cells and the diff
                    assert page.evaluate(CUT_OFF_JS) == 0  # every line wraps inside its box
                    if (ROOT / "dashboard" / "static" / "fonts" / "noto-sans-sc.css").is_file():  # make setup
                        assert '"Noto Sans SC"' in page.evaluate(CODE_FONT_JS)
                        assert page.evaluate(CJK_FACES_JS) > 0  # served from app/static, not boxes
                        page.evaluate("document.fonts.ready.then(() => true)")  # drawn before the screenshot
                else:
                    page.locator(".js-plotly-plot").nth(1).wait_for()
                time.sleep(1.0)  # let the charts draw
                page.screenshot(path=str(ARTIFACTS / f"panel_{view.lower().replace(' ', '_')}.png"))
                if view == "Code":  # the running mode's concept, below the two cells
                    page.locator('[data-testid="stCode"]').nth(2).scroll_into_view_if_needed()
                    page.screenshot(path=str(ARTIFACTS / "panel_code_diff.png"))

            # Compare modes on the lecture's 500 steps: a verdict in plain words, and any two modes diffed
            set_number(page, "Steps", 500)
            page.get_by_text(re.compile(r"Ready: manual .* 500 steps")).wait_for()
            settle(page)
            page.get_by_role("button", name="Compare modes").click()
            wait_for(
                lambda: sum(r["status"] == "finished" for r in engine.list_runs(dashboard["store"])) == 4,
                120,
                what="the three compared runs to finish",
            )
            time.sleep(2.5)  # the panel's last refresh after they finished
            page.get_by_text(re.compile(r"The same computation: ")).wait_for()
            page.get_by_role("button", name="The same in float64").wait_for()
            time.sleep(1.5)
            page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)

            set_number(page, "Learning rate (exact)", "1000")
            page.get_by_text(re.compile(r"Ready: manual .* lr 1e\+03")).wait_for()
            assert "1e+03" in page.get_by_test_id("stSlider").first.inner_text()  # the log slider follows
            start.click()
            page.get_by_text(re.compile(r"Diverged at step \d+ in layer w\d")).wait_for(timeout=90_000)
            status_is(page, "paused")
            said = page.get_by_text(re.compile(r"The run is paused at step [\d,]+")).first.inner_text()
            at = re.search(r"paused at step ([\d,]+)", said).group(1)
            page.get_by_text(f"paused at step {at} / 500").wait_for()  # the status line's step, the same
            page.get_by_text(re.compile(r"press Set lr, then Resume")).wait_for()
            time.sleep(1.5)
            page.screenshot(path=str(ARTIFACTS / "panel_diverged.png"))
            main.get_by_test_id("stButtonGroup").get_by_text("Weights", exact=True).click()
            page.get_by_text(re.compile(rf"at step {at} \(the weights of step \d+, put back")).first.wait_for()
            time.sleep(1.0)
            page.screenshot(path=str(ARTIFACTS / "panel_diverged_weights.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "dashboard_failure.png"))
            raise
        finally:
            browser.close()
    [diverged, *compared, manual] = engine.list_runs(dashboard["store"])
    assert manual["status"] == "finished" and diverged["status"] == "paused" and len(compared) == 3


def test_a_learner_forks_a_run_with_a_lower_lr_and_sees_both_curves(dashboard):
    """ "What if I had lowered the lr here?": on the Runs page, Fork at step 160 with lr 1e-4; the Train page
    then watches the fork, its chart with the parent's curve dashed beside it; a reload, a visit to the
    Runs page and back keep it. Screenshot: fork_train.png."""
    from conftest import SMALL, run_in_process

    cfg = engine.RunConfig(**{**SMALL, "mode": "optim", "optimizer": "adam", "lr": 1e-2, "steps": 300,
                              "flush_every": 50, "checkpoint_seconds": 1e-6})  # fmt: skip
    parent, _ = run_in_process(cfg, dashboard["store"])
    with browser_page(height=1500) as page:
        page.goto(dashboard["url"] + "/runs")
        page.get_by_text("Fork: what if the run had gone on differently").click()
        set_number(page, "from step", 160)
        set_number(page, "learning rate", "1e-4")
        settle(page)
        page.get_by_role("button", name="Fork", exact=True).click()
        page.get_by_text(re.compile(r"Forked run .* goes on from its checkpoint")).wait_for()
        status_is(page, "finished", timeout=120_000)
        legend = page.locator(".js-plotly-plot").first.get_by_text(re.compile(r"parent: adam lr 0\.01"))
        legend.wait_for()
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "fork_train.png"))
        page.reload()
        legend.wait_for()
        page.get_by_role("link", name="Runs").click()
        page.get_by_text("Select rows to overlay").wait_for()
        page.get_by_role("link", name="Train").click()
        legend.wait_for()
    [child] = [r for r in engine.list_runs(dashboard["store"]) if r["id"] != parent]
    assert child["config"]["lr"] == 1e-4 and child["status"] == "finished" and child["step"] == 300
