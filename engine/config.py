"""RunConfig: every knob of a run, its default, and the one place that validates them.

The CLI builds its flags from these fields, the dashboard its widgets, and the store keeps the
config as JSON. Each field's meaning and allowed values live in its metadata (knob below), so
--help and the dashboard's help say the same thing (help_for). `validate()` turns a config into a
*resolved* config (every "auto" decided) or raises ConfigError with one clear line. Nothing is
launched or written before it passes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
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
ON_DIVERGENCE = ("pause", "stop", "ignore")
INITS = ("auto", "lecture", "randn", "torch")
LOSSES_AUTO = ("auto",) + LOSSES
TASKS = ("auto", "regression", "classification")


class ConfigError(ValueError):
    """Bad input. The message is one line meant for a person."""


def knob(default, help: str, choices: tuple = ()):
    """A RunConfig field: its default, one line on what it means, and its allowed values when it is a
    choice. The CLI's --help and the dashboard's widgets read them through help_for and choices_for."""
    return field(default=default, metadata={"help": help, "choices": choices})


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
    d_in: int = knob(1000,               "D_in, input features (tabular data); the lecture's sizes")
    hidden: int = knob(100,              "H, hidden width")
    d_out: int = knob(10,                "D_out, outputs (regression targets); classes come from the data")
    depth: int = knob(2,                 "mlp: number of Linear layers")
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
    lr: float = knob(0.0,                "0 means the lecture's rate for the mode (1e-6 raw, 1e-2 nn, 1e-4 optim)")
    momentum: float = knob(0.0,          "momentum, for sgd and rmsprop")
    nesterov: bool = knob(False,         "Nesterov momentum, for sgd (needs momentum > 0)")
    beta1: float = knob(0.9,             "adam, adamw: decay of the gradient's running mean")
    beta2: float = knob(0.999,           "adam, adamw: decay of the squared gradient's running mean")
    eps: float = knob(1e-8,              "adam, adamw, rmsprop, adagrad: added to the denominator")
    weight_decay: float = knob(0.0,      "L2 penalty, for every optimizer")
    alpha: float = knob(0.99,            "rmsprop: smoothing constant")
    steps: int = knob(500,               "the lecture's loop length; 0 means use epochs")
    epochs: int = knob(0,                "used when steps is 0")
    until_stopped: bool = knob(False,    "train until Stop (or Ctrl-C); steps and epochs are not used")
    pace: float = knob(0.0,              "at most this many steps per second, so a class can watch; 0 = full speed")
    seed: int = knob(0,                  "torch.manual_seed for the weights; the data draws from seed + 1, "
                                         "except with init lecture, which draws x and y first, as the lecture does")
    device: str = knob("auto",           "auto picks cuda when there is one, and says so", DEVICES)
    dtype: str = knob("float32",         "float64 for the gradient-equivalence checks", DTYPES)
    # data
    dataset: str = knob("random",        "random: the lecture's torch.randn x and y; "
                                         "teacher: regression against a fixed random network", DATASETS)
    n_samples: int = knob(64,            "random/teacher: dataset size (64 = the lecture's one full batch)")
    batch_size: int = knob(64,           "N, samples per step")
    shuffle: bool = knob(True,           "reshuffle the data every epoch (without a sampler)")
    sampler: str = knob("none",          "how batches are drawn: random with replacement, balanced by class", SAMPLERS)
    num_workers: int = knob(0,           "DataLoader worker processes; 0 loads in the training process")
    csv_path: str = knob("",             "dataset csv: the file")
    csv_target: str = knob("",           "dataset csv: the target column's name")
    task: str = knob("auto",             "csv: what the target column is; "
                                         "auto: classes when whole numbers with at most 20 values", TASKS)
    image_dir: str = knob("",            "dataset imagefolder: the folder, one subfolder per class")
    image_size: int = knob(32,           "imagefolder: images are resized to this many pixels a side")
    data_root: str = knob("data",        "torchvision datasets are downloaded here")
    # telemetry and run control
    telemetry_every: int = knob(0,       "K: histograms, norms, ratios, gradient check every K steps; "
                                         "0 = auto, about once per telemetry_seconds of training")
    telemetry_seconds: float = knob(1.0, "with telemetry_every 0: seconds of training between telemetry steps")
    hist_bins: int = knob(64,            "bins per histogram")
    flush_seconds: float = knob(0.5,     "host transfers: at most this many seconds apart (or flush_every steps)")
    flush_every: int = knob(2000,        "host transfers: at most this many steps apart (or flush_seconds)")
    on_divergence: str = knob("pause",   "what to do when the loss goes non-finite", ON_DIVERGENCE)
    name: str = knob("",                 "a label for the run")
    # remote sinks (engine/sinks/). No password here: the store keeps this config as JSON
    visdom: str = knob("",               'Visdom server URL, e.g. http://127.0.0.1:8097; '
                                         '"" = $LIVEPROP_VISDOM_URL or off; "off" = off')
    visdom_port: int = knob(0,           "overrides the URL's port (0: the URL's, else 8097)")
    visdom_base_url: str = knob("",      "the server's -base_url, e.g. /visdom")
    visdom_env: str = knob("",           '"" = liveprop_<name>-<run id>')
    visdom_username: str = knob("",      "for -enable_login; the password is read from $LIVEPROP_VISDOM_PASSWORD only")
    tensorboard_dir: str = knob("",      'write TensorBoard event files under DIR/<run>; "" = off')
# fmt: on


def help_for(name: str) -> str:
    """One line on a RunConfig field for people, the same in CLI --help and the dashboard's widgets:
    what it means, then its allowed values when it is a choice."""
    meta = _FIELDS[name].metadata
    return meta["help"] + (f"; one of: {', '.join(meta['choices'])}" if meta["choices"] else "")


def choices_for(name: str) -> tuple:
    """A choice field's allowed values; () for a free one."""
    return _FIELDS[name].metadata["choices"]


