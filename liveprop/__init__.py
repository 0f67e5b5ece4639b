"""Liveprop's public Python API: watch a training loop of your own, and drive runs from code.

    import liveprop

    with liveprop.watch(model, optimizer, name="digits-cnn", config=vars(args)) as run:
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            run.step(loss)

The loop's run shows in the dashboard as an engine run does (its loss, histograms, per-layer norms and update
ratios), and the dashboard's Pause, Resume, Stop and Set lr reach it (liveprop/watching.py, liveprop/run.py).
The run functions are the engine's (engine/runs/api.py): launch a run of Liveprop's own programs, read runs,
and steer any run, a watched loop's included, from code.
"""

from engine import get_run, launch, list_runs, pause, resume, set_lr, stop
from liveprop.ending import NonFinite, Stopped
from liveprop.run import Run
from liveprop.watching import watch

__all__ = [
    "watch",
    "Run",
    "Stopped",
    "NonFinite",
    "launch",
    "get_run",
    "list_runs",
    "pause",
    "resume",
    "stop",
    "set_lr",
]
