"""RunConfig: every knob of a run, its default, and the one place that validates them.

The CLI builds its flags from these fields, the dashboard its widgets, and the store keeps the
config as JSON. Each field's meaning and allowed values live in its metadata (knob below), so
--help and the dashboard's help say the same thing (help_for). `validate()` turns a config into a
*resolved* config (every "auto" decided) or raises ConfigError with one clear line. Nothing is
launched or written before it passes.

It is over 350 lines because the one validation lives beside the table of knobs it checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

MODES = ("manual", "autograd", "custom_function", "nn", "optim")
RAW_MODES = ("manual", "autograd", "custom_function")  # raw tensors, MLP family only
MLP_ARCHS = ("two_layer", "mlp")
ARCHS = MLP_ARCHS + ("parallel_block", "cnn", "torchvision")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
LOSSES = ("sse", "mse", "cross_entropy")
DATASETS = ("random", "teacher", "digits", "csv", "imagefolder", "mnist", "fashion_mnist", "cifar10")
SAMPLERS = ("none", "random", "sequential", "balanced")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "tf32", "bf16")
ON_DIVERGENCE = ("pause", "stop", "ignore")
INITS = ("auto", "lecture", "randn", "torch")
LOSSES_AUTO = ("auto",) + LOSSES
TASKS = ("auto", "regression", "classification")


class ConfigError(ValueError):
    """Bad input. The message is one line meant for a person."""


def knob(default, help: str, choices: tuple = (), bounds: tuple = (), excluded=None):
    """A RunConfig field: its default, one line on what it means, and its allowed values: the choices
    of a choice, the (lowest, highest) of a number, both allowed unless one is `excluded`. The CLI's
    --help and the dashboard's widgets read them through help_for and choices_for."""
    return field(default=default, metadata={"help": help, "choices": choices, "bounds": bounds, "excluded": excluded})


# Bounds keep every number inside what Python, torch, int64 and SQLite can hold, so that a config
# that passes validate() never crashes the worker; what is allowed but does not fit in memory is
# refused by the memory check (engine/build/assemble.py).
SIZE = (1, 2**30)  # a (SIZE, SIZE) weight still has a byte count torch can compute, even in float64
# epochs up to 10**6: times the steps of an epoch (up to n_samples, 10**12) it is still an int64 the store keeps
MAX_PACE = 1e6  # steps per second: beyond it a cap means nothing
MAX_SECONDS = 3600.0  # between flushes and telemetry steps: an hour is already no live view
MAX_TEXT = 4096  # characters in a string field: Linux's PATH_MAX


