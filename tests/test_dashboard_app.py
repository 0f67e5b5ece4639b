"""Widget logic with Streamlit's AppTest: disabled controls and their reasons, validation before
launch, and the calls the buttons make. engine.launch is replaced by a recorder (no real run)."""

import types
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import engine
from engine.store.db import Store

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
# run ids have a fixed shape (engine.is_run_id): the dashboard ignores any other ?run=
R1, A, B, DIV = "20260101-000000-0000e1", "20260101-000000-00000a", "20260101-000000-00000b", "20260101-000000-000d1f"


def fake_id(n: int) -> str:
    return f"20260101-000000-{n:06x}"


@pytest.fixture
def launched(monkeypatch):
    calls = []

    def fake_launch(cfg, store=None):
        engine.prepare(cfg)  # the real one validates first, so does the fake
        calls.append(cfg)
        return fake_id(len(calls))  # a run id's shape, as engine.launch gives

    monkeypatch.setattr(engine, "launch", fake_launch)
    return calls


@pytest.fixture
def app(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    monkeypatch.delenv("LIVEPROP_VISDOM_URL", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def shown(elements) -> str:
    """What a person reads in these elements: their markdown with the escapes removed."""
    return " ".join(e.value.replace("\\", "") for e in elements)


def captions(at):
    return " ".join(c.value for c in at.caption)


def button(at, key):
    return at.button(key=key)


def test_manual_mode_disables_the_optimizer_and_says_why(app):
    assert app.sidebar.radio(key="cfg_mode").value == "manual"
    assert app.sidebar.selectbox(key="cfg_optimizer").disabled
    assert app.sidebar.number_input(key="cfg_momentum").disabled
    assert "updates the weights by hand" in captions(app)
    assert not button(app, "btn_start").disabled
    assert "Ready: manual" in captions(app)


def test_optim_mode_enables_the_optimizer_and_its_knobs(app):
    app.sidebar.radio(key="cfg_mode").set_value("optim").run()
    assert not app.sidebar.selectbox(key="cfg_optimizer").disabled
    assert app.sidebar.number_input(key="cfg_lr").value == pytest.approx(1e-4)  # the lecture's Adam rate
    assert not app.sidebar.number_input(key="cfg_beta1").disabled
    assert app.sidebar.number_input(key="cfg_momentum").disabled  # Adam has none
    app.sidebar.selectbox(key="cfg_optimizer").set_value("sgd").run()
    assert not app.sidebar.number_input(key="cfg_momentum").disabled
    assert app.sidebar.number_input(key="cfg_beta1").disabled


def test_bad_combination_is_refused_with_the_engines_message(app, launched):
    app.sidebar.selectbox(key="cfg_arch").set_value("cnn").run()
    errors = shown(app.error)
    assert "raw weight tensors" in errors and "two_layer or mlp" in errors
    assert button(app, "btn_start").disabled and button(app, "btn_compare").disabled
    app.sidebar.number_input(key="cfg_lr").set_value(-1.0).run()
    app.sidebar.selectbox(key="cfg_arch").set_value("two_layer").run()
    assert "learning rate must be a positive number" in shown(app.error)
    assert launched == []


def test_start_launches_the_sidebar_config(app, launched):
    app.sidebar.radio(key="cfg_mode").set_value("optim").run()
    app.sidebar.selectbox(key="cfg_arch").set_value("mlp").run()
    app.sidebar.selectbox(key="cfg_optimizer").set_value("sgd").run()
    app.sidebar.number_input(key="cfg_momentum").set_value(0.9).run()
    app.sidebar.number_input(key="cfg_lr").set_value(0.003).run()
    app.sidebar.number_input(key="cfg_steps").set_value(40).run()
    button(app, "btn_start").click().run()
    assert not app.exception, app.exception
    (cfg,) = launched
    assert (cfg.mode, cfg.arch, cfg.optimizer, cfg.momentum, cfg.lr, cfg.steps) == (
        "optim",
        "mlp",
        "sgd",
        0.9,
        0.003,
        40,
    )
    assert app.session_state.lp_run == fake_id(1) and app.query_params["run"] == fake_id(1)
    assert cfg.visdom == "off"  # no Visdom started for this test


def test_visdom_target_is_sent_with_the_run(store, monkeypatch, launched):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    monkeypatch.setenv("LIVEPROP_VISDOM_URL", "http://127.0.0.1:8123")  # what python -m dashboard sets
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert at.sidebar.checkbox(key="visdom_on").value
    at.sidebar.text_input(key="visdom_env").input("lecture").run()
    button(at, "btn_start").click().run()
    assert (launched[0].visdom, launched[0].visdom_env) == ("http://127.0.0.1:8123", "lecture")


def test_lr_slider_and_exact_entry_agree(app):
    app.sidebar.select_slider(key="lr_log").set_value(2e-3).run()
    assert app.sidebar.number_input(key="cfg_lr").value == pytest.approx(2e-3)
    app.sidebar.number_input(key="cfg_lr").set_value(4.5e-5).run()
    assert app.sidebar.select_slider(key="lr_log").value == pytest.approx(5e-5)


def test_compare_modes_launches_three_modes_from_one_seed(app, launched):
    app.sidebar.number_input(key="cfg_seed").set_value(11).run()
    button(app, "btn_compare").click().run()
    assert [c.mode for c in launched] == ["manual", "autograd", "custom_function"]
    assert {c.seed for c in launched} == {11}
    assert app.session_state.lp_compare == [fake_id(1), fake_id(2), fake_id(3)]


def test_compare_is_disabled_outside_the_mlp_family(app):
    app.sidebar.radio(key="cfg_mode").set_value("optim").run()
    app.sidebar.selectbox(key="cfg_arch").set_value("parallel_block").run()
    assert button(app, "btn_compare").disabled
    said = shown(app.caption)
    assert "Compare modes is off: as manual, mode 'manual' works on raw weight tensors, so it takes arch" in said
    assert "use mode nn or optim for 'parallel_block'" in said  # the setting that blocks it, named


@pytest.mark.parametrize(
    "settings, names",
    [
        ({"mode": "optim", "precision": "bf16"}, "Compare modes is off: as manual, precision bf16 applies to modes"),
        ({"mode": "nn"}, "Compare modes is off because the mode is nn:"),
    ],
)
def test_a_refused_compare_names_the_setting_that_blocks_it(app, settings, names):
    app.sidebar.radio(key="cfg_mode").set_value(settings["mode"]).run()
    if "precision" in settings:
        app.sidebar.selectbox(key="cfg_precision").set_value(settings["precision"]).run()
    assert button(app, "btn_compare").disabled and not button(app, "btn_start").disabled
    assert names in shown(app.caption)


def test_the_log_lr_slider_follows_the_exact_rate_up_to_its_bound(app):
    """1e3 in the exact field puts the slider at 1e+03, not pinned at 1e+00; its top is the field's bound."""
    from dashboard.widgets import bounds

    app.sidebar.number_input(key="cfg_lr").set_value(1e3).run()
    slider = app.sidebar.select_slider(key="lr_log")
    assert slider.value == pytest.approx(1e3)
    assert float(slider.options[-1]) == bounds("lr")["max_value"]


def test_every_number_box_starts_at_its_fields_lower_bound(app):
    """The widgets read their bounds from the field metadata: a batch size of 0 cannot be typed."""
    assert app.sidebar.number_input(key="cfg_batch_size").min == 1
    assert app.sidebar.number_input(key="cfg_depth").max == 64
    assert app.sidebar.number_input(key="cfg_seed").max is None  # 2**63 - 2: past the browser's integers


def finished_run(store_path, run_id=R1):
    s = Store(store_path)
    s.create_run(run_id, vars(engine.RunConfig(mode="autograd", lr=1e-5)), total_steps=3)
    hists = [
        types.SimpleNamespace(step=step, layer="w1", kind=kind, edges=[0.0, 0.5, 1.0], counts=[2.0, 1.0], nonfinite=0)
        for step in (0, 2)
        for kind in ("weight", "grad")
    ]
    scalars = [
        (step, key, 1e-3)
        for step in (0, 2)
        for key in (
            "grad_norm/w1",
            "update_ratio/w1",
            "gradcheck/w1",
            "weight_norm/w1",
            "lr",
            "steps_per_s",
            "mem_bytes",
        )
    ]
    s.write_flush(
        run_id,
        types.SimpleNamespace(
            pictures=[], first_step=0, losses=[3.0, 2.0, 1.5], scalars=scalars, hists=hists, events=[], last_step=2
        ),
    )
    s.set_status(run_id, "finished")
    s.close()


def test_runs_page_lists_and_deletes_with_confirmation(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    finished_run(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/runs.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    row = table.iloc[0]
    assert (row["run"], row["status"], row["mode"], row["final loss"]) == (R1, "finished", "autograd", 1.5)
    at.button(key="runs_delete").click().run()
    assert "cannot be undone" in at.warning[0].value
    assert engine.get_run(R1, store) is not None  # not before the confirmation
    at.button(key="runs_delete_yes").click().run()
    assert engine.get_run(R1, store) is None


def test_graph_and_about_pages(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/graph.py").run()
    assert not at.exception, at.exception
    assert "autograd nodes" in captions(at)
    assert at.get("graphviz_chart")
    at.switch_page("views/about.py").run()
    assert not at.exception
    assert "MyReLU" in " ".join(c.value for c in at.code)
    assert any("manual" in h.value for h in at.subheader)


def test_divergence_and_failure_banners(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    finished_run(store, DIV)
    s = Store(store)
    s.add_event(DIV, 2, "divergence", {"step": 2, "layer": "w2"})
    s.set_status(DIV, "diverged")
    s.close()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = DIV
    at.run()
    assert not at.exception, at.exception
    assert any("Diverged at step 2 in layer w2" in e.value for e in at.error)
    assert len(at.get("plotly_chart")) == 3  # the loss and the last histograms stay
    s = Store(store)
    s.set_status(DIV, "failed", "worker process 123 died (last heartbeat 9.0 s ago)")
    s.close()
    at.run()
    assert "Run failed: worker process 123 died" in shown(at.error)


def test_a_finished_run_is_shown_static_with_its_panels(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    finished_run(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = R1
    at.run()
    assert not at.exception, at.exception
    assert any("finished at step 3 / 3" in str(p.proto) for p in at.get("progress"))
    assert at.button(key="btn_pause").disabled and at.button(key="btn_stop").disabled
    for view in ("Per-layer", "Health", "Gradient check", "Gradients"):
        at.button_group(key="detail_view").set_value(view).run()
        assert not at.exception, (view, at.exception)


@pytest.mark.parametrize(
    "cfg, expect",
    [
        ('{"mode":"optim","lr":0.003,"batch_size":32,"steps":1234}', ("optim", 0.003, 32, 1234)),
        ('{"mode":"optim"}', ("optim", 1e-4, 64, 500)),  # no lr given: the lecture's rate for that mode
        ('{"mode":"warp"}', None),  # not a mode
        ('{"steps":2.9}', None),  # not a whole number
        ('{"csv_path":"/etc/passwd","dataset":"csv"}', None),  # paths never come from the address
        ("[1, 2]", None),
        ("{not json", None),
        ('{"batch_size":1e400}', None),
        ('{"mode":"![x](http://host/t.png)"}', None),  # shown as text, never as an image or a link
    ],
)
def test_settings_come_back_from_the_address_or_are_refused_in_one_line(store, monkeypatch, cfg, expect):
    """A reload keeps the settings through ?cfg=; whatever does not validate is ignored with one
    plain line, and the defaults stand."""
    monkeypatch.setenv("LIVEPROP_STORE", store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["cfg"] = cfg
    at.run()
    assert not at.exception, at.exception
    got = tuple(at.session_state[k] for k in ("cfg_mode", "cfg_lr", "cfg_batch_size", "cfg_steps"))
    errors = [e.value for e in at.error]
    if expect:
        assert got == expect and not errors
    else:
        assert got == ("manual", 1e-6, 64, 500)
        assert any(e.startswith("The settings in the address were not used") for e in errors), errors
        assert not any("](" in e or "http:" in e for e in errors), errors  # markdown escaped


def live_run(store_path, run_id, lr):
    """A run that reads as running: its worker is this process, beating now."""
    import os
    import time

    s = Store(store_path)
    s.create_run(run_id, vars(engine.RunConfig(mode="autograd", lr=lr)), total_steps=1000)
    s.update_run(run_id, status="running", pid=os.getpid(), heartbeat=time.time() + 3600)
    s.close()


def lr_box(at, run_id):
    return at.number_input(key=f"live_lr_{run_id}")


def test_the_live_lr_box_shows_the_watched_runs_current_rate(store, monkeypatch):
    """Not a previous run's rate; and a change made elsewhere (the CLI) shows at the next refresh."""
    monkeypatch.setenv("LIVEPROP_STORE", store)
    live_run(store, A, 5e-7)
    live_run(store, B, 1e-6)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = A
    at.run()
    assert lr_box(at, A).value == 5e-7
    at.session_state["lp_run"] = B
    at.run()
    assert lr_box(at, B).value == 1e-6
    s = Store(store)
    s.add_event(B, 10, "lr_change", {"old": 1e-6, "new": 3e-6})  # as `python -m engine set-lr b 3e-6` leaves it
    s.close()
    at.run()
    assert lr_box(at, B).value == 3e-6
    assert "lr 3e-06" in " ".join(m.value for m in at.markdown)
    at.switch_page("views/runs.py").run()  # Streamlit forgets the state of a widget that is not drawn
    at.switch_page("views/train.py").run()
    assert lr_box(at, B).value == 3e-6  # the rate again, not an empty box's 0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf")])
def test_a_bad_live_lr_is_refused_at_once_in_the_panel(store, monkeypatch, bad):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    live_run(store, A, 1e-3)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = A
    at.run()
    lr_box(at, A).set_value(bad)
    at.button(key="btn_lr").click().run()
    assert "not sent: learning rate must be a positive finite number" in shown(at.error)
    s = Store(store)
    assert s.pending_control(A) == []  # nothing reached the worker
    s.close()


def test_a_control_shows_sent_then_the_workers_answer_then_clears(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    live_run(store, A, 1e-3)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = A
    at.run()
    lr_box(at, A).set_value(2e-3)
    at.button(key="btn_lr").click().run()
    assert "Learning rate 0.002: sent, waiting for the worker" in shown(at.info)
    s = Store(store)
    [c] = s.pending_control(A)
    s.ack_control(c["id"], "ok")  # what the worker's store thread does
    s.close()
    at.run()
    assert "Learning rate 0.002: done" in shown(at.success)
    at.button(key="btn_pause").click().run()
    assert "Learning rate" not in shown(at.success) and "Pause: sent" in shown(at.info)  # the old message cleared
    s = Store(store)
    [c] = s.pending_control(A)
    s.ack_control(c["id"], "ignored: pause while paused")
    s.close()
    at.run()
    assert "Pause: ignored: pause while paused" in shown(at.warning)


def test_lr_zero_in_the_sidebar_is_refused_not_replaced(app, launched):
    app.sidebar.number_input(key="cfg_lr").set_value(0.0).run()
    assert "the learning rate must be a positive number, got 0.0" in shown(app.error)
    assert button(app, "btn_start").disabled
    assert launched == []


def test_the_visdom_link_opens_the_runs_own_env(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    finished_run(store)
    s = Store(store)
    info = {
        "state": "connected",
        "status": "connected",
        "error": None,
        "url": "http://127.0.0.1:8097",
        "env": "liveprop_my run-r1",
    }
    s.add_event(R1, 3, "visdom", info)
    s.close()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = R1
    at.run()
    assert not at.exception, at.exception
    [link] = at.get("link_button")
    assert link.proto.url == "http://127.0.0.1:8097/env/liveprop_my%20run-r1"


@pytest.mark.parametrize(
    "view, says",
    [
        ("Weights", "log10 share of the layer's weights"),
        ("Gradients", "centred on 0 and narrowing"),
        ("Per-layer", "A rule of thumb: near 1e-3"),
        ("Health", "NaN and inf values counted"),
    ],
)
def test_every_panel_says_what_it_shows_and_what_healthy_looks_like(store, monkeypatch, view, says):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    finished_run(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = R1
    at.session_state["detail_view"] = view
    at.run()
    assert not at.exception, at.exception
    assert says in captions(at)


def test_panels_without_data_say_so_instead_of_drawing_empty_axes(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    live_run(store, A, 1e-3)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = A
    at.session_state["detail_view"] = "Health"
    at.run()
    assert not at.exception, at.exception
    # the layer table, throughput, memory, non-finite values, dead units
    assert shown(at.info).count("None yet") == 5 and not at.get("plotly_chart")
    assert "Memory in use" in captions(at)


def test_the_divergence_banner_gives_the_first_bad_step_the_layer_and_the_steps_after_then_recovered(
    store, monkeypatch
):
    """Diverged: the first non-finite step, the layer and how many steps ran after it, as plain text.
    A resume alone is not a recovery; finite losses after it are, and the banner says so."""

    def losses(first, values):
        flush = types.SimpleNamespace(pictures=[], first_step=first, losses=values, scalars=[], hists=[], events=[])
        flush.last_step = first + len(values) - 1
        s = Store(store)
        s.write_flush(DIV, flush)
        s.close()

    def event(step, kind, data=None, status=None):
        s = Store(store)
        s.add_event(DIV, step, kind, data or {})
        if status:
            s.update_run(DIV, status=status)
        s.close()

    monkeypatch.setenv("LIVEPROP_STORE", store)
    live_run(store, DIV, 1e3)
    nan = float("nan")
    losses(0, [3.0, 2.0, 1e30, nan, float("inf"), nan, nan])
    event(3, "divergence", {"step": 3, "layer": "0.weight", "ran_after": 3, "restored": 2})
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = DIV
    at.run()
    assert not at.exception, at.exception
    said = shown(at.error)  # the event is in, the status not yet: the run reads running for a moment
    assert "The run is pausing." in said and "The run is running" not in said, said
    event(3, "pause", status="paused")
    at.run()
    said = shown(at.error)
    assert "Diverged at step 3 in layer 0.weight, and 3 more steps ran before it was noticed" in said, said
    # the status line's step (7 steps done), the weights put back, and the histograms' step agree
    assert "paused at step 7 / 1,000" in str(at.get("progress")[0].proto)
    assert "The run is paused at step 7 with the weights of step 2 put back" in said and not at.success
    assert "histograms at step 7 show them" in said
    assert "a tenth: 100), press Set lr, then Resume" in shown(at.info)
    assert "0\\.weight" in " ".join(e.value for e in at.error)  # through pages_common.plain

    event(7, "resume", status="running")  # resumed, but no loss since: not recovered yet
    at.run()
    assert "Diverged at step 3" in shown(at.error) and not at.success
    losses(7, [1.9, 1.8])
    at.run()
    assert not at.exception, at.exception
    said = shown(at.success)
    assert said.startswith("Recovered: the run diverged at step 3 in layer 0.weight, and 3 more steps ran"), said
    assert "resumed at step 7" in said and "finite again (step 8)" in said
    assert "Diverged" not in shown(at.error)


def test_until_stopped_and_a_pace_reach_the_launched_config(app, launched):
    app.sidebar.radio(key="cfg_length").set_value("until stopped").run()
    app.sidebar.number_input(key="cfg_pace").set_value(20.0).run()
    assert "until stopped at most 20 steps/s" in captions(app)
    assert app.sidebar.number_input(key="cfg_steps").disabled and app.sidebar.number_input(key="cfg_epochs").disabled
    button(app, "btn_start").click().run()
    [cfg] = launched
    assert cfg.until_stopped and cfg.pace == 20.0


def test_watching_a_run_from_the_runs_page_keeps_the_sidebars_settings(store, monkeypatch):
    """st.switch_page dropped the sidebar widgets' state: every number came back at its minimum (lr 0,
    D_in 1) and the Train page said "Cannot start". The sidebar now puts its last values back."""
    monkeypatch.setenv("LIVEPROP_STORE", store)
    s = Store(store)
    run_id = engine.runs.api.new_run_id()
    s.create_run(run_id, vars(engine.validate(engine.RunConfig())), total_steps=5)
    s.set_status(run_id, "finished")
    s.close()
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.session_state["cfg_d_in"] = 37
    at.run()
    at.switch_page("views/runs.py").run()
    at.button(key="runs_watch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["cfg_d_in"] == 37 and at.session_state["cfg_lr"] == 1e-6
    assert at.session_state.lp_run == run_id


def test_processes_reach_the_launched_config_and_an_uneven_split_is_refused(app, launched):
    app.sidebar.number_input(key="cfg_nproc").set_value(2).run()
    assert "2 processes (torchrun)" in captions(app)
    button(app, "btn_start").click().run()
    [cfg] = launched
    assert cfg.nproc == 2
    app.sidebar.number_input(key="cfg_nproc").set_value(3).run()  # the lecture's 64 samples do not split in 3
    assert button(app, "btn_start").disabled
    assert "does not split evenly over 3 processes" in shown(app.error)


def test_compile_is_offered_for_nn_and_reaches_the_launched_config(app, launched):
    assert app.sidebar.checkbox(key="cfg_compile").disabled  # manual, the default mode: the lecture's code as written
    app.sidebar.radio(key="cfg_mode").set_value("optim").run()
    app.sidebar.checkbox(key="cfg_compile").check().run()
    button(app, "btn_start").click().run()
    [cfg] = launched
    assert cfg.compile and cfg.mode == "optim"


def compared_run(store_path, run_id, mode, losses, dtype="float32", seed=5):
    s = Store(store_path)
    s.create_run(run_id, vars(engine.RunConfig(mode=mode, dtype=dtype, seed=seed)), total_steps=len(losses))
    flush = types.SimpleNamespace(
        pictures=[], first_step=0, losses=losses, scalars=[], hists=[], events=[], last_step=len(losses) - 1
    )
    s.write_flush(run_id, flush)
    s.set_status(run_id, "finished")
    s.close()


def test_compare_ends_with_a_verdict_diffs_any_two_and_offers_float64(store, monkeypatch, launched):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    ids = [fake_id(101), fake_id(102), fake_id(103)]
    loss = [40.0, 20.0, 10.0, 5.0, 2.0, 1.0, 0.5, 0.2]
    drift = [40.0, 20.0, 10.0, 5.0 * (1 + 2e-7), 2.0 * (1 + 1e-5), 1.0 * (1 + 1e-3), 0.51, 0.22]
    for run_id, mode, values in zip(ids, ("manual", "autograd", "custom_function"), (loss, drift, loss)):
        compared_run(store, run_id, mode, values)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["lp_compare"] = ids
    at.run()
    assert not at.exception, at.exception
    verdict = shown(at.info)
    assert "The same computation: manual and custom Function are equal bit for bit at all 8 steps" in verdict
    assert "autograd departs from manual at step 3 by float32 rounding" in verdict and "as the loss nears 0" in verdict
    pair = at.multiselect(key="cmp_pair")
    assert pair.value == ["manual", "autograd"]
    pair.set_value(["manual", "custom Function"]).run()
    assert "custom Function departs nowhere from manual: equal at all 8 steps compared" in shown(at.caption)
    at.button(key="cmp_other_dtype").click().run()
    assert [(c.mode, c.dtype, c.seed) for c in launched] == [
        ("manual", "float64", 5),
        ("autograd", "float64", 5),
        ("custom_function", "float64", 5),
    ]
    assert at.session_state.lp_compare == [fake_id(1), fake_id(2), fake_id(3)]


def test_the_histogram_slider_moves_over_the_snapshots_and_names_the_weights_put_back(store, monkeypatch):
    """Snapshots at 0, 5 and 10 of a 1,000-step run: the slider offers those three steps only. The one
    taken right after a divergence says whose weights it holds."""
    monkeypatch.setenv("LIVEPROP_STORE", store)
    s = Store(store)
    s.create_run(R1, vars(engine.RunConfig(mode="optim", optimizer="sgd")), total_steps=1000)
    hists = [
        types.SimpleNamespace(step=step, layer=layer, kind="weight", edges=[0.0, 0.5, 1.0], counts=[2, 1], nonfinite=0)
        for step in (0, 5, 10)
        for layer in ("0.weight", "2.weight")
    ]
    flush = types.SimpleNamespace(
        pictures=[], first_step=0, losses=[3.0] * 11, scalars=[], hists=hists, events=[], last_step=10
    )
    s.write_flush(R1, flush)
    s.add_event(R1, 7, "divergence", {"step": 7, "layer": "0.weight", "ran_after": 2, "restored": 5})
    s.set_status(R1, "paused")
    s.close()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = R1
    at.session_state["detail_view"] = "Weights"
    at.run()
    assert not at.exception, at.exception
    slider = at.select_slider(key="at_weight")
    assert [int(o) for o in slider.options] == [0, 5, 10] and int(slider.value) == 10
    assert "nn.Sequential, the module's index" in captions(at)  # what 0.weight means
    bar = at.get("plotly_chart")[-1].proto.spec
    assert "at step 10 (the weights of step 5, put back after the divergence at step 7)" in bar


def test_the_runs_table_keeps_the_run_column_in_view_and_says_it_scrolls(store, monkeypatch):
    monkeypatch.setenv("LIVEPROP_STORE", store)
    finished_run(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/runs.py").run()
    assert not at.exception, at.exception
    assert '"pinned":true' in at.dataframe[0].proto.columns.replace(" ", "")
    assert "The table scrolls sideways" in captions(at) and "checkpoint, device" in captions(at)
