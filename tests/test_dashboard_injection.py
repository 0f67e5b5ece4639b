"""Text from outside is shown as text: a run id in the address, a run's name and error, a sink's
message, a typed host. None of it may become a link, an image, HTML or a Streamlit directive.

pages_common.plain escapes markdown; these tests check it over hostile strings (a property, and a
list), check with AppTest which page element carries which text, and then open the pages in
Debian's headless Chromium: no link out, no image, no request beyond loopback, the text readable
as it was written. Screenshots go to tests/artifacts/injection_*.png.
"""

import os
import re
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

import engine
from dashboard import serve
from dashboard.pages_common import WORD_JOINER, plain
from dashboard.serve import CHROMIUM, CHROMIUM_ARGS
from engine.store.db import Store

pytestmark = pytest.mark.fault("markdown injection (one per test)")  # rows of the fault table (make fault)

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
ARTIFACTS = Path(os.environ.get("LIVEPROP_ARTIFACTS", Path(__file__).parent / "artifacts"))

LINK = "[Session expired - log in again](http://x/login)"
IMAGE = "![x](http://127.0.0.2:9/t.png)"
# every way markdown, GFM and Streamlit make something active out of text
HOSTILE = (
    "[click](http://x) ![i](http://127.0.0.2:9/a.png) <img src=http://127.0.0.2:9/b.png> "
    "<http://127.0.0.2:9/c> http://127.0.0.2:9/d www.example.com me@example.com "
    ":red[red] :material/warning: :smile: **bold** `code` $x^2$ ~~gone~~ # heading &amp; a=b"
)
NAME = "[Session expired](http://x/login) ![n](http://127.0.0.2:9/n.png)"
RUN = "20261127-131500-3fa9c2"  # the hostile run's id (ids have a fixed shape)
ACTIVE = set("\\`*_{}[]()#+-.!|<>~$:@&=/")  # what markdown or Streamlit may act on
# what remark-gfm links in a text node after parsing (mdast-util-gfm-autolink-literal, as bundled
# in Streamlit 1.67's StreamlitMarkdown.js); escapes do not stop it
GFM_URL = re.compile(r"(?i)(https?://|www(?=\.))[-.\w]+")
GFM_EMAIL = re.compile(r"[-.\w+]+@[-\w]+(\.[-\w]+)+")


def unescaped(md: str) -> str:
    """The characters of md that no backslash escapes."""
    return re.sub(r"\\.", "", md, flags=re.S)


def text_node(md: str) -> str:
    """What the markdown parser leaves as text: md with its escapes undone."""
    return re.sub(r"\\(.)", r"\1", md, flags=re.S)


def visible(text: str) -> str:
    return text.replace(WORD_JOINER, "")


def assert_plain_is_inert(text):
    md = plain(text)
    assert not set(unescaped(md)) & ACTIVE, md  # no markdown, HTML or directive
    assert ":material/" not in md  # Streamlit's icons are found in the source, before parsing
    node = text_node(md)
    assert not GFM_URL.search(node) and not GFM_EMAIL.search(node), node  # no autolink after parsing
    assert visible(node) == visible(text)  # and it reads as what was written


# ---------------------------------------------------------------------------------------------
# plain(), pure


@pytest.mark.parametrize("text", [LINK, IMAGE, HOSTILE, NAME, "<script>alert(1)</script>", "a\\](http://x)"])
def test_plain_leaves_nothing_that_markdown_gfm_or_streamlit_acts_on(text):
    assert_plain_is_inert(text)


@given(st.text() | st.lists(st.sampled_from(["http", "s", ":", "/", "www", ".", "@", "x", " ", "\\"])).map("".join))
def test_plain_defuses_any_text_and_keeps_it_readable(text):
    assert_plain_is_inert(text)


# ---------------------------------------------------------------------------------------------
# which element carries which text (AppTest)


def hostile_run(store_path, run_id=RUN):
    """A failed run whose name and error are markdown someone crafted, written as any store client could."""
    s = Store(store_path)
    s.create_run(run_id, vars(engine.RunConfig(mode="autograd", lr=1e-4, device="cpu")), name=NAME, total_steps=3)
    s.set_status(run_id, "failed", HOSTILE)
    s.close()


def markdown_of(at) -> list[str]:
    """Every markdown text on the page: markdown, captions, alerts."""
    kinds = ("markdown", "caption", "error", "warning", "info", "success")
    return [e.value for kind in kinds for e in getattr(at, kind)]


def assert_inert(at, *texts):
    """Each text shows only escaped: never as markdown that could act."""
    for md in markdown_of(at):
        for text in texts:
            assert text not in md, md
    for text in texts:
        assert any(plain(text) in md for md in markdown_of(at)), (text, markdown_of(at))


@pytest.mark.parametrize("bad", [LINK, IMAGE, "../20261127-131500-3fa9c2", "20261127-131500-3FA9C2\n# x"])
def test_a_malformed_run_in_the_address_is_named_in_one_plain_line_and_dropped(store, monkeypatch, bad):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = bad
    at.run()
    assert not at.exception, at.exception
    [warning] = at.warning
    assert warning.value.startswith("The address names no valid run") and "\n" not in warning.value
    assert plain(" ".join(bad.split())) in warning.value  # the address as written, escaped
    assert "run" not in at.query_params and at.session_state.lp_run is None  # dropped, never looked up
    assert "not in the store" not in " ".join(markdown_of(at))
    at.run()
    assert not at.warning  # said once; the address no longer carries it


