"""The per-step path never makes the host wait for the device.

torch.cuda.set_sync_debug_mode catches syncs for real, but only on CUDA (see test_engine_cuda.py).
On the CPU the check is structural: every tensor call that syncs (item, tolist, cpu, float(), bool(),
printing, boolean-mask indexing...) is spied on while engine code runs, and only the flush and the
every-K snapshot may make them, and the read of the "all losses finite" flag's host copy: on CUDA a
pinned copy read only once its event has completed, on the CPU the flag itself (no device to wait
for). The last tests show the spy does catch `loss.item()` in the loop.

The telemetry here keeps its losses as tensors, as on CUDA (losses_on_host=False): a CPU run keeps them
as floats, since reading a loss on the host waits for nothing (tests/test_engine_telemetry.py).
"""

import pytest
from conftest import NanFrom

from engine.build import assemble as build
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer

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


def spied_trainer(small, spy, case, mode_wrapper=None, **trainer_kw):
    """(trainer, steps seen by flushes, steps at which the finite flag was read): a Trainer whose flush
    and snapshots are the only places allowed to sync, besides the flag's read (not a wait, see above)."""
    kw = {"dataset": "teacher", **CASES[case]}
    p = build.prepare(small(steps=STEPS, telemetry_every=K, flush_every=1000, **kw))
    mode, batches = build.build(p)
    if mode_wrapper:
        mode = mode_wrapper(mode)
    tel = Telemetry(every=K, bins=8, flush_every=1000, flush_seconds=1e9, device=p.device, batch_size=p.cfg.batch_size,
                    losses_on_host=False)  # fmt: skip  # the losses as a CUDA run keeps them: device tensors
    trainer = Trainer(mode, batches, tel, STEPS, **trainer_kw)
    reads = []
    read_flag = tel.watch._read_flag
    tel.watch._read_flag = lambda flag: reads.append(trainer.step) or read_flag(flag)
    for obj, name in ((trainer, "flush"), (tel, "before_update"), (tel, "after_update"), (tel.watch, "_read_flag")):
        real = getattr(obj, name)

        def allowed(*args, _real=real, **kwargs):
            with spy.allowed():
                return _real(*args, **kwargs)

        setattr(obj, name, allowed)
    steps_seen = []
    trainer.add_callback("on_flush", lambda f: steps_seen.extend(range(f.first_step, f.last_step + 1)))
    return trainer, steps_seen, reads


@pytest.mark.parametrize("case", list(CASES))
def test_no_host_sync_between_flushes_and_snapshots(small, sync_spy, case):
    trainer, steps_seen, reads = spied_trainer(small, sync_spy, case)
    trainer.run()
    assert steps_seen == list(range(STEPS))  # steps 1-4, 6-9 and 10 ran outside flush and snapshot
    assert sync_spy.calls == [], f"host syncs on the hot path: {sync_spy.calls}"
    # the first step is flushed at once; then the flag is looked at after steps 4 and 8 (every 4 on the CPU)
    assert trainer.tel.watch.every == 4 and reads == [5, 9]


@pytest.mark.parametrize("case", ["manual", "autograd", "optim-adam"])
def test_a_nonfinite_loss_is_noticed_at_the_next_look_without_a_sync(small, sync_spy, case):
    """No flush is due (flush_every 1000, flush_seconds 1e9), yet the run stops within one look
    (4 steps on the CPU) of the first NaN, and records that step and how many ran after it."""
    trainer, steps_seen, reads = spied_trainer(
        small, sync_spy, case, mode_wrapper=lambda m: NanFrom(m, bad=5), on_divergence="stop"
    )
    trainer.run()
    assert trainer.stopped and trainer.divergence["step"] == 5
    assert trainer.divergence["ran_after"] == 3  # steps 6, 7, 8: the look after step 8 saw it
    assert trainer.step == 9 and steps_seen == list(range(9)) and reads == [5, 9]
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
    trainer, _, _ = spied_trainer(small, sync_spy, "manual", mode_wrapper=wrapper)
    trainer.run()
    caught = [c for c in sync_spy.calls if c[0] == what]
    # one per step: forward_backward runs before the snapshot, so snapshot steps count too
    assert len(caught) == STEPS, sync_spy.calls
    assert all(where.startswith("engine/loop/trainer.py:") for _, where in caught)


