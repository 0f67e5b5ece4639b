"""From a config to a ready run: the data, its batches, the model, the optimizer and the mode (assemble.py),
after the checks of what the config reads, writes and downloads (checks.py)."""
