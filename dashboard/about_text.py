"""The About page's text: the lecture notes' five ways to train, each with the engine's own code.

The lecture is the PyTorch notes Liveprop is built from (seed/pytorch-lecture-notes.txt). The
paragraph under each heading is the engine's own docstring for that mode (engine/modes/), and the
code under it is the engine's source, read with inspect.getsource, so the page shows what runs.
"""

import difflib
import inspect
import io
import textwrap
import tokenize

import engine.build.models as models
from engine.modes import autograd, custom_function, manual, nn_optim, nn_sgd
from engine.modes.functions import MyReLU, my_relu

from .lecture_cells import CELLS

INTRO = """
Liveprop trains the networks of a PyTorch lecture while you watch. The lecture fits the same
two-layer net five times, each time letting PyTorch do a little more of the work:
`N, D_in, H, D_out = 64, 1000, 100, 10`, random `x` and `y`, 500 steps. Pick one of the five
**modes** in the sidebar, press **Start**, and the loss, the weight and gradient histograms and the
per-layer signals update live. **Compare modes** runs manual, autograd and custom Function from the
same seed: the page measures the largest gap between their curves, and the gradient check shows
how far the hand-written gradients are from autograd's.
"""


def _doc(module) -> str:
    first, _, rest = module.__doc__.strip().partition("\n")
    return f"*{first}*\n\n{' '.join(rest.split())}"


def _source(*objects) -> str:
    """The engine's code for these functions, methods or classes, dedented, one after the other."""
    return "\n".join(textwrap.dedent(inspect.getsource(o)) for o in objects).rstrip()


MODES = [
    ("manual: gradients by hand", _source(manual.TwoLayer.forward_backward, manual.TwoLayer.update), _doc(manual)),
    (
        "autograd: PyTorch tracks the graph",
        _source(
            autograd.TwoLayer.forward,
            autograd.TwoLayer.forward_backward,
            autograd.TwoLayer.update,
            autograd.TwoLayer.zero_grad,
        ),
        _doc(autograd),
    ),
    ("custom Function: your own backward", _source(MyReLU, my_relu), _doc(custom_function)),
    (
        "nn: a torch.nn model",
        _source(models.mlp, nn_sgd.Mode.forward_backward, nn_sgd.Mode.update, nn_sgd.Mode.zero_grad),
        _doc(nn_sgd),
    ),
    (
        "nn + optim: an optimizer does the update",
        _source(nn_sgd.Mode.forward_backward, nn_optim.Mode.update, nn_optim.Mode.zero_grad),
        _doc(nn_optim),
    ),
]

# The engine's code for each mode (the Code panel), by RunConfig mode name, in the order of MODES.
ENGINE_CODE = dict(zip(("manual", "autograd", "custom_function", "nn", "optim"), (code for _, code, _ in MODES)))


BUILDS_ON = {"autograd": "manual", "custom_function": "autograd", "nn": "autograd", "optim": "nn"}


def _code_only(cell: str) -> list[str]:
    """The cell's lines without comments (a line that is only a comment goes)."""
    cut = {
        t.start[0]: t.start[1]
        for t in tokenize.generate_tokens(io.StringIO(cell).readline)
        if t.type == tokenize.COMMENT
    }
    lines = [line[: cut[i]].rstrip() if i in cut else line.rstrip() for i, line in enumerate(cell.splitlines(), 1)]
    return [line for i, line in enumerate(lines, 1) if line or i not in cut]


def concept_diff(mode: str) -> tuple[str, str]:
    """(what it shows, the diff): the lecture's cell for `mode` against the cell of the mode it builds on,
    comments left out, so that what changed is the mode's concept. Manual mode comes first: it is set
    against autograd, whose loss.backward() replaces its hand-written backward pass."""
    a, b = (mode, "autograd") if mode == "manual" else (BUILDS_ON[mode], mode)
    (la, ca), (lb, cb) = CELLS[a], CELLS[b]
    lines = difflib.unified_diff(_code_only(ca), _code_only(cb), f"{la} {a}", f"{lb} {b}", lineterm="")
    return f"The lecture's {lb} against {la} ({b} against {a}), comments left out", "\n".join(lines)


OUTRO = """
### Beyond the five loops
- **Architectures**: the lecture's `ParallelBlock` network (two Linear maps multiplied, then ReLU),
  an MLP of any depth, a small CNN, and torchvision models such as ResNet for fine-tuning: load
  pretrained weights from a file, freeze the backbone, replace the head.
- **Data** goes through a `Dataset` and a `DataLoader` (batch size, shuffle, workers, sampler): the
  lecture's random tensors, a teacher network, scikit-learn's digits, your CSV or an image folder.
- **Visualisation**: this page, and a Visdom server for remote viewing (the lecture mentions Visdom
  and tensorboardX).
- **Dynamic computation graph**: PyTorch builds the graph anew at every iteration. The
  *Computation graph* page draws it for the configuration in the sidebar.
- **Learning rates**: the raw loops use sum-of-squares loss and `torch.randn` weights, hence the
  lecture's tiny 1e-6; the nn loops use mean-squared error and 1e-2, Adam 1e-4. Changing the mode
  sets the lecture's rate for it.
"""

PLAYGROUND = """
### Playgrounds: see what the network learns
Under **Data**, pick a 2D set (`moons`, `circles`, `spiral`, `xor`, `gaussians`: two classes of points) or a 1D
curve (`sine`, `abs`, `step`, `poly`). Its points are drawn from the seed with the **noise** you set, and a fifth
of them are held out as a test split the net never trains on. While it trains, the Train page's **What it
learned** panel draws the decision regions (or the learned curve) under the training and test points, with the
test accuracy, and for nets of at most 64 units a layer one tile per neuron: each hidden unit's output over the
plane. A slider goes back through the snapshots. The Health tab shows the share of dead ReLU units.

What to try, each measured with mode optim, adam, lr 0.01, arch mlp, 500 points at noise 0.1, 1,500 steps:
- **xor with no hidden layer cannot be learned** (depth 1): no straight line splits the quadrants, and the test
  accuracy stays near chance (40-50%). One hidden layer of 16 units reaches 99%.
- **gaussians** need no hidden layer at all: depth 1 reaches 100%. **circles** need one: 8 hidden units reach 99%.
- **The spiral needs a wider net**: 8 hidden units stall near 75% test accuracy, 32 near 80%, 100 (the default)
  reach about 87%, the noise's limit; at noise 0, 100 units reach 100% and 8 stay under 80%.
- **moons** at the defaults (100 hidden units) reach 100% within 500 steps; 8 hidden units about 90%.
- **Too high a learning rate**: the spiral at lr 1 never settles (adam: the test accuracy wanders near chance),
  though it stays finite, since cross-entropy's gradient is bounded. A curve fitted by sum of squares does
  diverge: `sine` in mode manual at lr 0.1 overflows within about 15 steps, and the NaN guard pauses the run at
  the first non-finite step, marks it on the loss chart and puts back the last finite weights.
- The **sidebar suggests** settings that learn the set you pick; **Use these settings** puts them in place.
"""
