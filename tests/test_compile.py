"""--compile: nn and optim models through torch.compile (TorchDynamo + Inductor, which compiles C++ on the
CPU). The reference is the same run without it: the same losses to float32 rounding."""

import pytest
import torch

from engine import RunConfig
from engine.build import assemble as build
from engine.errors import ConfigError
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer


def losses(cfg: RunConfig, steps: int) -> torch.Tensor:
    p = build.prepare(cfg)
    mode, batches = build.build(p)
    seen = []
    t = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), steps)
    t.add_callback("on_flush", lambda f: seen.extend(f.losses))
    t.run()
    return torch.tensor(seen), mode


def test_a_compiled_model_trains_like_the_eager_one():
    cfg = dict(mode="optim", optimizer="adam", arch="mlp", depth=3, d_in=32, hidden=16, d_out=4, init="torch", lr=1e-2)
    eager, _ = losses(RunConfig(**cfg), 30)
    compiled, mode = losses(RunConfig(**cfg, compile=True), 30)
    assert hasattr(mode.net, "_orig_mod") and mode.net._orig_mod is mode.model  # it really ran compiled
    assert len(compiled) == len(eager) == 30 and eager[-1] < 0.8 * eager[0]
    assert torch.allclose(compiled, eager, rtol=1e-4, atol=1e-6), (compiled - eager).abs().max()


@pytest.mark.parametrize(
    "kw, says",
    [
        (dict(mode="manual", compile=True), "compile applies to modes nn and optim"),
        (dict(mode="optim", compile=True, nproc=2), "compile runs on one process"),
    ],
)
def test_compile_where_it_does_not_apply_is_refused_in_one_line(kw, says):
    with pytest.raises(ConfigError, match=says):
        build.prepare(RunConfig(**kw))