# A table, one line per knob: the formatter leaves it aligned.
# fmt: off
@dataclass
class RunConfig:
    # what to train
    mode: str = knob("manual",           "the training loop, one file each in engine/modes/", MODES)
    arch: str = knob("two_layer",        "the network", ARCHS)
    tv_model: str = knob("resnet18",     "torchvision model name, when arch is torchvision")
    pretrained: str = knob("",           '"" | path to a state_dict file | "torchvision" (weights API, needs network)')
    freeze_backbone: bool = knob(False,  "torchvision: train only the new head")
    d_in: int = knob(1000,               "D_in, input features (tabular data); the lecture's sizes", bounds=SIZE)
    hidden: int = knob(100,              "H, hidden width", bounds=SIZE)
    d_out: int = knob(10,                "D_out, outputs (regression targets); classes come from the data",
                                         bounds=SIZE)
    depth: int = knob(2,                 "mlp: number of Linear layers", bounds=(1, 64))
    bias: bool = knob(True,              "Linear layers carry a bias (the lecture's raw-tensor net has none)")
    init: str = knob("auto",             "lecture: the lecture's own draws after torch.manual_seed(seed): x, y, then "
                                         "w1, w2 (raw modes, no biases) or its nn.Sequential (nn, optim, with biases), "
                                         "for two_layer on one full batch of random data; "
                                         "randn: torch.randn weights; torch: nn.Linear's init; "
                                         "auto: lecture where it fits (nn, optim: with bias), "
                                         "else randn for a raw mode on two_layer, else torch", INITS)
    loss: str = knob("auto",             "sse: the lecture's sum of squares; "
                                         "auto: cross_entropy for classes, else sse (raw modes) or mse", LOSSES_AUTO)
    # how to train
    optimizer: str = knob("",            'mode optim only; "" means adam there', OPTIMIZERS)
    lr: float = knob(0.0,                "0 means the lecture's rate for the mode (1e-6 raw, 1e-2 nn, 1e-4 optim)",
                                         bounds=(0, 1e6))
    momentum: float = knob(0.0,          "momentum, for sgd and rmsprop", bounds=(0, 1))
    nesterov: bool = knob(False,         "Nesterov momentum, for sgd (needs momentum > 0)")
    beta1: float = knob(0.9,             "adam, adamw: decay of the gradient's running mean", bounds=(0, 1), excluded=1)
    beta2: float = knob(0.999,           "adam, adamw: decay of the squared gradient's running mean",
                                         bounds=(0, 1), excluded=1)
    eps: float = knob(1e-8,              "adam, adamw, rmsprop, adagrad: added to the denominator",
                                         bounds=(0, 1), excluded=0)
    weight_decay: float = knob(0.0,      "L2 penalty, for every optimizer", bounds=(0, 1e3))
    alpha: float = knob(0.99,            "rmsprop: smoothing constant", bounds=(0, 1), excluded=1)
    steps: int = knob(500,               "the lecture's loop length; 0 means use epochs", bounds=(0, 10**12))
    epochs: int = knob(0,                "used when steps is 0", bounds=(0, 10**6))
    until_stopped: bool = knob(False,    "train until Stop (or Ctrl-C); steps and epochs are not used")
    pace: float = knob(0.0,              "at most this many steps per second, so a class can watch; 0 = full speed",
                                         bounds=(0, MAX_PACE))
    seed: int = knob(0,                  "torch.manual_seed for the weights; the data draws from seed + 1, "
                                         "except with init lecture, which draws x and y first, as the lecture does",
                                         bounds=(0, 2**63 - 2))
    device: str = knob("auto",           "auto picks cuda when there is one, and says so", DEVICES)
    dtype: str = knob("float32",         "float64 for the gradient-equivalence checks", DTYPES)
    precision: str = knob("fp32",        "modes nn and optim; tf32: float32 matmuls and convolutions in TensorFloat-32 "
                                         "on CUDA (no effect on the CPU); bf16: forward pass and loss under autocast "
                                         "to bfloat16, on CUDA or the CPU", PRECISIONS)
    fast: bool = knob(False,             "capture the whole step as a CUDA graph and replay many steps per Python "
                                         "iteration (engine/loop/fast.py); CUDA, one full batch in memory, one process")
    compile: bool = knob(False,          "nn, optim: the model through torch.compile (the first step waits for "
                                         "the compiler: seconds to a minute)")
    nproc: int = knob(1,                 "processes on this machine (torchrun --nproc-per-node), data-parallel: each "
                                         "takes its share of the batch; gloo on the CPU, nccl on CUDA",
                                         bounds=(1, 256))
    nnodes: int = knob(1,                "machines (torchrun --nnodes); the others run `python -m engine join RUN`",
                                         bounds=(1, 1024))
    rdzv_endpoint: str = knob("",        "nnodes > 1: host:port of the c10d rendezvous (torchrun --rdzv-endpoint)")
    deterministic: bool = knob(False,    "torch's deterministic algorithms only: two runs are bit-identical; "
                                         "an op without one fails the run, named")
    # data
    dataset: str = knob("random",        "random: the lecture's torch.randn x and y; "
                                         "teacher: regression against a fixed random network", DATASETS)
    n_samples: int = knob(64,            "random/teacher: dataset size (64 = the lecture's one full batch)",
                                         bounds=(1, 10**12))
    batch_size: int = knob(64,           "N, samples per step", bounds=SIZE)
    shuffle: bool = knob(True,           "reshuffle the data every epoch (without a sampler)")
    sampler: str = knob("none",          "how batches are drawn: random with replacement, balanced by class", SAMPLERS)
    num_workers: int = knob(0,           "DataLoader worker processes; 0 loads in the training process",
                                         bounds=(0, 64))
    csv_path: str = knob("",             "dataset csv: the file")
    csv_target: str = knob("",           "dataset csv: the target column's name")
    task: str = knob("auto",             "csv: what the target column is; "
                                         "auto: classes when whole numbers with at most 20 values", TASKS)
    image_dir: str = knob("",            "dataset imagefolder: the folder, one subfolder per class")
    image_size: int = knob(32,           "imagefolder: images are resized to this many pixels a side",
                                         bounds=(1, 4096))
    data_root: str = knob("data",        "torchvision datasets are downloaded here")
    # telemetry and run control
    telemetry_every: int = knob(0,       "K: histograms, norms, ratios, gradient check every K steps; "
                                         "0 = auto, about once per telemetry_seconds of training", bounds=(0, 10**12))
    telemetry_seconds: float = knob(1.0, "with telemetry_every 0: seconds of training between telemetry steps",
                                         bounds=(0, MAX_SECONDS), excluded=0)
    hist_bins: int = knob(64,            "bins per histogram", bounds=(1, 4096))
    flush_seconds: float = knob(0.5,     "host transfers: at most this many seconds apart (or flush_every steps)",
                                         bounds=(0, MAX_SECONDS), excluded=0)
    flush_every: int = knob(2000,        "host transfers: at most this many steps apart (or flush_seconds)",
                                         bounds=(1, 10**12))
    checkpoint_seconds: float = knob(60.0, "a resumable checkpoint this often, and at the end; 0 = only at the end",
                                         bounds=(0.0, 86400.0))
    on_divergence: str = knob("pause",   "what to do when the loss goes non-finite", ON_DIVERGENCE)
    name: str = knob("",                 "a label for the run")
    # remote sinks (engine/sinks/). No password here: the store keeps this config as JSON
    visdom: str = knob("",               'Visdom server URL, e.g. http://127.0.0.1:8097; '
                                         '"" = $LIVEPROP_VISDOM_URL or off; "off" = off')
    visdom_port: int = knob(0,           "overrides the URL's port (0: the URL's, else 8097)", bounds=(0, 65535))
    visdom_base_url: str = knob("",      "the server's -base_url, e.g. /visdom")
    visdom_env: str = knob("",           '"" = liveprop_<name>-<run id>')
    visdom_username: str = knob("",      "for -enable_login; the password is read from $LIVEPROP_VISDOM_PASSWORD only")
    visdom_timeout: float = knob(0.0,    "seconds each request to Visdom may take; 0 = $LIVEPROP_VISDOM_TIMEOUT or 5",
                                         bounds=(0, MAX_SECONDS))
    tensorboard_dir: str = knob("",      'write TensorBoard event files under DIR/<run>; "" = off')
