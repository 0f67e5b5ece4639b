"""fast: the whole step captured as a CUDA graph, replayed many steps per Python iteration (--fast).

What is different from the plain loop (engine/loop/trainer.py): the same step, forward_backward, update and
zero_grad, written so that a CUDA graph can capture it once and replay it, with no host sync and the same
tensors every time:
    x and y are the one full batch in memory, the same tensors every step (Batches.whole);
    the lr lives in a 0-dim device tensor that the captured update reads, so set-lr is one fill_, no re-capture;
    the update is w -= lr * grad with that tensor (w.addcmul_), or optim's optimizer.step() made graph-safe
    (capturable Adam, AdamW and RMSprop; SGD's fused kernel, the one that takes a tensor lr);
    the gradients are zeroed in place, never set to None (nn's model.zero_grad() would free them);
    each step's loss goes into a device ring at a device-side index (index_copy_), advanced on the device.

On CUDA the first block runs WARMUP eager steps on a side stream (cuBLAS, autograd and the optimizer make
their state there), then captures one step, as torch.cuda.graph's notes ask; every later block replays it up
to BLOCK times and hands the ring's losses to the telemetry. A telemetry snapshot is one eager step between
blocks, with the hooks around its update. Commands (pause, stop, set-lr) and flushes wait for the end of a
block. On the CPU nothing is captured: the same step runs eagerly, which is how tests/test_fast.py checks it
against the plain loop step by step (users are refused fast on the CPU, engine/build/assemble.py _check_fast).
"""

from __future__ import annotations

import torch

BLOCK = 64  # steps per Python iteration at most: the longest wait for a command, a snapshot or a flush
WARMUP = 3  # eager steps on a side stream before the capture


