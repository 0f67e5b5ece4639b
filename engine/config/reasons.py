"""The one judge of a config: which fields do not apply to it, what in it is refused, and why.

    reasons(cfg, cuda) -> {field: Reason}   each field that does not apply here (the sidebar greys it out,
                                            from this) and each refusal (validate raises the first)
    validate(cfg) -> cfg                    a copy with every "auto" resolved, or ConfigError with the line
                                            of the first blocking reason

Where a field applies is its metadata (`where` in engine/config/fields.py). What needs the data or the
machine beyond "is there a CUDA device" (the dataset's size and task, memory, the files a run reads and
writes) is judged when a run is prepared (engine/build/assemble.py), after this.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from engine.config.fields import (
    FIELDS,
    GENERATED,
    IN_MEMORY,
    MAX_TEXT,
    MLP_ARCHS,
    PATHS,
    PLAYGROUND,
    PLAYGROUND_2D,
    RAW_MODES,
    RunConfig,
    default_lr,
    range_text,
)
from engine.config.load import shown
from engine.config.steering import canonical, entries_problem
from engine.errors import ConfigError


@dataclass(frozen=True)
class Reason:
    text: str  # one line for a person
    greyed: bool  # the field does not apply to this config: the sidebar greys it out
    blocks: bool  # validate refuses the config with this line


KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text", tuple: "a list of text"}
NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control characters, lone surrogates

# The line a strict field's refusal says, by the field and the gate it fails; elsewhere a line made from `where`
REFUSED = {
    ("optimizer", "mode"): "an optimizer applies only to mode 'optim'; mode {mode!r} updates the weights by hand "
    "(w -= lr * grad)",
    ("nesterov", "optimizer"): "nesterov needs optimizer sgd with momentum > 0",
    ("nesterov", "mode"): "nesterov needs optimizer sgd with momentum > 0",
    ("pretrained", "arch"): "pretrained weights apply to arch torchvision",
    ("freeze_backbone", "arch"): "freeze_backbone applies to arch torchvision",
    ("precision", "mode"): "precision {precision} applies to modes nn and optim: mode {mode!r} runs the lecture's "
    "hand-written tensor code as written, in {dtype}, the reference the other modes are checked against",
    ("precision", "dtype"): "precision {precision} lowers float32 matmuls only; dtype float64 keeps every op in "
    "float64 (autocast leaves it alone), so use precision fp32 or dtype float32",
    ("compile", "mode"): "compile applies to modes nn and optim; mode {mode!r} runs the lecture's tensor code as "
    "written",
    ("compile", "nproc"): "compile runs on one process; several processes train the model as written",
    ("compile", "nnodes"): "compile runs on one process; several processes train the model as written",
}

# What the sidebar says beside a greyed-out control, by the field ("*": any) and the gate it fails
GREYED = {
    ("*", "mode"): "mode {mode!r} updates the weights by hand (w -= lr * grad); {name} applies to mode 'optim'",
    ("*", "optimizer"): "{optimizer} has no {name} setting; it takes {takes}",
    ("precision", "mode"): "mode {mode!r} runs the lecture's hand-written tensor code in its dtype; precision is for "
    "modes nn and optim",
    ("precision", "dtype"): "dtype float64 keeps every op in float64; precision lowers float32 matmuls only",
    ("compile", "mode"): "mode {mode!r} runs the lecture's code as written; compile is for modes nn and optim",
    ("compile", "nproc"): "several processes train the model as written",
    ("compile", "nnodes"): "several processes train the model as written",
    ("hidden", "arch"): "a torchvision model has its own widths",
    ("depth", "arch"): "depth applies to arch mlp (two_layer is the depth-2 case)",
}


def reasons(cfg: RunConfig, cuda: bool | None = None) -> dict[str, Reason]:
    """Every field that does not apply to cfg or is refused in it, with why. cuda: whether this machine
    has a CUDA device, which the fast path needs (None: torch is asked)."""
    wrong = {name: Reason(why, False, True) for name in FIELDS if (why := _field_problem(name, getattr(cfg, name)))}
    if wrong:  # the checks below read the fields together: each must be of its kind first
        return wrong
    outside = {name: Reason(text, False, True) for name, text in _outside_root(cfg)}
    if outside:  # a path outside the data root is refused before anything probes it
        return outside
    optimizer = cfg.optimizer or ("adam" if cfg.mode == "optim" else "")
    c = dataclasses.replace(cfg, **_confined(cfg), optimizer=optimizer)  # the paths a worker would open
    out = {}
    for name, f in FIELDS.items():
        gate = next(((g, ok) for g, ok in f.metadata["where"].items() if getattr(c, g) not in ok), None)
        if gate:
            refused = f.metadata["strict"] and getattr(cfg, name) != f.default
            out[name] = Reason(_not_here(c, name, *gate, refused), True, refused)
    if c.nesterov and c.momentum <= 0:
        out["nesterov"] = Reason(REFUSED["nesterov", "optimizer"], True, True)
    elif not c.momentum and "nesterov" not in out:
        out["nesterov"] = Reason("Nesterov needs momentum > 0", True, False)
    out |= _length(c)
    fast = _fast(c, cuda)
    if fast:
        out["fast"] = Reason(f"fast: {fast}", True, c.fast)
    for name, text in _refusals(c):
        out.setdefault(name, Reason(text, False, True))
    return out


def _not_here(c: RunConfig, name: str, gate: str, ok: tuple, refused: bool) -> str:
    """Why field `name` does not apply to c, whose `gate` is not one of `ok`: the refusal's line when it is
    set there (REFUSED), else what the sidebar says beside the greyed-out control (GREYED)."""
    template = REFUSED.get((name, gate)) if refused else GREYED.get((name, gate)) or GREYED.get(("*", gate))
    if template:
        takes = ", ".join(optimizer_knobs(c.optimizer))
        return template.format(**(vars(c) | {"name": name.replace("_", " "), "takes": takes}))
    values = f"{', '.join(map(str, ok[:-1]))} or {ok[-1]}" if len(ok) > 1 else str(ok[0])
    return f"{name} applies to {gate} {values}; here {gate} is {getattr(c, gate)!r}"


def optimizer_knobs(optimizer: str) -> tuple[str, ...]:
    """The fields that an optimizer takes (what torch.optim's constructor has), from their `where`."""
    return tuple(
        name
        for name, f in FIELDS.items()
        if name != "optimizer"
        and f.metadata["where"].get("mode") == ("optim",)
        and optimizer in f.metadata["where"].get("optimizer", (optimizer,))
    )


def _length(c: RunConfig) -> dict[str, Reason]:
    """How long the run is: steps, or epochs when steps is 0, or until stopped."""
    if c.until_stopped:
        why = "the run goes on until you press Stop"
        return {"steps": Reason(why, True, False), "epochs": Reason(why, True, False)}
    if c.steps:
        return {"epochs": Reason("the run is counted in steps", True, False)}
    if c.epochs:
        return {"steps": Reason("the run is counted in epochs (steps 0)", True, False)}
    why = "give a positive number of steps, or steps = 0 and a positive number of epochs"
    return {"steps": Reason(why, False, True)}


def _fast(c: RunConfig, cuda: bool | None) -> str | None:
    """Why the fast path (engine/loop/fast.py: the whole step captured as a CUDA graph and replayed) cannot
    hold this run, or None. It needs CUDA, one full batch in memory (a DataLoader gives new batches and a
    ragged last one), one process, full speed, and an optimizer whose step a CUDA graph can hold. Whether
    the data fits one batch is judged with the data (engine/build/assemble.py)."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        return "CUDA graphs need a CUDA device; this machine has none (leave fast off and the plain loop runs)"
    if c.device == "cpu":
        return "CUDA graphs need a CUDA device, and device is cpu"
    if c.world > 1:
        return f"it captures one process's step; {c.world} processes (nproc x nnodes) train with the plain loop"
    if c.pace:
        return "it replays many steps at once, which a pace cannot space out; use pace 0"
    if c.dataset not in IN_MEMORY:
        return f"dataset {c.dataset!r} comes batch by batch from a DataLoader; a graph replays one fixed batch"
    if c.sampler != "none":
        return f"sampler {c.sampler!r} draws new batches (a DataLoader); a graph replays one fixed batch"
    if c.dataset in GENERATED and c.n_samples > c.batch_size:
        return (
            f"a graph replays one fixed batch: {c.n_samples} samples, batch_size {c.batch_size}; make it at least that"
        )
    if c.compile:
        return "with compile, unchecked: a capture must hold the compiled step with no recompile or sync; use one"
    if c.mode == "optim" and c.optimizer == "adagrad":
        return "torch's adagrad reads its step count on the host, so no graph holds it; use sgd, adam, adamw or rmsprop"
    return None


def _refusals(c: RunConfig):
    """(field, line) for each combination that cannot run, in the order a person should fix them."""
    if c.mode in RAW_MODES and c.arch not in MLP_ARCHS:
        yield (
            "arch",
            (
                f"mode {c.mode!r} works on raw weight tensors, so it takes arch "
                f"{' or '.join(MLP_ARCHS)}; use mode nn or optim for {c.arch!r}"
            ),
        )
    yield from _playground_misfits(c)
    if c.dataset == "csv":
        if not c.csv_path:
            yield "csv_path", "dataset csv needs csv_path (--csv-path FILE)"
        elif not os.path.isfile(c.csv_path):
            yield "csv_path", f"CSV file not found: {c.csv_path}"
        if not c.csv_target:
            yield "csv_target", "dataset csv needs csv_target, the name of the target column"
    if c.dataset == "imagefolder" and not os.path.isdir(c.image_dir):
        yield "image_dir", f"image folder not found: {c.image_dir!r} (--image-dir DIR)"
    if c.arch == "torchvision" and c.pretrained not in ("", "torchvision") and not os.path.isfile(c.pretrained):
        yield "pretrained", f"pretrained weights file not found: {c.pretrained}"
    if c.nnodes > 1 and not re.fullmatch(r"[A-Za-z0-9.\-]+:\d{1,5}", c.rdzv_endpoint):
        yield "rdzv_endpoint", f"nnodes {c.nnodes} needs rdzv_endpoint HOST:PORT, reachable from every machine"
    # several processes split each batch evenly, so that together they take the batch one process would
    if c.world > 1 and c.batch_size % c.world:
        yield (
            "batch_size",
            (f"batch_size {c.batch_size} does not split evenly over {c.world} processes; make it a multiple"),
        )
    if c.world > 1 and c.sampler in ("random", "balanced"):
        yield "sampler", f"sampler {c.sampler!r} draws for one process; with {c.world} processes use none or sequential"
    visdom = _visdom_problem(c.visdom)
    if visdom:
        yield "visdom", visdom
    misfits = _lecture_misfits(c)
    if c.init == "lecture" and misfits:
        yield (
            "init",
            (
                "init 'lecture' is the lecture's two-layer net on one full batch of random data (arch two_layer, "
                f"dataset random, sampler none, n_samples <= batch_size); here {', '.join(misfits)}"
            ),
        )


def _playground_misfits(c: RunConfig):
    """A playground set is points (2D: two classes, 1D: a curve), for a net of Linear layers and its task's loss."""
    if c.dataset not in PLAYGROUND:
        return
    plane = c.dataset in PLAYGROUND_2D
    if c.arch not in MLP_ARCHS + ("parallel_block",):
        where = "in the plane" if plane else "on a line"
        yield "arch", f"dataset {c.dataset!r} is points {where}, not images; use arch two_layer, mlp or parallel_block"
    if plane and c.loss not in ("auto", "cross_entropy"):
        yield "loss", f"dataset {c.dataset!r} has two classes: its loss is cross_entropy (or auto), not {c.loss}"
    if not plane and c.loss == "cross_entropy":
        yield "loss", f"dataset {c.dataset!r} is a curve to fit (regression): use loss sse, mse or auto"


def applying(cfg: RunConfig) -> dict:
    """The config as a dict without the fields that do not apply to it (a digits run has no d_in): what
    the Runs page and Visdom's pane show as the configuration that runs."""
    greyed = {name for name, r in reasons(cfg).items() if r.greyed}
    return {name: getattr(cfg, name) for name in FIELDS if name not in greyed}


def validate(cfg: RunConfig) -> RunConfig:
    """A copy of cfg with every "auto" resolved, or ConfigError with the first blocking reason's line."""
    blocking = [r.text for r in reasons(cfg).values() if r.blocks]
    if blocking:
        raise ConfigError(blocking[0])
    c = dataclasses.replace(cfg, **_confined(cfg))
    if c.mode == "optim":
        c.optimizer = c.optimizer or "adam"
    if c.lr == 0:
        c.lr = default_lr(c.mode)
    _resolve_init(c)
    c.at, c.rule = canonical("at", c.at), canonical("rule", c.rule)
    return c


def _field_problem(name, value) -> str | None:
    """One field on its own: its type, a number's bounds, a string's text and a choice's choices."""
    meta, kind = FIELDS[name].metadata, type(FIELDS[name].default)
    if kind is tuple:  # scheduled actions, rules: engine/config/steering.py's grammar
        return entries_problem(name, value)
    kinds = (int, float) if kind is float else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and kind is not bool):  # True is an int too
        return f"{name} must be {KINDS[kind]}, got {shown(value)}"
    if meta["bounds"]:
        lo, hi = meta["bounds"]
        if not (lo <= value <= hi and value != meta["excluded"]):  # nan is never in bounds
            who = "lr, the learning rate," if name == "lr" else name  # the word people search a message for
            return f"{who} must be {range_text(name)}, got {shown(value)}"
    if kind is str:
        if len(value) > MAX_TEXT:
            return f"{name} is {len(value)} characters long; at most {MAX_TEXT} are allowed"
        bad = NOT_TEXT.search(value)  # the store keeps UTF-8, a message shows one line
        if bad:
            return f"{name} must be plain text, but holds {bad.group()!r} at character {bad.start() + 1}"
        if meta["choices"] and value not in meta["choices"] and not (name == "optimizer" and value == ""):
            return f"unknown {name} {shown(value)}; choose one of: {', '.join(meta['choices'])}"
    return None


