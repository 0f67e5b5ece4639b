"""The lecture's own cells, read from the notes and run, against the engine run with the same --seed.

The notes are the project's seed, `../shared/seed/pytorch-lecture-notes.txt` beside this checkout (CI
has it at the same place); without them these tests skip and say why. Each cell is found by lines only
it has, cut after its training loop, and exec'd in a fresh namespace right after torch.manual_seed(SEED),
with four changes, each checked to apply:

- device: the lecture's torch.device('cuda') becomes the test's device (the CPU, and CUDA where there is one);
- dtype: every torch.randn(...) and the model are cast to float64 right after they are drawn. The draws
  stay the lecture's (float32, torch's default, as the engine draws them too) and the arithmetic is
  float64; requires_grad moves after the cast, so w1 and w2 stay leaves;
- steps: the cell's range(500) or range(5) becomes range(STEPS);
- each step's loss.item() is appended to a list, on the line after the one that computes it.

The engine side is a default RunConfig with only mode, seed, dtype, steps and device set: the default
run of every mode is the lecture's program (init "lecture", resolved in engine/config/fields.py and drawn in
build.lecture_draws), trained by the worker's own body, its losses read back from the run store.
"""

import re
from pathlib import Path

import pytest
import torch

from engine import ConfigError, RunConfig, Store, get_run
from engine.build import assemble as build

NOTES = Path(__file__).resolve().parents[2] / "shared" / "seed" / "pytorch-lecture-notes.txt"
SEED = 3
STEPS = 50
TOL = 1e-10  # relative, float64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# mode -> lines that only that cell of the notes has
CELLS = {
    "manual": ["grad_h[h<0] = 0"],  # In [16], the tensor two-layer net
    "autograd": ["requires_grad = True", "h_relu = h.clamp(min=0)"],  # In [19]
    "custom_function": ["class MyReLU(torch.autograd.Function)", "h_relu = my_relu(h)"],  # In [23]
    "nn": ["param -= learning_rate * param.grad"],  # In [29], nn.Sequential with a manual update
    "optim": ["optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)"],  # In [30], Adam
}


def cells(text):
    """The notes' code cells that train: from an "In [n]:" prompt to the end of the `for t` loop."""
    out = []
    for chunk in re.split(r"^In \[[\d ]*\]:[ \t]*$", text, flags=re.M)[1:]:
        lines = chunk.strip("\n").splitlines()
        loop = next((i for i, line in enumerate(lines) if line.startswith("for t in range(")), None)
        if loop is None:
            continue
        end = next((i for i in range(loop + 1, len(lines)) if lines[i].strip() and not lines[i][0].isspace()), None)
        out.append("\n".join(lines[:end]))
    return out


def lecture_cell(mode):
    [code] = [c for c in cells(NOTES.read_text(encoding="utf-8")) if all(s in c for s in CELLS[mode])]
    return code


def subn(pattern, repl, code, expected):
    code, n = re.subn(pattern, repl, code, flags=re.M)
    assert n == expected, f"{pattern!r} matched {n} times, not {expected}: the notes changed?"
    return code


def runnable(code, device):
    """The cell with the four changes of the module docstring."""
    nn_cell = "torch.nn.Sequential(" in code

    def cast(m):  # torch.randn(N, D_in, device=device, requires_grad = True)
        grad = ".requires_grad_()" if m["grad"] else ""
        return f"torch.randn({m['args']}).to(torch.float64){grad}"

    code = subn(r"torch\.device\('cuda'\)", f"torch.device({device!r})", code, 1)
    code = subn(
        r"torch\.randn\((?P<args>[^()]*?)(?P<grad>, requires_grad ?= ?True)?\)", cast, code, 2 if nn_cell else 4
    )
    code = subn(r"^model\.to\(device\)$", "model.to(device, torch.float64)", code, 1 if nn_cell else 0)
    code = subn(r"^for t in range\(\d+\):", f"for t in range({STEPS}):", code, 1)
    return subn(r"^(\s+)loss = .*$", r"\g<0>\n\1_losses.append(loss.item())", code, 1)


def run_lecture(mode, device):
    """(losses, namespace) of the lecture's cell, run for STEPS steps after torch.manual_seed(SEED)."""
    ns = {"_losses": []}
    torch.manual_seed(SEED)
    exec(compile(runnable(lecture_cell(mode), device), f"<lecture cell: {mode}>", "exec"), ns)
    return ns["_losses"], ns


