"""From a config to a run: check it, then build its model, data and mode.

    prepare(cfg)      everything that can be checked before training, with no side effects:
                      validation, the device, the dataset's shape, the loss, the step count, the files
                      it reads and writes and its downloads (engine/build/checks.py), memory
    build(prepared)   seeds, data, the model on its device, the mode's parameters -> (mode, batches), the
                      batches this rank's share when several processes train (engine/loop/distributed.py);
                      with init lecture, x, y, w1, w2 drawn in the lecture's order (lecture_draws); every
                      wrapper (compile, autocast, DistributedDataParallel, the process group) made here once
                      and passed to the mode's constructor (engine/modes/protocol.py)

Both raise ConfigError with one line for a person. Used by the worker, the CLI, the dashboard
(to validate before a launch), the tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

import psutil
import torch

from engine.build import checks, models, optimizers
from engine.build import data as data_mod
from engine.build.batches import Batches
from engine.config.fields import IN_MEMORY, RAW_MODES, RunConfig
from engine.config.reasons import validate
from engine.errors import ConfigError
from engine.modes import MODES


@dataclasses.dataclass
class Prepared:
    cfg: RunConfig  # resolved: no "auto" left
    spec: data_mod.DataSpec
    device: torch.device
    total_steps: int | None  # None: until stopped
    device_note: str


def resolve_device(name: str) -> tuple[torch.device, str]:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but no CUDA device is available here; use --device cpu or auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu"), "cpu" + (" (no CUDA device found)" if name == "auto" else "")
    return torch.device("cuda"), f"cuda ({torch.cuda.get_device_name(0)})"


def prepare(cfg: RunConfig, memory: bool = True) -> Prepared:
    """Everything that can be checked without training. Raises ConfigError with one line."""
    cfg = validate(cfg)
    device, note = resolve_device(cfg.device)
    spec = data_mod.describe(cfg)
    if cfg.loss == "auto":
        cfg.loss = "cross_entropy" if spec.task == "classification" else "sse" if cfg.mode in RAW_MODES else "mse"
    if (cfg.loss == "cross_entropy") != (spec.task == "classification"):
        raise ConfigError(
            f"loss {cfg.loss!r} does not fit a {spec.task} dataset; "
            f"use {'cross_entropy' if spec.task == 'classification' else 'sse or mse'}"
        )
    if cfg.sampler == "balanced" and spec.task != "classification":  # checked here, not at the first batch
        raise ConfigError(f"sampler 'balanced' needs a classification dataset; {cfg.dataset!r} is {spec.task}")
    _check_fast(cfg, spec)
    _check_processes(cfg, spec, device)
    if cfg.until_stopped:
        total = None  # until Stop
    elif cfg.steps:
        total = cfg.steps
    elif spec.n is None:
        raise ConfigError(f"dataset {cfg.dataset!r} is counted in steps: give --steps")
    else:
        total = cfg.epochs * data_mod.steps_per_epoch(spec.n, cfg)
    checks.before_launch(cfg)  # the files it reads and writes, and its downloads
    if memory:
        check_memory(cfg, spec, device)
    return Prepared(cfg, spec, device, total, note)


def _check_processes(cfg: RunConfig, spec, device):
    """Several processes split every batch evenly (engine/loop/distributed.py), the one full batch too."""
    world = cfg.world
    if world > 1 and cfg.dataset in IN_MEMORY and spec.n and spec.n <= cfg.batch_size and spec.n % world:
        raise ConfigError(f"the {spec.n} samples, one full batch, do not split evenly over {world} processes")
    if device.type == "cuda" and cfg.nproc > torch.cuda.device_count():
        raise ConfigError(f"nproc {cfg.nproc} needs a GPU each; this machine has {torch.cuda.device_count()}")


def _check_fast(cfg: RunConfig, spec):
    """The fast path replays one captured step on one fixed batch: what engine/config/reasons.py cannot judge
    without the data, whether a digits or CSV set fits one batch (a DataLoader's batches vary, the last one is
    ragged)."""
    if cfg.fast and spec.n > cfg.batch_size:
        raise ConfigError(
            f"fast: a graph replays one fixed batch: the {spec.n} samples do not fit one batch of {cfg.batch_size}; "
            f"make batch_size at least {spec.n}"
        )


def estimate_bytes(cfg: RunConfig, spec) -> tuple[int, int]:
    """(bytes, parameters): weights, gradients and optimizer state, activations, in-memory data.
    The model is built on the meta device, so nothing is allocated to count it."""
    activations = 0

    def count(_module, _inp, out):
        nonlocal activations
        if isinstance(out, torch.Tensor):
            activations += out.numel()

    shapes_only = dataclasses.replace(cfg, pretrained="", init="torch")  # no weights file, torch's own init
    try:
        with torch.device("meta"):  # (normal_ on meta imports torch._dynamo: 1.5 s)
            model = models.build(shapes_only, spec.in_shape, spec.out_dim)
    except NotImplementedError:  # a constructor that computes with its tensors (regnet): built for real
        model = models.build(shapes_only, spec.in_shape, spec.out_dim)
    if cfg.arch in models.FLAT_ARCHS:  # (N, width) per layer, pre- and post-activation, both halves
        activations = 4 * cfg.batch_size * sum(models.mlp_widths(cfg, spec.in_shape, spec.out_dim))
    else:  # convolutions: count every module's output in a meta forward
        shape = spec.in_shape
        if cfg.arch == "torchvision":  # grayscale batches reach it expanded to 3 channels (build)
            shape = (3, *shape[1:])
        hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
        try:
            with torch.device("meta"):
                model(torch.empty(cfg.batch_size, *shape))
        except (RuntimeError, AssertionError, ValueError, NotImplementedError) as e:
            # e.g. alexnet's pooling on digits' 8x8 pixels: "Output size is too small"; vit_b_16: "Wrong image height"
            first = (str(e).strip().splitlines() or [""])[0]
            name = cfg.tv_model if cfg.arch == "torchvision" else f"arch {cfg.arch}"
            raise ConfigError(f"{name} cannot take {cfg.dataset} images of shape {shape}: {first}") from None
        for h in hooks:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    states = {"adam": 2, "adamw": 2, "rmsprop": 2, "adagrad": 1, "sgd": 1 if cfg.momentum else 0}
    elt = 8 if cfg.dtype == "float64" else 4
    in_memory = spec.n if cfg.dataset in IN_MEMORY else 0
    data_elems = in_memory * (math.prod(spec.in_shape) + spec.out_dim)
    total = elt * (params * (3 + states.get(cfg.optimizer, 0)) + 3 * activations + data_elems)
    return total, params


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def check_memory(cfg, spec, device):
    need, params = estimate_bytes(cfg, spec)
    have = available_bytes(device)
    if need > 0.9 * have:
        raise ConfigError(
            f"this configuration needs about {need / 2**30:.1f} GiB ({params:,} parameters) "
            f"but {device.type} has {have / 2**30:.1f} GiB free; make the model or data smaller"
        )


def lecture_draws(cfg: RunConfig, device: torch.device):
    """(x, y, weights): the lecture's first lines, in its order, from the global generator build() has just
    seeded with torch.manual_seed(seed), in torch's default dtype as the lecture draws them:

        x = torch.randn(N, D_in, device=device)
        y = torch.randn(N, D_out, device=device)
        w1 = torch.randn(D_in, H, device=device)    # the raw modes; weights is None for nn and optim,
        w2 = torch.randn(H, D_out, device=device)   # which build the lecture's nn.Sequential next
    """
    N, D_in, H, D_out = cfg.n_samples, cfg.d_in, cfg.hidden, cfg.d_out
    x = torch.randn(N, D_in, device=device)
    y = torch.randn(N, D_out, device=device)
    if cfg.mode not in RAW_MODES:
        return x, y, None
    w1 = torch.randn(D_in, H, device=device)
    w2 = torch.randn(H, D_out, device=device)
    return x, y, {"w1": w1, "w2": w2}


def raw_params(model: torch.nn.Module) -> dict:
    """w_i = Linear_i.weight.T, the lecture's (D_in, H) layout, and b_i when the layer has a bias."""
    params = {}
    for i, lin in enumerate([m for m in model.modules() if isinstance(m, torch.nn.Linear)], start=1):
        params[f"w{i}"] = lin.weight.detach().t().contiguous()
        if lin.bias is not None:
            params[f"b{i}"] = lin.bias.detach().clone()
    return params


