"""Files a person points a run at that are broken, odd or hostile: refused before the launch with one line
(engine.build.assemble.prepare, and the CLI: exit 2, one stderr line, nothing written), or, when only training can find
it, a failed run whose reason is one line naming the file. Every file is made here, in tmp_path."""

import os
import pickle
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import ConfigError, RunConfig, Store
from engine.build import assemble as build
from engine.build import checks
from engine.build import data as data_mod
from engine.runs import api as runs
from engine.sinks.tensorboard import TensorBoardSink

pytestmark = pytest.mark.fault("hostile files (one per test)")  # rows of the fault table (make fault)

CPU = ["--device", "cpu", "--steps", "1", "--batch-size", "2"]


def refused(cfg, *needles) -> str:
    """prepare(cfg) raises one line holding every needle; returns it."""
    with pytest.raises(ConfigError) as e:
        build.prepare(cfg)
    line = str(e.value)
    assert len(line.splitlines()) == 1, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def cli_refused(cli, tmp_path, *args) -> str:
    """`python -m engine train ARGS`: exit 2, exactly one stderr line, no traceback, no store, no run files."""
    root = tmp_path / "runs"
    out = cli("train", *CPU, *map(str, args), "--store", root / "liveprop.db")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("liveprop: error: "), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert not root.exists(), sorted(root.rglob("*"))  # no store, no checkpoint, no log
    return lines[0]


# ---------------------------------------------------------------------------------------------
# CSV


def csv_cfg(path, target="y", **kw):
    return RunConfig(**{**SMALL, "mode": "nn", "dataset": "csv", "csv_path": str(path), "csv_target": target, **kw})


def test_a_latin1_csv_is_refused_as_not_utf8(tmp_path, cli):
    path = tmp_path / "prices.csv"
    path.write_bytes("année,y\n1,2\n3,4\n".encode("latin-1"))
    refused(csv_cfg(path), str(path), "UTF-8")
    line = cli_refused(cli, tmp_path, "--mode", "nn", "--dataset", "csv", "--csv-path", path, "--csv-target", "y")
    assert str(path) in line and "UTF-8" in line


def test_a_cell_over_128_kib_is_refused(tmp_path, cli):
    path = tmp_path / "long.csv"
    path.write_text("x,y\n1,2\n" + "7" * (130 * 1024) + ",3\n")
    refused(csv_cfg(path), str(path), "line 3", "field limit")
    cli_refused(cli, tmp_path, "--mode", "nn", "--dataset", "csv", "--csv-path", path, "--csv-target", "y")