def run_engine(mode, device, store, run_inprocess):
    """(losses, resolved config) of the engine's default run of `mode` with --seed SEED, float64."""
    run_id, status = run_inprocess(RunConfig(mode=mode, seed=SEED, dtype="float64", steps=STEPS, device=device), store)
    assert status == "finished"
    s = Store(store)
    losses = s.scalars(run_id, "loss")
    s.close()
    assert [step for step, _ in losses] == list(range(STEPS))
    return [v for _, v in losses], get_run(run_id, store)["config"]


def max_rel(got, want):
    return max(abs(a - b) / abs(b) for a, b in zip(got, want, strict=True))


@pytest.mark.skipif(not NOTES.is_file(), reason=f"the lecture notes are not here: {NOTES}")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", list(CELLS))
def test_engine_default_run_is_the_lectures_cell(mode, device, store, run_inprocess):
    want, ns = run_lecture(mode, device)
    got, cfg = run_engine(mode, device, store, run_inprocess)

    # the same program: the lecture's sizes, rate, init and biases
    assert (cfg["batch_size"], cfg["d_in"], cfg["hidden"], cfg["d_out"]) == (ns["N"], ns["D_in"], ns["H"], ns["D_out"])
    assert cfg["n_samples"] == ns["N"] and cfg["lr"] == ns["learning_rate"]
    assert cfg["init"] == "lecture" and cfg["bias"] == (mode in ("nn", "optim"))
    assert cfg["loss"] == ("mse" if mode in ("nn", "optim") else "sse")
    # the comparison means something only if the lecture's loop learned
    assert len(want) == STEPS and want[-1] < 0.99 * want[0], want

    err = max_rel(got, want)
    assert err <= TOL, (
        f"{mode} on {device}: loss differs from the lecture's by {err:.2e} relative (steps 0-{STEPS - 1})"
    )


# ---------------------------------------------------------------------------------------------
# the lecture init itself, without the notes


def test_lecture_init_draws_x_y_w1_w2_in_order_and_keeps_the_batch():
    """The lecture's first lines after torch.manual_seed, written out; every step sees the same x, y
    (one full batch: no DataLoader, so no shuffle, though shuffle is on)."""
    mode, batches = build.build(build.prepare(RunConfig(seed=SEED, device="cpu", steps=3)))
    torch.manual_seed(SEED)
    N, D_in, H, D_out = 64, 1000, 100, 10
    x = torch.randn(N, D_in)
    y = torch.randn(N, D_out)
    w1 = torch.randn(D_in, H)
    w2 = torch.randn(H, D_out)
    params = dict(mode.named_params())
    assert params.keys() == {"w1", "w2"}
    assert torch.equal(params["w1"], w1) and torch.equal(params["w2"], w2)
    for _ in range(3):
        bx, by = next(batches)
        assert torch.equal(bx, x) and torch.equal(by, y)


@pytest.mark.parametrize(
    "kw,init,bias",
    [
        (dict(mode="manual"), "lecture", False),  # the lecture's raw net has no biases
        (dict(mode="custom_function", n_samples=32), "lecture", False),  # N = 32, still one full batch
        (dict(mode="nn"), "lecture", True),  # its nn.Sequential's Linear layers have them
        (dict(mode="optim"), "lecture", True),
        (dict(mode="nn", bias=False), "torch", False),  # not the lecture's model: left as asked
        (dict(mode="autograd", dataset="teacher"), "randn", True),
        (dict(mode="manual", n_samples=128), "randn", True),  # minibatches: not the lecture's one batch
        (dict(mode="manual", sampler="random"), "randn", True),
        (dict(mode="manual", arch="mlp"), "torch", True),
        (dict(mode="optim", n_samples=128), "torch", True),
        (dict(mode="nn", init="lecture", bias=False), "lecture", True),  # asked for the lecture's model
    ],
)
def test_auto_init_is_the_lectures_where_it_fits(kw, init, bias):
    c = build.prepare(RunConfig(device="cpu", **kw)).cfg
    assert (c.init, c.bias) == (init, bias)


def test_lecture_init_elsewhere_is_refused_with_the_reason():
    with pytest.raises(
        ConfigError, match=r"init 'lecture' .* here dataset is 'teacher', n_samples 100 > batch_size 64"
    ):
        build.prepare(RunConfig(device="cpu", init="lecture", dataset="teacher", n_samples=100))
