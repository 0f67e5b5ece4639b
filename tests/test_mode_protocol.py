"""The mode protocol (engine/modes/protocol.py): every mode implements it, built as a run builds it, and the engine
talks to a mode only through it: no hasattr or getattr on a mode, no attribute set on a mode (but the lr, which
Mode declares writable) or on the trainer's telemetry from outside. The second part reads the source with ast,
as tests/test_layout.py does, so a module added tomorrow is covered too.
"""

import ast
import inspect
import typing
from pathlib import Path

import pytest
import torch

from engine.build import assemble as build
from engine.modes import MODES
from engine.modes.losses import LOSSES
from engine.modes.protocol import Mode, Steps

ROOT = Path(__file__).resolve().parent.parent

BUILT = {  # every mode, and each class a raw mode picks (TwoLayer for two layers, Deep for any other number)
    "manual": dict(mode="manual"),
    "manual-deep": dict(mode="manual", arch="mlp", depth=3),
    "autograd": dict(mode="autograd"),
    "autograd-deep": dict(mode="autograd", arch="mlp", depth=3),
    "custom_function": dict(mode="custom_function"),
    "custom_function-deep": dict(mode="custom_function", arch="mlp", depth=3),
    "nn": dict(mode="nn", arch="parallel_block"),
    "nn-bf16": dict(mode="nn", dtype="float32", precision="bf16"),
    "optim": dict(mode="optim", optimizer="adam"),
}


def members(protocol) -> dict[str, object]:
    """The protocol's own members, its bases' included: name -> the function or property written there."""
    out = {}
    for cls in reversed(protocol.__mro__):
        if typing.Protocol in cls.__bases__:
            out.update(
                {k: v for k, v in vars(cls).items() if not k.startswith("_") and callable(v) or isinstance(v, property)}
            )
    return out


def test_the_built_modes_cover_every_mode():
    assert {kw["mode"] for kw in BUILT.values()} == set(MODES)


@pytest.mark.parametrize("case", list(BUILT))
def test_every_mode_implements_the_protocol(small, case):
    """isinstance against the runtime-checkable protocol (every member present), then each method's parameters
    by name, and the declared attributes' types."""
    mode, _ = build.build(build.prepare(small(**BUILT[case])))
    assert isinstance(mode, Steps) and isinstance(mode, Mode)
    assert len(members(Mode)) == 10  # 8 methods, and optimizer and model, read-only
    for name, declared in members(Mode).items():
        if isinstance(declared, property):
            continue
        want = list(inspect.signature(declared).parameters)[1:]  # without self
        assert list(inspect.signature(getattr(mode, name)).parameters) == want, (case, name)
    assert isinstance(mode.lr, float) and set(typing.get_type_hints(Mode)) == {"lr", "loss"}
    assert mode.loss in LOSSES
    assert mode.optimizer is None or isinstance(mode.optimizer, torch.optim.Optimizer)
    assert (mode.model is None) == (BUILT[case]["mode"] in ("manual", "autograd", "custom_function"))
    assert [n for n, _ in mode.named_grads()] == [n for n, _ in mode.named_params()]


def test_a_mode_missing_a_member_is_not_a_mode(small):
    """The check above can fail: a class like a raw mode without load_weights, or without the model attribute."""
    mode, _ = build.build(build.prepare(small(mode="manual")))

    class NoWeights(type(mode)):
        load_weights = None

    assert not isinstance(NoWeights({n: p for n, p in mode.params.items()}, "sse", 1e-3), Mode)

    class Bare:
        lr = 1e-3
        optimizer = None
        forward_backward = update = zero_grad = named_params = named_grads = staticmethod(lambda *a: None)
        reference_grads = state_dict = load_weights = staticmethod(lambda *a: None)

    assert isinstance(Bare(), Steps) and not isinstance(Bare(), Mode)  # no model


# ---------------------------------------------------------------------------------------------
# no code asks a mode what it has, or sets attributes on it or on the telemetry from outside

WRITABLE = set(typing.get_type_hints(Mode))  # the lr


def _is(node: ast.expr, *names: str) -> bool:
    """node is a name or an attribute called one of names (mode, self.mode, trainer.mode, ref_mode ...)."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return any(name == n or name.endswith(f"_{n}") for n in names)


def pokes(source: str, in_modes: bool = False) -> list[str]:
    """Each place where code asks a mode or the telemetry what it has (hasattr, getattr, setattr, delattr on it),
    or sets an attribute on one from outside; in engine/modes, any attribute set on an object but self."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            if node.func.id in ("hasattr", "getattr", "setattr", "delattr") and _is(node.args[0], "mode", "tel"):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        )
        for target in (e for t in targets for e in ast.walk(t)):
            if not (isinstance(target, ast.Attribute) and isinstance(target.ctx, ast.Store)):
                continue
            on_mode = _is(target.value, "mode") and target.attr not in WRITABLE
            elsewhere = in_modes and not (isinstance(target.value, ast.Name) and target.value.id in ("self", "cls"))
            if on_mode or _is(target.value, "tel", "telemetry") or elsewhere:
                found.append(f"{node.lineno}: {ast.unparse(target)} =")
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "engine").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_engine_module_asks_a_mode_what_it_has_or_sets_its_attributes(path):
    found = pokes(path.read_text(), in_modes=path.parent.name == "modes")
    assert not found, f"{path.relative_to(ROOT)}: {found}; use the Mode protocol (engine/modes/protocol.py)"


def test_the_check_sees_each_kind_of_poke():
    """The checker above can fail: what the engine did before the protocol, read from a probe."""
    probe = """
if hasattr(mode, "net"):
    mode.net = wrap(mode.model)
optimizer = getattr(self.mode, "optimizer", None)
trainer.tel.ranks = trainer.ranks
old, self.mode.lr = self.mode.lr, 1.0
mode.lr = 2.0
"""
    assert sorted(line.split(":")[0] for line in pokes(probe)) == ["2", "3", "4", "5"]  # the lr is declared writable
    assert pokes("ref = autograd.Mode(params, loss, lr)\nref.relu, ref.group = lecture_relu, self.group\n", True)
    assert not pokes("self.grads = {}\n", True)