def test_a_byte_order_mark_is_not_part_of_the_first_columns_name(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM; --csv-target naming the first column works."""
    path = tmp_path / "excel.csv"
    path.write_bytes("y,a,b\n1.5,1,2\n2.5,2,1\n3.5,3,3\n".encode("utf-8-sig"))
    p = build.prepare(csv_cfg(path, target="y"))
    assert p.spec.in_shape == (2,) and p.spec.task == "regression"
    ds, _ = data_mod.load(p.cfg)
    torch.testing.assert_close(ds.y[:, 0], torch.tensor([1.5, 2.5, 3.5]))


@pytest.mark.parametrize(
    "text,needles",
    [
        ("a,y\n\n\n", ["at least one data row"]),  # blank lines only: an empty tensor had no column to take
        ('"a\nb",c\n1,2\n', ["no column named 'y'", "'a\\nb'"]),  # a line break inside a column's name
        ("x,y\n1,1e39\n2,3\n", ["float32"]),  # inf once the model's float32 holds it
    ],
)
def test_odd_csvs_are_refused_in_one_line(tmp_path, text, needles):
    path = tmp_path / "odd.csv"
    path.write_text(text)
    refused(csv_cfg(path), *needles)


CELLS = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "y", '"', '""', "\x00", "\r", "\n", "\ufeff", "1e400", "-0", "1_0", "nan"]),
    st.text(max_size=8),
    st.just("9" * 140_000),  # over the csv module's field limit
)
ROWS = st.lists(st.lists(CELLS, min_size=1, max_size=4), max_size=6)


@st.composite
def csv_bytes(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    rows = draw(ROWS)
    text = "\n".join(",".join(draw(st.sampled_from(["{}", '"{}"'])).format(c) for c in row) for row in rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"]))
    return draw(st.sampled_from([b"", b"y,x\n"])) + text.encode(encoding, errors="replace")


@settings(deadline=None, derandomize=True, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(content=csv_bytes(), target=st.sampled_from(["y", "x", "\ufeffy"]))
def test_any_csv_bytes_give_a_dataset_or_one_line(content, target):
    """Random bytes, random encodings, long cells, quotes, NULs, BOMs: a DataSpec or a one-line ConfigError."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.csv"
        path.write_bytes(content)
        try:
            p = build.prepare(csv_cfg(path, target=target, steps=1))
        except ConfigError as e:
            assert len(str(e).splitlines()) == 1, str(e)
        else:
            assert isinstance(p.spec, data_mod.DataSpec) and p.spec.n >= 1


# ---------------------------------------------------------------------------------------------
# --pretrained FILE


@pytest.fixture(scope="module")
def resnet18_state():
    import torchvision

    return torchvision.models.resnet18(num_classes=7).state_dict()  # another head: replaced anyway


def tv_cfg(path, **kw):
    return RunConfig(
        **{
            **SMALL,
            "mode": "optim",
            "arch": "torchvision",
            "dataset": "digits",
            "batch_size": 2,
            "pretrained": str(path),
            **kw,
        }
    )


def weights_file(tmp_path, content, name="w.pt"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


def test_an_empty_weights_file_is_refused(tmp_path, cli):
    path = weights_file(tmp_path, b"")
    refused(tv_cfg(path), str(path), "empty")
    line = cli_refused(
        cli, tmp_path, "--mode", "optim", "--arch", "torchvision", "--dataset", "digits", "--pretrained", path
    )
    assert "empty" in line


def test_a_truncated_weights_file_is_refused(tmp_path, resnet18_state):
    whole = weights_file(tmp_path, resnet18_state, "whole.pt").read_bytes()
    for n in (1000, len(whole) // 2):
        refused(tv_cfg(weights_file(tmp_path, whole[:n], f"cut{n}.pt")), "cannot read weights from")


@pytest.mark.parametrize(
    "content,needles",
    [
        ([torch.zeros(3)], ["holds a list, not a state_dict"]),
        ({"conv1.weight": [1.0, 2.0]}, ["'conv1.weight' is a list, not a tensor"]),
        ({"foo.weight": torch.zeros(3)}, ["does not hold resnet18 weights", "'foo.weight'"]),
    ],
)
def test_weights_that_are_not_a_state_dict_are_refused(tmp_path, content, needles):
    refused(tv_cfg(weights_file(tmp_path, content)), *needles)


def test_the_first_mismatch_with_the_model_is_named(tmp_path, resnet18_state):
    """A backbone tensor of another shape used to be dropped in silence (left at its random init)."""
    bad = {**resnet18_state, "conv1.weight": torch.zeros(64, 3, 3, 3)}
    refused(tv_cfg(weights_file(tmp_path, bad)), "does not hold resnet18 weights", "'conv1.weight'", "(64, 3, 3, 3)")
    partial = {k: v for k, v in resnet18_state.items() if k != "layer1.0.conv1.weight"}
    refused(tv_cfg(weights_file(tmp_path, partial)), "lacks 'layer1.0.conv1.weight'")
    # the same file with only its head of another shape, or no head, is good
    build.prepare(tv_cfg(weights_file(tmp_path, resnet18_state)))
    headless = {k: v for k, v in resnet18_state.items() if not k.startswith("fc.")}
    build.prepare(tv_cfg(weights_file(tmp_path, headless)))


class Boom:
    """A pickle that would run code when loaded: os.system touching a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_a_hostile_pickle_is_refused_and_never_run(tmp_path, cli, fmt):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    payload = {"conv1.weight": Boom(marker)}
    if fmt == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    refused(tv_cfg(path), str(path), "only a plain state_dict is unpickled")
    line = cli_refused(
        cli, tmp_path, "--mode", "optim", "--arch", "torchvision", "--dataset", "digits", "--pretrained", path
    )
    assert "cannot read weights" in line
    assert not marker.exists()


def test_a_model_without_a_linear_head_is_refused():
    cfg = RunConfig(
        **{
            **SMALL,
            "mode": "optim",
            "arch": "torchvision",
            "tv_model": "squeezenet1_0",
            "dataset": "digits",
            "batch_size": 2,
        }
    )
    refused(cfg, "squeezenet1_0", "no nn.Linear head")


def test_images_too_small_for_the_model_are_refused():
    cfg = RunConfig(
        **{**SMALL, "mode": "optim", "arch": "torchvision", "tv_model": "alexnet", "dataset": "digits", "batch_size": 2}
    )
    refused(cfg, "alexnet cannot take digits images of shape (3, 8, 8)")


# ---------------------------------------------------------------------------------------------
# image folders


def image_folder(root, per_class=3, classes=("a", "b")):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def folder_cfg(root, **kw):
    return RunConfig(
        **{
            **SMALL,
            "mode": "optim",
            "arch": "cnn",
            "dataset": "imagefolder",
            "image_dir": str(root),
            "image_size": 8,
            "batch_size": 4,
            "steps": 2,
            **kw,
        }
    )


def test_a_zero_byte_image_is_refused(tmp_path, cli):
    root = image_folder(tmp_path / "imgs")
    (root / "b" / "9.png").write_bytes(b"")
    refused(folder_cfg(root), str(root / "b" / "9.png"), "empty file")
    cli_refused(cli, tmp_path, "--mode", "optim", "--arch", "cnn", "--dataset", "imagefolder", "--image-dir", root)


def test_a_file_that_is_not_an_image_is_refused(tmp_path):
    root = image_folder(tmp_path / "imgs")
    (root / "a" / "notes.jpg").write_text("not a picture")
    refused(folder_cfg(root), str(root / "a" / "notes.jpg"), "cannot be read as an image")


def test_every_class_folder_needs_images(tmp_path):
    root = image_folder(tmp_path / "imgs")
    (root / "c").mkdir()
    (root / "c" / "README.txt").write_text("images go here")
    refused(folder_cfg(root), str(root / "c"), "holds no images")


def test_files_the_loader_skips_are_not_refused(tmp_path):
    root = image_folder(tmp_path / "imgs")
    (root / "a" / "notes.txt").write_text("ImageFolder lists only image extensions")
    assert build.prepare(folder_cfg(root)).spec.out_dim == 2


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_bad_image_outside_the_probe_fails_the_run_naming_it(
    tmp_path, store, run_inprocess, monkeypatch, num_workers
):
    """prepare opens a sample (here of one file: the first); a bad file elsewhere is found by the loader, and the
    run fails with one line naming it, also when a DataLoader worker process reads it."""
    monkeypatch.setattr(checks, "PROBE_IMAGES", 1)
    root = image_folder(tmp_path / "imgs")
    bad = root / "b" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cfg = folder_cfg(root, batch_size=7, shuffle=False, num_workers=num_workers)  # one batch holds every file
    build.prepare(cfg)
    run_id, status = run_inprocess(cfg, store)
    error = runs.get_run(run_id, store)["error"]
    assert status == "failed" and len(error.splitlines()) == 1
    assert error.startswith(f"image folder: {bad} cannot be read as an image ("), error


# ---------------------------------------------------------------------------------------------
# downloads: torchvision datasets and weights


@pytest.fixture
def network(monkeypatch):
    """network(up) -> the list of (host, port) probed; no socket is opened."""

    def set_up(up):
        probed = []
        monkeypatch.setattr(checks, "reachable", lambda host, port: probed.append((host, port)) or up)
        return probed

    return set_up


def mnist_cfg(root, **kw):
    return RunConfig(**{**SMALL, "mode": "optim", "arch": "cnn", "dataset": "mnist", "data_root": str(root), **kw})


def test_a_dataset_that_cannot_be_downloaded_is_refused_before_the_launch(tmp_path, network):
    probed = network(False)
    refused(mnist_cfg(tmp_path / "data"), "could not download MNIST", "ossci-datasets.s3.amazonaws.com", "--data-root")
    assert ("ossci-datasets.s3.amazonaws.com", 443) in probed
    assert not (tmp_path / "data").exists()


def test_a_reachable_host_lets_the_run_download_it(tmp_path, network):
    probed = network(True)
    assert build.prepare(mnist_cfg(tmp_path / "data", dataset="cifar10")).spec.in_shape == (3, 32, 32)
    assert probed == [("www.cs.toronto.edu", 443)] and not (tmp_path / "data").exists()


def test_a_local_copy_needs_no_network(tmp_path, network):
    probed = network(False)
    (tmp_path / "data" / "FashionMNIST" / "raw").mkdir(parents=True)
    build.prepare(mnist_cfg(tmp_path / "data", dataset="fashion_mnist"))
    assert probed == []


def test_torchvision_weights_not_in_the_hub_cache_need_the_network(tmp_path, network, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = tv_cfg("torchvision")
    network(False)
    refused(cfg, "could not get torchvision's pretrained weights for resnet18", "download.pytorch.org", "--pretrained")
    probed = network(True)
    build.prepare(cfg)
    assert probed == [("download.pytorch.org", 443)]
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.touch()
    probed = network(False)
    build.prepare(cfg)
    assert probed == []


def test_a_name_lookup_that_hangs_is_unreachable_while_it_still_hangs(monkeypatch):
    asked, release, answered = threading.Event(), threading.Event(), threading.Event()

    def resolver_that_hangs(*args, **kwargs):
        asked.set()
        release.wait(10)  # the test lets it go once the probe has answered
        answered.set()
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", resolver_that_hangs)
    monkeypatch.setattr(checks, "PROBE_TIMEOUT_S", 0.2)
    try:
        assert checks.reachable("download.pytorch.org", 443) is False
        assert asked.is_set() and not answered.is_set()  # the probe gave up on the lookup; it did not end it
    finally:
        release.set()


def test_the_probe_reaches_a_listening_port_by_name_and_not_a_closed_one():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert checks.reachable("localhost", port)
    assert not checks.reachable("127.0.0.1", port)


def test_offline_mnist_is_refused_by_the_cli(tmp_path, cli):
    """The real probe, in a real process: no run is written when the download cannot happen."""
    if checks.reachable("ossci-datasets.s3.amazonaws.com", 443):
        pytest.skip("this machine reaches the network: the download would be attempted")
    line = cli_refused(
        cli, tmp_path, "--mode", "optim", "--arch", "cnn", "--dataset", "mnist", "--data-root", tmp_path / "data"
    )
    assert "could not download MNIST" in line and not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------------
# tensorboard_dir


def tb_cfg(path):
    return RunConfig(**{**SMALL, "tensorboard_dir": str(path)})


def test_a_tensorboard_dir_that_is_a_file_is_refused(tmp_path, cli):
    afile = tmp_path / "notes.txt"
    afile.write_text("")
    refused(tb_cfg(afile), f"{afile} is a file")
    refused(tb_cfg(afile / "runs" / "tb"), f"{afile} is a file")
    cli_refused(cli, tmp_path, "--tensorboard-dir", afile / "tb")


def test_an_unwritable_tensorboard_dir_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: os.access answers for this folder as it would for a user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != folder and real(p, mode, **kw))
    refused(tb_cfg(folder / "tb"), f"{folder} is not writable")


def test_a_new_tensorboard_dir_is_accepted_and_not_created(tmp_path):
    build.prepare(tb_cfg(tmp_path / "new" / "deeper" / "tb"))
    assert list(tmp_path.iterdir()) == []


def test_the_sink_says_in_one_line_when_it_cannot_write(tmp_path):
    """A folder that changed after prepare fails the run with this line (the worker records ConfigError's)."""
    afile = tmp_path / "taken"
    afile.write_text("")
    with pytest.raises(ConfigError, match=r"^tensorboard_dir: cannot write event files in .*taken/run \(Not a dir"):
        TensorBoardSink(str(afile / "run"))


def test_refused_runs_leave_no_row(tmp_path, store):
    """Through the public API too: create_run writes nothing when a file is refused."""
    path = tmp_path / "bad.csv"
    path.write_bytes("é,y\n1,2\n".encode("latin-1"))
    with pytest.raises(ConfigError):
        runs.create_run(csv_cfg(path), store)
    assert not Path(store).exists()
    runs.create_run(RunConfig(**SMALL), store)  # a good run: the one row
    assert [r["status"] for r in Store(store).list_runs()] == ["queued"]


def test_a_folder_that_loops_back_on_itself_is_refused_not_walked_for_ever(tmp_path, monkeypatch):
    """A link to its own parent (or "/") would keep the walk going: refused once it passes MAX_ENTRIES."""
    from engine.build import checks

    root = tmp_path / "loop"
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "again").symlink_to(root)
    monkeypatch.setattr(checks, "MAX_ENTRIES", 30)  # the kernel stops the loop after 40 links: 80 entries
    with pytest.raises(ConfigError, match="over 30 files and folders") as e:
        checks.image_folder(str(root))
    assert "\n" not in str(e.value)