def autocast(model: torch.nn.Module, precision: str, cache: bool = True):
    """The context of nn's and optim's forward pass. bf16: torch.autocast to bfloat16 on the model's device, CPU or
    CUDA. Inside it, matmuls and convolutions run in bfloat16 while mse and cross-entropy run in float32 (autocast's
    own op lists), and sse's y_pred - y takes y's float32, so the loss comes out in float32. cache False: no weight
    cache, which a CUDA graph's capture must not keep (engine/loop/fast.py; torch.cuda.make_graphed_callables' note).
    fp32 and tf32: nothing (tf32 is a flag that build sets)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, cache_enabled=cache)


def build(p: Prepared, ranks=None):
    """(mode, batches) for a prepared config: seeds, data, model, the mode's parameters, and every wrapper the
    mode is constructed with: the compiled net (compile), autocast (bf16), and on several processes (ranks,
    engine/loop/distributed.py) their groups, started once every rank has its data and model, with
    DistributedDataParallel around nn's and optim's model or the group for the raw modes' own all_reduce.

    With init lecture, x and y come first from the seeded global generator, then the weights (raw modes)
    or the model (nn, optim), as in the lecture; otherwise the data draws from its own generator."""
    cfg, dtype = p.cfg, getattr(torch, p.cfg.dtype)
    torch.manual_seed(cfg.seed)
    # with deterministic, an op that has no deterministic version raises, naming itself: the run's one-line
    # reason. Set either way: it is global to the process, and a test may build several runs in one.
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for it on CUDA
    torch.use_deterministic_algorithms(cfg.deterministic)
    # tf32: float32 matmuls (cuBLAS) and convolutions (cuDNN) in TensorFloat-32, CUDA only: the CPU reads neither
    # flag. Process-global too, so fp32 and bf16 set them back (cuDNN's own default would be on).
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.precision == "tf32"
    weights = model = None
    if cfg.init == "lecture":  # one full batch: Batches gives this x, y every step
        x, y, weights = lecture_draws(cfg, p.device)
        dataset, spec = data_mod.TensorData(x, y), p.spec
    else:
        dataset, spec = data_mod.load(cfg)
    if weights is None:
        model = models.build(cfg, spec.in_shape, spec.out_dim).to(p.device, dtype)
    channels = 3 if cfg.arch == "torchvision" else None
    batches = Batches(dataset, spec, cfg, p.device, dtype, channels, ranks)
    if ranks is not None:
        ranks.start(cfg.loss)  # every rank has its data and model: the groups that wait HANG_S at most
    if cfg.mode in RAW_MODES:
        params = {n: w.to(dtype) for n, w in weights.items()} if weights is not None else raw_params(model)
        group = None if ranks is None else ranks.group
        return MODES[cfg.mode](params, cfg.loss, cfg.lr, group), batches
    net = model if ranks is None else ranks.data_parallel(model)
    if cfg.compile:  # the forward pass (and with it the backward) through TorchDynamo and Inductor
        net = torch.compile(net)
    context = autocast(model, cfg.precision, cache=not cfg.fast)
    if cfg.mode == "nn":
        return MODES["nn"](model, cfg.loss, cfg.lr, net, context), batches
    trainable = [q for q in model.parameters() if q.requires_grad]
    return MODES["optim"](model, cfg.loss, optimizers.build(trainable, cfg), net, context), batches
