"""Hostile configs give a clean refusal or a valid run, never a traceback (issue 9).

A refusal is one ConfigError line naming the field, or, at the CLI, exit status 2 with one
`liveprop: error:` line and nothing written. Each reproduction of the issue is a case below. Then
hypothesis takes a valid config of each kind of run and changes a random few of its fields, each to
an edge number, hostile text, a path-like string, a wrong type or one of the field's own valid
values: in process through engine.build.assemble.prepare (2,000 examples), and as a command line through
engine.__main__.main (500 examples, the workers replaced by recorders). derandomize: CI sees the
same examples every run.
"""

import contextlib
import dataclasses
import datetime
import io
import json
import math
import os
import subprocess
import tempfile

import pytest
from conftest import REPO, cli_cmd, cli_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import engine.__main__ as cli
from engine.__main__ import main
from engine.build import checks
from engine.build.assemble import Prepared, prepare
from engine.config.fields import RunConfig, help_for
from engine.config.load import from_dict, load_file, to_dict
from engine.config.reasons import validate
from engine.errors import ConfigError
from engine.runs import api as runs
from engine.runs import worker
from engine.store.db import Store

# torchvision's googlenet and inception_v3 warn about their init whenever they are built
pytestmark = [
    pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning"),
    pytest.mark.fault("bad config values (one per test; fuzz: 2,000 + 500 examples)"),  # a row of make fault
]

FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
NUMBERS = [n for n, f in FIELDS.items() if type(f.default) in (int, float)]
SEED_MAX = 2**63 - 2  # the data draws from seed + 1, an int64 too


def one_line(message: str) -> bool:
    """A message a person reads in one line: not empty, no line break of any kind (str.splitlines knows
    them all), no traceback, and text that UTF-8 (the store, a log) can hold."""
    message.encode("utf-8")  # a lone surrogate raises here
    return message.strip() != "" and message.splitlines() == [message] and "Traceback" not in message


# ---------------------------------------------------------------------------------------------
# the reproductions, one by one


@pytest.mark.parametrize(
    "values,field",
    [
        ({"hidden": 2**63}, "hidden"),  # --hidden 9223372036854775808: an int64 overflow in torch
        ({"d_out": 2**64}, "d_out"),  # --d-out 18446744073709551616
        ({"seed": 2**64}, "seed"),  # passed validation, then torch.manual_seed failed the run
        ({"seed": SEED_MAX + 1}, "seed"),  # the data's generator takes seed + 1
        ({"seed": -1}, "seed"),
        ({"hist_bins": 10**10}, "hist_bins"),  # passed validation, then crashed the worker
        ({"steps": 10**400}, "steps"),
        ({"lr": 10**400}, "lr"),  # a 400-digit lr: float() overflows
        ({"lr": 10**5000}, "lr"),  # repr() itself raises past 4300 digits
        ({"momentum": float("inf")}, "momentum"),
        ({"eps": 0.0}, "eps"),
        ({"beta1": 1.0}, "beta1"),
        ({"flush_seconds": float("nan")}, "flush_seconds"),
        ({"telemetry_seconds": 1e308}, "telemetry_seconds"),
        ({"num_workers": 10**6}, "num_workers"),
        ({"image_size": 10**6}, "image_size"),
        ({"epochs": 10**12, "steps": 0}, "epochs"),  # epochs x steps per epoch would overflow the store's int64
        ({"visdom_port": 65536}, "visdom_port"),
    ],
)
def test_a_number_out_of_its_bounds_is_refused_in_one_line_naming_it(values, field):
    with pytest.raises(ConfigError) as e:
        validate(from_dict(values))
    assert one_line(str(e.value)) and field in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "name,text,field",
    [
        ("steps-inf.toml", "steps = inf\n", "steps"),
        ("steps-1e400.json", '{"steps": 1e400}', "steps"),
        ("lr-400-digits.json", '{"lr": 1' + "0" * 400 + "}", "lr"),
        ("lr-nan.json", '{"lr": NaN}', "lr"),
        ("seed-2-64.toml", "seed = 18446744073709551616\n", "seed"),
        ("deep.json", "[" * 100_000 + "]" * 100_000, "does not parse"),  # json's recursion
        ("deep.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n", "does not parse"),
        ("date.toml", "steps = 1979-05-27\n", "steps"),
        ("not-utf8.toml", "name = '\udcff'\n", "does not parse"),
    ],
)
def test_a_config_file_with_bad_numbers_is_refused_in_one_line(tmp_path, name, text, field):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError) as e:
        validate(from_dict(load_file(str(path))))
    assert one_line(str(e.value)) and field in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "field,value",
    [
        ("name", "run \udc80"),  # a command line's undecodable byte (surrogateescape): SQLite cannot store it
        ("name", "a\ud83d"),  # half of a surrogate pair
        ("csv_path", "data\x00.csv"),
        ("name", "two\nlines"),
        ("visdom_env", "bell\x07"),
        ("csv_target", "next\x85line"),  # C1 control: str.splitlines breaks on it
        ("image_dir", "x" * 5000),
    ],
)
def test_text_that_is_not_plain_is_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError) as e:
        validate(RunConfig(**{field: value}))
    assert one_line(str(e.value)) and str(e.value).startswith(field), str(e.value)