# fmt: on


def help_for(name: str) -> str:
    """One line on a RunConfig field for people, the same in CLI --help and the dashboard's widgets:
    what it means, then its allowed values: a choice's choices, a number's bounds."""
    meta = _FIELDS[name].metadata
    return (
        meta["help"]
        + (f"; one of: {', '.join(meta['choices'])}" if meta["choices"] else "")
        + (f"; {_range(name)}" if meta["bounds"] else "")
    )


def choices_for(name: str) -> tuple:
    """A choice field's allowed values; () for a free one."""
    return _FIELDS[name].metadata["choices"]


def _range(name: str) -> str:
    """A number field's bounds as --help and its refusal say them: "between 0 and 1, 1 excluded"."""
    meta, form = _FIELDS[name].metadata, "g" if isinstance(_FIELDS[name].default, float) else "d"
    (lo, hi), excluded = meta["bounds"], meta["excluded"]
    return f"between {lo:{form}} and {hi:{form}}" + ("" if excluded is None else f", {excluded:{form}} excluded")


_FIELDS = {f.name: f for f in fields(RunConfig)}


# ---------------------------------------------------------------------------------------------
# loading


def from_dict(d: dict) -> RunConfig:
    unknown = [k for k in d if k not in _FIELDS]
    if unknown:
        raise ConfigError(f"unknown config key {_shown(unknown[0])}; known keys: {', '.join(_FIELDS)}")
    return RunConfig(**{k: _coerce(k, v, type(_FIELDS[k].default)) for k, v in d.items()})


