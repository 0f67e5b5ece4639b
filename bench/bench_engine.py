"""Engine overhead: steps/s of the engine with full telemetry against the bare lecture loop.

For each mode at the lecture's size (N, D_in, H, D_out = 64, 1000, 100, 10), the bare loop is the
lecture's code as written; the engine is a real Trainer with default telemetry (histograms, norms,
update ratios and the gradient check every K steps, one flush per 2,000 steps or 0.5 s) writing to
a real SQLite store on its own thread. The two run interleaved in one process, in ABBA order,
chunk by chunk, so machine noise hits both alike. The figure is the median of per-round ratios;
bench/report.py reports the ratio of the medians beside it (report_rows).

    python bench/bench_engine.py [--device cpu|cuda] [--rounds 8] [--chunk 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from rows import interleave, paired

from engine.build import assemble as build
from engine.config.fields import RunConfig
from engine.loop.control import Control
from engine.loop.telemetry import Telemetry
from engine.loop.trainer import Trainer
from engine.runs import api as runs
from engine.sinks import store as store_sink

N, D_in, H, D_out = 64, 1000, 100, 10


# -- the lecture's loops, as written (device added) ------------------------------------------------


def bare_manual(device):
    x, y = torch.randn(N, D_in, device=device), torch.randn(N, D_out, device=device)
    w1, w2 = torch.randn(D_in, H, device=device), torch.randn(H, D_out, device=device)
    learning_rate = 1e-6

    def run(steps):
        for t in range(steps):  # noqa: B007  (the lecture's loop, verbatim)
            h = x.mm(w1)
            h_relu = h.clamp(min=0)
            y_pred = h_relu.mm(w2)
            loss = (y_pred - y).pow(2).sum()  # noqa: F841  (the lecture computes it; the bench does not print it)
            grad_y_pred = 2.0 * (y_pred - y)
            grad_w2 = h_relu.t().mm(grad_y_pred)
            grad_h_relu = grad_y_pred.mm(w2.t())
            grad_h = grad_h_relu.clone()
            grad_h[h < 0] = 0
            grad_w1 = x.t().mm(grad_h)
            w1.sub_(learning_rate * grad_w1)  # w1 -= learning_rate * grad_w1
            w2.sub_(learning_rate * grad_w2)

    return run


def _bare_autograd(device, relu):
    x, y = torch.randn(N, D_in, device=device), torch.randn(N, D_out, device=device)
    w1 = torch.randn(D_in, H, device=device, requires_grad=True)
    w2 = torch.randn(H, D_out, device=device, requires_grad=True)
    learning_rate = 1e-6

    def run(steps):
        for t in range(steps):  # noqa: B007  (the lecture's loop, verbatim)
            y_pred = relu(x.mm(w1)).mm(w2)
            loss = (y_pred - y).pow(2).sum()
            loss.backward()
            with torch.no_grad():
                w1.sub_(learning_rate * w1.grad)  # w1 -= learning_rate * w1.grad
                w2.sub_(learning_rate * w2.grad)
                w1.grad.zero_()
                w2.grad.zero_()

    return run


def bare_autograd(device):
    return _bare_autograd(device, lambda h: h.clamp(min=0))


def bare_custom_function(device):
    from engine.modes.functions import my_relu

    return _bare_autograd(device, my_relu)


def _lecture_model(device, parallel=False):
    if parallel:
        from engine.build.models import ParallelBlock

        return torch.nn.Sequential(ParallelBlock(D_in, H), ParallelBlock(H, H), torch.nn.Linear(H, D_out)).to(device)
    return torch.nn.Sequential(torch.nn.Linear(D_in, H), torch.nn.ReLU(), torch.nn.Linear(H, D_out)).to(device)


def bare_nn(device):
    x, y = torch.randn(N, D_in, device=device), torch.randn(N, D_out, device=device)
    model = _lecture_model(device)
    learning_rate = 1e-2

    def run(steps):
        for t in range(steps):  # noqa: B007  (the lecture's loop, verbatim)
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            with torch.no_grad():
                for param in model.parameters():
                    param -= learning_rate * param.grad
            model.zero_grad()

    return run


def _bare_adam(device, parallel):
    x, y = torch.randn(N, D_in, device=device), torch.randn(N, D_out, device=device)
    model = _lecture_model(device, parallel)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def run(steps):
        for t in range(steps):  # noqa: B007  (the lecture's loop, verbatim)
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    return run


CASES = {  # name: (bare loop, engine config)
    # the lecture's raw-tensor net has no biases (its nn nets do)
    "manual": (bare_manual, dict(mode="manual", bias=False)),
    "autograd": (bare_autograd, dict(mode="autograd", bias=False)),
    "custom_function": (bare_custom_function, dict(mode="custom_function", bias=False)),
    "nn": (bare_nn, dict(mode="nn")),
    "optim (adam)": (lambda d: _bare_adam(d, False), dict(mode="optim")),
    "parallel_block + adam": (lambda d: _bare_adam(d, True), dict(mode="optim", arch="parallel_block")),
}


# -- the engine -------------------------------------------------------------------------------------


def engine_runner(overrides, device, store_path, total):
    cfg = RunConfig(**overrides, device=device, steps=total)
    run_id, p = runs.create_run(cfg, store_path)
    mode, batches = build.build(p)
    control = Control()
    # the fast path (a CUDA graph, engine/loop/fast.py) is the trainer's to run, as the worker asks for it
    fast = {"fast": True} if getattr(p.cfg, "fast", False) else {}
    trainer = Trainer(mode, batches, Telemetry.from_config(p.cfg, p.device), total, control=control, **fast)
    sink = store_sink.StoreSink(store_path, run_id, control)
    trainer.add_callback("on_flush", sink.on_flush)
    return trainer, sink


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, steps, device):
    sync(device)
    t = time.perf_counter()
    fn(steps)
    sync(device)
    return steps / (time.perf_counter() - t)


def chunk_for(fn, device, seconds):
    """Steps that take `fn` about `seconds` (at least 4), from a short timing of it."""
    n = 4
    while True:
        sync(device)
        t = time.perf_counter()
        fn(n)
        sync(device)
        dt = time.perf_counter() - t
        if dt >= 0.1 or n >= 10**6:
            return max(4, int(n / dt * seconds))
        n *= 4


def bench_case(name, device, rounds, chunk, store_path, chunk_s=1.5):
    """(bare steps/s per round, engine steps/s per round, the chunk): interleaved, the order alternating."""
    bare_factory, overrides = CASES[name]
    bare = bare_factory(device)
    trainer, sink = engine_runner(overrides, device, store_path, total=10**9)
    engine = lambda steps: trainer.run(max_steps=steps)  # noqa: E731
    bare(50), engine(50)  # warm up both
    # by default about chunk_s of the bare loop, so every chunk holds its share of snapshots and flushes
    chunk = chunk or chunk_for(bare, device, chunk_s)
    engine(chunk)  # past the automatic telemetry interval's first estimates
    try:
        bare_rates, engine_rates = interleave(
            lambda: timed(bare, chunk, device), lambda: timed(engine, chunk, device), rounds
        )
    finally:
        sink.close()
    return bare_rates, engine_rates, chunk


def report_rows(device, rounds, chunk_s, store_path, cases=None) -> list[dict]:
    """The report's rows "engine vs bare" (bench/report.py): one per mode, anchored on the bare loop."""
    out = []
    for name in cases or CASES:
        bare_rates, engine_rates, chunk = bench_case(name, device, rounds, 0, store_path, chunk_s)
        out.append(
            paired(
                "engine vs bare",
                name,
                "steps/s",
                "bare lecture loop",
                bare_rates,
                engine_rates,
                target={"ratio": 1.0, "floor": 0.97},
                note=f"{chunk} steps per chunk, about {chunk_s:g} s of the bare loop",
            )
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument(
        "--chunk", type=int, default=0, help="steps per timed chunk (default: about 1.5 s of the bare loop)"
    )
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    dev_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"engine vs bare lecture loop, N,D_in,H,D_out = {N},{D_in},{H},{D_out}, {dev_name}, "
        f"torch {torch.__version__}, {args.rounds} interleaved ABBA rounds, ~1.5 s chunks"
    )
    print(f"{'loop':<24} {'bare steps/s':>12} {'engine steps/s':>15} {'ratio':>7} {'chunk':>6}   per-round ratios")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            bare_rates, engine_rates, n = bench_case(
                name, args.device, args.rounds, args.chunk, os.path.join(tmp, "bench.db")
            )
            ratios = [e / b for b, e in zip(bare_rates, engine_rates)]
            b, e, ratio = statistics.median(bare_rates), statistics.median(engine_rates), statistics.median(ratios)
            print(
                f"{name:<24} {b:>12,.0f} {e:>15,.0f} {ratio:>6.3f}x {n:>6}   " + " ".join(f"{r:.2f}" for r in ratios),
                flush=True,
            )


if __name__ == "__main__":
    main()