def test_unicode_that_is_text_is_kept():
    name = "تجربة \u202e 😀 é run"  # Arabic, a right-to-left override, an emoji: all valid text
    assert validate(RunConfig(name=name)).name == name


def test_a_wrong_type_built_in_code_is_refused_not_a_type_error():
    for values in ({"hidden": "100"}, {"lr": None}, {"bias": 1}, {"steps": 5.0}, {"name": 5}, {"seed": True}):
        with pytest.raises(ConfigError) as e:
            validate(RunConfig(**values))
        assert one_line(str(e.value)) and next(iter(values)) in str(e.value), str(e.value)


def test_every_number_has_bounds_that_help_says():
    for name in NUMBERS:
        lo, hi = FIELDS[name].metadata["bounds"]
        assert lo <= FIELDS[name].default <= hi, name
        assert "between" in help_for(name), name
    assert help_for("hist_bins") == "bins per histogram; between 1 and 4096"
    assert help_for("eps").endswith("; between 0 and 1, 0 excluded")
    assert help_for("seed").endswith(f"; between 0 and {SEED_MAX}")


@pytest.mark.parametrize(
    "kw",
    [
        dict(),  # init lecture: torch.manual_seed(seed) draws x, y, w1, w2
        dict(mode="nn", arch="mlp", dataset="teacher"),  # the data's generator takes seed + 1
    ],
    ids=["lecture", "teacher"],
)
def test_the_largest_seed_and_bins_train(small, store, run_inprocess, kw):
    """The upper bounds are real: a run at them trains (2**64 used to pass and fail the worker)."""
    _, status = run_inprocess(small(seed=SEED_MAX, hist_bins=4096, **kw), store)
    assert status == "finished"


