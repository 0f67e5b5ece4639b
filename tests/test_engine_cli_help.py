"""`train --help` says what each RunConfig field means and which values it takes, from one source:
the fields' metadata in engine/config/fields.py (help_for), which the dashboard's widgets can read too."""

import ast
import dataclasses
import subprocess

import pytest
from conftest import REPO, cli_cmd, cli_env

from engine.config.fields import ARCHS, MODES, OPTIMIZERS, RunConfig, choices_for, help_for

FIELDS = dataclasses.fields(RunConfig)


@pytest.fixture(scope="module")
def train_help():
    """`python -m engine train --help`, wide enough that argparse wraps no line, whitespace collapsed."""
    r = subprocess.run(
        cli_cmd("train", "--help"),
        cwd=REPO,
        env={**cli_env(), "COLUMNS": "1000"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return " ".join(r.stdout.split("run configuration (engine/config/fields.py):")[1].split())


def flag_entries(text):
    """{field: its --help entry}, each entry the text from its flag to the next field's flag."""
    starts, at = [], 0
    for f in FIELDS:
        flag = "--" + f.name.replace("_", "-")
        at = text.index(f"{flag}, --no-{flag[2:]} " if isinstance(f.default, bool) else f"{flag} ", at)
        starts.append(at)
    ends = starts[1:] + [text.index("--no-visdom", starts[-1])]
    return {f.name: text[a:b] for f, a, b in zip(FIELDS, starts, ends)}


def test_every_field_has_its_flag_with_its_meaning_and_default(train_help):
    entries = flag_entries(train_help)
    for f in FIELDS:
        assert len(f.metadata.get("help", "")) > 3, f"{f.name} says nothing about itself"
        assert f"{help_for(f.name)} (default {f.default!r})" in entries[f.name], entries[f.name]


def test_choice_fields_list_their_allowed_values(train_help):
    entries = flag_entries(train_help)
    choice_fields = [f.name for f in FIELDS if choices_for(f.name)]
    assert {"mode", "arch", "optimizer", "loss", "init", "dataset", "sampler", "device", "dtype", "task"} <= set(
        choice_fields
    )
    for name in choice_fields:
        assert f"one of: {', '.join(choices_for(name))}" in entries[name], entries[name]
    assert "one of: manual, autograd, custom_function, nn, optim" in entries["mode"]  # the tuples, spelled out
    assert (MODES, ARCHS, OPTIMIZERS) == (choices_for("mode"), choices_for("arch"), choices_for("optimizer"))
    assert "the lecture's rate for the mode" in entries["lr"] and "(default 0.0)" in entries["lr"]
    assert "--bias, --no-bias Linear layers carry a bias" in entries["bias"]


def test_the_meaning_is_written_once_in_the_metadata_not_in_comments():
    """RunConfig reads as a table of knob(default, meaning, choices) lines; no field keeps a comment
    beside it that could drift from what --help says."""
    path = REPO / "engine" / "config" / "fields.py"
    lines = path.read_text().splitlines()
    [cls] = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef) and n.name == "RunConfig"]
    for node in cls.body:
        if isinstance(node, ast.AnnAssign):
            for line in lines[node.lineno - 1 : node.end_lineno]:
                code = line.split('"')[-1].split("'")[-1]  # after the last string on the line
                assert "#" not in code, f"engine/config/fields.py:{node.lineno}: a comment beside {node.target.id}"


def test_help_for_is_what_the_dashboard_can_show():
    assert help_for("mode").endswith("; one of: manual, autograd, custom_function, nn, optim")
    assert help_for("batch_size") == "N, samples per step; between 1 and 1073741824"
