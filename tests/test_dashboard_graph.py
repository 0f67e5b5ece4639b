"""engine/tools/graph.py: the autograd graph walked from grad_fn, as DOT text."""

import re
import subprocess
import sys

import torch

from engine import RunConfig
from engine.tools.graph import graph_for_config, to_dot

SMALL = dict(d_in=20, hidden=8, d_out=3, n_samples=16, batch_size=16, device="cpu")


def edges(dot):
    return re.findall(r'^\s*"([^"]+)" -> "([^"]+)";', dot, re.M)


def test_lecture_autograd_graph():
    w1 = torch.randn(5, 4, requires_grad=True)
    w2 = torch.randn(4, 2, requires_grad=True)
    x, y = torch.randn(3, 5), torch.randn(3, 2)
    loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
    dot, n, shown = to_dot(loss.grad_fn, {id(w1): "w1", id(w2): "w2"})
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert n == shown == 8  # Sum, Pow, Sub, Mm, Clamp, Mm, and the two AccumulateGrad leaves
    for label in ("w1\\n(5×4)", "w2\\n(4×2)", "Clamp", "loss\\nSum"):
        assert label in dot
    assert len(edges(dot)) == 7


def test_manual_mode_shows_autograds_graph_with_a_note():
    g = graph_for_config(RunConfig(mode="manual", **SMALL))
    assert "records no graph" in g.note and "w1" in g.dot and g.depth is None


def test_custom_function_graph_shows_myrelu():
    g = graph_for_config(RunConfig(mode="custom_function", **SMALL))
    assert "MyReLU" in g.dot and "distinct grad_fn" in g.note


def test_nn_model_names_parameters_and_collapses_by_module():
    cfg = RunConfig(mode="optim", arch="parallel_block", **SMALL)
    full = graph_for_config(cfg, collapse="never")
    assert "0.linear1.weight" in full.dot and full.depth is None
    collapsed = graph_for_config(cfg, collapse="always", depth=1)
    assert collapsed.depth == 1 and collapsed.shown < full.shown
    assert '"m:0"' in collapsed.dot and '"m:1"' in collapsed.dot and ("m:0", "m:1") in edges(collapsed.dot)


def test_large_model_collapses_automatically():
    cfg = RunConfig(mode="optim", arch="cnn", dataset="digits", batch_size=2, device="cpu")
    g = graph_for_config(cfg, max_nodes=10)
    assert g.depth == 1 and g.shown < g.nodes


def test_graph_module_never_imports_streamlit():
    code = "import sys, engine.tools.graph; sys.exit('streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_graph_runs_left_to_right_to_fit_a_wide_screen():
    """A deep model's graph is a long chain: drawn top to bottom it took a screen per node."""
    g = graph_for_config(RunConfig(mode="optim", arch="mlp", depth=6, device="cpu"), max_nodes=1000)
    assert "rankdir=LR" in g.dot and "rankdir=TB" not in g.dot
