"""Liveprop's training engine: a library and a CLI (python -m engine). Never imports Streamlit.

    from engine import RunConfig, launch, pause, resume, stop, set_lr, get_run, list_runs
    run_id = launch(RunConfig(mode="autograd", steps=1000))
"""
from .config import ConfigError, RunConfig, validate
from .runner import get_run, kill, launch, list_runs, pause, prepare, resume, set_lr, stop, wait_ack
from .store import Store

__all__ = ["ConfigError", "RunConfig", "validate", "launch", "pause", "resume", "stop", "set_lr", "kill",
           "get_run", "list_runs", "wait_ack", "prepare", "Store"]