def _coerce(key, value, typ):
    """value as typ, or ConfigError: a file's `steps = 2.9` is refused, never cut to 2, and `shuffle = 2` too."""
    if typ is bool:
        words = {
            "1": True,
            "true": True,
            "yes": True,
            "on": True,
            "0": False,
            "false": False,
            "no": False,
            "off": False,
        }
        if isinstance(value, str) and value.lower() in words:
            return words[value.lower()]
        if isinstance(value, (int, float)) and value in (0, 1):  # True and False among them
            return bool(value)
        raise ConfigError(f"{key} must be true or false, got {_shown(value)}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):  # no True for a number, no lists
        raise ConfigError(f"{key}: {_shown(value)} is not a valid {typ.__name__}")
    if typ is int:
        try:
            n = int(value)  # this cuts a float ...
        except (ValueError, OverflowError):
            n = None
        if n is None or (isinstance(value, float) and n != value):  # ... so 2.9 is refused here; 3.0 is 3
            raise ConfigError(f"{key} must be a whole number, got {_shown(value)}")
        return n
    try:
        return typ(value)
    except (ValueError, OverflowError):  # float(10**400), str(10**5000)
        raise ConfigError(f"{key}: {_shown(value)} is not a valid {typ.__name__}") from None


def _shown(value) -> str:
    """value as a one-line message quotes it: its repr (which escapes newlines, NULs and lone surrogates),
    cut short. A huge int is described instead: its repr would be long, or raise past 4300 digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"a number of {math.floor(math.log10(abs(value))) + 1} digits"
    if not isinstance(value, (str, int, float)) and value is not None:
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(value)} characters)"


def load_file(path: str) -> dict:
    """Read a TOML or JSON config file into a dict (never executed, never unpickled)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {_shown(path)}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".json"):
            d = json.loads(raw)
        else:
            d = tomllib.loads(raw.decode("utf-8"))
    except OSError as e:  # not readable
        raise ConfigError(f"config file {_shown(path)} cannot be read: {e.strerror}") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; RecursionError: [[[[...
        raise ConfigError(f"{_shown(path)} does not parse: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{_shown(path)}: expected a table of settings at the top level")
    return d


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------
# validation


def _choice(key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"unknown {key} {_shown(value)}; choose one of: {', '.join(allowed)}")


KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control characters, lone surrogates
# the path fields, each with its values that name no path ("" data_root is the working folder: a path)
PATHS = {
    "csv_path": ("",),
    "image_dir": ("",),
    "pretrained": ("", "torchvision"),
    "data_root": (),
    "tensorboard_dir": ("",),
}


def _check_field(name, value):
    """One field on its own: its type, a number's bounds, a string's text and a choice's choices."""
    meta, kind = _FIELDS[name].metadata, type(_FIELDS[name].default)
    kinds = (int, float) if kind is float else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and kind is not bool):  # True is an int too
        raise ConfigError(f"{name} must be {KINDS[kind]}, got {_shown(value)}")
    if meta["bounds"]:
        lo, hi = meta["bounds"]
        if not (lo <= value <= hi and value != meta["excluded"]):  # nan is never in bounds
            who = "lr, the learning rate," if name == "lr" else name  # the word people search a message for
            raise ConfigError(f"{who} must be {_range(name)}, got {_shown(value)}")
    if kind is str:
        _check_text(name, value)
        if meta["choices"] and name != "optimizer":  # optimizer: "" unless mode optim, checked in validate
            _choice(name, value, meta["choices"])


def _check_text(name, value):
    """Text that the store can keep as UTF-8 (no lone surrogates, which a command line can carry), that a
    message or a log shows on one line and a path can hold: no control characters, at most MAX_TEXT."""
    if len(value) > MAX_TEXT:
        raise ConfigError(f"{name} is {len(value)} characters long; at most {MAX_TEXT} are allowed")
    bad = NOT_TEXT.search(value)
    if bad:
        raise ConfigError(f"{name} must be plain text, but holds {bad.group()!r} at character {bad.start() + 1}")


def _confine_paths(c):
    """With $LIVEPROP_DATA_ROOT set (the dashboard sets it when it listens beyond this machine), every path
    a run reads or writes must lie inside that folder once symlinks and .. are resolved, so a visitor
    cannot reach the server's other files. A relative path is taken inside the root, and the config keeps
    the resolved path: the worker opens what was checked."""
    root = os.environ.get("LIVEPROP_DATA_ROOT")
    if not root:
        return
    root = os.path.realpath(root)
    for name, no_path in PATHS.items():
        value = getattr(c, name)
        if value in no_path:
            continue
        path = os.path.realpath(os.path.join(root, value))
        if os.path.commonpath([root, path]) != root:
            raise ConfigError(f"{name}: {value} is outside the data root {root} (LIVEPROP_DATA_ROOT)")
        setattr(c, name, path)


def default_lr(mode: str) -> float:
    """The lecture's learning rates (its raw loops use sum-of-squares loss and randn weights)."""
    return {"manual": 1e-6, "autograd": 1e-6, "custom_function": 1e-6, "nn": 1e-2, "optim": 1e-4}[mode]


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field and return a copy with every "auto" resolved. Raises ConfigError."""
    c = dataclasses.replace(cfg)
    for name in _FIELDS:
        _check_field(name, getattr(c, name))
    _confine_paths(c)

    if c.mode in RAW_MODES and c.arch not in MLP_ARCHS:
        raise ConfigError(
            f"mode {c.mode!r} works on raw weight tensors, so it takes arch "
            f"{' or '.join(MLP_ARCHS)}; use mode nn or optim for {c.arch!r}"
        )
    if c.mode != "optim" and c.optimizer:
        raise ConfigError(
            f"an optimizer applies only to mode 'optim'; mode {c.mode!r} updates the weights by hand (w -= lr * grad)"
        )
    if c.mode == "optim":
        c.optimizer = c.optimizer or "adam"
        _choice("optimizer", c.optimizer, OPTIMIZERS)
    if c.nesterov and (c.optimizer != "sgd" or c.momentum <= 0):
        raise ConfigError("nesterov needs optimizer sgd with momentum > 0")

    if c.lr == 0:
        c.lr = default_lr(c.mode)
    if c.steps == 0 and c.epochs == 0 and not c.until_stopped:
        raise ConfigError("give a positive number of steps, or steps = 0 and a positive number of epochs")

    if c.dataset == "csv":
        if not c.csv_path:
            raise ConfigError("dataset csv needs csv_path (--csv-path FILE)")
        if not os.path.isfile(c.csv_path):
            raise ConfigError(f"CSV file not found: {c.csv_path}")
        if not c.csv_target:
            raise ConfigError("dataset csv needs csv_target, the name of the target column")
    if c.dataset == "imagefolder" and not os.path.isdir(c.image_dir):
        raise ConfigError(f"image folder not found: {c.image_dir!r} (--image-dir DIR)")
    if c.pretrained and c.pretrained != "torchvision":
        if c.arch != "torchvision":
            raise ConfigError("pretrained weights apply to arch torchvision")
        if not os.path.isfile(c.pretrained):
            raise ConfigError(f"pretrained weights file not found: {c.pretrained}")
    if c.freeze_backbone and c.arch != "torchvision":
        raise ConfigError("freeze_backbone applies to arch torchvision")

    if c.precision != "fp32" and c.mode in RAW_MODES:
        raise ConfigError(
            f"precision {c.precision} applies to modes nn and optim: mode {c.mode!r} runs the lecture's hand-written "
            f"tensor code as written, in {c.dtype}, the reference the other modes are checked against"
        )
    if c.precision != "fp32" and c.dtype == "float64":
        raise ConfigError(
            f"precision {c.precision} lowers float32 matmuls only; dtype float64 keeps every op in float64 "
            f"(autocast leaves it alone), so use precision fp32 or dtype float32"
        )
    _check_ranks(c)
    _check_compile(c)
    _check_visdom(c)
    _resolve_init(c)
    return c


def _check_compile(c):
    if c.compile and c.mode in RAW_MODES:
        raise ConfigError(
            f"compile applies to modes nn and optim; mode {c.mode!r} runs the lecture's tensor code as written"
        )
    if c.compile and c.nproc * c.nnodes > 1:
        raise ConfigError("compile runs on one process; several processes train the model as written")


def _check_ranks(c):
    """Several processes (nproc x nnodes, engine/loop/distributed.py) split each batch evenly, so that together they
    take the batch one process would: the same gradient, the same trajectory."""
    world = c.nproc * c.nnodes
    if c.nnodes > 1 and not re.fullmatch(r"[A-Za-z0-9.\-]+:\d{1,5}", c.rdzv_endpoint):
        raise ConfigError(f"nnodes {c.nnodes} needs rdzv_endpoint HOST:PORT, reachable from every machine")
    if world > 1 and c.batch_size % world:
        raise ConfigError(f"batch_size {c.batch_size} does not split evenly over {world} processes; make it a multiple")
    if world > 1 and c.sampler in ("random", "balanced"):
        raise ConfigError(f"sampler {c.sampler!r} draws for one process; with {world} processes use none or sequential")


def _resolve_init(c):
    """init "auto" -> "lecture" where the run is the lecture's own program: the two-layer net on one full
    batch of random data (and, for nn and optim, with the biases of its nn.Linear layers). Else "randn" for a
    raw mode on two_layer (the lecture's torch.randn weights, lr 1e-6), else "torch".

    The lecture init builds the lecture's model, so it sets bias as the lecture has it: no biases in the
    raw-tensor net (w1, w2 only), nn.Linear's in the nn programs. The resolved config says so."""
    misfits = [
        f"arch is {c.arch!r}" if c.arch != "two_layer" else "",
        f"dataset is {c.dataset!r}" if c.dataset != "random" else "",
        f"sampler is {c.sampler!r}" if c.sampler != "none" else "",
        f"n_samples {c.n_samples} > batch_size {c.batch_size}" if c.n_samples > c.batch_size else "",
    ]
    misfits = [m for m in misfits if m]
    if c.init == "auto":
        if not misfits and (c.mode in RAW_MODES or c.bias):
            c.init = "lecture"
        else:
            c.init = "randn" if (c.mode in RAW_MODES and c.arch == "two_layer") else "torch"
    if c.init == "lecture":
        if misfits:
            raise ConfigError(
                "init 'lecture' is the lecture's two-layer net on one full batch of random data (arch two_layer, "
                f"dataset random, sampler none, n_samples <= batch_size); here {', '.join(misfits)}"
            )
        c.bias = c.mode not in RAW_MODES


def _check_visdom(c):
    if c.visdom and c.visdom.lower() != "off":
        try:
            u = urlsplit(c.visdom if "://" in c.visdom else "http://" + c.visdom)
            _ = u.port  # parsing the port raises ValueError for a bad one
        except ValueError:
            u = None
        if u is not None and u.password is not None:  # never echo it: this line may be logged
            raise ConfigError(
                "visdom: put no password in the URL (the config is stored); set LIVEPROP_VISDOM_PASSWORD instead"
            )
        if u is None or u.scheme not in ("http", "https") or not u.hostname:
            shown = repr(c.visdom) if "@" not in c.visdom else "the URL"
            raise ConfigError(f"visdom: {shown} is not a server URL like http://127.0.0.1:8097")
