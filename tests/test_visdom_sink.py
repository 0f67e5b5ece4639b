"""The Visdom sink against real Visdom servers on loopback (engine.sinks.visdom.server), a server that
is down, killed and restarted, a socket that accepts and never answers, and a login server.

Points are read back with the visdom client's get_window_data. Sinks are driven either by a
real training run (run_inprocess) or by hand-made Flush batches. The tests assert structure (the
training thread's calls return while the sink's thread hangs in a request; every point arrives),
not elapsed time, and poll with generous deadlines: the machine may be small and busy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import visdom

from dashboard.serve import CHROMIUM, CHROMIUM_ARGS
from engine.__main__ import add_config_flags, config_from_args
from engine.build import assemble as build
from engine.config.fields import RunConfig
from engine.config.reasons import validate
from engine.errors import ConfigError
from engine.loop.telemetry import Flush, Telemetry
from engine.loop.trainer import Trainer
from engine.runs import api as runs
from engine.sinks import visdom as vsink
from engine.sinks.visdom import server as visdom_server
from engine.sinks.visdom import sink as sink_module
from engine.sinks.visdom.client import Client
from engine.sinks.visdom.windows import LineWindow, Series
from engine.store.db import Store

ASSETS = Path(os.environ.get("LIVEPROP_VISDOM_ASSETS", visdom_server.DEFAULT_ASSETS))
ARTIFACTS = Path(os.environ.get("LIVEPROP_ARTIFACTS", Path(__file__).parent / "artifacts"))
PASSWORD = "pw-7f3a9c1e-never-stored"


# ---------------------------------------------------------------------------------------------
# servers and helpers


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One healthy server for the tests that do not stop it (each test uses its own env)."""
    s = visdom_server.start(port=0, env_path=tmp_path_factory.mktemp("visdom-env"), assets_dir=ASSETS)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def login_server(tmp_path_factory):
    s = visdom_server.start(port=0, env_path=tmp_path_factory.mktemp("visdom-login"), login=("alice", PASSWORD))
    yield s
    s.stop()


@pytest.fixture
def fast_retry(monkeypatch):
    monkeypatch.setattr(sink_module, "MAX_BACKOFF_S", 0.5)


@pytest.fixture
def sinks():
    """make(url, **kw) -> a VisdomSink with a short timeout; all are closed afterwards."""
    made = []

    def make(url, env=None, timeout=1.0, username="", password="", **kw):
        s = vsink.VisdomSink(
            vsink.VisdomSettings(
                url=url,
                env=env or f"test-{len(made)}-{time.time_ns()}",
                timeout=timeout,
                username=username,
                password=password,
            ),
            run_id="r1",
            config=kw.pop("config", {"mode": "manual"}),
            interval=0.1,
            **kw,
        )
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