# ---------------------------------------------------------------------------------------------
# the data root: with LIVEPROP_DATA_ROOT set, no path leaves it


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "iris.csv").write_text("a,y\n1,0\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("a,y\n1,0\n")
    (root / "link.csv").symlink_to(outside / "secret.csv")  # a symlink inside that points out
    (root / "linked").symlink_to(outside)
    monkeypatch.setenv("LIVEPROP_DATA_ROOT", str(root))
    return root


@pytest.mark.parametrize(
    "field,value",
    [
        ("csv_path", "/etc/passwd"),
        ("csv_path", "link.csv"),
        ("csv_path", "linked/secret.csv"),
        ("csv_path", "../outside/secret.csv"),
        ("image_dir", "/"),
        ("pretrained", "/etc/hostname"),
        ("data_root", ".."),
        ("tensorboard_dir", "/tmp"),
        ("csv_path", "/nope/missing.csv"),  # refused for where it is, before "not found": no probing
    ],
)
def test_a_path_outside_the_data_root_is_refused(data_root, field, value):
    with pytest.raises(ConfigError) as e:
        validate(RunConfig(**{field: value}))
    assert str(e.value) == f"{field}: {value} is outside the data root {data_root} (LIVEPROP_DATA_ROOT)"


def test_paths_inside_the_data_root_are_resolved_there(data_root):
    cfg = validate(RunConfig(mode="nn", dataset="csv", csv_path="iris.csv", csv_target="y", tensorboard_dir="tb"))
    assert cfg.csv_path == str(data_root / "iris.csv")  # relative: inside the root, and kept resolved
    assert cfg.tensorboard_dir == str(data_root / "tb") and cfg.data_root == str(data_root / "data")
    assert validate(RunConfig(image_dir=str(data_root / "images" / ".." / "images"))).image_dir == str(
        data_root / "images"
    )
    assert validate(RunConfig(pretrained="")).pretrained == ""  # "" and "torchvision" name no file


def test_without_a_data_root_paths_are_not_confined(monkeypatch):
    monkeypatch.delenv("LIVEPROP_DATA_ROOT", raising=False)
    assert validate(RunConfig(image_dir="/", data_root="/tmp")).data_root == "/tmp"


# ---------------------------------------------------------------------------------------------
# fuzzing: the strategies

EDGE_NUMBERS = [0, -1, 1, 2, 2**31, 2**53 + 1, SEED_MAX, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**400, 10**5000]
EDGE_NUMBERS += [1e308, -1e308, math.inf, -math.inf, math.nan, -0.0, 5e-324, 1e-300, 0.5, 2.9, 1e6, 1e7]
ODD_TEXT = ["", " ", "\x00", "a\x00b", "\udc80", "a\ud800", "\n", "two\nlines", "\r", "\x1b[31m", "\u2028", "\x85"]
ODD_TEXT += ["\u202eevil", "😀", "é", "x" * 5000, "1e400", "nan", "inf", "-1", "0x10", "٣", "true", "None", "[]"]
PATH_LIKE = ["../../etc/passwd", "/", "", "~", "/etc/passwd", "/dev/null", "/proc/self/environ", ".", "data"]
PATH_LIKE += ["<csv>", "<images>", "<folder>", "<binary>"]  # real files, made by the `files` fixture
WRONG_TYPES = [None, True, False, [], [1], {}, {"a": 1}, [[[]]], datetime.date(1979, 5, 27)]

hostile = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.sampled_from(ODD_TEXT),
    st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=12),
    st.sampled_from(PATH_LIKE),
    st.sampled_from(WRONG_TYPES),
)
# one model of each torchvision family: all 80 on the meta device would take minutes
TV_MODELS = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "googlenet", "inception_v3", "maxvit_t"]
TV_MODELS += ["mnasnet0_5", "mobilenet_v3_small", "regnet_y_400mf", "resnet18", "resnext50_32x4d"]
TV_MODELS += ["shufflenet_v2_x0_5", "squeezenet1_0", "swin_t", "vgg11", "vit_b_16", "wide_resnet50_2"]
# the list fields' entries (engine/config/steering.py): good ones, bad ones and hostile text
AT_ENTRIES = ["0:pause", "2:lr=1e-7", "1:checkpoint", "3:stop", "2:lr=0", "x:stop", "1:lr=1e400", "5:jump", *ODD_TEXT]
RULE_ENTRIES = ["plateau:2:lr*0.5", "spike:10:pause", "ratio:0:1:1:banner", "spike:1:pause", "plateau:2", *ODD_TEXT]
TEXT_VALUES = {  # valid values of the free text fields, and of the list fields
    "tv_model": st.sampled_from(TV_MODELS + ["resnet9000"]),
    "pretrained": st.sampled_from(["", "torchvision", "<binary>", "<csv>"]),
    "csv_path": st.sampled_from(["<csv>", ""]),
    "csv_target": st.sampled_from(["y", "a", ""]),
    "image_dir": st.sampled_from(["<images>", "<folder>", ""]),
    "data_root": st.sampled_from(["<folder>", "data"]),
    "visdom": st.sampled_from(["", "off", "http://127.0.0.1:1", "localhost:1", "http://u:pw@h:1", "ftp://x"]),
    "tensorboard_dir": st.sampled_from(["", "<folder>", "<csv>"]),
    "at": st.lists(st.sampled_from(AT_ENTRIES), max_size=3),
    "rule": st.lists(st.sampled_from(RULE_ENTRIES), max_size=3),
}


