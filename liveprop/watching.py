"""liveprop.watch(model, optimizer, **options) -> Run: a training loop of the user's own, recorded and steered as
an engine run is.

    run = liveprop.watch(model, optimizer, name="digits-cnn", config=vars(args))
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        run.step(loss)
    run.finish()

watch writes the run to the store (liveprop/record.py), subscribes the engine's sinks (the store sink on its
own thread, then Visdom and TensorBoard when asked), hooks the optimizer's step for the snapshots, and says
on stderr, in one line, where the dashboard shows the run. It imports neither Streamlit nor Plotly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from engine import RunConfig, new_run_id
from engine.config.steering import canonical, entries_problem
from engine.loop.control import Control
from engine.loop.distributed import Ranks
from engine.loop.guard import DivergenceGuard
from engine.loop.plan import Plan
from engine.loop.rules import Rules
from engine.loop.telemetry import Telemetry
from engine.sinks import attach
from engine.store.db import default_path
from liveprop.layers import Layers, unwrapped
from liveprop.record import Record, say, script_config
from liveprop.run import ON_NONFINITE, Run, Subscribers

DASHBOARD = "http://127.0.0.1:8501"  # where `make run` serves the dashboard


def watch(
    model: nn.Module | dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    *,
    name: str = "",
    config: dict | None = None,
    scheduler=None,
    total_steps: int | None = None,
    batch_size: int | None = None,
    on_nonfinite: str = "pause",
    keep_finite: bool = True,
    store: str | None = None,
    visdom: str = "",
    tensorboard_dir: str = "",
    telemetry_every: int = 0,
    telemetry_seconds: float = 1.0,
    hist_bins: int = 64,
    flush_seconds: float = 0.5,
    dashboard: str = DASHBOARD,
    at=(),
    rules=(),
) -> Run:
    """Watch the loop that trains `model` with `optimizer`: call run.step(loss) after each optimizer step, and
    run.finish() at the end (or use the run as a context manager). model: an nn.Module (compiled or DDP-wrapped
    too), or a dict of named tensors that the loop updates by hand, without an optimizer (None: Set lr is
    then refused, the loop's rate being its own).

    name: the run's name (default: the script's file name). config: the script's own settings (a dict, such
    as vars(args)), shown with the run. scheduler: an lr scheduler, or a list of them, whose base rates a
    viewer's Set lr scales too (StepLR and OneCycleLR go on from the new rate without it: liveprop/steer.py).
    total_steps: the loop's length, for the progress shown (default: until it ends). batch_size: samples per
    step, for samples/s. on_nonfinite: "pause" (default), "raise" (NonFinite) or "ignore". keep_finite: keep a copy
    of the weights and the optimizer's state at each flush whose losses are finite (two sets: memory for two more
    models and optimizers), put back when the guard pauses. store: the run
    store's path (default $LIVEPROP_STORE or runs/liveprop.db). visdom: a Visdom server's URL (default
    $LIVEPROP_VISDOM_URL; none: off). tensorboard_dir: TensorBoard event files under DIR/<run> ("" off).
    telemetry_every, telemetry_seconds, hist_bins, flush_seconds: the engine's telemetry knobs
    (engine/config/fields.py), with its defaults. dashboard: the dashboard's address, for the link. at, rules:
    scheduled actions ("300:lr=1e-7") and rules ("spike:10:pause"), as the engine's --at and --rule take them.

    Under torchrun (a process group of several, started by the script before watch): every rank calls watch,
    rank 0 alone records, and every rank applies the viewers' commands and the scheduled actions at the same step."""
    if not (isinstance(model, nn.Module) or (isinstance(model, dict) and all(map(torch.is_tensor, model.values())))):
        raise TypeError(f"liveprop.watch: model must be an nn.Module or a dict of tensors, not {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"liveprop.watch: optimizer must be a torch.optim.Optimizer or None, not {type(optimizer)}")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"liveprop.watch: on_nonfinite must be one of {', '.join(ON_NONFINITE)}, got {on_nonfinite!r}")
    for field, entries in (("at", at), ("rule", rules)):
        if entries_problem(field, list(entries)):
            raise ValueError(f"liveprop.watch: {entries_problem(field, list(entries))}")
    layers = Layers(model, optimizer)
    device = next((p.device for _, p in layers.params), torch.device("cpu"))
    ranks = Ranks.joined(device)
    leader = ranks is None or ranks.leader
    name = name or Path(sys.argv[0] if sys.argv else "").stem or "script"
    knobs = {"telemetry_every": telemetry_every, "telemetry_seconds": telemetry_seconds, "hist_bins": hist_bins,
             "on_nonfinite": on_nonfinite, "device": str(device),
             "at": list(canonical("at", at)), "rule": list(canonical("rule", rules))}  # fmt: skip
    described = script_config(name, config, model if isinstance(model, dict) else unwrapped(model), optimizer, knobs)
    store_path, run_id, control = str(store or default_path()), new_run_id(), Control()
    run_id = run_id if ranks is None else ranks.share(run_id)  # rank 0's on every rank
    record = Record.open(store_path, run_id, described, total_steps, device, control) if leader else None
    telemetry = Telemetry(
        ranks=ranks,
        device=device,
        batch_size=batch_size or 0,
        every=telemetry_every,
        seconds=telemetry_seconds,
        bins=hist_bins,
        flush_seconds=flush_seconds,
    )
    schedulers = tuple(scheduler) if isinstance(scheduler, (list, tuple)) else (scheduler,) if scheduler else ()
    link = f"{dashboard.rstrip('/')}/?run={run_id}"
    subscribers, sinks = Subscribers(), []
    try:  # Visdom and TensorBoard first, so that their status events reach the store
        shown = RunConfig(name=name, visdom=visdom, tensorboard_dir=tensorboard_dir)
        sinks = attach(subscribers, shown, run_id, store_path, shown=described) if leader else []
    except Exception as e:  # a bad address or folder: the run goes on without them
        say(f"Visdom and TensorBoard are off for this run: {type(e).__name__}: {e}")
    guard = DivergenceGuard(layers) if keep_finite and on_nonfinite == "pause" else None
    try:
        if guard is not None:
            guard.save(0)  # a divergence before the first flush puts back the starting weights
    except Exception as e:  # no memory for the copies
        guard = None
        say(f"the last finite weights are not kept: {type(e).__name__}: {e}; training goes on")
    if record:
        subscribers.add_callback("on_flush", record.sink.on_flush)
        subscribers.add_callback("on_status", record.sink.on_status)
    run = Run(
        layers=layers,
        optimizer=optimizer,
        telemetry=telemetry,
        control=control,
        record=record,
        run_id=run_id,
        subscribers=subscribers,
        sinks=sinks,
        on_nonfinite=on_nonfinite,
        schedulers=schedulers,
        batch_size=batch_size,
        link=link,
        plan=Plan(at),
        rules=Rules(rules),
        ranks=ranks,
        guard=guard,
        resumable=record is not None if ranks is None else ranks.share(record is not None),
    )
    if record:
        say(f"run {run_id} ({name}) is watched: {link}")
    return run
