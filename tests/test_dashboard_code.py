"""The Code panel: the lecture's cells as the notes print them, the engine's code beside them, and the
running mode's concept as a diff of the lecture's cells; no line cut off."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.about_text import ENGINE_CODE, concept_diff
from dashboard.lecture_cells import CELLS
from engine.config.fields import MODES

NOTES = Path(__file__).resolve().parents[2] / "shared" / "seed" / "pytorch-lecture-notes.txt"
APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.mark.skipif(not NOTES.is_file(), reason=f"the lecture notes are not at {NOTES}")
@pytest.mark.parametrize("mode", MODES)
def test_each_cell_is_the_lectures_own(mode):
    """Line for line (trailing spaces aside), in order, right after its In [..] label."""
    label, cell = CELLS[mode]
    notes = [line.rstrip() for line in NOTES.read_text().splitlines()]
    start = notes.index(f"{label}:") + 1
    assert notes[start : start + len(cell.splitlines())] == cell.splitlines() or _blank_runs_collapsed(
        notes[start:], cell.splitlines()
    )


def _blank_runs_collapsed(notes, cell):
    """The cell equals the notes with runs of blank lines shortened to two."""
    out = []
    for line in notes:
        if len(out) >= len(cell):
            break
        if line == "" and out[-2:] == ["", ""]:
            continue
        out.append(line)
    return out == cell


def test_every_mode_has_code_on_both_sides():
    assert set(CELLS) == set(ENGINE_CODE) == set(MODES)
    assert "grad_h = grad_h_relu.masked_fill(h < 0, 0)" in ENGINE_CODE["manual"]
    assert "grad_h[h<0] = 0" in CELLS["manual"][1]
    assert "torch.optim.Adam" in CELLS["optim"][1]


def changed(diff: str) -> tuple[list[str], list[str]]:
    lines = diff.splitlines()
    return (
        [line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")],
        [line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")],
    )


@pytest.mark.parametrize(
    "mode, removed, added",
    [
        ("manual", "grad_w1 = x.t().mm(grad_h)", "loss.backward()"),  # the first mode: what autograd replaces
        ("autograd", "grad_w1 = x.t().mm(grad_h)", "loss.backward()"),
        ("custom_function", "h_relu = h.clamp(min=0)", "h_relu = my_relu(h)"),
        ("nn", "h = x.mm(w1)", "y_pred = model(x)"),
        ("optim", "param -= learning_rate * param.grad", "optimizer.step()"),
    ],
)
def test_each_modes_diff_shows_its_concept_and_no_comment(mode, removed, added):
    what, diff = concept_diff(mode)
    gone, new = changed(diff)
    assert removed in gone and added in new, diff
    assert "#" not in diff  # a changed comment is not the concept
    assert what.startswith("The lecture's In [")


@pytest.mark.parametrize("mode", ["manual", "custom_function", "optim"])
def test_the_code_panel_shows_both_and_the_running_modes_diff_with_lines_wrapped(store, monkeypatch, mode):
    import engine
    from engine.store.db import Store

    monkeypatch.setenv("LIVEPROP_STORE", store)
    s = Store(store)
    s.create_run("20260101-000000-0000e1", vars(engine.RunConfig(mode=mode)), total_steps=3)
    s.set_status("20260101-000000-0000e1", "finished")
    s.close()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = "20260101-000000-0000e1"
    at.session_state["detail_view"] = "Code"
    at.run()
    assert not at.exception, at.exception
    codes = [c.value for c in at.code]
    assert ENGINE_CODE[mode] in codes and CELLS[mode][1] in codes and concept_diff(mode)[1] in codes
    assert all(c.proto.wrap_lines for c in at.code)  # a cut-off line hides the end of a statement
