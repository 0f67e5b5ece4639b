"""The per-step path never makes the host wait for the device.

torch.cuda.set_sync_debug_mode catches syncs for real, but only on CUDA (see test_engine_cuda.py).
On the CPU the check is structural: every tensor call that syncs (item, tolist, cpu, float(), bool(),
printing, boolean-mask indexing...) is spied on while engine code runs, and only the flush and the
every-K snapshot may make them. The last tests show the spy does catch `loss.item()` in the loop.
"""

import pytest

from engine import build
from engine.telemetry import Telemetry
from engine.trainer import Trainer

CASES = {
    "manual": dict(mode="manual", arch="two_layer", loss="sse"),
    "manual-ce": dict(mode="manual", arch="mlp", depth=3, dataset="digits", batch_size=2000),
    "autograd": dict(mode="autograd", arch="mlp", depth=3),
    "custom_function": dict(mode="custom_function", arch="mlp", depth=3),
    "nn": dict(mode="nn", arch="parallel_block"),
    "optim-adam": dict(mode="optim", arch="mlp", optimizer="adam"),
    "optim-sgd-nesterov": dict(mode="optim", arch="mlp", optimizer="sgd", momentum=0.9, nesterov=True),
    "optim-rmsprop": dict(mode="optim", arch="mlp", optimizer="rmsprop", momentum=0.5),
    "optim-adagrad": dict(mode="optim", arch="mlp", optimizer="adagrad"),
    "optim-cnn": dict(mode="optim", arch="cnn", dataset="digits", batch_size=2000, optimizer="adamw"),
    # minibatches through the DataLoader, shuffled, and with a sampler
    "nn-minibatch": dict(mode="nn", arch="mlp", dataset="digits", batch_size=64),
    "manual-balanced": dict(mode="manual", arch="mlp", dataset="digits", batch_size=64, sampler="balanced"),
}
STEPS, K = 12, 5


def spied_trainer(small, spy, case, mode_wrapper=None):
    """A Trainer whose flush and snapshots are the only places allowed to sync."""
    kw = {"dataset": "teacher", **CASES[case]}
    p = build.prepare(small(steps=STEPS, telemetry_every=K, flush_every=1000, **kw))
    mode, batches = build.build(p)
    if mode_wrapper:
        mode = mode_wrapper(mode)
    tel = Telemetry(every=K, bins=8, flush_every=1000, flush_seconds=1e9, device=p.device, batch_size=p.cfg.batch_size)
    trainer = Trainer(mode, batches, tel, STEPS)
    for obj, name in ((trainer, "flush"), (tel, "before_update"), (tel, "after_update")):
        real = getattr(obj, name)

        def allowed(*args, _real=real, **kwargs):
            with spy.allowed():
                return _real(*args, **kwargs)

        setattr(obj, name, allowed)
    steps_seen = []
    trainer.add_callback("on_flush", lambda f: steps_seen.extend(range(f.first_step, f.last_step + 1)))
    return trainer, steps_seen


@pytest.mark.parametrize("case", list(CASES))
def test_no_host_sync_between_flushes_and_snapshots(small, sync_spy, case):
    trainer, steps_seen = spied_trainer(small, sync_spy, case)
    trainer.run()
    assert steps_seen == list(range(STEPS))  # steps 1-4, 6-9 and 10 ran outside flush and snapshot
    assert sync_spy.calls == [], f"host syncs on the hot path: {sync_spy.calls}"


class LossItem:
    """A mode that reads its loss back every step, as a careless edit to the loop would."""

    def __init__(self, mode):
        self.mode = mode

    def __getattr__(self, name):
        return getattr(self.mode, name)

    def forward_backward(self, x, y):
        loss = self.mode.forward_backward(x, y)
        loss.item()
        return loss


class LectureMask:
    """The lecture's grad_h[h < 0] = 0: a boolean-mask assignment, which syncs on CUDA."""

    def __init__(self, mode):
        self.mode = mode

    def __getattr__(self, name):
        return getattr(self.mode, name)

    def forward_backward(self, x, y):
        loss = self.mode.forward_backward(x, y)
        g = self.mode.grads["w1"]
        g[g < 0] = 0
        return loss


@pytest.mark.parametrize("wrapper,what", [(LossItem, "item"), (LectureMask, "__setitem__ with a boolean mask")])
def test_the_spy_catches_a_sync_in_the_loop(small, sync_spy, wrapper, what):
    trainer, _ = spied_trainer(small, sync_spy, "manual", mode_wrapper=wrapper)
    trainer.run()
    caught = [c for c in sync_spy.calls if c[0] == what]
    # one per step: forward_backward runs before the snapshot, so snapshot steps count too
    assert len(caught) == STEPS, sync_spy.calls
    assert all(where.startswith("trainer.py:") for _, where in caught)


def test_the_spy_catches_float_and_bool_of_a_loss(small, sync_spy):
    import math

    class Careless(LossItem):
        def forward_backward(self, x, y):
            loss = self.mode.forward_backward(x, y)
            if not math.isfinite(loss) or not (loss == loss):
                raise AssertionError("unreachable")
            return loss

    trainer, _ = spied_trainer(small, sync_spy, "nn", mode_wrapper=Careless)
    trainer.run()
    assert {w for w, _ in sync_spy.calls} == {"__float__", "__bool__"}
