"""One judge of a config (engine/config/reasons.py): the sidebar greys out exactly the fields the engine says
do not apply, validate() refuses exactly when a blocking reason remains and says the first one, and what the
Runs page and Visdom show as "the configuration" is the one that runs.

The configs are drawn by hypothesis over every field that has a `where` or takes part in a refusal, with
values in and out of what applies (2,000 of them), plus hand-made edge cases.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard import rules
from engine.config.fields import FIELDS, KEPT_BY_FORK, PATHS, RunConfig
from engine.config.reasons import applying, reasons, validate
from engine.errors import ConfigError
from engine.loop.telemetry import Flush
from engine.sinks.visdom.windows import TextPane

CHOICES = {name: f.metadata["choices"] for name, f in FIELDS.items() if f.metadata["choices"]}


def mostly(good, *others):
    """good five times in six: a draw of many fields then often has none refused, so both answers are tested."""
    return st.sampled_from((good,) * 5 * len(others) + others)


@st.composite
def configs(draw, csv_file: str, image_dir: str):
    """A RunConfig whose every choice field, switch and the numbers that gate others vary."""
    d = {name: draw(st.sampled_from(choices)) for name, choices in CHOICES.items()}
    d["arch"] = draw(st.sampled_from(("two_layer", "mlp") * 3 + CHOICES["arch"]))
    d["init"] = draw(mostly("auto", "lecture", "randn", "torch"))
    d["precision"] = draw(mostly("fp32", "tf32", "bf16"))
    d["optimizer"] = draw(st.sampled_from(("",) + CHOICES["optimizer"]))
    for name in ("nesterov", "freeze_backbone", "compile", "fast"):
        d[name] = draw(mostly(False, True))
    for name in ("until_stopped", "bias", "shuffle"):
        d[name] = draw(st.booleans())
    d["momentum"] = draw(st.sampled_from((0.0, 0.9)))
    d["depth"] = draw(st.sampled_from((2, 3)))
    d["steps"] = draw(mostly(50, 0))
    d["epochs"] = draw(st.sampled_from((0, 2)))
    d["nproc"] = draw(mostly(1, 2))
    d["nnodes"] = draw(mostly(1, 2))
    d["rdzv_endpoint"] = draw(st.sampled_from(("", "127.0.0.1:29500")))
    d["batch_size"] = draw(mostly(64, 63))
    d["n_samples"] = draw(st.sampled_from((64, 100)))
    d["pace"] = draw(mostly(0.0, 10.0))
    d["sampler"] = draw(mostly("none", "random", "sequential", "balanced"))
    d["csv_path"] = draw(mostly(csv_file, "", "/nope/missing.csv"))
    d["csv_target"] = draw(mostly("y", ""))
    d["image_dir"] = draw(mostly(image_dir, ""))
    d["pretrained"] = draw(mostly("", "torchvision", "/nope/w.pt"))
    d["visdom"] = draw(mostly("", "off", "http://127.0.0.1:8097", "ftp://x"))
    d["lr"] = draw(mostly(1e-3, 0.0, -1.0))  # -1: a field refused on its own
    return RunConfig(**d)


def sidebar_values(cfg: RunConfig) -> dict:
    """What the sidebar holds for cfg: every field, and "length" in place of steps/epochs/until_stopped."""
    v = dataclasses.asdict(cfg)
    v["length"] = "until stopped" if cfg.until_stopped else "steps" if cfg.steps else "epochs"
    return v


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("reasons")
    (root / "d.csv").write_text("a,y\n1,0\n2,1\n")
    (root / "images").mkdir()
    return str(root / "d.csv"), str(root / "images")


def test_the_sidebar_greys_out_exactly_the_engines_reasons_and_validate_refuses_exactly_the_blocking_ones(
    files, monkeypatch
):
    monkeypatch.delenv("LIVEPROP_DATA_ROOT", raising=False)
    seen = {"greyed": 0, "refused": 0, "accepted": 0}

    @settings(
        max_examples=2000, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(configs(*files), st.booleans())
    def check(cfg, cuda):
        why = reasons(cfg, cuda)
        greyed = {name for name, r in why.items() if r.greyed}
        sidebar = set(rules.disabled_reasons(sidebar_values(cfg), cuda)) & set(FIELDS)
        assert sidebar == greyed
        blocking = [r.text for r in why.values() if r.blocks]
        seen["greyed"] += bool(greyed)
        monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)  # validate asks the machine too
        if blocking:
            seen["refused"] += 1
            with pytest.raises(ConfigError) as e:
                validate(cfg)
            assert str(e.value) == blocking[0] and "\n" not in blocking[0]
        else:
            seen["accepted"] += 1
            resolved = validate(cfg)
            assert resolved.optimizer == ("" if cfg.mode != "optim" else cfg.optimizer or "adam")

    check()
    assert min(seen.values()) > 100, seen  # the draws cover both answers, not one of them


def test_what_does_not_apply_is_ignored_unless_it_is_strict():
    """depth on two_layer is ignored (greyed, accepted); an optimizer in mode manual is refused."""
    ignored = reasons(RunConfig(depth=5), cuda=False)["depth"]
    assert ignored.greyed and not ignored.blocks
    validate(RunConfig(depth=5))
    refused = reasons(RunConfig(optimizer="sgd"), cuda=False)["optimizer"]
    assert refused.greyed and refused.blocks and "by hand" in refused.text
    with pytest.raises(ConfigError, match="an optimizer applies only to mode 'optim'"):
        validate(RunConfig(optimizer="sgd"))


def test_a_field_of_the_wrong_kind_is_its_only_reason():
    why = reasons(RunConfig(lr="fast", depth=5))
    assert list(why) == ["lr"] and why["lr"].blocks and why["lr"].text == "lr must be a number, got 'fast'"


def test_the_path_and_fork_facts_come_from_the_field_metadata():
    assert set(PATHS) == {"pretrained", "csv_path", "image_dir", "data_root", "tensorboard_dir"}
    assert PATHS["pretrained"] == ("", "torchvision") and PATHS["data_root"] == ()
    assert {"mode", "arch", "dataset", "batch_size", "seed", "csv_path"} <= set(KEPT_BY_FORK)
    assert not {"lr", "optimizer", "momentum", "steps", "name", "visdom"} & set(KEPT_BY_FORK)


def test_the_configuration_shown_is_the_one_that_runs():
    """A digits run has no d_in, n_samples or tv_model; an nn run has no optimizer knobs."""
    shown = applying(RunConfig(mode="optim", optimizer="adam", arch="mlp", dataset="digits"))
    assert not {"d_in", "d_out", "n_samples", "tv_model", "pretrained", "csv_path", "momentum", "alpha"} & set(shown)
    assert {"mode", "arch", "depth", "hidden", "dataset", "lr", "beta1", "batch_size"} <= set(shown)
    lecture = applying(RunConfig())
    assert lecture["d_in"] == 1000 and lecture["n_samples"] == 64 and "optimizer" not in lecture


def test_visdoms_pane_follows_the_learning_rate():
    pane = TextPane("r1", applying(RunConfig(mode="nn", lr=1e-2, dataset="digits")))
    pane.delivered()
    assert "d_in" not in pane.config and pane.config["lr"] == 1e-2 and not pane.changed()
    pane.set_value("lr", 1e-3)
    _, msg = pane.message("env")
    assert pane.changed() and "<td>lr</td><td>0.001</td>" in msg["data"][0]["content"]


def test_the_sink_applies_an_lr_change_of_a_flush_to_the_pane(monkeypatch):
    from engine.sinks.visdom import sink as sink_module

    class Offline(sink_module.VisdomSink):
        def __init__(self):  # no thread, no server: only what _ingest does to the pane
            self.text = TextPane("r1", {"lr": 0.1})
            self.lines, self.hists, self.max_points = {}, {}, 100
            self._ema, self._ema_n = 0.0, 0

    sink = Offline()
    sink._ingest(Flush(10, [], events=[(10, "lr_change", {"old": 0.1, "new": 0.05})]))
    assert sink.text.config["lr"] == 0.05 and sink.text.changed()
