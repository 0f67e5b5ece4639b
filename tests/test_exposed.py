"""An exposed dashboard (python -m dashboard --host 0.0.0.0): refused without $LIVEPROP_PASSWORD,
and with it the page, Visdom and the runs' paths are protected.

No test binds 0.0.0.0. The protection does not depend on the host: a password set on loopback turns
it on there too, so the real servers are started on 127.0.0.1 with $LIVEPROP_PASSWORD set, and the
refusal is checked on a command that exits before it binds anything.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from test_dashboard_browser import ARTIFACTS, CHROMIUM, browser_page, dashboard_process, free_port, port_open, settle

import engine
from dashboard import __main__ as dashboard_main
from dashboard import gate
from engine.sinks.visdom.client import Client, settings_for

pytestmark = pytest.mark.fault("exposed mode without a password (one per test)")  # rows of the fault table (make fault)

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def run_dashboard(*args, env) -> tuple[int, str, str]:
    """`python -m dashboard ARGS` expected to exit by itself. Should it start its servers instead,
    Ctrl-C stops them (its children are in their own sessions) and the test fails."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboard", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        pytest.fail(f"python -m dashboard {' '.join(args)} started instead of refusing")
    return proc.returncode, out, err


def without_password(tmp_path) -> dict:
    env = {**os.environ, "LIVEPROP_STORE": str(tmp_path / "runs" / "liveprop.db")}
    for var in (gate.PASSWORD_VAR, gate.HASH_VAR, "LIVEPROP_HOST"):
        env.pop(var, None)
    return env


# ---------------------------------------------------------------------------------------------
# refused before anything starts


def test_exposed_without_a_password_exits_2_with_one_line_and_starts_nothing(tmp_path):
    port, vport = free_port(), free_port()
    args = ("--host", "0.0.0.0", "--port", str(port), "--visdom-port", str(vport))
    code, out, err = run_dashboard(*args, env=without_password(tmp_path))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("liveprop: error: listening on 0.0.0.0 needs a password: set ")
    assert "LIVEPROP_PASSWORD" in err and "Traceback" not in err
    assert not port_open(port) and not port_open(vport)
    assert not (tmp_path / "runs").exists()  # the store's folder: no dashboard log, no standby socket or log