def valid(name: str):
    """Values the field accepts on its own; sizes mostly small (prepare builds the model on the meta
    device), their bounds sometimes (the memory check must refuse those)."""
    f, meta = FIELDS[name], FIELDS[name].metadata
    if isinstance(f.default, bool):
        return st.booleans()
    if meta["choices"]:
        return st.sampled_from(meta["choices"] + (("",) if name == "optimizer" else ()))
    if meta["bounds"]:
        lo, hi = meta["bounds"]
        edges = st.sampled_from([v for v in (lo, hi) if v != meta["excluded"]])
        if isinstance(f.default, int):
            return st.one_of(st.integers(lo, min(hi, lo + 40)), edges)
        inner = st.floats(lo, hi, exclude_min=meta["excluded"] == lo, exclude_max=meta["excluded"] == hi)
        return st.one_of(inner, edges)
    return TEXT_VALUES.get(name, st.text(max_size=12))


# Valid configs, one per kind of run, that the drawn fields then change: a random set of fields alone
# is almost never a coherent run (mode optim, arch cnn, dataset digits ...), so prepare would rarely
# get past validation.
TINY = dict(d_in=8, hidden=4, d_out=2, n_samples=8, batch_size=8, steps=3, image_size=8)
SCENARIOS = [
    {},  # the lecture's own sizes
    dict(TINY, mode="autograd"),
    dict(TINY, mode="custom_function", arch="mlp", depth=3, init="randn", bias=False),
    dict(TINY, mode="nn", arch="mlp", dataset="teacher", depth=3),
    dict(TINY, mode="optim", optimizer="sgd", momentum=0.9, nesterov=True, n_samples=32, sampler="random"),
    dict(TINY, mode="nn", arch="parallel_block", dataset="teacher", until_stopped=True),
    dict(TINY, mode="optim", arch="cnn", dataset="digits", steps=0, epochs=2),
    dict(TINY, mode="nn", arch="mlp", dataset="digits", sampler="balanced", dtype="float64"),
    dict(TINY, mode="nn", arch="mlp", dataset="csv", csv_path="<csv>", csv_target="y", task="classification"),
    dict(TINY, mode="optim", arch="cnn", dataset="imagefolder", image_dir="<images>", optimizer="rmsprop"),
    dict(TINY, mode="nn", arch="mlp", dataset="mnist", data_root="<folder>"),  # no network: refused
    dict(TINY, mode="nn", visdom="http://127.0.0.1:1", tensorboard_dir="<folder>", pace=10.0, telemetry_every=1),
]
TORCHVISION = st.fixed_dictionaries(
    dict(
        mode=st.just("optim"), arch=st.just("torchvision"), batch_size=st.just(2), tv_model=st.sampled_from(TV_MODELS)
    ),
    optional=dict(dataset=st.sampled_from(["digits", "imagefolder"]), freeze_backbone=st.booleans()),
).map(lambda d: d | {"image_dir": "<images>", "image_size": 64} if d.get("dataset") == "imagefolder" else d)
# one example in 20 builds a torchvision model, the slowest to build on the meta device (up to 1 s)
BASES = st.integers(0, 19).flatmap(lambda i: TORCHVISION if i == 0 else st.sampled_from(SCENARIOS))
CHANGES = st.lists(st.sampled_from(list(FIELDS)), unique=True, max_size=4).flatmap(
    lambda names: st.fixed_dictionaries({n: st.one_of(valid(n), hostile) for n in names})
)
CONFIGS = st.tuples(BASES, CHANGES).map(lambda t: t[0] | t[1])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The real files PATH_LIKE names: a good CSV, an image folder, an empty folder, a binary file."""
    d = tmp_path_factory.mktemp("fuzz-files")
    (d / "data.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    for cls in ("cats", "dogs"):
        (d / "images" / cls).mkdir(parents=True)
        Image.new("RGB", (10, 10)).save(d / "images" / cls / "1.png")
    (d / "folder").mkdir()
    (d / "binary.bin").write_bytes(bytes(range(256)) * 4)
    names = {"<csv>": "data.csv", "<images>": "images", "<folder>": "folder", "<binary>": "binary.bin"}
    return {token: str(d / name) for token, name in names.items()}


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """prepare probes a download host for a torchvision dataset not on disk: here it never answers."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checks, "reachable", lambda host, port: False)
        mp.delenv("LIVEPROP_DATA_ROOT", raising=False)
        yield


