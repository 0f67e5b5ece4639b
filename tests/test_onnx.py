"""ONNX export, verified: every mode's trained model, exported by torch.onnx and run by onnxruntime on
the run's own inputs, gives PyTorch's output to within the dtype's rounding (the difference is stored
with the run); what cannot be exported is refused in one line."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from conftest import REPO
from streamlit.testing.v1 import AppTest

import engine
from engine.store.db import Store
from engine.store.files import RunFiles
from engine.tools.to_onnx import to_onnx

CASES = {  # the five modes, and the architectures the nn modes add
    "manual": dict(mode="manual"),
    "autograd": dict(mode="autograd"),
    "custom_function (MyReLU)": dict(mode="custom_function"),
    "nn": dict(mode="nn"),
    "optim adam": dict(mode="optim", optimizer="adam"),
    "optim mlp depth 3": dict(mode="optim", arch="mlp", depth=3),
    "parallel_block": dict(mode="optim", arch="parallel_block"),
    "cnn on digits": dict(mode="optim", arch="cnn", dataset="digits", batch_size=16),
    "autograd float64": dict(mode="autograd", dtype="float64"),
}
TOLERANCE = {"float32": 1e-4, "float64": 1e-12}  # absolute, on outputs of order 1


@pytest.mark.parametrize("kw", CASES.values(), ids=CASES.keys())
def test_every_mode_exports_and_onnxruntime_agrees_with_pytorch(small, store, run_inprocess, tmp_path, kw):
    run_id, _ = run_inprocess(small(steps=20, **kw), store)
    info = to_onnx(run_id, tmp_path / "model.onnx", store)
    onnx.checker.check_model(onnx.load(info["file"]))
    assert info["max_abs_diff"] <= TOLERANCE[info["dtype"]], info
    (Path(__file__).parent / "artifacts").mkdir(exist_ok=True)
    with open(Path(__file__).parent / "artifacts" / "onnx_differences.txt", "a") as f:  # for the closing note
        f.write(f"{', '.join(f'{k}={v}' for k, v in kw.items()):45s} {info['dtype']}: {info['max_abs_diff']:.2e}\n")
    s = Store(store)
    [event] = s.events(run_id, kind="onnx")
    s.close()
    assert event["data"] == info and event["step"] == 20


def test_a_run_without_a_checkpoint_or_a_model_the_exporter_refuses_is_one_line(
    small, store, run_inprocess, cli, monkeypatch, tmp_path
):
    run_id, _ = run_inprocess(small(steps=3), store)
    RunFiles.of(run_id, store).checkpoint.unlink()
    r = cli("export", run_id, "--onnx", tmp_path / "m.onnx", "--store", store)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no checkpoint" in r.stderr
    assert not (tmp_path / "m.onnx").exists()

    other, _ = run_inprocess(small(steps=3), store)

    def unsupported(*a, **k):
        raise RuntimeError("Unsupported operator aten::mystery\nmore lines")  # what an exporter gap raises

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(
        engine.ConfigError, match="cannot export this model: RuntimeError: Unsupported operator aten::mystery$"
    ) as e:
        to_onnx(other, tmp_path / "m.onnx", store)
    assert "\n" not in str(e.value) and not list(tmp_path.glob("m.onnx*"))  # nothing half written


def test_the_runs_page_exports_and_offers_the_file(small, store, run_inprocess, monkeypatch):
    run_id, _ = run_inprocess(small(steps=5, mode="nn"), store)
    monkeypatch.setenv("LIVEPROP_STORE", store)
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("views/runs.py").run()
    at.button(key="runs_onnx").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("differs from PyTorch by at most" in m.value for m in at.success)
    assert RunFiles.of(run_id, store).onnx.is_file()


def test_fine_tuning_end_to_end(store, run_inprocess, tmp_path):
    """The lecture's last programs in one: a torchvision ResNet-18 from a locally saved state_dict, its
    backbone frozen, a new head trained on an image folder, exported to ONNX and verified."""
    import torchvision
    from PIL import Image

    for c, colour in (("cats", (200, 40, 40)), ("dogs", (40, 40, 200))):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), tuple(v + 10 * i for v in colour)).save(tmp_path / "images" / c / f"{i}.png")
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)  # as if downloaded once
    cfg = engine.RunConfig(
        mode="optim", arch="torchvision", tv_model="resnet18", pretrained=str(weights), freeze_backbone=True,
        dataset="imagefolder", image_dir=str(tmp_path / "images"), image_size=32, batch_size=8, steps=3,
        device="cpu", telemetry_every=3,
    )  # fmt: skip
    run_id, status = run_inprocess(cfg, store)
    assert status == "finished", engine.get_run(run_id, store)["error"]
    info = to_onnx(run_id, tmp_path / "resnet18.onnx", store)
    assert info["max_abs_diff"] <= TOLERANCE["float32"], info