def test_a_malformed_run_in_the_session_is_never_looked_up(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    hostile_run(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["lp_run"] = LINK
    at.query_params["run"] = RUN
    at.run()
    assert not at.exception, at.exception
    assert at.session_state.lp_run == RUN and "not in the store" not in " ".join(markdown_of(at))


def test_a_hostile_name_and_error_show_escaped_on_the_train_and_runs_pages(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    hostile_run(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = RUN
    at.run()
    assert not at.exception, at.exception
    assert_inert(at, HOSTILE, NAME)
    at.switch_page("views/runs.py").run()
    assert not at.exception, at.exception
    assert_inert(at, HOSTILE)


def test_a_malformed_id_written_into_the_store_is_escaped_in_the_delete_question(store, monkeypatch):
    """Ids the engine makes have a fixed shape, but the Runs page lists whatever the store holds."""
    monkeypatch.setenv("LIVEPROP_STORE", store)
    hostile_run(store, IMAGE)
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/runs.py").run()
    at.button(key="runs_delete").click().run()
    assert not at.exception, at.exception
    [question] = at.warning
    assert plain(IMAGE) in question.value and IMAGE not in question.value


def test_a_sinks_message_is_escaped_and_only_a_web_address_becomes_a_button(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    hostile_run(store)
    s = Store(store)
    s.add_event(RUN, 3, "visdom", {"status": "failed", "error": LINK, "url": "javascript:alert(1)", "env": IMAGE})
    s.close()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = RUN
    at.run()
    assert not at.exception, at.exception
    assert_inert(at, LINK, IMAGE)
    assert not at.get("link_button")


def test_a_typed_visdom_host_and_env_show_as_text(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.sidebar.checkbox(key="visdom_on").check().run()
    at.sidebar.text_input(key="visdom_host").input("h](http://x) ![i](http://127.0.0.2:9/h.png").run()
    at.sidebar.text_input(key="visdom_env").input(IMAGE).run()
    [said] = [c.value for c in at.sidebar.caption if c.value.startswith("Runs started here send to")]
    link_text, target = re.fullmatch(r"Runs started here send to \[(.*)\]\((\S*)\), env (.*)\.", said).group(1, 2)
    assert not set(unescaped(link_text)) & ACTIVE and not re.search(r"[\s()\[\]<>]", target)
    assert plain(IMAGE) in said and IMAGE not in said


# ---------------------------------------------------------------------------------------------
# as a person meets it, in a real browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The dashboard on a free loopback port, its store holding one hostile failed run."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    root = tmp_path_factory.mktemp("injection")
    store = str(root / "liveprop.db")
    hostile_run(store)
    env = {"LIVEPROP_STORE": store, "LIVEPROP_VISDOM_URL": ""}
    with serve.start(port=serve.free_port(), env=env, log=root / "dashboard.log", timeout=90) as dash:
        yield dash.url


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page that records the host of every request it makes."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.hosts = set()
    page.on("request", lambda r: page.hosts.add(urlsplit(r.url).hostname or r.url.split(":", 1)[0]))
    yield page
    context.close()


def settle(page):
    """No script run in progress, and no widget still a grey placeholder (the page reads as it will)."""
    page.wait_for_function("""() => { const a = document.querySelector('[data-test-script-state]');
        return a && a.getAttribute('data-test-script-state') !== 'running'
            && !document.querySelector('[data-testid=stSkeleton]'); }""")


def assert_nothing_leaves(page, server):
    """No link or image points off the dashboard, and nothing was fetched from beyond loopback."""
    here = server.rstrip("/")
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    assert all(h.startswith(here) for h in hrefs), [h for h in hrefs if not h.startswith(here)]
    srcs = page.eval_on_selector_all("img", "els => els.map(e => e.src)")
    assert all(s.startswith((here, "data:", "blob:")) for s in srcs), srcs
    assert page.hosts <= {"127.0.0.1", "localhost", "data", "blob"}, sorted(page.hosts)


def go(page, name):
    page.get_by_test_id("stSidebar").get_by_role("link", name=name).click()
    page.get_by_role("heading", name=name).wait_for()
    settle(page)


@pytest.mark.parametrize("bad, shot", [(LINK, "injection_address_link.png"), (IMAGE, None)])
def test_a_link_or_image_in_the_address_stays_text_across_pages_and_a_reload(page, server, bad, shot):
    page.goto(f"{server}/?run={quote(bad)}")
    said = page.get_by_text("The address names no valid run").first
    said.wait_for()
    assert bad in visible(said.inner_text())  # readable as written
    page.wait_for_function("() => !new URLSearchParams(location.search).has('run')")  # dropped from the address
    settle(page)
    if shot:
        page.screenshot(path=str(ARTIFACTS / shot))
    assert_nothing_leaves(page, server)
    go(page, "Runs")
    assert_nothing_leaves(page, server)
    go(page, "Train")
    page.reload()
    page.get_by_role("heading", name="Train").wait_for()
    settle(page)
    assert page.get_by_text("The address names no valid run").count() == 0
    assert_nothing_leaves(page, server)


def test_a_hostile_name_and_error_stay_text_on_the_train_and_runs_pages(page, server):
    page.goto(f"{server}/?run={RUN}")
    banner = page.get_by_test_id("stAlert").filter(has_text="Run failed:")
    banner.wait_for()
    settle(page)
    assert HOSTILE in visible(banner.inner_text())  # every character as written: no link, image, icon, colour
    status = page.get_by_text(re.compile(r"status\s+failed")).first
    assert NAME in visible(status.inner_text())
    page.screenshot(path=str(ARTIFACTS / "injection_train.png"))
    assert_nothing_leaves(page, server)
    go(page, "Runs")
    page.locator("[role=gridcell]", has_text=RUN).first.wait_for(state="attached")
    error = page.get_by_test_id("stAlert").filter(has_text="[click]")
    assert HOSTILE in visible(error.inner_text())
    page.screenshot(path=str(ARTIFACTS / "injection_runs.png"), full_page=True)
    assert_nothing_leaves(page, server)