def _confined(c: RunConfig) -> dict[str, str]:
    """With $LIVEPROP_DATA_ROOT set (the dashboard sets it when it listens beyond this machine), every path
    a run reads or writes must lie inside that folder once symlinks and .. are resolved, so a visitor
    cannot reach the server's other files. A relative path is taken inside the root. Returns each path
    field's resolved path, which the config keeps: the worker opens what was checked."""
    root = os.environ.get("LIVEPROP_DATA_ROOT")
    if not root:
        return {}
    root = os.path.realpath(root)
    return {
        name: os.path.realpath(os.path.join(root, getattr(c, name)))
        for name, no_path in PATHS.items()
        if getattr(c, name) not in no_path
    }


def _outside_root(c: RunConfig):
    root = os.path.realpath(os.environ.get("LIVEPROP_DATA_ROOT", "/"))
    for name, path in _confined(c).items():
        if os.path.commonpath([root, path]) != root:
            yield name, f"{name}: {getattr(c, name)} is outside the data root {root} (LIVEPROP_DATA_ROOT)"


def _lecture_misfits(c: RunConfig) -> list[str]:
    """How c differs from the lecture's own program: the two-layer net on one full batch of random data."""
    misfits = [
        f"arch is {c.arch!r}" if c.arch != "two_layer" else "",
        f"dataset is {c.dataset!r}" if c.dataset != "random" else "",
        f"sampler is {c.sampler!r}" if c.sampler != "none" else "",
        f"n_samples {c.n_samples} > batch_size {c.batch_size}" if c.n_samples > c.batch_size else "",
    ]
    return [m for m in misfits if m]


