"""The autograd graph of one training step, walked from the loss's grad_fn, as graphviz DOT text.

The lecture's "dynamic computation graph": PyTorch records a new graph at every forward pass.
`graph_for_config(cfg)` builds the configured model on the CPU with a tiny batch, runs the
forward pass twice (two steps, two distinct graphs), and returns the second graph as DOT:

    op nodes        grad_fn classes (MmBackward0, ReluBackward0, ...)
    parameter nodes AccumulateGrad leaves, labelled with the parameter's name and shape
    edges           the forward direction, inputs to outputs, ending at the loss

A large model (more than max_nodes nodes) is collapsed by module: forward hooks record which
grad_fn nodes each module created, and every node of a module at the chosen depth (e.g. resnet's
layer1 ... layer4) becomes one box. Manual mode records no graph at all, so for it the graph shown
is the one autograd records for the same forward pass (the reference of its gradient check).

Never imports Streamlit.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import torch

MAX_NODES = 150


@dataclasses.dataclass
class GraphInfo:
    dot: str
    nodes: int  # nodes in the full graph
    shown: int  # nodes drawn (fewer when collapsed)
    depth: int | None  # module depth it was collapsed to, or None
    note: str
    seconds: float


# ---------------------------------------------------------------------------------------------
# walking the graph


def walk(root) -> tuple[list, list[tuple]]:
    """(nodes, edges) reachable from a grad_fn; edges run (input node, consumer node)."""
    nodes, edges, seen, stack = [], [], set(), [root]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        nodes.append(fn)
        for nxt, _ in fn.next_functions:
            if nxt is not None:
                edges.append((nxt, fn))
                stack.append(nxt)
    return nodes, edges


def label_modules(model: torch.nn.Module):
    """Forward hooks that label each grad_fn node with the innermost module that created it.
    Returns (labels: id(node) -> module name, keep: the nodes, hooks to remove)."""
    labels, keep = {}, []

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                yield from tensors(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                yield from tensors(o)

    def hook_for(name):
        def hook(_module, inputs, output):
            stop = {id(t.grad_fn) for t in tensors(inputs) if t.grad_fn is not None}
            stack = [t.grad_fn for t in tensors(output) if t.grad_fn is not None]
            seen = set()
            while stack:
                fn = stack.pop()
                if fn is None or id(fn) in stop or id(fn) in seen:
                    continue
                seen.add(id(fn))
                if id(fn) not in labels:  # inner modules' hooks run first: innermost wins
                    labels[id(fn)] = name
                    keep.append(fn)
                stack.extend(n for n, _ in fn.next_functions)

        return hook

    hooks = [m.register_forward_hook(hook_for(name)) for name, m in model.named_modules() if name]
    return labels, keep, hooks


# ---------------------------------------------------------------------------------------------
# DOT


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _op_name(fn) -> str:
    name = type(fn).__name__
    return name[: -len("Backward0")] if name.endswith("Backward0") else name


def _param_label(fn, names: dict) -> str:
    var = getattr(fn, "variable", None)
    if var is None:
        return "leaf"
    shape = "×".join(map(str, var.shape)) or "scalar"
    return f"{names.get(id(var), 'param')}\n({shape})"


def to_dot(
    root, names: dict | None = None, labels: dict | None = None, depth: int | None = None, title: str = ""
) -> tuple[str, int, int]:
    """DOT text of the graph under root: (dot, nodes in the graph, nodes drawn).

    names: id(parameter tensor) -> name. labels: id(node) -> module name; with depth, nodes of
    the same module prefix (that many dotted parts) are drawn as one box."""
    names, labels = names or {}, labels or {}
    nodes, edges = walk(root)

    def group(fn):
        if depth is None:
            return None
        label = labels.get(id(fn))
        return ".".join(label.split(".")[:depth]) if label else None

    key = {id(fn): (f"m:{group(fn)}" if group(fn) else f"n{i}") for i, fn in enumerate(nodes)}
    lines = [
        "digraph autograd {",
        '  rankdir=LR; node [fontname="Helvetica", fontsize=10];',  # left to right: fits a wide screen
        '  edge [color="#888888", arrowsize=0.6];',
    ]
    if title:
        lines.append(f"  labelloc=t; label={_q(title)};")
    members = Counter(key[id(fn)] for fn in nodes)
    ops_in = {}
    for fn in nodes:
        ops_in.setdefault(key[id(fn)], Counter())[_op_name(fn)] += 1
    drawn = set()
    for fn in nodes:
        k = key[id(fn)]
        if k in drawn:
            continue
        drawn.add(k)
        if k.startswith("m:"):
            top = ", ".join(f"{op}×{c}" if c > 1 else op for op, c in ops_in[k].most_common(3))
            lines.append(
                f'  {_q(k)} [shape=box3d, style=filled, fillcolor="#FFF2CC", '
                f"label={_q(f'{k[2:]}  ({members[k]} nodes)' + chr(10) + top)}];"
            )
        elif type(fn).__name__ == "AccumulateGrad":
            lines.append(
                f'  {_q(k)} [shape=ellipse, style=filled, fillcolor="#DAE8FC", label={_q(_param_label(fn, names))}];'
            )
        elif fn is root:
            lines.append(
                f'  {_q(k)} [shape=box, style="filled,bold", fillcolor="#F8CECC", '
                f"label={_q('loss' + chr(10) + _op_name(fn))}];"
            )
        else:
            lines.append(
                f'  {_q(k)} [shape=box, style="rounded,filled", fillcolor="#F5F5F5", label={_q(_op_name(fn))}];'
            )
    seen_edges = set()
    for src, dst in edges:
        a, b = key[id(src)], key[id(dst)]
        if a != b and (a, b) not in seen_edges:
            seen_edges.add((a, b))
            lines.append(f"  {_q(a)} -> {_q(b)};")
    lines.append("}")
    return "\n".join(lines), len(nodes), len(drawn)


# ---------------------------------------------------------------------------------------------
# the graph for a run configuration


def graph_for_config(cfg, collapse: str = "auto", depth: int = 1, max_nodes: int = MAX_NODES) -> GraphInfo:
    """Build cfg's model on the CPU with a batch of 2, run two forward passes, and return the
    second pass's graph. collapse: "auto" (by module when larger than max_nodes), "always", "never".
    Raises ConfigError for a configuration that cannot be built."""
    from engine.build.assemble import build, prepare
    from engine.config.fields import RAW_MODES
    from engine.modes.autograd import Mode as Autograd
    from engine.modes.losses import LOSSES

    t0 = time.perf_counter()
    small = dict(
        device="cpu",
        batch_size=2,
        steps=1,
        epochs=0,
        num_workers=0,
        sampler="none",
        pretrained="" if cfg.pretrained == "torchvision" else cfg.pretrained,
    )
    if cfg.dataset in ("random", "teacher"):
        small["n_samples"] = 2
    p = prepare(dataclasses.replace(cfg, **small))
    mode, batches = build(p)
    x, y = next(batches)
    note = ""
    labels, keep, hooks = {}, [], []
    if p.cfg.mode in RAW_MODES:
        params = mode.params
        if p.cfg.mode == "manual":  # manual mode has no graph: show autograd's for the same forward
            params = {n: t.detach().clone().requires_grad_() for n, t in params.items()}
            mode = Autograd(params, p.cfg.loss, p.cfg.lr)
            note = (
                "Manual mode records no graph: its backward pass is written by hand. This is the graph "
                "autograd records for the same forward pass, the reference of its gradient check."
            )
        names = {id(t): n for n, t in params.items()}
        forward = mode.forward
    else:
        model = mode.model
        names = {id(t): n for n, t in model.named_parameters()}
        labels, keep, hooks = label_modules(model)
        forward = model
    try:
        first = LOSSES[p.cfg.loss](forward(x), y)
        labels.clear()
        keep.clear()
        loss = LOSSES[p.cfg.loss](forward(x), y)
    finally:
        for h in hooks:
            h.remove()
    rebuilt = first.grad_fn is not loss.grad_fn
    del first
    dot, n, shown = to_dot(loss.grad_fn, names, labels)
    used_depth = None
    if collapse == "always" or (collapse == "auto" and n > max_nodes and labels):
        used_depth = depth
        dot, n, shown = to_dot(loss.grad_fn, names, labels, depth=depth)
    dyn = "Each forward pass recorded a new graph (two steps, two distinct grad_fn objects)." if rebuilt else ""
    note = " ".join(x for x in (note, dyn) if x)
    return GraphInfo(dot, n, shown, used_depth, note, time.perf_counter() - t0)