_FIELDS = {f.name: f for f in fields(RunConfig)}


# ---------------------------------------------------------------------------------------------
# loading


def from_dict(d: dict) -> RunConfig:
    unknown = sorted(set(d) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(_FIELDS)}")
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
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):  # no True for a number, no lists
        raise ConfigError(f"{key}: {value!r} is not a valid {typ.__name__}")
    if typ is int:
        try:
            n = int(value)  # this cuts a float ...
        except (ValueError, OverflowError):
            n = None
        if n is None or (isinstance(value, float) and n != value):  # ... so 2.9 is refused here; 3.0 is 3
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        return n
    try:
        return typ(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{key}: {value!r} is not a valid {typ.__name__}") from None


def load_file(path: str) -> dict:
    """Read a TOML or JSON config file into a dict (never executed, never unpickled)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        if path.endswith(".json"):
            d = json.loads(raw)
        else:
            d = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} does not parse: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    return d


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------
# validation


def _choice(key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"unknown {key} {value!r}; choose one of: {', '.join(allowed)}")


MAX_PACE = 1e6  # steps per second: beyond it a cap means nothing


def _positive(key, value):
    if not value > 0:
        raise ConfigError(f"{key} must be positive, got {value}")


def default_lr(mode: str) -> float:
    """The lecture's learning rates (its raw loops use sum-of-squares loss and randn weights)."""
    return {"manual": 1e-6, "autograd": 1e-6, "custom_function": 1e-6, "nn": 1e-2, "optim": 1e-4}[mode]


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field and return a copy with every "auto" resolved. Raises ConfigError."""
    c = dataclasses.replace(cfg)
    for name, f in _FIELDS.items():
        if f.metadata["choices"] and name != "optimizer":  # optimizer: "" unless mode optim, checked below
            _choice(name, getattr(c, name), f.metadata["choices"])

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
    if not math.isfinite(c.lr) or c.lr <= 0:
        raise ConfigError(f"learning rate must be a positive finite number, got {c.lr}")
    for k in ("momentum", "weight_decay"):
        v = getattr(c, k)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{k} must be a finite number >= 0, got {v}")
    for k in ("beta1", "beta2", "alpha"):
        v = getattr(c, k)
        if not 0 <= v < 1:
            raise ConfigError(f"{k} must be in [0, 1), got {v}")
    _positive("eps", c.eps)

    for k in ("batch_size", "d_in", "hidden", "d_out", "depth", "n_samples", "hist_bins", "flush_every", "image_size"):
        v = getattr(c, k)
        if v < 1:
            raise ConfigError(f"{k} must be at least 1, got {v}")
    if c.arch == "mlp" and c.depth < 1:
        raise ConfigError("mlp depth must be at least 1")
    if c.steps < 0 or c.epochs < 0 or (c.steps == 0 and c.epochs == 0 and not c.until_stopped):
        raise ConfigError("give a positive number of steps, or steps = 0 and a positive number of epochs")
    if not (math.isfinite(c.pace) and 0 <= c.pace <= MAX_PACE):
        raise ConfigError(f"pace must be between 0 (full speed) and {MAX_PACE:g} steps per second, got {c.pace}")
    if c.num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {c.num_workers}")
    _positive("flush_seconds", c.flush_seconds)
    _positive("telemetry_seconds", c.telemetry_seconds)
    if c.telemetry_every < 0:
        raise ConfigError(f"telemetry_every must be >= 0 (0 = about once a second), got {c.telemetry_every}")

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

    _check_visdom(c)
    _resolve_init(c)
    return c


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
    if not 0 <= c.visdom_port <= 65535:
        raise ConfigError(f"visdom_port must be in 0..65535, got {c.visdom_port}")
