"""ONNX export, verified: a run's trained model as an ONNX file that onnxruntime runs on the run's own inputs.

    to_onnx(run_id, path)   -> {"file", "max_abs_diff", "batch", ...}, also stored with the run
                               (the event "onnx")

torch.onnx.export (its dynamo exporter) writes the file; onnxruntime runs it on a batch of the run's
real inputs, and the largest absolute difference from PyTorch's own output on the same batch is the
verdict. The nn and optim modes export their nn.Module. The raw modes (manual, autograd,
custom_function) keep plain tensors in the lecture's layout (x @ w1), so they export through RawNet,
an nn.Module with the same forward (engine/modes/deep.py) on the same tensors. custom_function's MyReLU
is exported through its forward, x.clamp(min=0), which becomes ONNX's Max: inference has no backward.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from engine.build.assemble import build, prepare
from engine.config.load import from_dict
from engine.errors import ConfigError, RunStateError
from engine.loop import checkpoint
from engine.modes import deep
from engine.modes.functions import my_relu
from engine.store.db import opened
from engine.store.files import RunFiles

MAX_BATCH = 64  # inputs the verification runs through both


class RawNet(torch.nn.Module):
    """A raw mode's tensors (w1, b1, w2, ...) as an nn.Module with the mode's own forward."""

    def __init__(self, mode, relu):
        super().__init__()
        self.weights = torch.nn.ParameterDict(
            {n: torch.nn.Parameter(w.detach().clone()) for n, w in mode.named_params()}
        )
        self.relu = relu

    def forward(self, x):
        return deep.forward(dict(self.weights), x, self.relu)


def to_onnx(run_id: str, path: str | Path | None = None, store=None) -> dict:
    """Export run_id's model as it is in its latest checkpoint into path (default: the run's own,
    engine/store/files.py) and verify it. ConfigError with one line when there is no checkpoint or the
    exporter or onnxruntime cannot take the model."""
    import onnxruntime

    with opened(store) as s:
        if s.get_run(run_id) is None:
            raise RunStateError(f"no run {run_id!r} in {s.path}")
        files = RunFiles.of(run_id, s.path)
        path, source = path or files.onnx, files.checkpoint
        if not source.is_file():
            raise RunStateError(f"run {run_id} has no checkpoint yet (one is written at its start, then periodically)")
        ckpt = checkpoint.load(source)
        p = prepare(dataclasses.replace(from_dict(ckpt["config"]), device="cpu"), memory=False)
        mode, batches = build(p)
        checkpoint.restore(ckpt, mode, batches, p.cfg)
        relu = my_relu if p.cfg.mode == "custom_function" else (lambda h: h.clamp(min=0))
        model = (mode.model if mode.model is not None else RawNet(mode, relu)).eval()
        x = next(batches)[0][:MAX_BATCH]
        with torch.no_grad():
            want = model(x)
        _export(model, x, Path(path))
        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        except Exception as e:
            raise ConfigError(f"onnxruntime cannot run the exported model: {_first_line(e)}") from None
        info = {
            "file": str(Path(path).resolve()),
            "max_abs_diff": float(np.abs(got - want.numpy()).max()),
            "batch": len(x),
            "dtype": p.cfg.dtype,
            "onnxruntime": onnxruntime.__version__,
        }
        s.add_event(run_id, ckpt["step"], "onnx", info)
    return info


def _export(model, x, path: Path):
    """torch.onnx.export into path, atomically; a model the exporter cannot take is one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        torch.onnx.export(model, (x,), str(tmp), dynamo=True, external_data=False, verbose=False)
        os.replace(tmp, path)
    except Exception as e:
        raise ConfigError(f"torch.onnx.export cannot export this model: {_first_line(e)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
