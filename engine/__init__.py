"""Liveprop's training engine: a library and a CLI (python -m engine). Never imports Streamlit.

    from engine import RunConfig, launch, pause, resume, stop, set_lr, get_run, list_runs
    run_id = launch(RunConfig(mode="autograd", steps=1000))

The public API is engine/runs/api.py (runs from any process) and engine/build/assemble.py's prepare (checks
a config); reads of a run's series go through engine/store/db.py's Store, the only seam.
"""

from engine.build.assemble import prepare
from engine.config.fields import RunConfig
from engine.config.load import from_dict
from engine.config.reasons import applying, reasons, validate
from engine.errors import ConfigError, DiskFull, LivepropError, RunStateError, StorageError
from engine.runs.api import (
    current_lr,
    delete_run,
    edit_layer,
    fork,
    fork_plan,
    forks_of,
    get_run,
    is_run_id,
    kill,
    launch,
    list_runs,
    new_run_id,
    pause,
    resume,
    resume_run,
    set_lr,
    set_plan,
    step,
    stop,
    wait_ack,
)
from engine.runs.landscape import start as start_landscape
from engine.runs.landscape import status as landscape_status
from engine.runs.standby import retire as retire_standby
from engine.runs.standby import warm
from engine.store.db import ACTIVE, Store
from engine.tools.to_onnx import to_onnx

__all__ = [
    "LivepropError",
    "ConfigError",
    "RunStateError",
    "StorageError",
    "DiskFull",
    "RunConfig",
    "validate",
    "reasons",
    "applying",
    "from_dict",
    "prepare",
    "launch",
    "pause",
    "resume",
    "resume_run",
    "fork",
    "fork_plan",
    "to_onnx",
    "start_landscape",
    "landscape_status",
    "stop",
    "set_lr",
    "edit_layer",
    "step",
    "set_plan",
    "kill",
    "wait_ack",
    "get_run",
    "current_lr",
    "forks_of",
    "list_runs",
    "delete_run",
    "is_run_id",
    "new_run_id",
    "warm",
    "retire_standby",
    "Store",
    "ACTIVE",
]