def real(config: dict, files: dict) -> dict:
    return {k: files.get(v, v) if isinstance(v, str) else v for k, v in config.items()}


# ---------------------------------------------------------------------------------------------
# fuzzing in process: from_dict + prepare (validation, device, data shapes, probes, memory)


@settings(max_examples=2000, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(config=CONFIGS)
def test_any_config_is_prepared_or_refused_in_one_line(config, files):
    try:
        p = prepare(from_dict(real(config, files)))
    except ConfigError as e:
        assert one_line(str(e)), str(e)
        return
    assert isinstance(p, Prepared)
    json.dumps(to_dict(p.cfg), allow_nan=False).encode("utf-8")  # what the store keeps: no nan, no surrogate
    assert p.total_steps is None or 0 < p.total_steps < 2**63


# ---------------------------------------------------------------------------------------------
# fuzzing the CLI: main(argv) in process, with the workers replaced by recorders


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def as_argv(value) -> str:
    if isinstance(value, int) and value.bit_length() > 10_000:
        return "9" * 5000  # str() raises past 4300 digits; argparse's int() does too, and says so
    return str(value)


SWITCHES = [flag(n) for n in FIELDS if isinstance(FIELDS[n].default, bool)]
SWITCHES += [s.replace("--", "--no-") for s in SWITCHES] + ["--no-visdom", "--detach"]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else "inf" if v > 0 else "-inf"
    if isinstance(v, int) and v.bit_length() > 10_000:
        return "9" * 5000
    return json.dumps(v, default=str)  # a dict or None is no TOML: it does not parse, which is fair input


def json_text(config: dict) -> str:
    big = {k: "9" * 5000 if isinstance(v, int) and v.bit_length() > 10_000 else v for k, v in config.items()}
    return json.dumps(big, default=str)  # nan, inf as JSON's NaN, Infinity


def as_flags(config: dict) -> list[str]:
    """A config as a command line gives it: --name VALUE, or --bias / --no-bias."""
    argv = []
    for name, value in config.items():
        if isinstance(FIELDS[name].default, bool) and isinstance(value, bool):
            argv.append(flag(name) if value else flag(name).replace("--", "--no-"))
        elif isinstance(FIELDS[name].default, tuple) and isinstance(value, list):  # --at A --at B
            argv += [a for entry in value for a in (flag(name), as_argv(entry))]
        else:
            argv += [flag(name), as_argv(value)]
    return argv


STRAYS = ODD_TEXT + ["--fo\no", "-x", "--", "--hidden", "--config"]  # what argparse itself refuses
ARGVS = st.tuples(
    CONFIGS.map(as_flags),
    st.lists(st.sampled_from(SWITCHES), max_size=2),
    st.lists(st.sampled_from(STRAYS), max_size=1),
).map(lambda t: t[0] + t[1] + t[2])
CONFIG_FILES = st.one_of(
    st.none(),
    st.tuples(st.just("cfg.toml"), CONFIGS.map(lambda d: "".join(f"{k} = {toml_value(v)}\n" for k, v in d.items()))),
    st.tuples(st.just("cfg.json"), CONFIGS.map(json_text)),
    st.tuples(
        st.sampled_from(["cfg.toml", "cfg.json"]),
        st.sampled_from(["steps = inf\n", '{"steps": 1e400}', "[" * 50_000, "\udcff = 1\n", "", "null", "[1]"]),
    ),
)


@pytest.fixture(scope="module")
def recorded():
    """Calls that would start training: engine.runs.api.spawn_worker, engine.runs.worker.run_worker, and the CLI's
    watch of a run on several processes in the foreground (which spawns torchrun and waits for it)."""
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs, "spawn_worker", lambda run_id, store=None: calls.append(run_id) or 0)
        mp.setattr(worker, "run_worker", lambda run_id, store=None, callbacks=None: calls.append(run_id) or "finished")
        mp.setattr(cli, "watch", lambda run_id, store, progress: calls.append(run_id) or "finished")
        yield calls