def _resolve_init(c: RunConfig) -> None:
    """init "auto" -> "lecture" where the run is the lecture's own program (and, for nn and optim, with the
    biases of its nn.Linear layers); else "randn" for a raw mode on two_layer (the lecture's torch.randn
    weights, lr 1e-6), else "torch". The lecture init builds the lecture's model, so it sets bias as the
    lecture has it: no biases in the raw-tensor net (w1, w2 only), nn.Linear's in the nn programs."""
    if c.init == "auto":
        if not _lecture_misfits(c) and (c.mode in RAW_MODES or c.bias):
            c.init = "lecture"
        else:
            c.init = "randn" if (c.mode in RAW_MODES and c.arch == "two_layer") else "torch"
    if c.init == "lecture":
        c.bias = c.mode not in RAW_MODES


def _visdom_problem(url: str) -> str | None:
    if not url or url.lower() == "off":
        return None
    try:
        u = urlsplit(url if "://" in url else "http://" + url)
        _ = u.port  # parsing the port raises ValueError for a bad one
    except ValueError:
        u = None
    if u is not None and u.password is not None:  # never echo it: this line may be logged
        return "visdom: put no password in the URL (the config is stored); set LIVEPROP_VISDOM_PASSWORD instead"
    if u is None or u.scheme not in ("http", "https") or not u.hostname:
        return f"visdom: {repr(url) if '@' not in url else 'the URL'} is not a server URL like http://127.0.0.1:8097"
    return None