def test_a_lone_visdom_server_on_every_interface_needs_a_password_too(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LIVEPROP_VISDOM_PASSWORD"}
    cmd = [sys.executable, "-m", "engine.sinks.visdom.server", "--host", "0.0.0.0", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()  # it stops its server on SIGTERM
        proc.communicate(timeout=30)
        pytest.fail("python -m engine.sinks.visdom.server --host 0.0.0.0 started without a password")
    assert (proc.returncode, out) == (2, "")
    assert (
        err
        == "liveprop: error: listening on 0.0.0.0 needs a password: set LIVEPROP_VISDOM_PASSWORD in the environment\n"
    )
    assert not port_open(port)


@pytest.mark.parametrize("host", ["10.1.2.3", "::", "example.org"])
def test_every_host_off_loopback_needs_the_password(host):
    args = dashboard_main.parse(["--host", host])
    assert "needs a password" in dashboard_main.refusal(args, "")
    assert dashboard_main.refusal(args, PASSWORD) == ""


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_needs_no_password_and_confines_no_paths(host):
    args = dashboard_main.parse(["--host", host])
    assert dashboard_main.refusal(args, "") == ""
    assert dashboard_main.data_root(args) is None


def test_off_loopback_runs_are_confined_to_the_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setattr(dashboard_main, "DEFAULT_DATA_ROOT", tmp_path / "data")
    assert dashboard_main.data_root(dashboard_main.parse(["--host", "0.0.0.0"])) == str(tmp_path / "data")
    assert (tmp_path / "data").is_dir()


def test_a_data_root_that_is_not_a_folder_exits_2_with_one_line(tmp_path):
    code, out, err = run_dashboard("--data-root", str(tmp_path / "nowhere"), env=without_password(tmp_path))
    assert (code, out) == (2, "")
    assert err == f"liveprop: error: --data-root: {tmp_path / 'nowhere'} is not a folder\n"


# ---------------------------------------------------------------------------------------------
# the password check


def test_the_hash_unlocks_with_the_password_only():
    stored = gate.hash_password(PASSWORD)
    assert PASSWORD not in stored and stored != gate.hash_password(PASSWORD)  # salted
    environ = {gate.HASH_VAR: stored}
    assert gate.required(environ)
    assert gate.unlocks(PASSWORD, environ)
    assert not gate.unlocks(PASSWORD + " ", environ) and not gate.unlocks("", environ)


def test_no_password_no_gate_and_a_plain_one_is_honoured():
    assert not gate.required({})
    assert gate.required({gate.PASSWORD_VAR: PASSWORD}) and gate.unlocks(PASSWORD, {gate.PASSWORD_VAR: PASSWORD})
    assert not gate.unlocks("guess", {gate.PASSWORD_VAR: PASSWORD})


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_wrong_tries_double_an_address_wait_and_a_try_too_soon_is_not_checked():
    clock, environ = Clock(), {gate.PASSWORD_VAR: PASSWORD}
    backoff = gate.Backoff(clock)
    waits = []
    for _ in range(9):
        clock.now += waits[-1] if waits else 0  # each try once the last wait is over
        answer = backoff.attempt("10.0.0.1", "guess", environ)
        assert answer.checked and not answer.unlocked
        waits.append(answer.wait_s)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.attempt("10.0.0.2", "guess", environ).wait_s == 1  # another address has its own
    too_soon = backoff.attempt("10.0.0.1", PASSWORD, environ)  # even the right password waits its turn
    assert too_soon == gate.Answer(unlocked=False, checked=False, wait_s=60)
    clock.now += 60
    assert backoff.attempt("10.0.0.1", PASSWORD, environ) == gate.Answer(True, True, 0.0)
    assert backoff.attempt("10.0.0.1", "guess", environ).wait_s == 1  # the right one starts it afresh


def test_the_server_checks_a_bounded_number_of_wrong_tries_whatever_the_addresses():
    clock, environ = Clock(), {gate.PASSWORD_VAR: PASSWORD}
    backoff = gate.Backoff(clock)
    for i in range(gate.SERVER_TRIES):
        assert backoff.attempt(f"10.0.{i}.1", "guess", environ).checked
    assert backoff.attempt("10.9.9.9", PASSWORD, environ) == gate.Answer(False, False, gate.SERVER_WINDOW_S)
    clock.now += gate.SERVER_WINDOW_S
    assert backoff.attempt("10.9.9.9", PASSWORD, environ).unlocked


def test_the_addresses_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(gate, "ADDRESSES", 3)
    clock, environ = Clock(), {gate.PASSWORD_VAR: PASSWORD}
    backoff = gate.Backoff(clock)
    for address in ("a", "b", "c", "d"):
        backoff.attempt(address, "guess", environ)
    assert backoff.attempt("a", "guess", environ) == gate.Answer(False, True, 1)  # forgotten: a first wrong try
    assert [backoff.attempt(x, "guess", environ).checked for x in "cda"] == [False, False, False]  # remembered


def test_tries_from_many_threads_at_once_are_checked_one_at_a_time(monkeypatch):
    checked, inside, overlapped = [], threading.Semaphore(1), []
    real = gate.unlocks

    def one_at_a_time(attempt, environ):
        if not inside.acquire(blocking=False):
            overlapped.append(attempt)
        checked.append(attempt)
        time.sleep(0.01)
        inside.release()
        return real(attempt, environ)

    monkeypatch.setattr(gate, "unlocks", one_at_a_time)
    backoff, go = gate.Backoff(), threading.Barrier(16)
    environ = {gate.PASSWORD_VAR: PASSWORD}

    def guess(i):
        go.wait()
        backoff.attempt("10.0.0.1" if i % 2 else f"10.1.0.{i}", "guess", environ)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlapped == []
    assert len(checked) == 1 + 8  # one of the shared address's eight, and each other address's one


@pytest.fixture
def gated_app(monkeypatch, tmp_path):
    """new_session(password) -> an AppTest session of the password-gated app that has entered password.
    Each is a new session of one server (a reload), from one address; the back-off's waits are long."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LIVEPROP_STORE", str(tmp_path / "runs" / "liveprop.db"))
    monkeypatch.setenv(gate.PASSWORD_VAR, PASSWORD)
    for name in ("WRONG_TRY_S", "MAX_WAIT_S"):
        monkeypatch.setattr(gate, name, 3600.0)  # no wait ends during the test
    st.cache_resource.clear()  # a new server's back-off
    # AppTest's stand-in runtime has no client address: every session comes from this one
    monkeypatch.setattr(type(st.context), "ip_address", property(lambda _: "203.0.113.7"))

    def new_session(password):
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
        at.run()
        at.text_input[0].input(password)
        at.button[0].click().run()
        assert not at.exception, at.exception
        return at

    yield new_session
    st.cache_resource.clear()


def test_a_reload_loop_gets_one_password_checked(gated_app, monkeypatch):
    checked = []
    real = gate.unlocks
    monkeypatch.setattr(gate, "unlocks", lambda attempt, environ: checked.append(attempt) or real(attempt, environ))
    first = gated_app("guess 0")
    assert first.error[0].value == "Wrong password. The next try can be made in 3600 s."
    for i in range(1, 4):  # reload, guess again
        again = gated_app(f"guess {i}")
        assert again.error[0].value.startswith("Too many wrong tries. The next try can be made in ")
        assert "lp_unlocked" not in again.session_state
    right = gated_app(PASSWORD)
    assert "lp_unlocked" not in right.session_state and right.error[0].value.startswith("Too many wrong tries.")
    assert checked == ["guess 0"]


# ---------------------------------------------------------------------------------------------
# the real servers, with the password set


def streamlit_environ(pid: int) -> dict:
    """The environment of the Streamlit server that `python -m dashboard` (pid) started."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if b"streamlit" in Path(f"/proc/{child}/cmdline").read_bytes():
            raw = Path(f"/proc/{child}/environ").read_bytes()
            return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    raise AssertionError("no Streamlit child")


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    """`python -m dashboard` on loopback with $LIVEPROP_PASSWORD and --data-root, a run in its store;
    started once for the tests below (neither changes what the other checks)."""
    tmp_path = tmp_path_factory.mktemp("protected")
    store = str(tmp_path / "runs" / "liveprop.db")
    engine.Store(store).create_run("secretrun1", vars(engine.RunConfig(mode="manual")), total_steps=10)
    root = tmp_path / "data"
    root.mkdir()
    env = {**without_password(tmp_path), gate.PASSWORD_VAR: PASSWORD}
    env.pop("LIVEPROP_VISDOM_USERNAME", None)
    with dashboard_process(env, "--data-root", str(root)) as (proc, out, _port, _vport):
        url = out.wait_for(r"Liveprop dashboard: (http://\S+)", 90).group(1)
        visdom = out.wait_for(r"Visdom:\s+(http://\S+)\s+\(user liveprop\)", 10).group(1)
        out.wait_for(re.escape(f"Runs may use paths under {root.resolve()} only"), 10)
        yield {"url": url, "visdom": visdom, "root": root, "environ": streamlit_environ(proc.pid), "run": "secretrun1"}


def test_the_streamlit_server_gets_a_hash_the_visdom_login_and_the_data_root(protected):
    environ = protected["environ"]
    assert not any(PASSWORD in value for value in environ.values())  # nor in any run's, which inherit it
    assert gate.unlocks(PASSWORD, {gate.HASH_VAR: environ[gate.HASH_VAR]})
    assert environ["LIVEPROP_DATA_ROOT"] == str(protected["root"].resolve())
    # a run launched from the page inherits this environment: its Visdom sink logs in with it
    sink = Client(settings_for(engine.RunConfig(), "r1", environ))
    pane = {"eid": "liveprop_r1", "win": "run", "data": [{"type": "text", "content": "step 7: loss 0.125"}]}
    sink.post("events", pane)
    assert "loss 0.125" in sink.post("win_data", {"eid": "liveprop_r1", "win": "run"})
    # and nothing of it reaches anyone without the login
    anonymous = requests.Session()
    anonymous.trust_env = False
    read = anonymous.post(protected["visdom"] + "/win_data", json={"eid": "liveprop_r1", "win": "run"}, timeout=5)
    assert read.status_code == 400 and "loss 0.125" not in read.text
    assert anonymous.get(protected["visdom"] + "/env/liveprop_r1", timeout=5).status_code == 400
    page = anonymous.get(protected["visdom"] + "/", timeout=5)
    assert page.status_code == 200 and "inputPassword" in page.text and "liveprop_r1" not in page.text


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")
def test_the_page_shows_nothing_but_the_password_form_until_it_is_entered(protected):
    with browser_page(1200, 700, 30_000, failure="exposed_failure.png") as page:

        def shows_the_form_only():
            page.get_by_role("button", name="Open the dashboard").wait_for()
            page.get_by_label("Password", exact=True).wait_for()
            settle(page)
            assert page.get_by_test_id("stSidebar").count() == 0
            assert protected["run"] not in page.content()
            assert page.get_by_role("button", name="Start", exact=True).count() == 0

        def enter(password):
            page.get_by_label("Password", exact=True).fill(password)
            page.get_by_role("button", name="Open the dashboard").click()

        page.goto(protected["url"] + "/runs")  # a page's own address, straight away
        shows_the_form_only()
        page.screenshot(path=str(ARTIFACTS / "exposed_password.png"))

        enter("wrong")
        page.get_by_text("Wrong password.").wait_for()
        settle(page)
        assert page.get_by_test_id("stAlert").count() == 1
        page.screenshot(path=str(ARTIFACTS / "exposed_wrong_password.png"))
        shows_the_form_only()
        page.wait_for_timeout(gate.WRONG_TRY_S * 1000 + 500)  # this address's wait after its wrong try

        enter(PASSWORD)
        page.get_by_test_id("stSidebar").wait_for()
        page.get_by_role("heading", name="Runs").wait_for()
        page.locator("[role=gridcell]", has_text=protected["run"]).first.wait_for(state="attached")

        page.reload()  # a new session: asks again
        shows_the_form_only()
        enter(PASSWORD)
        page.get_by_role("heading", name="Runs").wait_for()
