"""Every mode x architecture pair that makes sense runs on the CPU; every optimizer trains; pairs that
make no sense are refused before anything is written, with a message that names what is allowed."""

import math

import pytest
import torch

from engine import ConfigError, Store
from engine.build import assemble as build
from engine.config.fields import OPTIMIZERS
from engine.runs import api as runs

RAW = ("manual", "autograd", "custom_function")

PAIRS = (
    [(mode, arch, "teacher") for mode in RAW for arch in ("two_layer", "mlp")]
    + [(mode, "mlp", "digits") for mode in RAW]  # cross-entropy through the raw modes
    + [(mode, arch, "teacher") for mode in ("nn", "optim") for arch in ("two_layer", "mlp", "parallel_block")]
    + [(mode, "cnn", "digits") for mode in ("nn", "optim")]
    + [(mode, "torchvision", "digits") for mode in ("nn", "optim")]  # resnet18, tiny batch
)


def losses(store, run_id):
    s = Store(store)
    try:
        return [v for _, v in s.scalars(run_id, "loss")]
    finally:
        s.close()


@pytest.mark.parametrize("mode,arch,dataset", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_mode_arch_pair_runs(small, run_inprocess, store, mode, arch, dataset):
    extra = dict(batch_size=4, tv_model="resnet18", lr=1e-3) if arch == "torchvision" else {}
    if mode in RAW and arch == "two_layer" and dataset == "teacher":
        extra["lr"] = 1e-4  # randn weights and sum of squares, as in the lecture
    cfg = small(mode=mode, arch=arch, dataset=dataset, depth=3, steps=3, **extra)
    run_id, status = run_inprocess(cfg, store)
    run = runs.get_run(run_id, store)
    assert status == "finished", run["error"]
    assert run["status"] == "finished" and run["step"] == 3
    got = losses(store, run_id)
    assert len(got) == 3 and all(v is not None and math.isfinite(v) for v in got)
    state = torch.load(run["checkpoint"], weights_only=True)
    assert state["step"] == 3 and state["model"]
    if mode == "optim":
        assert state["optimizer"]["state"], "the optimizer took no step"


def test_torchvision_head_is_replaced_and_backbone_can_freeze(small):
    """Transfer learning as the lecture sketches it: a new head for the data's classes; frozen backbone."""
    p = build.prepare(
        small(mode="optim", arch="torchvision", dataset="digits", batch_size=2, freeze_backbone=True, lr=1e-3)
    )
    mode, batches = build.build(p)
    assert mode.model.fc.out_features == 10
    trainable = [n for n, q in mode.model.named_parameters() if q.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    before = {n: q.detach().clone() for n, q in mode.model.named_parameters()}
    x, y = next(batches)
    mode.forward_backward(x, y)
    mode.update()
    after = dict(mode.model.named_parameters())
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    assert torch.equal(after["conv1.weight"], before["conv1.weight"])


def test_pretrained_weights_load_from_a_local_file(small, tmp_path):
    """--pretrained FILE: weights_only load; a head trained for other classes is dropped and replaced."""
    import torchvision

    src = torchvision.models.resnet18(num_classes=7)
    path = tmp_path / "resnet18.pt"
    torch.save(src.state_dict(), path)
    p = build.prepare(small(mode="optim", arch="torchvision", dataset="digits", batch_size=2, pretrained=str(path)))
    mode, _ = build.build(p)
    torch.testing.assert_close(mode.model.conv1.weight.detach(), src.conv1.weight.detach())
    assert mode.model.fc.out_features == 10


def test_pretrained_file_of_another_model_is_refused(small, tmp_path):
    path = tmp_path / "not-resnet.pt"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    cfg = small(mode="optim", arch="torchvision", dataset="digits", batch_size=2, pretrained=str(path))
    with pytest.raises(ConfigError, match="does not hold resnet18 weights"):
        build.build(build.prepare(cfg))


OPTIMIZER_CASES = {
    "sgd": dict(optimizer="sgd", lr=0.1),
    "sgd+momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9),
    "nesterov": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True),
    "adam": dict(optimizer="adam", lr=1e-2, beta1=0.8),
    "adamw": dict(optimizer="adamw", lr=1e-2, weight_decay=0.01),
    "rmsprop": dict(optimizer="rmsprop", lr=3e-3, alpha=0.9),
    "adagrad": dict(optimizer="adagrad", lr=0.05),
}


def test_every_optimizer_is_covered():
    assert {c["optimizer"] for c in OPTIMIZER_CASES.values()} == set(OPTIMIZERS)


@pytest.mark.parametrize("name", list(OPTIMIZER_CASES))
def test_optimizer_trains_and_gets_its_knobs(small, run_inprocess, store, name):
    case = OPTIMIZER_CASES[name]
    cfg = small(
        mode="optim",
        arch="mlp",
        depth=2,
        dataset="teacher",
        hidden=16,
        n_samples=64,
        batch_size=64,
        steps=40,
        telemetry_every=20,
        **case,
    )
    run_id, status = run_inprocess(cfg, store)
    assert status == "finished"
    got = losses(store, run_id)
    assert len(got) == 40
    assert got[-1] < 0.5 * got[0], f"{name}: loss {got[0]:.4g} -> {got[-1]:.4g}"
    state = torch.load(runs.get_run(run_id, store)["checkpoint"], weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(case["lr"])
    for knob, key in (
        ("momentum", "momentum"),
        ("nesterov", "nesterov"),
        ("weight_decay", "weight_decay"),
        ("alpha", "alpha"),
    ):
        if knob in case:
            assert group[key] == case[knob], knob
    if "beta1" in case:
        assert group["betas"][0] == case["beta1"]


def test_classification_loss_decreases_on_digits(small, run_inprocess, store):
    cfg = small(mode="optim", arch="cnn", dataset="digits", batch_size=32, steps=40, lr=1e-2, telemetry_every=20)
    run_id, status = run_inprocess(cfg, store)
    got = losses(store, run_id)
    assert status == "finished"
    assert sum(got[-5:]) < 0.7 * sum(got[:5]), got


# ---------------------------------------------------------------------------------------------
# what makes no sense is refused, naming what is allowed

NONSENSE = [
    (dict(mode="manual", arch="cnn", dataset="digits"), ["two_layer or mlp", "nn or optim"]),
    (dict(mode="autograd", arch="parallel_block"), ["two_layer or mlp", "nn or optim"]),
    (dict(mode="custom_function", arch="torchvision", dataset="digits"), ["two_layer or mlp"]),
    (dict(mode="manual", optimizer="adam"), ["'optim'"]),
    (dict(mode="nn", optimizer="sgd"), ["'optim'"]),
    (dict(mode="optim", optimizer="lbfgs"), ["sgd", "adam", "adamw", "rmsprop", "adagrad"]),
    (dict(mode="optim", optimizer="adam", nesterov=True), ["sgd with momentum"]),
    (dict(mode="optim", optimizer="sgd", nesterov=True), ["sgd with momentum"]),
    (dict(mode="nn", loss="cross_entropy", dataset="teacher"), ["sse or mse"]),
    (dict(mode="manual", loss="mse", dataset="digits", arch="mlp"), ["cross_entropy"]),
    (dict(mode="nn", arch="cnn", dataset="random"), ["needs images"]),
    (dict(mode="optim", arch="torchvision", dataset="teacher"), ["needs images"]),
    (dict(mode="optim", arch="torchvision", tv_model="resnet9000", dataset="digits"), ["resnet18", "resnet101"]),
    (dict(mode="nn", arch="mlp", freeze_backbone=True), ["torchvision"]),
    (dict(mode="nn", sampler="balanced", dataset="teacher", batch_size=4), ["classification"]),
    (dict(mode="nn", arch="mlp", dataset="mnist", steps=0, epochs=1), ["--steps"]),
    (dict(mode="warp"), ["manual", "autograd", "custom_function", "nn", "optim"]),
    (dict(arch="transformer"), ["two_layer", "mlp", "parallel_block", "cnn", "torchvision"]),
    (dict(dataset="imagenet"), ["random", "teacher", "digits", "csv", "imagefolder", "mnist"]),
]


@pytest.mark.parametrize("overrides,names", NONSENSE, ids=[str(o) for o, _ in NONSENSE])
def test_nonsense_is_refused_naming_what_is_allowed(small, store, overrides, names):
    with pytest.raises(ConfigError) as e:
        runs.create_run(small(**overrides), store)
    message = str(e.value)
    assert "\n" not in message
    for name in names:
        assert name in message, f"{message!r} does not name {name!r}"
    assert not Store(store).list_runs(), "a refused config must not be written"