class GraphStep:
    """The mode's step in the form a CUDA graph can capture (see above), and the blocks of steps that replay it."""

    def __init__(self, mode, batches, capturable: bool | None = None):
        """batches: the run's, which hold the one full batch. capturable: torch.optim's flag; None turns it on
        on CUDA, the only device where torch allows it (a test turns it on for the CPU)."""
        if batches.whole is None:
            raise ValueError(
                "the fast path replays one full batch in memory; engine/build/assemble.py refuses the rest"
            )
        self.mode, (self.x, self.y) = mode, batches.whole
        w = mode.named_params()[0][1]
        self.device = w.device
        self.optimizer = mode.optimizer
        if self.optimizer is not None:
            _graph_safe(self.optimizer, self.device.type == "cuda" if capturable is None else capturable)
        # the lr in the weights' dtype, except for torch.optim on CUDA: its fused and capturable kernels read float32
        lr_dtype = torch.float32 if self.optimizer is not None and self.device.type == "cuda" else w.dtype
        self.lr = mode.lr  # the value lr_t holds, known on the host
        self.lr_t = torch.tensor(self.lr, dtype=lr_dtype, device=self.device)
        self.ring = torch.zeros(BLOCK, dtype=w.dtype, device=self.device)  # (BLOCK,) the block's losses
        self.index = torch.zeros(1, dtype=torch.long, device=self.device)  # where the next loss goes in the ring
        self.graph = None  # the captured step (CUDA)

    # -- one step, graph-safe ----------------------------------------------------------------

    def step(self, tel=None, at: int = 0):
        """forward_backward, update, zero_grad, the loss into the ring. With tel: the telemetry snapshot of step
        `at` around the update, as in the plain loop (eager steps only, never captured)."""
        loss = self.mode.forward_backward(self.x, self.y)
        if tel is not None:
            tel.before_update(at, self.mode, self.x, self.y, self.mode.lr)
        self.update()
        if tel is not None:
            tel.after_update(at, self.mode)
        self.zero_grad()
        self.ring.index_copy_(0, self.index, loss.detach().reshape(1).to(self.ring.dtype))
        self.index.add_(1)

    def update(self):
        """w -= lr * grad with the lr tensor (the modes' own w.add_(grad, alpha=-lr) takes a Python float, which
        a graph would keep forever); on the CPU it equals theirs bit for bit. optim: its optimizer.step()."""
        if self.optimizer is not None:
            return self._optimizer_step()
        grads = dict(self.mode.named_grads())
        with torch.no_grad():
            for name, w in self.mode.named_params():
                if grads.get(name) is not None:  # frozen layers have none
                    w.addcmul_(grads[name], self.lr_t, value=-1)  # w -= lr * grad

    def _optimizer_step(self):
        """optimizer.step() reading the lr tensor. The groups keep the float lr (set_lr writes it there, and
        checkpoints save it) and lend its place to the tensor for the step, which a capture records."""
        groups = self.optimizer.param_groups
        floats = [g["lr"] for g in groups]
        for g in groups:
            g["lr"] = self.lr_t
        try:
            self.optimizer.step()
        finally:
            for g, lr in zip(groups, floats):
                g["lr"] = lr

    def zero_grad(self):
        """The gradients zeroed in place, so that the graph's backward accumulates into the same tensors: nn's
        model.zero_grad() and optim's optimizer.zero_grad() set them to None (their default), which frees them.
        The raw modes' zero_grad is in place already (manual rebuilds its gradients: nothing to zero)."""
        if self.mode.model is not None:  # nn, optim
            for _, g in self.mode.named_grads():
                if g is not None:
                    g.zero_()
        else:
            self.mode.zero_grad()

    # -- blocks of steps ---------------------------------------------------------------------

    def block(self, tel, step: int, end, last) -> int:
        """Train from `step`; returns how many steps it took. One eager step with the telemetry snapshot when
        one is due or at `last` (the run's last step has one); else up to BLOCK steps, stopping before `end` (this
        call's), `last` and the next snapshot: replays of the captured step (the first such block on CUDA warms up
        and captures it instead), or on the CPU the same step, eagerly. Their losses go to the telemetry."""
        self._sync_lr()
        self.index.zero_()
        if tel.due(step) or step == last:
            n = 1
            self.step(tel, step)
        else:
            n = int(min(BLOCK, end - step, last - step, tel.steps_to_snapshot(step)))
            if self.graph is None and self.device.type == "cuda" and n >= WARMUP:
                n = WARMUP
                self._capture()  # WARMUP steps, then the capture
            elif self.graph is not None:
                for _ in range(n):
                    self.graph.replay()
            else:
                for _ in range(n):
                    self.step()
        tel.record_losses(step, self.ring[:n].clone())  # a copy: the next block writes the ring again
        return n

    def _capture(self):
        """WARMUP eager steps on a side stream, then one step recorded into a CUDA graph (nothing runs then)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step()
        self.graph = graph

    def _sync_lr(self):
        """A new lr from set_lr (the trainer writes mode.lr, a float) goes into the lr tensor: the graph reads it."""
        if self.mode.lr != self.lr:
            self.lr = self.mode.lr
            self.lr_t.fill_(self.lr)

    def forget(self):
        """Drop the captured step: the trainer put back earlier weights (a divergence), and its optimizer's
        load_state_dict and the modes' zero_grad replaced tensors the graph writes. The next block captures anew."""
        self.graph = None


def _graph_safe(optimizer, capturable: bool):
    """The optimizer set up for a captured step. SGD: its fused kernel, the one that reads a tensor lr on the
    device (the others turn it into a Python number: a host sync). Adam, AdamW and RMSprop: capturable, so that the
    step count and the bias correction stay on the device. A resumed run's step counts, kept on the host without
    it, move to the device. Adagrad has neither; engine/build/assemble.py refuses it."""
    for group in optimizer.param_groups:
        if isinstance(optimizer, torch.optim.SGD):
            group["fused"] = True
        else:
            group["capturable"] = capturable
    for p, state in optimizer.state.items():
        if capturable and torch.is_tensor(state.get("step")):
            state["step"] = state["step"].to(p.device)