class StalledServer:
    """Accepts TCP connections on loopback and never answers a byte."""

    def __init__(self, port=0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for c in self.conns:
            c.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def feed(sink, start, n, per_flush=25):
    """Flushes of losses for steps start .. start+n-1; the loss at step s is 1000 / (1 + s)."""
    for a in range(start, start + n, per_flush):
        b = min(a + per_flush, start + n)
        sink.on_flush(Flush(a, [1000.0 / (1 + s) for s in range(a, b)]))


def viz(server, env, **kw):
    return visdom.Visdom(
        server="http://127.0.0.1", port=server.port, env=env, raise_exceptions=True, use_incoming_socket=False, **kw
    )


def window(server, env, win, **kw):
    return json.loads(viz(server, env, **kw).get_window_data(win, env=env))


def loss_trace(server, env, **kw):
    return window(server, env, "loss", **kw)["content"]["data"][0]


def wait_for(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def delivered(sink):
    return lambda: sink.connected and sink.buffered == 0 and not sink._changed()


# ---------------------------------------------------------------------------------------------
# what is sent


def test_a_real_run_arrives_in_order_one_request_per_window_per_flush(server, small, store, run_inprocess, monkeypatch):
    posts = []
    real_post = Client.post
    monkeypatch.setattr(
        Client, "post", lambda self, ep, msg: (posts.append((ep, msg.get("win"))), real_post(self, ep, msg))[1]
    )
    # init randn: the raw net with biases b1, b2 (the default, the lecture's init, has none)
    cfg = small(
        steps=300, flush_every=25, telemetry_every=10, visdom=server.url, name="<script>x</script>", init="randn"
    )
    run_id, status = run_inprocess(cfg, store)
    assert status == "finished"
    env = vsink.env_name(cfg.name, run_id)
    assert "script" in env and "<" not in env

    s = Store(store)
    losses = s.scalars(run_id, "loss")
    grad_w1 = s.scalars(run_id, "grad_norm/w1")
    events = [e["data"] for e in s.events(run_id) if e["kind"] == "visdom"]
    s.close()
    trace = loss_trace(server, env)
    assert trace["x"] == list(range(300)) == [step for step, _ in losses]
    assert trace["y"] == [v for _, v in losses]
    grad = window(server, env, "grad_norm")["content"]["data"]
    assert [t["name"] for t in grad] == ["w1", "b1", "w2", "b2"]
    assert list(zip(grad[0]["x"], grad[0]["y"])) == grad_w1
    for win in ("lr", "update_ratio", "hist_weight", "hist_grad"):
        assert window(server, env, win)["content"]["data"]
    assert events[-1]["status"] == "connected" and events[-1]["env"] == env

    # the text pane: HTML-escaped config and the final status
    text = window(server, env, "run")["content"]
    assert "&lt;script&gt;x&lt;/script&gt;" in text and "<script>" not in text
    assert "finished" in text

    # never one request per step: at most one per window per flush (12 flushes), plus probes
    per_window = Counter(win for endpoint, win in posts if endpoint != "win_exists")
    assert 1 <= per_window["loss"] <= 300 // 25 + 1


def test_a_long_series_stays_bounded_and_keeps_its_spikes(server, sinks):
    sink = sinks(server.url)
    flushes = [Flush(a, [1.0 + (a + i) * 1e-4 for i in range(200)]) for a in range(0, 20_000, 200)]
    flushes[61].losses[145] = 99.0  # one spike, at step 12345
    for f in flushes:
        sink.on_flush(f)
    assert sink.close() == "connected"
    trace = loss_trace(server, sink.s.env)
    assert 250 <= len(trace["x"]) <= 1000  # 2000 points per window, 2 traces
    assert trace["x"] == sorted(trace["x"]) and trace["x"][0] == 0 and trace["x"][-1] == 19_999
    assert 99.0 in trace["y"] and trace["x"][trace["y"].index(99.0)] == 12_345


# ---------------------------------------------------------------------------------------------
# the server down, killed, stalled


def test_server_down_at_launch_then_up_gets_the_buffered_points(servers, sinks, fast_retry):
    port = free_port()
    sink = sinks(f"http://127.0.0.1:{port}")
    feed(sink, 0, 200)
    wait_for(lambda: sink.error and "refused" in sink.error and sink.buffered == 200, what="buffering")
    assert sink.status().startswith("buffering 200: ") and sink.status_info()["state"] == "buffering"
    server = servers(port)
    wait_for(delivered(sink), what="delivery")
    assert sink.status() == "connected"
    feed(sink, 200, 100)
    sink.close()
    assert loss_trace(server, sink.s.env)["x"] == list(range(300))


def test_server_killed_and_restarted_loses_nothing(servers, sinks, fast_retry):
    server = servers()
    sink = sinks(server.url)
    feed(sink, 0, 100)
    wait_for(delivered(sink), what="first delivery")
    os.killpg(server.pid, signal.SIGKILL)
    server.stop()
    feed(sink, 100, 100)
    wait_for(lambda: not sink.connected and sink.buffered == 100, what="buffering while down")
    server = servers(server.port)  # restarted empty, same port
    wait_for(delivered(sink), what="delivery after the restart")
    feed(sink, 200, 50)
    sink.close()
    trace = loss_trace(server, sink.s.env)
    assert trace["x"] == list(range(250))
    assert trace["y"] == [1000.0 / (1 + s) for s in range(250)]


def test_a_stalled_server_never_delays_training_and_gets_the_points_later(
    servers, sinks, small, fast_retry, monkeypatch
):
    requests_done = 0  # by the sink's thread, ended by an answer or a timeout
    in_request = threading.Event()
    real_post = Client.post

    def post(self, endpoint, msg):
        nonlocal requests_done
        in_request.set()
        try:
            return real_post(self, endpoint, msg)
        finally:
            in_request.clear()
            requests_done += 1

    monkeypatch.setattr(Client, "post", post)
    stall = StalledServer()
    # every step stays below the points bound, and the queue holds every flush of the stall however
    # long the loaded machine keeps the sink's thread from draining it (a full queue drops, by design)
    sink = sinks(stall.url, timeout=1.0, max_points=200_000, queue_size=1_000_000)
    p = build.prepare(small(steps=100_000, flush_every=10, telemetry_every=5))
    mode, batches = build.build(p)
    tel = Telemetry(every=5, bins=8, flush_every=10, flush_seconds=0.5, device=p.device, batch_size=p.cfg.batch_size)
    trainer = Trainer(mode, batches, tel, p.total_steps)
    overlapped = 0  # on_flush calls that began and returned inside one hanging request

    def on_flush(flush):
        nonlocal overlapped
        before = in_request.is_set(), requests_done
        sink.on_flush(flush)
        overlapped += before == (True, requests_done) and in_request.is_set()

    trainer.add_callback("on_flush", on_flush)
    # an on_flush that waited for the sink's thread would never return while that thread hangs
    deadline = time.monotonic() + 60
    while overlapped < 20 or "did not answer within 1 s" not in (sink.error or ""):
        assert time.monotonic() < deadline, f"{overlapped} flushes returned while a request hung"
        trainer.run(max_steps=50)
    steps = trainer.step
    assert stall.conns and not sink.connected and sink.dropped == 0
    wait_for(lambda: sink.lines["loss"].pending == steps, what="every loss buffered")

    stall.close()
    server = servers(stall.port)  # the server recovers on that port
    wait_for(delivered(sink), what="delivery after the stall")
    sink.close()
    assert loss_trace(server, sink.s.env)["x"] == list(range(steps))


def test_a_full_queue_drops_points_and_never_waits(sinks, monkeypatch):
    """The sink's thread held inside a request for as long as the test likes: the training thread's
    calls still return at once, and what the bounded queue cannot take is counted as dropped."""
    held, release = threading.Event(), threading.Event()

    def post(self, endpoint, msg):
        held.set()
        release.wait(60)
        raise requests.ReadTimeout("held by the test")

    monkeypatch.setattr(Client, "post", post)
    sink = sinks("http://127.0.0.1:9", queue_size=2)
    try:
        wait_for(held.is_set, what="the sink's thread in a request")  # it sends the text pane first
        trainer_thread = threading.Thread(target=lambda: (feed(sink, 0, 250), sink.on_status("finished")))
        trainer_thread.start()  # ten flushes into a queue of two
        trainer_thread.join(30)
        assert not trainer_thread.is_alive(), "on_flush or on_status waited for the sink's thread"
        assert sink.q.full() and sink.dropped == 8 * 25
    finally:
        release.set()
    wait_for(lambda: sink.q.empty() and sink.buffered == 50, what="the two queued flushes ingested")
    assert sink.status().startswith("dropped 200: ") and "did not answer" in sink.status()


def test_close_on_a_stalled_server_stops_at_the_first_timeout_and_spools(sinks, tmp_path):
    stall = StalledServer()
    spool = tmp_path / "r1.jsonl"
    sink = sinks(stall.url, timeout=1.0, spool=spool)
    feed(sink, 0, 50)
    wait_for(lambda: sink.error, what="a timed-out request")
    t = time.monotonic()
    assert sink.close("finished").startswith("buffering 50: ")
    # the request in flight and the final one time out, nothing more; close gives up at 3 * 1 + 5 s
    assert not sink._thread.is_alive() and time.monotonic() - t < 3 * sink.s.timeout + 5
    assert json.loads(spool.read_text().splitlines()[0])["run"] == "r1"
    stall.close()


# ---------------------------------------------------------------------------------------------
# the mirror, against a fake server that applies its messages


def apply(server: dict, endpoint: str, msg: dict):
    """What Visdom does with the sink's two kinds of message, per trace name: (x, y) lists."""
    if endpoint == "events":  # replace the window
        server.clear()
        server.update((t["name"], (t["x"], t["y"])) for t in msg["data"])
        return
    assert endpoint == "update" and msg["append"]
    for t in msg["data"]:
        x, y = server.setdefault(t["name"], ([], []))
        assert not x or not t["x"] or t["x"][0] > x[-1]  # only new points
        x += t["x"]
        y += t["y"]


def test_the_mirror_appends_tails_and_replaces_only_after_a_compaction():
    rng = random.Random(0)
    w = LineWindow("loss", "loss")
    server, kinds, step, end = {}, Counter(), 0, 50_000
    while step < end:
        n = rng.choice([1, 7, 25, 400, 2000])
        xs = list(range(step, min(step + n, end)))
        ys = [
            1e6 if s == 31_337 else None if 20_000 <= s < 25_000 else float("nan") if s % 997 == 5 else 1.0 / (1 + s)
            for s in xs
        ]
        w.add("loss", xs, ys, 500)
        w.add("smoothed", xs, [1.0] * len(xs), 500)
        step += len(xs)
        w.final = step == end
        if w.changed() and (rng.random() < 0.5 or w.final):
            endpoint, msg = w.message("env")
            apply(server, endpoint, msg)
            kinds[endpoint] += 1
            w.delivered()
            for name, s in w.traces.items():  # the server's copy is the mirror's
                assert server[name] == s.points(0, s.ready(w.final))
            assert sum(len(x) for x, _ in server.values()) <= 500
    loss = w.traces["loss"]
    assert loss.sent == len(loss.b) and not w.changed()
    assert 1 <= kinds["events"] <= math.log2(loss.b.width) < kinds["update"]
    x, y = server["loss"]
    assert x[0] == 0 and x[-1] == end - 1 and y[x.index(31_337)] == 1e6  # the spike, where it was
    assert None in y and all(v is None or math.isfinite(v) for v in y)  # gaps, and JSON without NaN
    again = Series.from_json(json.loads(json.dumps(loss.to_json())))  # the spool's round trip
    assert again.b.width == loss.b.width and again.points(0, len(again.b)) == (x, y)


def test_a_log_window_labels_a_few_plain_ticks_over_what_it_shows():
    """An lr that moves within one decade: plotly's own log labels there are every mantissa, piled up."""
    w = LineWindow("lr", "learning rate", "log")
    w.add("lr", list(range(100)), [1e-3 * (1 + 0.05 * s) for s in range(100)], 500)  # 0.001 to 0.00595
    axis = w.message("env")[1]["layout"]["yaxis"]
    assert axis["ticktext"] == ["0.001", "0.002", "0.005"]
    assert axis["tickvals"] == pytest.approx([1e-3, 2e-3, 5e-3])
    w.add("lr", [100, 101], [1e-7, None], 500)  # a scheduled drop: four decades, powers of ten only
    assert w.message("env")[1]["layout"]["yaxis"]["ticktext"] == ["1e-7", "1e-6", "1e-5", "1e-4", "0.001"]
    linear = LineWindow("norms", "gradient norm").message("env")[1]["layout"]["yaxis"]
    assert "tickvals" not in linear


# ---------------------------------------------------------------------------------------------
# login, secrets, settings


def test_login_right_and_wrong_credentials(login_server, sinks, fast_retry):
    good = sinks(login_server.url, username="alice", password=PASSWORD)
    bad = sinks(login_server.url, username="alice", password="wrong")
    nobody = sinks(login_server.url)
    for s in (good, bad, nobody):
        feed(s, 0, 50)
    wait_for(delivered(good), what="delivery with the right password")
    wait_for(lambda: bad.error and nobody.error, what="refusals")
    assert bad.status() == "buffering 50: login refused for user 'alice': wrong user name or password"
    assert "requires a login" in nobody.status()
    assert bad.close().startswith("buffering 50")  # no crash, and no hang at close:
    assert not bad._thread.is_alive()  # its thread ended; close did not give up on it
    good.close()
    assert loss_trace(login_server, good.s.env, username="alice", password=PASSWORD)["x"] == list(range(50))


def test_the_password_never_reaches_the_store_the_log_or_the_pane(login_server, small, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEPROP_VISDOM_PASSWORD", PASSWORD)
    monkeypatch.setenv("LIVEPROP_VISDOM_USERNAME", "alice")
    store = str(tmp_path / "runs" / "liveprop.db")
    run_id = runs.launch(small(steps=200, flush_every=20, visdom=login_server.url), store)  # a real worker
    wait_for(lambda: runs.get_run(run_id, store)["status"] not in ("queued", "running"), timeout=90, what="the worker")
    s = Store(store)
    assert s.get_run(run_id)["status"] == "finished"
    assert [e["data"]["status"] for e in s.events(run_id) if e["kind"] == "visdom"][-1] == "connected"
    s.close()
    env = vsink.env_name("", run_id)
    pane = json.dumps(window(login_server, env, "run", username="alice", password=PASSWORD))
    assert run_id in pane and PASSWORD not in pane
    secret, digest = PASSWORD.encode(), hashlib.sha256(PASSWORD.encode()).hexdigest().encode()
    files = list(Path(tmp_path / "runs").rglob("*"))
    assert any(f.name.endswith(".log") for f in files) and any(f.name.endswith(".db") for f in files)
    for f in files:
        if f.is_file():
            data = f.read_bytes()
            assert secret not in data and digest not in data, f


def test_a_run_the_dashboard_launches_logs_in_with_no_password_in_its_environment(
    login_server, small, tmp_path, monkeypatch
):
    from dashboard import __main__ as dashboard_main

    env = dashboard_main.streamlit_env(login_server, ("alice", PASSWORD), None)  # Streamlit's: its runs inherit it
    assert not any(PASSWORD in value for value in env.values())
    monkeypatch.delenv("LIVEPROP_VISDOM_PASSWORD", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = str(tmp_path / "runs" / "liveprop.db")
    run_id = runs.launch(small(steps=10**6, pace=50, flush_every=10), store)  # a real worker, until stopped
    wait_for(lambda: runs.get_run(run_id, store)["pid"], timeout=90, what="the worker")
    environ = Path(f"/proc/{runs.get_run(run_id, store)['pid']}/environ").read_bytes()
    assert b"LIVEPROP_VISDOM_PASSWORD_SHA256=" in environ and PASSWORD.encode() not in environ

    def visdom_status():
        s = Store(store)
        try:
            return [e["data"]["status"] for e in s.events(run_id) if e["kind"] == "visdom"][-1:]
        finally:
            s.close()

    wait_for(lambda: visdom_status() == ["connected"], timeout=60, what="the sink's login")
    runs.stop(run_id, store)
    wait_for(lambda: runs.get_run(run_id, store)["status"] == "stopped", timeout=60, what="the stop")
    assert run_id in json.dumps(
        window(login_server, vsink.env_name("", run_id), "run", username="alice", password=PASSWORD)
    )


def test_settings_from_flags_config_and_environment():
    p = argparse.ArgumentParser()
    add_config_flags(p)
    args = lambda *a: config_from_args(p.parse_args([*a, "--config", "", "--name", "n"]))  # noqa: E731
    env = {"LIVEPROP_VISDOM_URL": "http://h:9000", "LIVEPROP_VISDOM_PASSWORD": "pw", "LIVEPROP_VISDOM_USERNAME": "bob"}
    assert vsink.settings_for(RunConfig(), "r", {}) is None  # off by default
    s = vsink.settings_for(RunConfig(name="n"), "r", env)
    assert (s.endpoint, s.env, s.username, s.password) == ("http://h:9000", "liveprop_n-r", "bob", "pw")
    assert "pw" not in repr(s)
    assert vsink.settings_for(args("--no-visdom"), "r", env) is None
    s = vsink.settings_for(
        args("--visdom", "http://x:1", "--visdom-port", "2", "--visdom-base-url", "vis", "--visdom-env", "e"), "r", env
    )
    assert (s.endpoint, s.env) == ("http://x:2/vis", "e")
    with pytest.raises(ConfigError) as e:
        validate(RunConfig(visdom="http://bob:hunter2@h:1"))
    assert "hunter2" not in str(e.value) and "LIVEPROP_VISDOM_PASSWORD" in str(e.value)
    with pytest.raises(ConfigError, match="not a server URL"):
        validate(RunConfig(visdom="ftp://h"))


def test_the_request_timeout_comes_from_the_flag_the_config_file_or_the_environment(tmp_path):
    p = argparse.ArgumentParser()
    add_config_flags(p)
    config = tmp_path / "run.toml"
    config.write_text("visdom_timeout = 0.25\n")
    on = {"LIVEPROP_VISDOM_URL": "http://h:9000"}
    assert vsink.settings_for(RunConfig(), "r", on).timeout == vsink.VisdomSettings.timeout  # the default
    assert vsink.settings_for(RunConfig(), "r", {**on, "LIVEPROP_VISDOM_TIMEOUT": "12.5"}).timeout == 12.5
    from_file = config_from_args(p.parse_args(["--config", str(config)]))
    assert vsink.settings_for(from_file, "r", {**on, "LIVEPROP_VISDOM_TIMEOUT": "12.5"}).timeout == 0.25
    flag = config_from_args(p.parse_args(["--config", str(config), "--visdom-timeout", "40"]))
    s = vsink.settings_for(flag, "r", on)
    assert s.timeout == 40.0 and Client(s).timeout == (3.0, 40.0)  # (connect, read) of every request
    for bad in ("soon", "0", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match=f"^LIVEPROP_VISDOM_TIMEOUT: '{bad}' is not a number of seconds above 0$"):
            vsink.settings_for(RunConfig(), "r", {**on, "LIVEPROP_VISDOM_TIMEOUT": bad})
    with pytest.raises(ConfigError, match="visdom_timeout"):
        validate(RunConfig(visdom_timeout=-1.0))


def test_an_unreachable_server_at_the_end_spools_and_replay_delivers(servers, sinks, tmp_path):
    port = free_port()
    spool = tmp_path / "visdom" / "r1.jsonl"
    sink = sinks(f"http://127.0.0.1:{port}", env="spooled", spool=spool)
    feed(sink, 0, 120)
    assert sink.close("finished").startswith("buffering 120")
    lines = [json.loads(line) for line in spool.read_text().splitlines()]
    assert lines[0] == {"spool": sink_module.SPOOL_VERSION, "env": "spooled", "run": "r1"}
    server = servers(port)
    assert vsink.replay(str(spool), vsink.VisdomSettings(url=server.url)) == "connected"
    assert loss_trace(server, "spooled")["x"] == list(range(120))
    assert "finished" in window(server, "spooled", "run")["content"]
    assert not spool.exists()


# ---------------------------------------------------------------------------------------------
# the page, in a real browser


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")
@pytest.mark.skipif(
    not (ASSETS / "COMPLETE").is_file(), reason=f"no Visdom assets in {ASSETS}; run python scripts/visdom_assets.py"
)
def test_chromium_shows_the_loss_window(server, small, store, run_inprocess):
    from playwright.sync_api import sync_playwright

    cfg = small(steps=400, flush_every=20, telemetry_every=20, visdom=server.url, name="screenshot")
    run_id, status = run_inprocess(cfg, store)
    assert status == "finished"
    bad = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda e: bad.append(f"page error {e}"))
            page.goto(f"{server.url}/env/{vsink.env_name(cfg.name, run_id)}", wait_until="load")
            page.wait_for_selector("text=loss (raw and smoothed)", timeout=20_000)
            lines = page.wait_for_selector(".main-svg .scatterlayer .trace path.js-line", timeout=20_000)
            assert len(lines.get_attribute("d")) > 100
            page.wait_for_selector(".main-svg .barlayer", timeout=20_000)  # the histograms
            page.wait_for_timeout(800)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / ".gitignore").write_text("*\n")
            page.screenshot(path=str(ARTIFACTS / "visdom_sink.png"), full_page=True)
        finally:
            browser.close()
    assert bad == []
