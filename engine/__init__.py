"""Liveprop's training engine: a library and a CLI (python -m engine). Never imports Streamlit.

    from engine import RunConfig, launch, pause, resume, stop, set_lr, get_run, list_runs
    run_id = launch(RunConfig(mode="autograd", steps=1000))

The public API is engine/runs.py (runs from any process) and engine/build.py's prepare (checks
a config); reads of a run's series go through engine/store.py's Store, the only seam.
"""

from .build import prepare
from .config import ConfigError, RunConfig, validate
from .runs import (
    delete_run,
    fork,
    get_run,
    is_run_id,
    kill,
    launch,
    list_runs,
    pause,
    resume,
    resume_run,
    set_lr,
    stop,
    wait_ack,
)
from .standby import retire as retire_standby
from .standby import warm
from .store import ACTIVE, Store
from .to_onnx import to_onnx

__all__ = [
    "ConfigError",
    "RunConfig",
    "validate",
    "prepare",
    "launch",
    "pause",
    "resume",
    "resume_run",
    "fork",
    "to_onnx",
    "stop",
    "set_lr",
    "kill",
    "wait_ack",
    "get_run",
    "list_runs",
    "delete_run",
    "is_run_id",
    "warm",
    "retire_standby",
    "Store",
    "ACTIVE",
]
