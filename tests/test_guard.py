"""The divergence guard and the non-finite watch (engine/loop/guard.py) in a loop that is not the engine's: a user's
own model, optimizer and list of batches, wrapped in the few methods of Steps (engine/modes/protocol.py), as
liveprop.watch will wrap them. The reference for what the guard puts back is the same model trained from the
same seed, without a divergence, for as many steps.
"""

import torch
import torch.nn.functional as F

from engine.loop.guard import DivergenceGuard, NonFiniteWatch
from engine.loop.telemetry import HISTS, SCALARS, Piece, Telemetry
from engine.modes.protocol import Mode, Steps

FLUSH, POISON = 4, 9  # a flush every 4 steps; batch 9's targets are inf


class UserLoop:
    """A user's training step: nn.Sequential, Adam, mse; the inputs of every batch it ran, in order."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer, self.seen = model, optimizer, []

    def forward_backward(self, x, y):
        self.seen.append(x)
        loss = F.mse_loss(self.model(x), y)
        loss.backward()
        return loss.detach()

    def update(self):
        self.optimizer.step()

    def zero_grad(self):
        self.optimizer.zero_grad()

    def named_params(self):
        return [(n, p.detach()) for n, p in self.model.named_parameters()]

    def named_grads(self):
        return [(n, p.grad) for n, p in self.model.named_parameters()]


def user_loop(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    return UserLoop(model, torch.optim.Adam(model.parameters(), lr=1e-2))


def batches(n=16):
    gen = torch.Generator().manual_seed(1)
    out = [(torch.randn(8, 4, generator=gen), torch.randn(8, 1, generator=gen)) for _ in range(n)]
    out[POISON][1][0, 0] = float("inf")
    return out


def train(loop, data, steps):
    for x, y in data[:steps]:
        loop.forward_backward(x, y)
        loop.update()
        loop.zero_grad()


def test_the_guard_and_the_watch_serve_a_loop_that_is_not_the_engines():
    """A flush every 4 steps vouches for the weights saved at the one before; the watch sees batch 9's inf loss at
    its look after step 11; the guard puts back the weights and Adam's state of step 4 (the last vouched for),
    replays batches 4 to 9 (the user's own, given back), names the first layer, and puts step 4 back again."""
    loop, data = user_loop(), batches()
    assert isinstance(loop, Steps) and not isinstance(loop, Mode)  # what the guard needs, and no more
    guard, watch = DivergenceGuard(loop), NonFiniteWatch(torch.device("cpu"), every=FLUSH)
    guard.save(0, data=0)  # the data's position is the user's own: here an index into the list
    pending, seen_at = [], None
    for step, (x, y) in enumerate(data):
        pending.append(loop.forward_backward(x, y))
        loop.update()
        loop.zero_grad()
        if watch.look(pending):
            seen_at = step
            break
        if len(pending) == FLUSH:  # a flush: all finite, else the watch had said so
            guard.finite(step + 1, data=step + 1)
            pending = []
            watch.flushed()
    assert seen_at == 11
    bad = next(i for i, loss in enumerate(pending) if not torch.isfinite(loss)) + seen_at + 1 - len(pending)
    assert bad == POISON

    saved = guard.restore()
    assert saved.step == saved.data == 4
    ran = len(loop.seen)
    layer = guard.replay(data[saved.data : bad + 1])
    replayed = loop.seen[ran:]
    assert layer == "0.weight" and len(replayed) == bad - 4 + 1  # the poisoned batch is the last one replayed
    assert all(torch.equal(a, b) for a, (b, _) in zip(replayed, data[4 : bad + 1], strict=True))
    assert guard.restore(at=seen_at + 1) is saved and saved.step == 12  # it goes on from step 12
    watch.rearm()
    assert watch.watching

    reference = user_loop()
    train(reference, data, 4)
    for (_, a), (_, b) in zip(loop.named_params(), reference.named_params(), strict=True):
        assert torch.equal(a, b)
    want = reference.optimizer.state_dict()["state"]
    got = loop.optimizer.state_dict()["state"]
    assert all(torch.equal(got[i][k], want[i][k]) for i in want for k in ("step", "exp_avg", "exp_avg_sq"))


def test_a_flush_copies_into_the_set_the_last_good_no_longer_needs():
    """The two sets take turns: after the first two flushes, no new tensor is made for the weights."""
    loop, data = user_loop(), batches()
    guard = DivergenceGuard(loop)
    guard.save(0)
    made = []
    for step in range(1, 8):
        train(loop, data[step - 1 :], 1)
        guard.finite(step)
        made.append(guard.candidate.weights[0])
    assert len({id(t) for t in made[2:]}) == 2 and made[2] is made[0]
    assert guard.last_good.step == 6 and guard.candidate.step == 7


def test_the_watch_reads_floats_and_device_tensors_alike():
    for on_host, wrap in ((True, float), (False, torch.tensor)):
        watch = NonFiniteWatch(torch.device("cpu"), every=3, on_host=on_host)
        losses = [wrap(1.0), wrap(2.0)]
        assert not watch.look(losses)  # 2 new: not a look yet
        losses += [wrap(float("nan"))]
        assert watch.look(losses) and not watch.watching
        losses += [wrap(1.0)] * 3
        assert not watch.look(losses)  # seen: no more looks until rearm


def test_the_snapshot_layout_is_typed_and_the_stored_names_stay():
    """Each pending snapshot value is a Piece (step, kind, layer, size); the flush names the per-layer numbers
    "KIND/LAYER" as the run store always has, and the histograms by kind and layer."""

    class Measured(UserLoop):  # what the telemetry reads besides Steps
        lr = 1e-2

        def reference_grads(self, x, y):
            return None

    loop, data = user_loop(), batches()
    loop = Measured(loop.model, loop.optimizer)
    tel = Telemetry(every=1, bins=8, flush_every=100, flush_seconds=1e9, device=torch.device("cpu"), batch_size=8)
    x, y = data[0]
    loop.forward_backward(x, y)
    tel.before_update(0, loop, x, y, loop.lr)
    loop.update()
    tel.after_update(0, loop)
    names = [n for n, _ in loop.named_params()]
    assert all(isinstance(p, Piece) and p.step == 0 for p in tel._layout)
    kinds = {"grad", "weight", "grad_norm", "weight_norm", "update_ratio"}  # no gradcheck: no reference
    assert {(p.kind, p.layer) for p in tel._layout} == {(k, n) for k in kinds for n in names}
    assert set(HISTS) | set(SCALARS) >= kinds
    f = tel.flush()
    assert {k for _, k, _ in f.scalars} == {"lr"} | {f"{k}/{n}" for k in kinds - set(HISTS) for n in names}
    assert {(h.kind, h.layer) for h in f.hists} == {(k, n) for k in HISTS for n in names}
