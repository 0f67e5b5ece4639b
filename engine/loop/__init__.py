"""The training loop and what runs beside it: the trainer (raises events), telemetry, the divergence guard,
viewers' commands, the fast path, several processes, checkpoints."""
