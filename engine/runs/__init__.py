"""Runs as processes: the public run API (api.py: launch, pause, ...), the worker, the warm standby, progress."""