def run_main(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's errors exit from inside
            code = e.code
    return code, err.getvalue()


@settings(max_examples=500, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(args=ARGVS, config=CONFIG_FILES)
def test_any_command_line_exits_2_in_one_line_or_creates_its_run(args, config, files, recorded):
    recorded.clear()
    with tempfile.TemporaryDirectory() as d:
        store = os.path.join(d, "store", "liveprop.db")
        argv = ["train", *(files.get(a, a) for a in args)]
        if config:
            path = os.path.join(d, config[0])
            with open(path, "wb") as f:
                f.write(config[1].encode("utf-8", "surrogateescape"))
            argv += ["--config", path]
        code, err = run_main([*argv, "--store", store])
        if code == 2:
            assert err.endswith("\n") and one_line(err[:-1]) and err.startswith("liveprop: error: "), err
            assert not os.path.exists(os.path.dirname(store)), "a refused command wrote the store"
            assert recorded == []
        else:
            assert code == 0, err
            s = Store(store)
            try:
                assert len(recorded) == 1 and [r["id"] for r in s.list_runs()] == recorded, err
            finally:
                s.close()


# ---------------------------------------------------------------------------------------------
# the reproductions as real processes: exit 2, one line, nothing written


def test_the_reproductions_exit_2_with_one_line_as_real_processes(tmp_path):
    (tmp_path / "inf.toml").write_text("steps = inf\n")
    (tmp_path / "big.json").write_text('{"steps": 1e400}')
    cases = {  # name: (argv, the field its line names)
        "hidden": (["--hidden", "9223372036854775808"], "hidden"),
        "seed": (["--seed", "18446744073709551616"], "seed"),
        "hist_bins": (["--hist-bins", "10000000000"], "hist_bins"),
        "inf.toml": (["--config", tmp_path / "inf.toml"], "steps"),
        "big.json": (["--config", tmp_path / "big.json"], "steps"),
    }
    stores = {k: tmp_path / k.replace(".", "-") / "liveprop.db" for k in cases}
    procs = {  # started together: each spends ~2 s importing torch
        k: subprocess.Popen(
            cli_cmd("train", *argv, "--store", stores[k]),
            cwd=REPO,
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, (argv, _) in cases.items()
    }
    for k, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2 and out == "", (k, err)
        assert err.count("\n") == 1 and err.startswith(f"liveprop: error: {cases[k][1]} "), (k, err)
        assert not stores[k].parent.exists(), f"{k}: the store was written"