def test_the_spy_catches_float_and_bool_of_a_loss(small, sync_spy):
    import math

    class Careless(LossItem):
        def forward_backward(self, x, y):
            loss = self.mode.forward_backward(x, y)
            if not math.isfinite(loss) or not (loss == loss):
                raise AssertionError("unreachable")
            return loss

    trainer, _, _ = spied_trainer(small, sync_spy, "nn", mode_wrapper=Careless)
    trainer.run()
    assert {w for w, _ in sync_spy.calls} == {"__float__", "__bool__"}


class CopyInFlight:
    """The CUDA event recorded after a copy of the flag, as the look sees it, on the CPU: the device
    runs `lag` steps behind the host, so a copy recorded at step s is done from step s + lag on."""

    def __init__(self, clock, lag):
        self.clock, self.lag, self.done_at, self.records = clock, lag, None, 0

    def record(self, stream=None):
        self.records += 1
        self.done_at = self.clock[0] + self.lag

    def query(self):
        return self.clock[0] >= self.done_at

    def synchronize(self):
        self.done_at = self.clock[0]


@pytest.mark.parametrize("lag", [0, 5, 13, 30])
def test_the_cuda_look_reads_only_finished_copies_and_never_waits(lag):
    """The CUDA branch of the look, driven on the CPU with stand-in events for a device `lag` steps
    behind: a copy is read only once its event says done, never waited for; while a slot is free
    every look makes a copy; and a NaN is seen by the first look after its copy is done."""
    import torch

    from engine.loop.guard import COPIES

    clock = [0]
    tel = Telemetry(device=torch.device("cpu"), batch_size=1, flush_every=10**6, flush_seconds=1e9, look_every=4,
                    losses_on_host=False)  # fmt: skip
    events = {}
    watch = tel.watch
    watch._free = []  # the pinned copies, apart from the flag
    for _ in range(COPIES):
        flag = torch.ones((), dtype=torch.bool)
        events[id(flag)] = event = CopyInFlight(clock, lag)
        watch._free.append((flag, event))
    read_flag, reads = watch._read_flag, []

    def checked_read(flag):
        assert events[id(flag)].query(), "read a copy still in flight"
        reads.append(read_flag(flag))
        return reads[-1]

    watch._read_flag = checked_read
    bad, seen = 41, None
    for step in range(400):
        clock[0] = step
        tel.record_loss(step, torch.tensor(float("nan") if step >= bad else 1.0))
        if tel.flush_due():
            if step >= bad:
                seen = step
                break
            tel.flush()
        assert len(watch._in_flight) <= COPIES
    assert seen is not None and reads and all(reads[:-1]) and reads[-1] is False
    # The NaN is folded at the first look from it on (3 steps at most). A copy made at a look is read at
    # the first later look it is done by: `delay` steps on. While every slot is in flight no copy is made:
    # each slot comes back `delay` steps after it left, so COPIES copies go out at consecutive looks and
    # then none until the first comes back, a wait of delay - look * COPIES at most.
    look = watch.every
    delay = max(look, look * -(-lag // look))
    wait = max(0, delay - look * COPIES)
    assert bad + delay <= seen <= bad + look - 1 + wait + delay, (seen, delay, wait)
    assert sum(e.records for e in events.values()) >= len(reads)
    tel.rearm()  # after the weights are put back: all finite again, looks resume
    assert watch.watching and not watch._in_flight and len(watch._free) == COPIES and bool(watch._ok)
