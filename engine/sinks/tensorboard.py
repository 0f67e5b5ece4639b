"""Write a run's telemetry as TensorBoard event files, off the hot path.

torch.utils.tensorboard.SummaryWriter on this sink's own thread, fed through a bounded queue
(on_flush never waits: a full queue counts the points as dropped):
    scalars     the loss, and every telemetry scalar under its key (lr, grad_norm/w1, ...)
    histograms  weight/<layer> and grad/<layer>, with add_histogram_raw from the edges and counts
                already on the host (the tensors themselves stay on the device)

    tensorboard --logdir DIR        # DIR = the run's tensorboard_dir; one sub-directory per run

The loss goes in at every step while the run is slower than LOSS_POINTS_PER_S steps/s, and as
the mean of each run of k steps above that. One add_scalar costs about 30 us of Python (protobuf,
a CRC), under the training process's GIL: every step at the lecture's 5k steps/s on a GPU would
take some 15% from the loop. Full resolution stays in the store.
"""

from __future__ import annotations

import math
import queue
import threading

from engine.errors import ConfigError

LOSS_POINTS_PER_S = 100


class TensorBoardSink:
    def __init__(self, logdir: str, queue_size: int = 1000):
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when enabled

        self.logdir = str(logdir)
        try:
            self.writer = SummaryWriter(log_dir=self.logdir, max_queue=1000, flush_secs=5)
        except OSError as e:  # prepare checked the folder (engine/build/checks.py); it changed since: the run's reason
            raise ConfigError(
                f"tensorboard_dir: cannot write event files in {self.logdir} ({e.strerror or e})"
            ) from None
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped, self.error = 0, None
        self._thread = threading.Thread(target=self._loop, name="liveprop-tensorboard", daemon=True)
        self._thread.start()

    def on_flush(self, flush):
        try:
            self.q.put_nowait(flush)
        except queue.Full:
            self.dropped += len(flush.losses) + len(flush.scalars)

    def status_info(self) -> dict:
        state = "error" if self.error else "dropped" if self.dropped else "writing"
        return {
            "state": state,
            "status": state + (f" {self.dropped}" if state == "dropped" else ""),
            "dropped": self.dropped,
            "error": self.error,
            "logdir": self.logdir,
        }

    def status(self) -> str:
        info = self.status_info()
        return info["status"] + (f": {info['error']}" if info["error"] else "")

    def close(self, status: str | None = None, timeout: float = 30.0) -> str:
        self.q.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():  # a slow disk: the writer is still busy; the run ends all the same
            self.error = f"still writing after {timeout:g} s at the end; the last points may be missing"
        else:
            self.writer.close()
        return self.status()

    def _loop(self):
        while (f := self.q.get()) is not None:
            try:
                self._write(f)
            except Exception as e:  # never silent: shown in status()
                self.error = f"tensorboard sink: {type(e).__name__}: {e}"

    def _write(self, f):
        w = self.writer
        rate = next((v for _, key, v in f.scalars if key == "steps_per_s"), 0.0)
        k = max(1, math.ceil(rate / LOSS_POINTS_PER_S))
        for i in range(0, len(f.losses), k):
            run = f.losses[i : i + k]
            w.add_scalar("loss", sum(run) / len(run), f.first_step + i + len(run) - 1)
        for step, key, v in f.scalars:
            w.add_scalar(key, v, step)
        for h in f.hists:
            num = sum(h.counts)
            if not num:
                continue
            e = h.edges
            mids = [(a + b) / 2 for a, b in zip(e, e[1:])]  # sums estimated from bin centres
            if h.hi > h.lo:
                limits, counts = e[1:], h.counts  # upper edge of each bucket
            else:
                limits, counts = [h.hi], [num]  # every value equal
            w.add_histogram_raw(
                f"{h.kind}/{h.layer}",
                h.lo,
                h.hi,
                num,
                sum(c * m for c, m in zip(h.counts, mids)),
                sum(c * m * m for c, m in zip(h.counts, mids)),
                limits,
                counts,
                global_step=h.step,
            )
